//! `tlsrpt sql`: one SQL statement over the tables, answered in the terminal.
//!
//! Reads the Parquet files directly (read-only), so it works whether or not a `tlsrpt up`
//! is running on the directory, and sees what the transformer has written so far.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use tlsrpt_query::{OutputFormat, QueryEngine, QueryOptions, write_result};

use crate::data_dir::{DEFAULT, DataDir};

/// Answer one SQL query over the reports, policies and failures tables.
///
/// The tables and their columns are described in the README ("The tables"). Only queries
/// are answered: statements that would change data or read other files are refused.
///
/// Example: tlsrpt sql "SELECT policy_domain, result_type, sum(failed_session_count) AS
/// sessions FROM failures GROUP BY 1, 2 ORDER BY 3 DESC"
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The data directory of `tlsrpt up` or `tlsrpt import`.
    #[arg(long, env = "TLSRPT_DATA_DIR", default_value = DEFAULT, value_name = "DIR")]
    data_dir: PathBuf,
    /// Output: `table` for people, `csv`, `json` (an array of rows), or `arrow` (an Arrow
    /// IPC stream, for programs).
    #[arg(long, default_value = "table", value_parser = ["table", "csv", "json", "arrow"])]
    format: String,
    /// The SQL statement.
    sql: String,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let data = DataDir::existing(&args.data_dir)?;
    let format = OutputFormat::from_name(&args.format).context("unknown --format")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let result = runtime.block_on(async {
        let engine = QueryEngine::new(data.tables(), QueryOptions::default())?;
        engine.sql(&args.sql).await
    });
    let result = match result {
        Ok(result) => result,
        Err(err) => {
            eprintln!("tlsrpt sql: {err}");
            return Ok(ExitCode::from(1));
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    write_result(&result, format, &mut out)?;
    std::io::Write::flush(&mut out)?;
    Ok(ExitCode::SUCCESS)
}
