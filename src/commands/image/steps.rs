//! What `tb image build` shows while the engine builds: one line per
//! Dockerfile step saying in words what it does (and, for the PyTorch
//! layer, how long that takes), under a spinner with the elapsed time on a
//! terminal. The engine's own output is shown only under `-v`, and its last
//! lines when the build fails.

use crate::logging::OutputMode;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The engine lines kept for a failure.
const RECENT: usize = 25;
/// Plain output says a step is still running at most this often.
const STILL_EVERY: Duration = Duration::from_secs(60);

/// The build as the user sees it.
pub struct Steps {
    show: Show,
    /// The base image, for a `FROM ${BASE_IMAGE}`.
    base: String,
    current: Option<Step>,
    recent: VecDeque<String>,
}

enum Show {
    /// The engine's raw stream (`-v`).
    Raw,
    /// A spinner on a terminal.
    Bar(ProgressBar),
    /// Plain lines (a log, CI).
    Lines,
    /// Nothing but a failure (`-q`).
    Quiet,
}

/// The Dockerfile step in progress.
struct Step {
    label: String,
    started: Instant,
    said: Instant,
    cached: bool,
}

impl Steps {
    pub fn new(mode: OutputMode, base: &str) -> Steps {
        let show = if mode.quiet {
            Show::Quiet
        } else if mode.verbose > 0 {
            Show::Raw
        } else if mode.bars {
            let bar = ProgressBar::new_spinner();
            bar.set_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("a valid template"));
            bar.enable_steady_tick(Duration::from_millis(200));
            Show::Bar(bar)
        } else {
            Show::Lines
        };
        Steps {
            show,
            base: base.to_string(),
            current: None,
            recent: VecDeque::with_capacity(RECENT),
        }
    }

    /// One line of the engine's output.
    pub fn line(&mut self, line: &str) {
        let plain = without_colours(line);
        if !plain.trim().is_empty() {
            if self.recent.len() == RECENT {
                self.recent.pop_front();
            }
            self.recent.push_back(plain);
        }
        if let Show::Raw = self.show {
            crate::progress::above_bars(|| eprintln!("{line}"));
            return;
        }
        if let Some((n, total, instruction)) = parse_step(line) {
            self.end_step();
            let label = format!("[{n}/{total}] {}", describe(instruction, &self.base));
            if let Show::Bar(bar) = &self.show {
                // The spinner's time is the step's.
                bar.reset_elapsed();
            }
            self.say(&label);
            let now = Instant::now();
            self.current = Some(Step {
                label,
                started: now,
                said: now,
                cached: false,
            });
        } else if line.trim() == "---> Using cache" {
            if let Some(step) = &mut self.current {
                step.cached = true;
            }
        } else {
            self.still(line);
        }
    }

    /// The build ended: the last step's time.
    pub fn finish(&mut self) {
        self.end_step();
        if let Show::Bar(bar) = &self.show {
            bar.finish_and_clear();
        }
    }

    /// The build failed: the engine's last lines, for the error below.
    pub fn fail(&mut self) {
        if let Show::Bar(bar) = &self.show {
            bar.finish_and_clear();
        }
        if matches!(self.show, Show::Raw) || self.recent.is_empty() {
            return;
        }
        eprintln!("the engine's last {} lines:", self.recent.len());
        for line in &self.recent {
            eprintln!("  {line}");
        }
    }

    fn say(&self, label: &str) {
        match &self.show {
            Show::Bar(bar) => bar.set_message(label.to_string()),
            Show::Lines => eprintln!("{label}"),
            Show::Raw | Show::Quiet => {}
        }
    }

    /// Plain output: a long step says it is still going, with its latest line.
    fn still(&mut self, line: &str) {
        let Some(step) = &mut self.current else { return };
        let latest = line.trim();
        // The engine's own bookkeeping says nothing about the step.
        if latest.is_empty() || latest.starts_with("--->") || latest.starts_with("Removing intermediate") {
            return;
        }
        match &self.show {
            Show::Bar(bar) => bar.set_message(format!("{} · {}", step.label, clip(latest, 60))),
            Show::Lines if step.said.elapsed() >= STILL_EVERY => {
                eprintln!(
                    "  … still running ({} so far): {}",
                    minutes(step.started.elapsed()),
                    clip(latest, 80)
                );
                step.said = Instant::now();
            }
            _ => {}
        }
    }

    fn end_step(&mut self) {
        let Some(step) = self.current.take() else { return };
        let took = step.started.elapsed();
        // Instant steps (ENV, ARG, a cache hit) need no second line.
        if took < Duration::from_secs(2) && !step.cached {
            return;
        }
        let done = if step.cached {
            "cached".to_string()
        } else {
            format!("done in {}", minutes(took))
        };
        match &self.show {
            Show::Bar(bar) => bar.println(format!("{}  {done}", step.label)),
            Show::Lines => eprintln!("  {done}"),
            Show::Raw | Show::Quiet => {}
        }
    }
}

/// `Step 3/9 : RUN …` as (3, 9, "RUN …").
fn parse_step(line: &str) -> Option<(u32, u32, &str)> {
    let rest = line.strip_prefix("Step ")?;
    let (counts, instruction) = rest.split_once(" : ")?;
    let (n, total) = counts.split_once('/')?;
    Some((n.parse().ok()?, total.parse().ok()?, instruction.trim()))
}

/// A Dockerfile instruction in words, for the steps of the trainer image
/// that take time; others as written, shortened.
fn describe(instruction: &str, base: &str) -> String {
    let (verb, args) = instruction.split_once(' ').unwrap_or((instruction, ""));
    match verb.to_ascii_uppercase().as_str() {
        "FROM" if args.contains("BASE_IMAGE") => format!("starting from {base}"),
        "FROM" => format!("starting from {}", args.trim()),
        "RUN" if args.contains("requirements.lock") => {
            "installing PyTorch and Lightning (downloads ~3 GB: a few minutes the first time)".to_string()
        }
        "RUN" if args.contains("-m venv") => "creating the Python environment".to_string(),
        "RUN" if args.contains("pip install") && args.contains("trainer-py") => "installing tb_trainer".to_string(),
        "COPY" | "ADD" => format!("copying {}", clip(args.split_whitespace().next().unwrap_or(args), 50)),
        "ENV" | "ARG" | "WORKDIR" | "CMD" | "ENTRYPOINT" | "LABEL" | "USER" => {
            format!("setting {}", verb.to_ascii_uppercase())
        }
        _ => clip(instruction, 70),
    }
}

/// `line` without the terminal colour codes the engine wraps a step's
/// stderr in (`ESC [ 91 m` … `ESC [ 0 m`).
fn without_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: `[`, parameters, one final letter.
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn minutes(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_read_from_the_engine_stream_and_told_in_words() {
        assert_eq!(
            parse_step("Step 4/9 : RUN pip install --no-cache-dir -r /opt/tb/requirements.lock"),
            Some((4, 9, "RUN pip install --no-cache-dir -r /opt/tb/requirements.lock"))
        );
        assert_eq!(parse_step(" ---> Running in 1a2b"), None);
        assert_eq!(parse_step("Step x/9 : RUN true"), None);
        assert!(describe("RUN pip install --no-cache-dir -r /opt/tb/requirements.lock", "b").contains("PyTorch"));
        assert_eq!(describe("FROM tb-base:bookworm", "b"), "starting from tb-base:bookworm");
        assert_eq!(
            describe("FROM ${BASE_IMAGE}", "python:3.11"),
            "starting from python:3.11"
        );
        assert_eq!(
            describe("COPY trainer-py/ /opt/tb/trainer-py/", "b"),
            "copying trainer-py/"
        );
        assert_eq!(describe("ENV A=1 B=2", "b"), "setting ENV");
        assert_eq!(minutes(Duration::from_secs(192)), "3m12s");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(without_colours("\u{1b}[91mbroken\n\u{1b}[0m"), "broken\n");
    }

    #[test]
    fn a_failure_keeps_the_engine_s_last_lines() {
        let mut steps = Steps::new(
            OutputMode {
                bars: false,
                verbose: 0,
                quiet: true,
            },
            "b",
        );
        for i in 0..100 {
            steps.line(&format!("line {i}"));
        }
        assert_eq!(steps.recent.len(), RECENT);
        assert_eq!(steps.recent.front().map(String::as_str), Some("line 75"));
        assert_eq!(steps.recent.back().map(String::as_str), Some("line 99"));
    }
}
