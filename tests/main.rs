//! Integration tests: the real `tb` binary against the real Docker engine,
//! with the `tb-base:bookworm` image (`make base-image`).

mod backends;
mod board;
mod cli;
mod common;
mod compare;
mod concurrent;
mod deploy;
mod engine;
mod faults;
mod fuzz;
mod gpu;
mod image;
mod interrupt;
mod mlflow;
mod output;
mod prune;
mod report;
mod retry;
mod run;
mod secrets;
mod setup;
mod slurm;
mod sources;
mod sweep;
mod trainer;
mod validate;
mod watch;
