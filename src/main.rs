//! # tlsrpt: the command line
//!
//! Parses the command line and hands each subcommand to a module that does the work with the
//! library crates; no report logic lives here (see `schemas/` for decoding and validation).
//!
//! - `validate`: [`validate`], is each file a report we accept, and with which quirks?
//! - `explain`: [`explain`], a report in plain language for the domain owner.

mod explain;
mod input;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc rather than the system allocator: decoding a report allocates a few dozen small
/// strings, and glibc's malloc cost a tenth of the decode-and-flatten time in the benches.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Receive, store and analyse SMTP TLS reports (TLS-RPT, RFC 8460).
///
/// Mail servers that cannot set up TLS with your MX hosts send daily JSON reports to the
/// address or URL in your `_smtp._tls` TXT record. tlsrpt reads those reports (JSON, gzip,
/// zip, or the whole mail), checks them, and explains them.
#[derive(Debug, Parser)]
#[command(name = "tlsrpt", version, about, long_about, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Validate(validate::Args),
    Explain(explain::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => validate::run(&args),
        Command::Explain(args) => explain::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("tlsrpt: {err:#}");
            ExitCode::from(2)
        }
    }
}
