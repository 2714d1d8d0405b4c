//! Logs of the long-running commands: to standard error, filtered by `TLSRPT_LOG`
//! (`info` by default; any `tracing` filter such as `tlsrpt_transform=debug`).

use std::io::IsTerminal;

pub(crate) fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TLSRPT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
