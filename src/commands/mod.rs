//! One module per subcommand: each turns its arguments into work and an
//! exit status.

pub mod batch;
pub mod image;
pub mod logs;
pub mod report;
pub mod retry;
pub mod status;
pub mod validate;
