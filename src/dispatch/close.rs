//! The end of a batch: the report written, its summary for people on
//! stderr (through the log, so that `supervisor.log` has it too), and
//! `on_finish` run.

use super::Summary;
use crate::report::{self, Format};
use crate::run::BatchDir;
use crate::settings::Plan;

pub fn close(plan: &Plan, dir: &BatchDir, s: &Summary) {
    let wall = crate::human::duration(chrono::Duration::from_std(s.wall).unwrap_or_default());
    let verb = if s.interrupted { "interrupted" } else { "finished" };
    tracing::info!("batch {} {verb} after {wall}", dir.id);
    let written = report::build(dir).and_then(|r| {
        let paths = report::write_report(dir, &r, &Format::ALL)?;
        Ok((r, paths))
    });
    let mut report_md = None;
    match written {
        Ok((r, paths)) => {
            report_md = paths.first().cloned();
            for line in report::summary_lines(&r, &paths) {
                tracing::info!("{line}");
            }
        }
        Err(e) => {
            // The night's results are in the job directories either way.
            tracing::error!("failed to write the report: {e:#}");
            for (name, state) in &s.jobs {
                tracing::info!("  {name}: {}", state.status());
            }
        }
    }
    let reused = s.jobs.iter().filter(|(_, st)| st.reused_from().is_some()).count();
    if reused > 0 {
        tracing::info!("{reused} job(s) reused an earlier result (--skip-done)");
    }
    tracing::info!("results in {} (tb status, tb logs JOB, tb report)", dir.path.display());
    if let Some(command) = &plan.settings.on_finish {
        let ending = crate::notify::Ending {
            dir,
            name: &plan.name,
            report: report_md.as_deref(),
            jobs: &s.jobs,
            interrupted: s.interrupted,
        };
        crate::notify::run(command, &ending, crate::notify::TIMEOUT);
    }
}
