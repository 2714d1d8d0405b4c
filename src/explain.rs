//! placeholder until the explain renderer lands
use std::process::ExitCode;
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    path: String,
}
pub(crate) fn run(_args: &Args) -> anyhow::Result<ExitCode> {
    Ok(ExitCode::SUCCESS)
}
