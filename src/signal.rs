//! The signals a supervisor (or `tb exec` on a node) stops on: Ctrl-C and
//! SIGTERM, as one stream. [`Signals::none`] never fires, for tests and
//! for callers that must not react to signals.

use std::fmt;

/// A stop signal, by what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalEvent {
    /// SIGINT: Ctrl-C.
    Interrupt,
    /// SIGTERM: `tb cancel`, `kill`, `scancel`, a shutdown.
    Terminate,
}

impl fmt::Display for SignalEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SignalEvent::Interrupt => "interrupted",
            SignalEvent::Terminate => "terminated",
        })
    }
}

/// Where signals come from.
pub struct Signals {
    unix: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    /// SIGINT and SIGTERM of this process, from now on (they no longer end
    /// it). Needs a tokio runtime.
    pub fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            unix: Some((signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?)),
        })
    }

    /// Signals that never come.
    pub fn none() -> Signals {
        Signals { unix: None }
    }

    /// The next signal.
    pub async fn recv(&mut self) -> SignalEvent {
        match &mut self.unix {
            Some((int, term)) => tokio::select! {
                _ = int.recv() => SignalEvent::Interrupt,
                _ = term.recv() => SignalEvent::Terminate,
            },
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_signals_never_fire() {
        let mut s = Signals::none();
        let waited = tokio::time::timeout(std::time::Duration::from_millis(20), s.recv()).await;
        assert!(waited.is_err());
    }
}
