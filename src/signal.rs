//! The signals a supervisor (or `tb exec` on a node) stops on: Ctrl-C and
//! SIGTERM, as one stream. [`Signals::none`] never fires, for tests and
//! for callers that must not react to signals.
//!
//! A listener hears only the signals that come after it was made: one that
//! came before is lost to it. So a caller that listens before a batch
//! starts (`tb watch`) hands its own listener to the dispatcher, a clone
//! of the one stream: a signal at any moment reaches whoever listens next.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use tokio::signal::unix::Signal;

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

/// Where signals come from. Clones share one stream: each signal is
/// received once, by the clone that asks first (one receives at a time).
#[derive(Clone)]
pub struct Signals {
    unix: Option<Arc<Mutex<(Signal, Signal)>>>,
}

impl fmt::Debug for Signals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.unix.is_some() {
            "Signals"
        } else {
            "Signals::none"
        })
    }
}

impl Signals {
    /// SIGINT and SIGTERM of this process, from now on (they no longer end
    /// it). Needs a tokio runtime.
    pub fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        let streams = (signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?);
        Ok(Signals {
            unix: Some(Arc::new(Mutex::new(streams))),
        })
    }

    /// Signals that never come.
    pub fn none() -> Signals {
        Signals { unix: None }
    }

    /// The next signal (one that came since the last was received, at once).
    pub async fn recv(&mut self) -> SignalEvent {
        let Some(unix) = &self.unix else {
            return std::future::pending().await;
        };
        // Locked only while polled, never across an await.
        std::future::poll_fn(|cx| {
            let mut streams = unix.lock().unwrap_or_else(|e| e.into_inner());
            let (int, term) = &mut *streams;
            if int.poll_recv(cx).is_ready() {
                Poll::Ready(SignalEvent::Interrupt)
            } else if term.poll_recv(cx).is_ready() {
                Poll::Ready(SignalEvent::Terminate)
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// A signal that came and was not received yet, if any.
    pub fn pending(&mut self) -> Option<SignalEvent> {
        futures_util::FutureExt::now_or_never(self.recv())
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
        assert_eq!(s.pending(), None);
    }
}
