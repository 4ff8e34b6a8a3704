//! Integration tests: the real `tb` binary against the real Docker engine,
//! with the `tb-base:bookworm` image (`make base-image`).

mod common;
mod gpu;
mod interrupt;
mod output;
mod run;
mod validate;
