//! The process exit status, the one place it is decided (docs/cli.md).

/// What `tb` exits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Every job succeeded (or the command did what was asked).
    Success = 0,
    /// At least one job did not succeed.
    JobsFailed = 1,
    /// The input or the system is invalid; nothing was started.
    Invalid = 2,
    /// `tb deploy`: the deployed model stays (the candidate is not better).
    Kept = 3,
    /// Interrupted (Ctrl-C or SIGTERM).
    Interrupted = 130,
}
