//! `tlsrpt import`: backfill (being written).

use std::path::PathBuf;
use std::process::ExitCode;

/// Import reports from files and folders (being written).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Files and folders.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

pub(crate) fn run(_args: &Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet")
}
