//! `tlsrpt explain`: one report in plain language for the domain owner.

use std::process::ExitCode;

use anyhow::Context;
use tlsrpt_schemas::explain::Explanation;

use crate::input::{DecodeArgs, read_input};

/// Explain a report: who reported, for which days, what failed, what it means and what to do.
///
/// PATH may be report JSON, gzip (`.json.gz`), zip, base64 of those, or the whole mail
/// (`.eml`); `-` reads standard input. Per policy it shows the success rate, then each failure
/// type with its count, the receiving MX hosts and sending IPs involved, the likely causes and
/// the fix, and finally what tlsrpt had to repair in the report. Exits 1 if the file is not a
/// report tlsrpt accepts (run `tlsrpt validate` for the details).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The report file; `-` for standard input.
    #[arg(value_name = "PATH")]
    path: String,

    /// Output: `text` for a terminal, `markdown` for tickets and mail, `json` for programs.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,

    #[command(flatten)]
    decode: DecodeArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Text,
    Markdown,
    Json,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let bytes = read_input(&args.path)?;
    let mut decoder = args.decode.decoder();
    let input = match decoder.decode_any(&bytes) {
        Ok(input) => input,
        Err(err) => {
            eprintln!(
                "tlsrpt: {} is not a report tlsrpt accepts: {err}",
                args.path
            );
            return Ok(ExitCode::from(1));
        }
    };
    let submitter = input
        .email
        .as_ref()
        .and_then(|headers| headers.report_submitter.as_deref());
    let explanation = Explanation::of(&input.decoded.report, submitter);
    let rendered = match args.format {
        Format::Text => explanation.to_text(),
        Format::Markdown => explanation.to_markdown(),
        Format::Json => {
            serde_json::to_string_pretty(&explanation).context("cannot serialise")? + "\n"
        }
    };
    print!("{rendered}");
    Ok(ExitCode::SUCCESS)
}
