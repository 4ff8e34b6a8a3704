//! tb's own log: people's messages on stderr (above any progress bar), and
//! every batch's `supervisor.log`, with timestamps, once its directory exists.
//! Every line goes through [`crate::sanitize`] first: no secret, no control
//! character, no endless line reaches either.

use crate::cli::GlobalArgs;
use crate::sanitize::{self, Policy};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, Layer};

static SUPERVISOR_LOG: Mutex<Option<std::fs::File>> = Mutex::new(None);
static OUTPUT: OnceLock<OutputMode> = OnceLock::new();
/// stderr's lines carry tracing's colours.
static COLORS: AtomicBool = AtomicBool::new(false);

/// How stderr is used, decided once from the flags and the terminal.
#[derive(Debug, Clone, Copy)]
pub struct OutputMode {
    /// Progress bars may be drawn.
    pub bars: bool,
    pub verbose: u8,
    pub quiet: bool,
}

pub fn output_mode() -> OutputMode {
    *OUTPUT.get().unwrap_or(&OutputMode {
        bars: false,
        verbose: 0,
        quiet: false,
    })
}

/// Installs the subscriber. `RUST_LOG` overrides the stderr level.
pub fn init(global: &GlobalArgs) {
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let bars = std::io::stderr().is_terminal() && !global.no_progress && global.verbose == 0 && !global.quiet;
    COLORS.store(color, Ordering::Relaxed);
    let _ = OUTPUT.set(OutputMode {
        bars,
        verbose: global.verbose,
        quiet: global.quiet,
    });
    let level = match (global.quiet, global.verbose) {
        (true, _) => "error",
        (_, 0) => "info",
        (_, 1) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // Only tb's own events below info: bollard and hyper are chatty.
        EnvFilter::new(if level == "info" || level == "error" {
            level.to_string()
        } else {
            format!("warn,tb={level}")
        })
    });
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(StderrWriter)
        .with_ansi(color)
        .with_target(false)
        .with_timer(tracing_subscriber::fmt::time::ChronoLocal::new("%H:%M:%S".into()))
        .with_filter(filter);
    let file = tracing_subscriber::fmt::layer()
        .with_writer(FileWriter)
        .with_ansi(false)
        .with_target(false)
        .with_timer(tracing_subscriber::fmt::time::ChronoLocal::rfc_3339())
        .with_filter(EnvFilter::new("info,tb=debug"));
    let _ = tracing_subscriber::registry().with(stderr).with(file).try_init();
}

/// Sends the log to `path` (appending) from now on.
pub fn attach_supervisor_log(path: &Path) -> anyhow::Result<()> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| anyhow::anyhow!("failed to open `{}`: {e}", path.display()))?;
    *SUPERVISOR_LOG.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
    Ok(())
}

/// Stops writing the supervisor log.
pub fn detach_supervisor_log() {
    *SUPERVISOR_LOG.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// Where one formatted event goes.
#[derive(Clone, Copy)]
enum Sink {
    /// stderr, above the progress bars.
    Stderr,
    /// The batch's `supervisor.log`, once there is one.
    SupervisorLog,
}

struct StderrWriter;

impl<'a> MakeWriter<'a> for StderrWriter {
    type Writer = Event;
    fn make_writer(&'a self) -> Self::Writer {
        Event(Vec::new(), Sink::Stderr)
    }
}

struct FileWriter;

impl<'a> MakeWriter<'a> for FileWriter {
    type Writer = Event;
    fn make_writer(&'a self) -> Self::Writer {
        Event(Vec::new(), Sink::SupervisorLog)
    }
}

/// Buffers one event and writes it whole when dropped, so that lines of
/// concurrent events never interleave.
pub struct Event(Vec<u8>, Sink);

impl Write for Event {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        let bytes = std::mem::take(&mut self.0);
        let text = String::from_utf8_lossy(&bytes);
        match self.1 {
            Sink::Stderr => {
                let shown = sanitize::text(&text, Policy::TERMINAL.with_colors(COLORS.load(Ordering::Relaxed)));
                crate::progress::above_bars(|| {
                    let _ = std::io::stderr().write_all(shown.as_bytes());
                })
            }
            Sink::SupervisorLog => {
                if let Some(f) = SUPERVISOR_LOG.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                    let shown = sanitize::text(&text, Policy::FILE);
                    // A full disk must not take the supervisor down with it.
                    let _ = f.write_all(shown.as_bytes());
                }
            }
        }
    }
}
