//! The batch progress bar on a terminal; nothing otherwise (tb's log lines
//! then say the same in plain text).

use crate::state::Status;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeSet;
use std::sync::Mutex;

static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Runs `print` so that its output lands above the bar, not through it.
pub fn above_bars(print: impl FnOnce()) {
    let bar = BAR.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match bar {
        Some(bar) => bar.suspend(print),
        None => print(),
    }
}

/// Done / total, failures, and the running jobs' names.
pub struct Progress {
    bar: Option<ProgressBar>,
    state: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    running: BTreeSet<String>,
    failed: usize,
}

impl Progress {
    pub fn new(enabled: bool) -> Progress {
        Progress {
            bar: enabled.then(ProgressBar::hidden),
            state: Mutex::new(Counts::default()),
        }
    }

    pub fn start(&self, total: usize) {
        let Some(bar) = &self.bar else { return };
        bar.set_length(total as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} jobs  ETA {eta}  {msg}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        *BAR.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
    }

    pub fn job_started(&self, name: &str) {
        let mut c = self.state.lock().unwrap_or_else(|e| e.into_inner());
        c.running.insert(name.to_string());
        self.redraw(&c);
    }

    pub fn job_finished(&self, name: &str, status: Status) {
        let mut c = self.state.lock().unwrap_or_else(|e| e.into_inner());
        c.running.remove(name);
        if status != Status::Succeeded {
            c.failed += 1;
        }
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
        self.redraw(&c);
    }

    fn redraw(&self, c: &Counts) {
        let Some(bar) = &self.bar else { return };
        let mut msg = String::new();
        if c.failed > 0 {
            msg.push_str(&format!("{} not succeeded  ", c.failed));
        }
        if !c.running.is_empty() {
            msg.push_str(&format!(
                "running: {}",
                c.running.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        bar.set_message(msg);
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        *BAR.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}
