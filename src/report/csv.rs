//! `report.csv`: the jobs table for a spreadsheet or pandas — one row per
//! job, best first: rank, name, status, the configuration keys that differ
//! between jobs, the best value of the monitor, the test scores, duration.

use super::{Report, fmt_swept};

pub fn render(r: &Report) -> anyhow::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<String> = ["rank", "job", "status"].iter().map(|s| s.to_string()).collect();
    header.extend(r.config_keys.iter().cloned());
    header.extend(
        ["best_metric", "best", "best_epoch", "best_step"]
            .iter()
            .map(|s| s.to_string()),
    );
    header.extend(r.test_keys.iter().cloned());
    header.push("duration_seconds".into());
    w.write_record(&header)?;
    for j in &r.jobs {
        let mut row: Vec<String> = vec![
            j.rank.map_or(String::new(), |n| n.to_string()),
            j.name.clone(),
            j.status.to_string(),
        ];
        row.extend(
            r.config_keys
                .iter()
                .map(|k| j.config.get(k).map_or(String::new(), fmt_swept)),
        );
        match &j.best {
            Some(b) => row.extend([
                b.metric.clone(),
                b.value.to_string(),
                b.epoch.map_or(String::new(), |e| e.to_string()),
                b.step.map_or(String::new(), |s| s.to_string()),
            ]),
            None => row.extend([String::new(), String::new(), String::new(), String::new()]),
        }
        row.extend(
            r.test_keys
                .iter()
                .map(|k| j.test.get(k).map_or(String::new(), fmt_swept)),
        );
        row.push(j.duration_seconds.map_or(String::new(), |d| d.to_string()));
        w.write_record(&row)?;
    }
    w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))
}
