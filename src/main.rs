//! # tlsrpt: the command line
//!
//! Parses the command line and hands each subcommand to a module that does the work with the
//! library crates; no report logic lives here (see `schemas/` for decoding and validation).
//!
//! - `up`: [`up`], the receivers, the transformer and the SQL service in one process.
//! - `ingest`: [`ingest`], the receivers alone, publishing to Kafka ([`receivers`] is shared,
//!   and so is [`kafka`], which builds the Kafka clients from the settings).
//! - `transform`: [`transform`], a consumer-group member writing the tables from Kafka.
//! - `query`: [`query`], the SQL service alone, over tables `transform` writes.
//! - `import`: [`import`], backfill from files, mbox and Maildir through the same bus.
//! - `sql`: [`sql`], one query over the tables in the terminal.
//! - `rejected`: [`rejected`], what the receivers refused, and replaying it after a fix.
//! - `validate`: [`validate`], is each file a report we accept, and with which quirks?
//! - `explain`: [`explain`], a report in plain language for the domain owner.

mod alerts;
mod data_dir;
mod explain;
mod import;
mod ingest;
mod input;
mod kafka;
mod logging;
mod query;
mod receivers;
mod rejected;
mod settings;
mod sql;
mod token;
mod transform;
mod up;
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
/// address or URL in your `_smtp._tls` TXT record. tlsrpt receives those reports (HTTPS and
/// mail), checks them, stores them as Parquet tables, answers SQL over them, and explains
/// each one in plain language.
///
/// Start with `tlsrpt up`.
#[derive(Debug, Parser)]
#[command(name = "tlsrpt", version, about, long_about, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Up(Box<up::Args>),
    Ingest(Box<ingest::Args>),
    Transform(Box<transform::Args>),
    Query(Box<query::Args>),
    Import(import::Args),
    Sql(sql::Args),
    #[command(subcommand)]
    Rejected(rejected::Command),
    #[command(subcommand)]
    Token(token::Command),
    Validate(validate::Args),
    Explain(explain::Args),
    #[command(subcommand)]
    Alerts(alerts::Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => up::run(*args),
        Command::Ingest(args) => ingest::run(*args),
        Command::Transform(args) => transform::run(*args),
        Command::Query(args) => query::run(*args),
        Command::Import(args) => import::run(&args),
        Command::Sql(args) => sql::run(&args),
        Command::Rejected(command) => rejected::run(&command),
        Command::Token(command) => token::run(&command),
        Command::Validate(args) => validate::run(&args),
        Command::Explain(args) => explain::run(&args),
        Command::Alerts(command) => alerts::run(&command),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("tlsrpt: {err:#}");
            ExitCode::from(2)
        }
    }
}
