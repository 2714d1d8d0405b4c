//! `tlsrpt rejected`: the inputs the receivers, the importer and the transformer refused
//! (kept, bytes and reason, in `DATA_DIR/rejected/`), and replaying them after a fix.
//!
//! Replay decodes the kept bytes again with this build of tlsrpt; what passes now is
//! published as if it had just arrived by its original transport (same arrival time, same
//! remote address), and its two files move to `rejected/replayed/`: out of the listing, but
//! not deleted. Publishing comes before the move, so a crash between the two replays the
//! input again next time, and the dedup makes that harmless.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde::Serialize;
use tlsrpt_bus::Producer;
use tlsrpt_bus::dead_letter::{DeadLetters, Rejection};
use tlsrpt_ingest::publish::{message_for, sha256_hex};
use tlsrpt_schemas::{Envelope, ReceivedReport, Transport};

use crate::data_dir::{DEFAULT, DataDir};
use crate::import::{finish_writing, init_logging, known_report_uids, runtime, shorten};
use crate::input::DecodeArgs;

/// What was refused (HTTP, mail, import), and replaying it after a fix.
///
/// Every refused input is kept in DATA_DIR/rejected/ as two files: ID.bin (the bytes as they
/// arrived) and ID.json (when, from where, by which transport, and why).
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// List the refused inputs, oldest first: ID, when, transport, reason code, size and
    /// message.
    List(ListArgs),
    /// Decode refused inputs again and publish those this tlsrpt accepts.
    ///
    /// Those that pass are written as if they had just arrived by their original transport
    /// (and arrival time), then moved to DATA_DIR/rejected/replayed/. Those still refused
    /// stay, and the current reason is shown. An input of which only a part was kept (it was
    /// over a size cap) cannot be replayed.
    ///
    /// Works whether or not a `tlsrpt up` runs on the data directory, as `tlsrpt import`
    /// does. Exit status: 0 when every input given was replayed, 1 when some were not, 2 on
    /// an error.
    Replay(ReplayArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    /// The data directory (the one `tlsrpt up` uses).
    #[arg(long, env = "TLSRPT_DATA_DIR", default_value = DEFAULT, value_name = "DIR")]
    data_dir: PathBuf,
    /// `text` for people, `json` (an array of objects with every recorded field) for
    /// programs.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ReplayArgs {
    /// The data directory (the one `tlsrpt up` uses).
    #[arg(long, env = "TLSRPT_DATA_DIR", default_value = DEFAULT, value_name = "DIR")]
    data_dir: PathBuf,
    /// Replay every input listed by `tlsrpt rejected list`.
    #[arg(long, conflicts_with = "ids")]
    all: bool,
    #[command(flatten)]
    decode: DecodeArgs,
    /// The IDs to replay (as `tlsrpt rejected list` shows them).
    #[arg(value_name = "ID", required_unless_present = "all")]
    ids: Vec<String>,
}

pub(crate) fn run(command: &Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::List(args) => list(args),
        Command::Replay(args) => {
            init_logging();
            runtime()?.block_on(replay(args))
        }
    }
}

/// The dead-letter area of `data`, or `None` when nothing was ever refused there.
fn open_area(data: &DataDir) -> anyhow::Result<Option<DeadLetters>> {
    if !data.root().is_dir() {
        bail!(
            "there is no data directory at {}; give --data-dir",
            data.root().display()
        );
    }
    let dir = data.rejected();
    if !dir.is_dir() {
        return Ok(None);
    }
    let area = DeadLetters::open(&dir)
        .with_context(|| format!("cannot open the dead-letter area {}", dir.display()))?;
    Ok(Some(area))
}

fn kept(area: &DeadLetters) -> anyhow::Result<Vec<(String, Rejection)>> {
    area.list()
        .with_context(|| format!("cannot list {}", area.dir().display()))
}

/// One rejection as `--format json` writes it.
#[derive(Serialize)]
struct Listed<'a> {
    id: &'a str,
    #[serde(flatten)]
    rejection: &'a Rejection,
}

fn list(args: &ListArgs) -> anyhow::Result<ExitCode> {
    let data = DataDir::new(&args.data_dir);
    let rejections = match open_area(&data)? {
        Some(area) => kept(&area)?,
        None => Vec::new(),
    };
    let mut out = String::new();
    if args.format == "json" {
        let listed: Vec<Listed<'_>> = rejections
            .iter()
            .map(|(id, rejection)| Listed { id, rejection })
            .collect();
        out = serde_json::to_string_pretty(&listed)?;
        out.push('\n');
    } else if rejections.is_empty() {
        out.push_str(&format!(
            "nothing refused is kept in {}\n",
            data.rejected().display()
        ));
    } else {
        let id_width = rejections.iter().map(|(id, _)| id.len()).max().unwrap_or(2);
        out.push_str(&format!(
            "{:<id_width$}  {:<20}  {:<9}  {:<22}  {:>10}  MESSAGE\n",
            "ID", "WHEN (UTC)", "TRANSPORT", "CODE", "BYTES"
        ));
        for (id, rejection) in &rejections {
            let bytes = if rejection.complete {
                rejection.bytes.to_string()
            } else {
                format!("{}*", rejection.bytes)
            };
            out.push_str(&format!(
                "{id:<id_width$}  {:<20}  {:<9}  {:<22}  {bytes:>10}  {}\n",
                rejection.received_at.format("%Y-%m-%d %H:%M:%S"),
                rejection.transport,
                rejection.code,
                shorten(&rejection.message, 100),
            ));
        }
        out.push_str(&format!(
            "{} refused inputs in {}",
            rejections.len(),
            data.rejected().display()
        ));
        if rejections.iter().any(|(_, r)| !r.complete) {
            out.push_str("; * only a part (or none) of the input was kept");
        }
        out.push_str(
            "\nreplay them after a fix with: tlsrpt rejected replay --all (or give IDs)\n",
        );
    }
    let stdout = std::io::stdout();
    let mut stdout = stdout.lock();
    std::io::Write::write_all(&mut stdout, out.as_bytes())?;
    std::io::Write::flush(&mut stdout)?;
    Ok(ExitCode::SUCCESS)
}

/// What became of one replayed input.
enum Outcome {
    Replayed {
        report_uid: String,
    },
    /// Already in the tables: nothing to write; moved like a replayed one.
    AlreadyThere {
        report_uid: String,
    },
    StillRefused {
        code: String,
        error: String,
    },
    NotReplayable(String),
}

async fn replay(args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    let data = DataDir::new(&args.data_dir);
    let Some(area) = open_area(&data)? else {
        if args.all {
            println!(
                "nothing to replay: nothing refused is kept in {}",
                data.rejected().display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        bail!("nothing refused is kept in {}", data.rejected().display());
    };
    let all = kept(&area)?;
    let chosen: Vec<&(String, Rejection)> = if args.all {
        all.iter().collect()
    } else {
        let mut chosen = Vec::with_capacity(args.ids.len());
        for id in &args.ids {
            // Only IDs from the listing: an ID is also a file name.
            match all.iter().find(|(known, _)| known == id) {
                Some(entry) => chosen.push(entry),
                None => bail!(
                    "no refused input {id} in {} (see tlsrpt rejected list)",
                    data.rejected().display()
                ),
            }
        }
        chosen
    };
    if chosen.is_empty() {
        println!(
            "nothing to replay: nothing refused is kept in {}",
            data.rejected().display()
        );
        return Ok(ExitCode::SUCCESS);
    }

    let writer = data.bus_writer().await?;
    let mut seen = known_report_uids(&data).await?;
    let mut decoder = args.decode.decoder();
    let replayed_dir = area.dir().join("replayed");
    let mut text = String::new();
    let (mut replayed, mut not_replayed) = (0usize, 0usize);
    for (id, rejection) in chosen {
        let outcome = if !rejection.complete {
            Outcome::NotReplayable(
                "only a part of the input was kept (it was over a size cap or could not be \
                 read); have the sender send it again, or import the original file"
                    .to_owned(),
            )
        } else {
            let bytes = area
                .bytes(id)
                .with_context(|| format!("cannot read the kept bytes of {id}"))?;
            match decoder.decode_any(&bytes) {
                Err(err) => Outcome::StillRefused {
                    code: err.code().to_owned(),
                    error: err.to_string(),
                },
                Ok(decoded) => {
                    let report_uid = decoded.decoded.report.report_uid();
                    let new = tlsrpt_schemas::dedup::report_uid_value_of_hex(&report_uid)
                        .is_none_or(|uid| seen.insert(uid));
                    if new {
                        let transport =
                            Transport::parse(&rejection.transport).unwrap_or(Transport::Import);
                        let received = ReceivedReport {
                            envelope: Envelope {
                                transport,
                                received_at: rejection.received_at,
                                // As each receiver does: only mail carries the header.
                                submitter_header: match transport {
                                    Transport::Https => None,
                                    Transport::Smtp | Transport::Import => {
                                        decoded.email.and_then(|email| email.report_submitter)
                                    }
                                },
                                // Not verified again: the signing key may have rotated since.
                                dkim: None,
                            },
                            report: decoded.decoded.report,
                            raw_json: decoded.decoded.raw_json.into(),
                        };
                        let remote = rejection
                            .remote_addr
                            .as_deref()
                            .and_then(|a| a.parse::<SocketAddr>().ok());
                        let (message, _) = message_for(&received, remote, &sha256_hex(&bytes));
                        writer
                            .send(message)
                            .await
                            .with_context(|| format!("cannot publish {id}; nothing was moved"))?;
                        Outcome::Replayed { report_uid }
                    } else {
                        Outcome::AlreadyThere { report_uid }
                    }
                }
            }
        };
        match &outcome {
            Outcome::Replayed { .. } | Outcome::AlreadyThere { .. } => {
                move_to(area.dir(), &replayed_dir, id)
                    .with_context(|| format!("{id} was published but cannot be moved"))?;
                replayed += 1;
            }
            Outcome::StillRefused { .. } | Outcome::NotReplayable(_) => not_replayed += 1,
        }
        text.push_str(&match outcome {
            Outcome::Replayed { report_uid } => {
                format!("{id}: replayed (report_uid {report_uid})\n")
            }
            Outcome::AlreadyThere { report_uid } => {
                format!("{id}: already in the tables (report_uid {report_uid}); moved\n")
            }
            Outcome::StillRefused { code, error } => {
                format!("{id}: still refused: {code}: {}\n", shorten(&error, 200))
            }
            Outcome::NotReplayable(why) => format!("{id}: cannot replay: {why}\n"),
        });
    }
    text.push_str(&format!(
        "{replayed} replayed (moved to {}), {not_replayed} still refused\n",
        replayed_dir.display()
    ));
    finish_writing(&data, writer, None, &mut text).await?;
    print!("{text}");
    Ok(if not_replayed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Moves the two files of rejection `id` from `dir` to `to`, the record first: once it is
/// gone the listing no longer shows the rejection, and a `.bin` left behind by a crash
/// between the two renames promises nothing.
fn move_to(dir: &Path, to: &Path, id: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for name in [format!("{id}.json"), format!("{id}.bin")] {
        std::fs::rename(dir.join(&name), to.join(&name))?;
    }
    for dir in [dir, to] {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
