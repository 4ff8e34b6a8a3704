//! The engine's container start and die events, recorded for the whole
//! bench by one `docker events` reader: when a container started (for the
//! sweep's start-up) and the gaps between one job's end and the next one's
//! start. Each event keeps the container's labels, which say whose it is.

use crate::session::dies_with_bench;
use anyhow::{Context, bail};
use std::collections::HashMap;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Die,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub action: Action,
    /// The engine's time of the event.
    pub nanos: i64,
    /// When the bench read it.
    pub received: Instant,
    /// The container's labels, its name and image.
    pub attributes: HashMap<String, String>,
}

/// Whose containers a measurement looks at.
pub enum Scope<'a> {
    /// Those the bench started for one measurement (its run label).
    Run(&'a str),
    /// Those of the tb batches under a runs directory (tb's `tb.dir` label).
    TbRuns(&'a std::path::Path),
}

impl Scope<'_> {
    fn holds(&self, e: &Event) -> bool {
        match self {
            Scope::Run(tag) => e.attributes.get(crate::session::RUN_LABEL).map(String::as_str) == Some(*tag),
            Scope::TbRuns(dir) => e
                .attributes
                .get("tb.dir")
                .is_some_and(|d| std::path::Path::new(d).starts_with(dir)),
        }
    }
}

pub struct Events {
    reader: Child,
    seen: Arc<Mutex<Vec<Event>>>,
}

impl Events {
    /// Starts reading the events from this moment on.
    pub fn start() -> anyhow::Result<Events> {
        let since = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
        let mut cmd = Command::new("docker");
        cmd.args(["events", "--filter", "type=container", "--filter", "event=start"])
            .args(["--filter", "event=die", "--format", "{{json .}}", "--since"])
            .arg(format!("{since:.6}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut reader = dies_with_bench(&mut cmd)
            .spawn()
            .context("failed to run `docker events`")?;
        let out = reader.stdout.take().context("docker events has no stdout")?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Some(e) = parse(&line, Instant::now()) {
                    sink.lock().unwrap().push(e);
                }
            }
        });
        Ok(Events { reader, seen })
    }

    /// The events in `scope` so far, in the engine's order.
    pub fn of(&self, scope: &Scope) -> Vec<Event> {
        let mut v: Vec<Event> = self
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|e| scope.holds(e))
            .cloned()
            .collect();
        v.sort_by_key(|e| e.nanos);
        v
    }

    /// Waits until `scope` has `starts` start and `dies` die events; gives
    /// up after `timeout`, or as soon as `gone` says that what would make
    /// them has ended.
    pub fn wait(
        &self,
        scope: &Scope,
        starts: usize,
        dies: usize,
        timeout: Duration,
        mut gone: impl FnMut() -> bool,
    ) -> anyhow::Result<Vec<Event>> {
        let until = Instant::now() + timeout;
        loop {
            let v = self.of(scope);
            let count = |a| v.iter().filter(|e| e.action == a).count();
            if count(Action::Start) >= starts && count(Action::Die) >= dies {
                return Ok(v);
            }
            if Instant::now() >= until || gone() {
                bail!(
                    "saw {} container starts and {} ends of the {starts} and {dies} expected (within {timeout:?})",
                    count(Action::Start),
                    count(Action::Die)
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.reader.kill();
        let _ = self.reader.wait();
    }
}

fn parse(line: &str, received: Instant) -> Option<Event> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let action = match v["Action"].as_str()? {
        "start" => Action::Start,
        "die" => Action::Die,
        _ => return None,
    };
    let attributes = v["Actor"]["Attributes"]
        .as_object()?
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect();
    Some(Event {
        action,
        nanos: v["timeNano"].as_i64()?,
        received,
        attributes,
    })
}

/// Seconds from each job's end to the next job's start, for jobs run one
/// at a time (`events` in the engine's order).
pub fn idle_gaps(events: &[Event]) -> Vec<f64> {
    let mut gaps = Vec::new();
    let mut last_die = None;
    for e in events {
        match e.action {
            Action::Die => last_die = Some(e.nanos),
            Action::Start => {
                if let Some(d) = last_die.take() {
                    gaps.push((e.nanos - d) as f64 / 1e9);
                }
            }
        }
    }
    gaps
}

pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(action: Action, ms: i64) -> Event {
        Event {
            action,
            nanos: ms * 1_000_000,
            received: Instant::now(),
            attributes: HashMap::new(),
        }
    }

    #[test]
    fn a_gap_is_from_a_die_to_the_next_start() {
        use Action::*;
        let v = [
            event(Start, 0),
            event(Die, 100),
            event(Start, 350),
            event(Die, 400),
            event(Start, 1400),
            event(Die, 1500),
        ];
        assert_eq!(idle_gaps(&v), vec![0.25, 1.0]);
        assert_eq!(mean(&idle_gaps(&v)), 0.625);
        assert!(idle_gaps(&v[..2]).is_empty(), "one job has no gap");
    }

    #[test]
    fn the_engine_s_json_line_becomes_an_event_with_the_labels() {
        let line = r#"{"status":"die","id":"bc11","from":"tb-base:bookworm","Type":"container","Action":"die","Actor":{"ID":"bc11","Attributes":{"exitCode":"0","image":"tb-base:bookworm","name":"musing_bohr","tb.bench.run":"probe"}},"scope":"local","time":1796075463,"timeNano":1796075463400119069}"#;
        let e = parse(line, Instant::now()).unwrap();
        assert_eq!(e.action, Action::Die);
        assert_eq!(e.nanos, 1796075463400119069);
        assert!(Scope::Run("probe").holds(&e));
        assert!(!Scope::Run("other").holds(&e));
        assert!(!Scope::TbRuns(std::path::Path::new("/tmp")).holds(&e));
        let destroy = line.replace(r#""Action":"die""#, r#""Action":"destroy""#);
        assert!(parse(&destroy, Instant::now()).is_none());
    }

    #[test]
    fn a_tb_container_is_in_the_scope_of_the_runs_directory_it_is_under() {
        let mut e = event(Action::Start, 0);
        e.attributes
            .insert("tb.dir".into(), "/tmp/b/queue-0/runs/2026_x".into());
        assert!(Scope::TbRuns(std::path::Path::new("/tmp/b/queue-0/runs")).holds(&e));
        assert!(!Scope::TbRuns(std::path::Path::new("/tmp/b/queue-1/runs")).holds(&e));
        // A prefix of a name is not the directory.
        assert!(!Scope::TbRuns(std::path::Path::new("/tmp/b/queue-0/ru")).holds(&e));
    }
}
