//! `tb exec JOB_DIR`: run one job of a batch on this host, in one container.
//! What a Slurm job runs on its node; see `backend::slurm::node`.

use crate::cli::ExecArgs;
use crate::exit::Exit;

pub fn run(args: &ExecArgs) -> anyhow::Result<Exit> {
    crate::backend::slurm::node::run(&args.job_dir)
}
