//! One module per subcommand: each turns its arguments into work and an
//! exit status.

pub mod batch;
pub mod board;
pub mod cancel;
pub mod clean;
pub mod completions;
pub mod deploy;
pub mod exec;
pub mod image;
pub mod logs;
pub mod ls;
pub mod mlflow_sync;
pub mod report;
pub mod resume;
pub mod retry;
pub mod status;
pub mod validate;
pub mod watch;
