//! `tlsrpt validate`: does each file hold a report tlsrpt accepts, and with which quirks?

use std::process::ExitCode;

use serde::Serialize;
use tlsrpt_schemas::{Decoder, Warning};

use crate::input::{DecodeArgs, expand_paths, read_input};

/// Check report files: print OK with the quirks found, or why a file is refused.
///
/// Each PATH may be report JSON, gzip-compressed JSON (`.json.gz`), a zip archive, base64 of
/// those, or a whole mail message (`.eml`); the bytes decide, not the file name. A directory
/// means every file under it. `-` reads standard input. Exits 0 when every file is accepted, 1 when any is refused.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Files or directories to check; `-` for standard input.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<String>,

    /// Output: `text` for people, `json` (one array of results) for programs.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,

    #[command(flatten)]
    decode: DecodeArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

/// One file's outcome, as printed by `--format json`.
#[derive(Debug, Serialize)]
struct Outcome {
    path: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    report_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    organization_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    report_uid: Option<String>,
    warnings: Vec<Warning>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorOutcome>,
}

#[derive(Debug, Serialize)]
struct ErrorOutcome {
    /// A stable code: too_large, not_a_report, compression, json_syntax, invalid,
    /// no_report_in_message, io.
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
}

fn check(decoder: &mut Decoder, path: &str) -> Outcome {
    let mut outcome = Outcome {
        path: path.to_owned(),
        ok: false,
        report_id: None,
        organization_name: None,
        report_uid: None,
        warnings: Vec::new(),
        error: None,
    };
    let bytes = match read_input(path) {
        Ok(bytes) => bytes,
        Err(err) => {
            outcome.error = Some(ErrorOutcome {
                code: "io",
                message: format!("{err:#}"),
                path: None,
            });
            return outcome;
        }
    };
    match decoder.decode_any(&bytes) {
        Ok(input) => {
            let report = input.decoded.report;
            outcome.ok = true;
            outcome.report_uid = Some(report.report_uid());
            outcome.report_id = Some(report.report_id.into_owned());
            outcome.organization_name = Some(report.organization_name.into_owned());
            outcome.warnings = report.warnings;
        }
        Err(err) => {
            outcome.error = Some(ErrorOutcome {
                code: err.code(),
                message: err.to_string(),
                path: err.path().map(str::to_owned),
            });
        }
    }
    outcome
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let mut decoder = args.decode.decoder();
    let outcomes: Vec<Outcome> = expand_paths(&args.paths)
        .iter()
        .map(|path| check(&mut decoder, path))
        .collect();
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&outcomes)?),
        Format::Text => {
            for outcome in &outcomes {
                match &outcome.error {
                    None if outcome.warnings.is_empty() => println!("OK    {}", outcome.path),
                    None => {
                        let mut codes: Vec<&str> = Vec::new();
                        for warning in &outcome.warnings {
                            if !codes.contains(&warning.code.as_str()) {
                                codes.push(warning.code.as_str());
                            }
                        }
                        println!("OK    {}  warnings: {}", outcome.path, codes.join(", "));
                    }
                    Some(error) => println!("FAIL  {}  {}", outcome.path, error.message),
                }
            }
        }
    }
    let refused = outcomes.iter().filter(|o| !o.ok).count();
    if args.format == Format::Text && outcomes.len() > 1 {
        // On stderr, so that stdout stays one line per file for grep and scripts.
        eprintln!(
            "{} files: {} accepted, {refused} refused",
            outcomes.len(),
            outcomes.len() - refused
        );
    }
    let all_ok = refused == 0;
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
