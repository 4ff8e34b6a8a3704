//! `report.html`: one self-contained page (inline CSS, a little inline JS to
//! sort the table, inline SVG charts) that opens from disk with no network.

use super::compare::{self, level_mean, sig4};
use super::markdown::mean_std;
use super::{Report, at, charts, failures, fmt_seconds, fmt_swept, fmt_value, reason};
use std::fmt::Write;

/// Jobs that get a learning curve and a bar in the comparison, best first;
/// a thousand charts would make a page no one scrolls.
pub const CHART_JOBS: usize = 50;

const STYLE: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1400px;padding:0 16px;color:#1d2330;background:#fff}
h1{font-size:22px;margin:0 0 4px}h1 small{font-weight:400;color:#667}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #dde;padding-bottom:4px}
.meta{color:#556;margin:0 0 12px}.cards{display:flex;flex-wrap:wrap;gap:8px}
.card{border:1px solid #dde;border-radius:6px;padding:6px 12px;min-width:80px}.card b{display:block;font-size:20px}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}th,td{padding:3px 8px;border-bottom:1px solid #eef;text-align:left;vertical-align:top}
th{background:#f4f5f9;position:sticky;top:0;cursor:pointer;user-select:none;white-space:nowrap}th[aria-sort=ascending]::after{content:" ▲"}th[aria-sort=descending]::after{content:" ▼"}
td.n{text-align:right}td.m{font-size:12px;color:#445}tr:hover td{background:#fafbff}
.st{border-radius:4px;padding:0 6px;font-size:12px;font-weight:600}.st-succeeded{background:#dcf5e3;color:#17612f}.st-failed,.st-lost{background:#fde2e1;color:#8a1c1c}
.st-oom{background:#fbe3f4;color:#7d1763}.st-timeout,.st-cancelled{background:#fff1d6;color:#7a4b00}.st-running{background:#dde9ff;color:#1c438a}.st-pending{background:#eee;color:#555}
.grid{display:flex;flex-wrap:wrap;gap:10px}figure{margin:0;border:1px solid #eef;border-radius:6px}
pre{background:#f6f7f9;border:1px solid #e3e5ea;border-radius:6px;padding:8px;overflow-x:auto;font-size:12px;line-height:1.35}
article{margin-bottom:18px}dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:4px 0}dt{color:#556}dd{margin:0}
code{font-size:12px;background:#f4f5f9;padding:0 3px;border-radius:3px}.note{color:#667}
.best{border:2px solid #2ca02c;border-radius:8px;padding:6px 14px;margin-top:14px;background:#f6fcf7}.best h2{border:0;margin:4px 0}
.cfg code,.common code{margin-right:6px;display:inline-block}th.cfg,td.cfg{background:#fbfbf3}
figure.factor{padding:6px}figure.factor table{width:auto;margin-bottom:4px}
"#;

const SCRIPT: &str = r#"
(function () {
  function val(row, i) {
    var c = row.cells[i], v = c.getAttribute('data-v');
    return v === null ? c.textContent.trim() : v;
  }
  function sort(table, i, desc) {
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
    var heads = table.tHead.rows[0].cells, num = heads[i].getAttribute('data-type') === 'num';
    rows.sort(function (a, b) {
      var x = val(a, i), y = val(b, i);
      if (x === '' || y === '') return (x === '') - (y === '');
      var d = num ? parseFloat(x) - parseFloat(y) : x.localeCompare(y, undefined, {numeric: true});
      return desc ? -d : d;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(heads, function (th, j) {
      th.setAttribute('aria-sort', j === i ? (desc ? 'descending' : 'ascending') : 'none');
    });
  }
  document.querySelectorAll('table.sortable').forEach(function (t) {
    Array.prototype.forEach.call(t.tHead.rows[0].cells, function (th, i) {
      th.addEventListener('click', function () { sort(t, i, th.getAttribute('aria-sort') === 'ascending'); });
    });
  });
  // A link can carry a sorted view: report.html#sort=3 or #sort=3- (descending).
  var m = /^#sort=(\d+)(-?)$/.exec(location.hash), jobs = document.getElementById('jobs');
  if (m && jobs) sort(jobs, +m[1], m[2] === '-');
  // Where the best job's box ends on the first screen (checked by a test).
  var best = document.getElementById('best');
  if (best) document.body.setAttribute('data-best-bottom', String(Math.round(best.getBoundingClientRect().bottom)));
  document.body.setAttribute('data-ok', '1');
})();
"#;

pub fn render(r: &Report) -> anyhow::Result<String> {
    let mut o = String::with_capacity(64 * 1024 + r.jobs.len() * 600);
    let h = &r.headline;
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>tb report: {}</title>\
         <script>window.addEventListener('error',function(e){{document.documentElement.setAttribute('data-error',String(e.message))}});</script>\
         <style>{STYLE}</style></head><body>\n",
        esc(&r.batch.name)
    );
    let _ = writeln!(
        o,
        "<header><h1>Batch {} <small>{}</small></h1>",
        esc(&r.batch.name),
        esc(&r.batch.id)
    );
    let trigger = r
        .batch
        .trigger
        .as_ref()
        .map(|t| {
            format!(
                " · started by <code>tb watch</code>, trigger {}: {}",
                t.number,
                esc(&t.describe())
            )
        })
        .unwrap_or_default();
    let _ = writeln!(
        o,
        "<p class=\"meta\">{:?} · created {}{trigger} · report generated {}</p><div class=\"cards\">",
        r.batch.status,
        r.batch.created_at.format("%Y-%m-%d %H:%M UTC"),
        r.generated_at.format("%Y-%m-%d %H:%M:%S UTC")
    );
    for (status, n) in h.counts.listed() {
        let _ = write!(
            o,
            "<div class=\"card\"><b>{n}</b><span class=\"st st-{status}\">{status}</span></div>"
        );
    }
    let _ = writeln!(
        o,
        "<div class=\"card\"><b>{}</b>wall time</div><div class=\"card\"><b>{:.2}</b>GPU-hours</div>\
         <div class=\"card\"><b>{}</b>jobs</div></div></header>",
        fmt_seconds(h.wall_seconds),
        h.gpu_hours,
        h.jobs
    );

    best_section(&mut o, r);
    retraining_section(&mut o, r);
    jobs_table(&mut o, r);
    mattered_section(&mut o, r)?;
    overlays_section(&mut o, r)?;
    groups(&mut o, r);
    charts_section(&mut o, r)?;
    metrics_section(&mut o, r);
    failures_section(&mut o, r);
    skipped(&mut o, r);

    let _ = write!(o, "<script>{SCRIPT}</script>\n</body></html>\n");
    Ok(o)
}

/// The first screen: which job won, by how much, and with what settings.
fn best_section(o: &mut String, r: &Report) {
    let Some(best) = r.jobs.first().filter(|j| j.rank.is_some()) else {
        return;
    };
    let b = best.best.as_ref().expect("a ranked job has a best value");
    let _ = write!(
        o,
        "<section id=\"best\" class=\"best\"><h2>Best: {}</h2><p><b>{} {}</b>{}",
        esc(&best.name),
        esc(&b.metric),
        fmt_value(b.value),
        esc(&at(b))
    );
    if let Some(second) = r
        .jobs
        .get(1)
        .and_then(|j| j.best.as_ref())
        .filter(|s| s.metric == b.metric)
    {
        let _ = write!(o, " · {} ahead of the next", fmt_value((second.value - b.value).abs()));
    }
    for k in &r.test_keys {
        if let Some(v) = best.test.get(k) {
            let shown = v.as_f64().map_or_else(|| fmt_swept(v), fmt_value);
            let _ = write!(o, " · {} {}", esc(k), esc(&shown));
        }
    }
    o.push_str("</p>");
    if !best.config.is_empty() {
        o.push_str("<p class=\"cfg\">");
        let shown: Vec<String> = r
            .config_keys
            .iter()
            .filter_map(|k| {
                best.config
                    .get(k)
                    .map(|v| format!("<code>{} = {}</code>", esc(k), esc(&compare::show(k, v))))
            })
            .collect();
        o.push_str(&shown.join(" "));
        o.push_str("</p>");
    }
    o.push_str("</section>\n");
}

/// Where the jobs started from, and the deploy decision.
fn retraining_section(o: &mut String, r: &Report) {
    let lines = super::retraining_lines(r);
    if lines.is_empty() {
        return;
    }
    o.push_str("<section id=\"retraining\"><h2>Retraining</h2><ul>");
    for line in lines {
        let _ = write!(o, "<li>{}</li>", esc(&line));
    }
    o.push_str("</ul></section>\n");
}

fn jobs_table(o: &mut String, r: &Report) {
    o.push_str("<section><h2>Jobs</h2>");
    if let Some(m) = &r.ranking {
        let _ = write!(
            o,
            "<p>Ranked by best <code>{}</code> ({} is better). Click a column to sort.</p>",
            esc(&m.metric),
            if m.mode.maximize() { "higher" } else { "lower" }
        );
    }
    if !r.common.is_empty() {
        o.push_str("<p class=\"common\"><span class=\"note\">Common settings:</span> ");
        let shown: Vec<String> = r
            .common
            .iter()
            .map(|(k, v)| match r.common_in.get(k) {
                Some(n) => format!(
                    "<code>{} = {}</code> <span class=\"note\">({n} of {} jobs)</span>",
                    esc(k),
                    esc(&compare::show(k, v)),
                    r.jobs.len()
                ),
                None => format!("<code>{} = {}</code>", esc(k), esc(&compare::show(k, v))),
            })
            .collect();
        o.push_str(&shown.join(" "));
        o.push_str("</p>");
    }
    let best = r
        .ranking
        .as_ref()
        .map_or("best".into(), |m| format!("best {}", esc(&m.metric)));
    let _ = write!(
        o,
        "<table class=\"sortable\" id=\"jobs\"><thead><tr><th data-type=\"num\">#</th><th>job</th><th>status</th>"
    );
    for k in &r.config_keys {
        let numeric = r.jobs.iter().all(|j| j.config.get(k).is_none_or(|v| v.is_number()));
        let _ = write!(
            o,
            "<th class=\"cfg\"{}>{}</th>",
            if numeric { " data-type=\"num\"" } else { "" },
            esc(k)
        );
    }
    let _ = write!(o, "<th data-type=\"num\">{best}</th><th data-type=\"num\">@ epoch</th>");
    let tests: Vec<&String> = r.test_keys.iter().take(compare::MAX_TEST_COLUMNS).collect();
    for k in &tests {
        let _ = write!(o, "<th data-type=\"num\">{}</th>", esc(k));
    }
    o.push_str("<th>stop</th><th data-type=\"num\">epochs</th><th>final</th><th data-type=\"num\">duration</th></tr></thead><tbody>\n");
    for (i, j) in r.jobs.iter().enumerate() {
        let name = if i < CHART_JOBS && !j.series.is_empty() {
            format!("<a href=\"#curve-{i}\">{}</a>", esc(&j.name))
        } else {
            esc(&j.name)
        };
        let _ = write!(
            o,
            "<tr><td class=\"n\" data-v=\"{}\">{}</td><td>{name}</td><td><span class=\"st st-{s}\">{s}</span></td>",
            j.rank.map_or(String::new(), |n| n.to_string()),
            j.rank.map_or("–".into(), |n| n.to_string()),
            s = j.status,
        );
        for k in &r.config_keys {
            match j.config.get(k) {
                Some(v) => {
                    // Sorted by the raw value (bytes, seconds), shown as read.
                    let raw = esc(&fmt_swept(v));
                    let text = esc(&compare::show(k, v));
                    let _ = write!(o, "<td class=\"cfg\" data-v=\"{raw}\">{text}</td>");
                }
                None => o.push_str("<td class=\"cfg\" data-v=\"\">–</td>"),
            }
        }
        let (value, epoch) = match &j.best {
            Some(b) => {
                let shown = match &r.ranking {
                    Some(m) if m.metric == b.metric => fmt_value(b.value),
                    _ => format!("{} {}", esc(&b.metric), fmt_value(b.value)),
                };
                let at = match (b.epoch, b.step) {
                    (Some(e), _) => Some((e, e.to_string())),
                    (None, Some(s)) => Some((s, format!("step {s}"))),
                    _ => None,
                };
                (format!("<td class=\"n\" data-v=\"{}\">{shown}</td>", b.value), at)
            }
            None => ("<td class=\"n\" data-v=\"\">–</td>".to_string(), None),
        };
        let _ = write!(
            o,
            "{value}<td class=\"n\" data-v=\"{}\">{}</td>",
            epoch.as_ref().map_or(String::new(), |e| e.0.to_string()),
            epoch.map_or("–".into(), |e| e.1),
        );
        for k in &tests {
            match j.test.get(*k).and_then(|v| v.as_f64()) {
                Some(v) => {
                    let _ = write!(o, "<td class=\"n\" data-v=\"{v}\">{}</td>", fmt_value(v));
                }
                None => o.push_str("<td class=\"n\" data-v=\"\">–</td>"),
            }
        }
        let short: Vec<String> = compare::final_short(&j.final_metrics, j.monitor.as_ref())
            .into_iter()
            .map(|(k, v)| format!("{k}={}", sig4(v)))
            .collect();
        let _ = writeln!(
            o,
            "<td>{}</td><td class=\"n\" data-v=\"{}\">{}</td><td class=\"m\">{}</td><td class=\"n\" data-v=\"{}\">{}</td></tr>",
            esc(j.stop_reason.as_deref().unwrap_or("–")),
            j.epochs.map_or(String::new(), |e| e.to_string()),
            j.epochs.map_or("–".into(), |e| e.to_string()),
            esc(&short.join(" ")),
            j.duration_seconds.map_or(String::new(), |d| d.to_string()),
            j.duration_seconds.map_or("–".into(), fmt_seconds),
        );
    }
    o.push_str("</tbody></table></section>\n");
}

/// For each swept key, the monitored metric by its value: a table and a
/// chart each, the keys that matter most first.
fn mattered_section(o: &mut String, r: &Report) -> anyhow::Result<()> {
    let Some(m) = &r.ranking else { return Ok(()) };
    if r.mattered.is_empty() {
        return Ok(());
    }
    let _ = write!(
        o,
        "<section id=\"mattered\"><h2>What mattered</h2><p>For each swept key, the best <code>{}</code> of the jobs \
         that share each of its values: mean ± sample standard deviation (n − 1), best value first (a numeric key \
         with more than eight values: in ranges of about equally many jobs, in value order). The keys that explain \
         most of the differences between jobs first.</p><div class=\"grid\">",
        esc(&m.metric)
    );
    for f in &r.mattered {
        let _ = write!(
            o,
            "<figure class=\"factor\"><table><thead><tr><th>{}</th><th data-type=\"num\">jobs</th>\
             <th data-type=\"num\">mean ± std</th><th data-type=\"num\">best</th></tr></thead><tbody>",
            esc(&f.key)
        );
        for l in &f.levels {
            let _ = write!(
                o,
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(&fmt_swept(&l.value)),
                l.n,
                level_mean(l),
                fmt_value(l.best)
            );
        }
        o.push_str("</tbody></table>");
        let _ = write!(o, "<p class=\"note\">{}</p>", esc(&compare::factor_note(f)));
        let bars: Vec<(String, f64, Option<f64>)> =
            f.levels.iter().map(|l| (fmt_swept(&l.value), l.mean, l.std)).collect();
        if let Some(svg) = charts::levels(&f.key, &m.metric, &bars)? {
            o.push_str(&svg);
        }
        o.push_str("</figure>");
    }
    o.push_str("</div></section>\n");
    Ok(())
}

/// Jobs drawn in colour in an overlay; the rest are grey.
const COLOURED: usize = 10;
/// Overlays drawn at most: the monitor and the validation metrics.
const MAX_OVERLAYS: usize = 6;

/// One chart per compared metric with every job's curve: the monitor, then
/// each other validation metric.
fn overlays_section(o: &mut String, r: &Report) -> anyhow::Result<()> {
    let mut metrics: Vec<String> = Vec::new();
    if let Some(m) = &r.ranking {
        metrics.push(m.metric.clone());
    }
    for j in &r.jobs {
        for k in j.series.keys() {
            if compare::is_validation(k) && !metrics.contains(k) {
                metrics.push(k.clone());
            }
        }
    }
    let mut drawn = Vec::new();
    let (mut by_step_left_out, mut not_drawn) = (0, 0);
    for metric in metrics.iter().take(MAX_OVERLAYS) {
        // Best first: the ranking's order.
        let mut with: Vec<&super::JobReport> = r.jobs.iter().filter(|j| j.series.contains_key(metric)).collect();
        // Curves against epochs and against steps share no axis: with any
        // job on epochs, the jobs that logged only steps are left out.
        let by_step = with.iter().all(|j| j.metrics.by_step);
        if !by_step {
            let before = with.len();
            with.retain(|j| !j.metrics.by_step);
            by_step_left_out = by_step_left_out.max(before - with.len());
        }
        if with.len() < 2 {
            continue;
        }
        let (shown, dropped) = sample_overlay(&with);
        not_drawn = not_drawn.max(dropped);
        let lines: Vec<charts::Line<'_>> = shown
            .iter()
            .map(|&(i, j)| {
                let ink = if i < COLOURED && j.status != crate::run::Status::Pruned {
                    charts::Ink::Colour {
                        index: i,
                        bold: i == 0 && j.rank == Some(1),
                    }
                } else {
                    charts::Ink::Grey
                };
                (j.name.as_str(), j.series[metric].as_slice(), ink)
            })
            .collect();
        let x = if by_step { "step" } else { "epoch" };
        if let Some(svg) = charts::overlay(&format!("{metric}, every job"), x, &lines)? {
            drawn.push(svg);
        }
    }
    if drawn.is_empty() {
        return Ok(());
    }
    o.push_str("<section id=\"overlays\"><h2>Curves compared</h2><div class=\"grid\">");
    for svg in drawn {
        let _ = write!(o, "<figure class=\"overlay\">{svg}</figure>");
    }
    let _ = write!(
        o,
        "</div><p class=\"note\">The best job's line is thickest; past {COLOURED} jobs, the best {COLOURED} are in colour \
         and the others grey; pruned jobs are grey."
    );
    if not_drawn > 0 {
        let _ = write!(
            o,
            " Past {MAX_GREY} grey lines, an even sample of them is drawn: {not_drawn} jobs' curves are not \
             (each job's own charts below have them)."
        );
    }
    if by_step_left_out > 0 {
        let _ = write!(
            o,
            " {by_step_left_out} jobs logged steps but no epochs and are left out of these epoch charts."
        );
    }
    o.push_str("</p></section>\n");
    Ok(())
}

/// Step-level metrics drawn at most in a job's step chart.
const MAX_STEP_LINES: usize = 4;

/// Grey lines drawn at most in one overlay.
const MAX_GREY: usize = 200;

/// The jobs an overlay draws, with their places in the ranking: the first
/// `COLOURED`, then at most `MAX_GREY` of the rest, evenly spread over the
/// ranking (the worst always). How many are left out.
fn sample_overlay<'a>(with: &[&'a super::JobReport]) -> (Vec<(usize, &'a super::JobReport)>, usize) {
    let rest = with.len().saturating_sub(COLOURED);
    let mut shown: Vec<(usize, &super::JobReport)> = with.iter().copied().enumerate().take(COLOURED).collect();
    if rest <= MAX_GREY {
        shown.extend(with.iter().copied().enumerate().skip(COLOURED));
        return (shown, 0);
    }
    for k in 0..MAX_GREY {
        // From the first grey to the last, in MAX_GREY even steps.
        let i = COLOURED + k * (rest - 1) / (MAX_GREY - 1);
        shown.push((i, with[i]));
    }
    (shown, rest - MAX_GREY)
}

fn groups(o: &mut String, r: &Report) {
    if r.groups.is_empty() {
        return;
    }
    o.push_str(
        "<section><h2>Cross-validation groups</h2><p>Mean ± sample standard deviation (n − 1) of the folds' best \
         values.</p><table class=\"sortable\"><thead><tr><th>group</th><th>metric</th><th data-type=\"num\">folds</th>\
         <th data-type=\"num\">mean ± std</th><th data-type=\"num\">min</th><th data-type=\"num\">max</th><th>jobs</th>",
    );
    let keys: Vec<&String> = r.swept_keys.iter().filter(|k| *k != "train.cv.fold").collect();
    for k in &keys {
        let _ = write!(o, "<th>{}</th>", esc(k));
    }
    o.push_str("</tr></thead><tbody>\n");
    for g in &r.groups {
        let num = |v: Option<f64>| match v {
            Some(v) => format!("<td class=\"n\" data-v=\"{v}\">{}</td>", fmt_value(v)),
            None => "<td class=\"n\" data-v=\"\">–</td>".into(),
        };
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td class=\"n\" data-v=\"{}\">{}/{}</td><td class=\"n\" data-v=\"{}\">{}</td>{}{}<td class=\"m\">{}</td>",
            esc(&g.name),
            esc(g.monitor.as_ref().map_or("–", |m| m.metric.as_str())),
            g.n,
            g.n,
            g.folds,
            g.mean.map_or(String::new(), |m| m.to_string()),
            mean_std(g.mean, g.std),
            num(g.min),
            num(g.max),
            esc(&g.jobs.join(", ")),
        );
        for k in &keys {
            let _ = write!(o, "<td>{}</td>", esc(&g.swept.get(*k).map_or("–".into(), fmt_swept)));
        }
        o.push_str("</tr>\n");
    }
    o.push_str("</tbody></table></section>\n");
}

fn charts_section(o: &mut String, r: &Report) -> anyhow::Result<()> {
    if let Some(m) = &r.ranking {
        let bars: Vec<(&str, f64)> = r
            .jobs
            .iter()
            .filter_map(|j| {
                j.best
                    .as_ref()
                    .filter(|b| b.metric == m.metric)
                    .map(|b| (j.name.as_str(), b.value))
            })
            .take(CHART_JOBS)
            .collect();
        let total = r
            .jobs
            .iter()
            .filter(|j| j.best.as_ref().is_some_and(|b| b.metric == m.metric))
            .count();
        if let Some(svg) = charts::comparison(&m.metric, &bars)? {
            o.push_str("<section><h2>Compared</h2>");
            if total > bars.len() {
                let _ = write!(o, "<p class=\"note\">The best {} of {total} jobs.</p>", bars.len());
            }
            let _ = writeln!(o, "<figure>{svg}</figure></section>");
        }
    }
    let with_curves: Vec<(usize, &super::JobReport)> = r
        .jobs
        .iter()
        .enumerate()
        .filter(|(_, j)| !j.series.is_empty())
        .collect();
    if with_curves.is_empty() {
        return Ok(());
    }
    o.push_str("<section><h2>Learning curves</h2>\n");
    for (i, j) in with_curves.iter().take(CHART_JOBS) {
        let x = if j.metrics.by_step { "step" } else { "epoch" };
        let groups = charts::groups(&j.series);
        let _ = write!(o, "<h3 id=\"curve-{i}\">{}</h3><div class=\"grid\">", esc(&j.name));
        for (title, names) in groups.iter().take(charts::MAX_GROUPS) {
            let lines: Vec<(&str, &[(u64, f64)])> = names.iter().map(|n| (*n, j.series[*n].as_slice())).collect();
            if let Some(svg) = charts::curves(title, x, &lines)? {
                let _ = write!(o, "<figure>{svg}</figure>");
            }
        }
        // Step-level values (Lightning's `*_step`): one chart, against steps.
        if !j.metrics.by_step && !j.step_series.is_empty() {
            let lines: Vec<(&str, &[(u64, f64)])> = j
                .step_series
                .iter()
                .take(MAX_STEP_LINES)
                .map(|(n, v)| (n.as_str(), v.as_slice()))
                .collect();
            if let Some(svg) = charts::curves("per step", "step", &lines)? {
                let _ = write!(o, "<figure>{svg}</figure>");
            }
        }
        o.push_str("</div>\n");
        if groups.len() > charts::MAX_GROUPS {
            let _ = writeln!(
                o,
                "<p class=\"note\">{} more metric groups are not drawn; the job's metric files have them.</p>",
                groups.len() - charts::MAX_GROUPS
            );
        }
    }
    if with_curves.len() > CHART_JOBS {
        let _ = write!(
            o,
            "<p class=\"note\">Curves of the {CHART_JOBS} best-ranked jobs; {} more omitted to keep this page light \
             (their metric files have every epoch).</p>",
            with_curves.len() - CHART_JOBS
        );
    }
    o.push_str("</section>\n");
    Ok(())
}

fn metrics_section(o: &mut String, r: &Report) {
    let notes = super::metrics_notes(r);
    if notes.is_empty() {
        return;
    }
    o.push_str("<section><h2>Metrics</h2><ul>");
    for n in notes {
        let _ = write!(o, "<li>{}</li>", esc(&n));
    }
    o.push_str("</ul></section>\n");
}

fn failures_section(o: &mut String, r: &Report) {
    let failed: Vec<_> = failures(r).collect();
    if failed.is_empty() {
        return;
    }
    let _ = writeln!(o, "<section><h2>Failures ({})</h2>", failed.len());
    for j in failed {
        let _ = write!(
            o,
            "<article><h3>{} <span class=\"st st-{s}\">{s}</span></h3><dl><dt>exit code</dt><dd>{}</dd>\
             <dt>out of memory</dt><dd>{}</dd><dt>attempt</dt><dd>{}</dd><dt>reason</dt><dd>{}</dd>",
            esc(&j.name),
            j.exit_code.map_or("none".into(), |c| c.to_string()),
            if j.oom_killed { "yes" } else { "no" },
            j.attempt,
            esc(&reason(j)),
            s = j.status,
        );
        if let Some(s) = &j.stop_reason {
            let _ = write!(o, "<dt>trainer's stop reason</dt><dd>{}</dd>", esc(s));
        }
        if let Some(b) = &j.best {
            let _ = write!(
                o,
                "<dt>best so far</dt><dd>{} {}{}</dd>",
                esc(&b.metric),
                fmt_value(b.value),
                at(b)
            );
        }
        for p in &j.problems {
            let _ = write!(o, "<dt>note</dt><dd>{}</dd>", esc(p));
        }
        o.push_str("</dl>");
        if j.stderr_tail.is_empty() {
            o.push_str("<p class=\"note\">stderr is empty.</p>");
        } else {
            let _ = write!(o, "<p>Last {} lines of stderr:</p><pre>", j.stderr_tail.len());
            for l in &j.stderr_tail {
                o.push_str(&esc(l));
                o.push('\n');
            }
            o.push_str("</pre>");
        }
        o.push_str("</article>\n");
    }
    o.push_str("</section>\n");
}

fn skipped(o: &mut String, r: &Report) {
    let bad: Vec<_> = r.jobs.iter().filter(|j| j.metrics.bad_lines > 0).collect();
    if bad.is_empty() {
        return;
    }
    let _ = write!(
        o,
        "<section><h2>Skipped metrics records</h2><p>{} records (lines, rows, events) were not valid metrics \
         and were skipped.</p><ul>",
        r.headline.bad_metrics_lines
    );
    for j in bad {
        let _ = write!(o, "<li>{}: {} skipped<ul>", esc(&j.name), j.metrics.bad_lines);
        for b in &j.metrics.bad {
            let _ = write!(
                o,
                "<li>line {}: {} — <code>{}</code></li>",
                b.line,
                esc(&b.reason),
                esc(&b.text)
            );
        }
        o.push_str("</ul></li>");
    }
    o.push_str("</ul></section>\n");
}

/// Text and attribute values: every character HTML could read as markup.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<img src=x onerror='a()'>&\""),
            "&lt;img src=x onerror=&#39;a()&#39;&gt;&amp;&quot;"
        );
    }
}
