//! `tlsrpt rejected`: being written.

use std::process::ExitCode;

/// What the receivers refused (being written).
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// List refused inputs.
    List,
}

pub(crate) fn run(_command: &Command) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet")
}
