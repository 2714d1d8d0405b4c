//! `tlsrpt import`: backfill from files, mbox files and Maildir folders through the same bus
//! the receivers write to.
//!
//! The work is in three stages that run at once:
//! 1. the walk lists the files (a Maildir's `cur/` and `new/`, other folders recursively);
//! 2. `--jobs` threads read and decode them, one [`Decoder`] each (a decoder is costly to
//!    build and cheap to reuse), skip reports already in the tables or seen earlier in this
//!    import, and keep what they refuse in the dead-letter area, reason and bytes;
//! 3. one task publishes the accepted reports with many sends in flight: the embedded log
//!    groups concurrent appends into one fsync, where one send at a time would wait for an
//!    fsync per report (about 500 a second on this machine).
//!
//! The bus is the data directory's own when no `tlsrpt up` runs on it; then this process also
//! writes the Parquet files before it returns, so the tables answer at once. When `up` owns
//! the bus (the embedded log admits one process), the reports go through its append socket
//! and its transformer writes them. Either way two processes never write one log or one set
//! of tables.
//!
//! With `--kafka` the reports go to a Kafka topic instead, and the deployment's transformers
//! write them: this process runs none, does not open the data directory's log, and does not
//! read the tables to skip what is there (the transformers drop duplicates by `report_uid`).
//!
//! The helpers at the bottom (opening the bus, writing Parquet, the dedup set) serve
//! `tlsrpt rejected replay` too.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use chrono::Utc;
use futures::stream::{FuturesUnordered, StreamExt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tlsrpt_bus::dead_letter::{DeadLetters, Rejection};
use tlsrpt_bus::embedded::EmbeddedLog;
use tlsrpt_bus::{BusError, Message};
use tlsrpt_ingest::publish::{message_for, sha256_hex};
use tlsrpt_schemas::{Decoder, Envelope, ReceivedReport, Transport};
use tlsrpt_transform::{TransformOptions, TransformStats, Transformer, existing_report_uids};

use crate::data_dir::{BusWriter, DEFAULT, DataDir};
use crate::input::DecodeArgs;

/// Import reports from files and folders (backfill).
///
/// Each PATH is a report file (`.json`, `.json.gz`, zip, base64, or a whole mail `.eml`: the
/// bytes decide, not the name), an mbox file (a file starting with `From `: each message is
/// one input), a Maildir (a folder with `cur/` or `new/`: the messages in those), or any
/// other folder (everything under it, recursively; names starting with `.` are skipped, and
/// so are symbolic links to folders).
///
/// A report already in the tables, or met earlier in the same import, is counted as a
/// duplicate and not written again, so importing a folder twice is harmless. What is refused
/// is kept with the reason (`tlsrpt rejected list`).
///
/// It works whether or not a `tlsrpt up` runs on the data directory: without one, this
/// command writes the Parquet files itself before it returns; with one, the reports go
/// through it and it writes them. With --kafka the reports go to a Kafka topic, and the
/// transformers of that deployment write them.
///
/// Exit status: 0 when every input was accepted or a duplicate, 1 when something was
/// refused, 2 on an error.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The data directory (the one `tlsrpt up` uses).
    #[arg(long, env = "TLSRPT_DATA_DIR", default_value = DEFAULT, value_name = "DIR")]
    data_dir: PathBuf,
    /// Files decoded at once [default: the number of CPUs].
    #[arg(long, short = 'j', env = "TLSRPT_IMPORT_JOBS", value_name = "N")]
    jobs: Option<NonZeroUsize>,
    /// No progress bar (there is none either when standard error is not a terminal).
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Publish to Kafka through these bootstrap brokers, `host:port[,host:port...]`,
    /// instead of the data directory's log, each report once the brokers acknowledged it.
    /// No Parquet is written here: the deployment's transformers (`tlsrpt transform`,
    /// `tlsrpt up --kafka`) write the reports. The tables are not read either (there may be
    /// none on this machine), so reports already in them are not counted as duplicates here:
    /// the transformers drop them by report_uid. Refused inputs are still kept in
    /// DIR/rejected.
    #[arg(long, env = "TLSRPT_KAFKA", value_name = "BROKERS")]
    kafka: Option<String>,
    /// With --kafka: the topic reports go to [default: tlsrpt.reports].
    #[arg(long, env = "TLSRPT_TOPIC", value_name = "NAME")]
    topic: Option<String>,
    #[command(flatten)]
    decode: DecodeArgs,
    /// Files and folders.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    init_logging();
    let runtime = runtime()?;
    let summary = runtime.block_on(import(args))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    std::io::Write::write_all(&mut out, summary.text.as_bytes())?;
    std::io::Write::flush(&mut out)?;
    Ok(if summary.refused > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Accepted reports a decoding thread hands to the publisher at once: one wake-up of the
/// publisher and one log transaction for the lot. Sent one by one, 20,000 mails cost 1,700
/// commits of about a dozen reports and a wake-up per report.
const CHUNK: usize = 256;

/// Chunks in flight at once: enough to keep the log's writer busy (and the owner's socket
/// pipeline full) while the decoders go on.
const CHUNKS_IN_FLIGHT: usize = 16;

/// How long a report published with --kafka may wait for the brokers' acknowledgement. No
/// sender waits on the answer here: a broker pausing for a few seconds should slow the
/// backfill, not stop it.
const KAFKA_DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// What the import printed, and whether anything was refused (for the exit status).
struct Summary {
    text: String,
    refused: u64,
}

async fn import(args: &Args) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let data = DataDir::new(&args.data_dir);
    // Missing paths are typos: say so before touching anything.
    for path in &args.paths {
        std::fs::metadata(path).with_context(|| format!("cannot import {}", path.display()))?;
    }
    let writer = match args
        .kafka
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty())
    {
        Some(brokers) => {
            let topic = args
                .topic
                .as_deref()
                .unwrap_or(tlsrpt_bus::kafka::DEFAULT_TOPIC);
            BusWriter::Kafka(crate::kafka::producer(
                brokers,
                topic,
                KAFKA_DELIVERY_TIMEOUT,
            )?)
        }
        None if args.topic.is_some() => bail!(
            "--topic goes with --kafka (or TLSRPT_KAFKA); without it the reports go to the \
             data directory's log"
        ),
        None => data.bus_writer().await?,
    };
    let dead_letters = data.dead_letters()?;
    let seen = match &writer {
        // The tables are the deployment's, maybe not on this machine: its transformers
        // drop what they hold already.
        BusWriter::Kafka(_) => HashSet::new(),
        BusWriter::Owned(_) | BusWriter::Shared(_) => known_report_uids(&data).await?,
    };
    let parquet = match &writer {
        BusWriter::Owned(log) => Some(ParquetWriting::start(&data, log).await?),
        BusWriter::Shared(_) | BusWriter::Kafka(_) => None,
    };
    let kept_before = {
        let dead_letters = Arc::clone(&dead_letters);
        let listed = tokio::task::spawn_blocking(move || dead_letters.list()).await?;
        // Without the listing, refused files are kept again: untidy, not wrong.
        listed
            .unwrap_or_else(|err| {
                tracing::warn!("Cannot list the dead-letter area: {err}");
                Vec::new()
            })
            .into_iter()
            .filter(|(_, rejection)| rejection.complete)
            .map(|(_, rejection)| rejection.sha256)
            .collect()
    };
    let sources = {
        let paths = args.paths.clone();
        tokio::task::spawn_blocking(move || walk(&paths)).await?
    };

    let bar = progress_bar(sources.len() as u64, args.quiet);
    let decoder = args.decode.decoder();
    let max_input_bytes = MIN_INPUT_CAP.max(2 * decoder.options().max_decompressed_bytes as u64);
    let (publish, to_publish) = tokio::sync::mpsc::channel::<Vec<Message>>(CHUNKS_IN_FLIGHT);
    let importer = Arc::new(Importer {
        dead_letters,
        seen: Mutex::new(seen),
        kept: Mutex::new(kept_before),
        tally: Tally::default(),
        bar: bar.clone(),
        stop: AtomicBool::new(false),
        fatal: Mutex::new(None),
        max_input_bytes,
    });
    let jobs = args
        .jobs
        .or_else(|| std::thread::available_parallelism().ok())
        .map_or(1, NonZeroUsize::get);
    let decoding = {
        let importer = Arc::clone(&importer);
        let options = decoder.options();
        // The threads own the only senders: the channel closes when the last one is done,
        // and the publisher then drains what is in flight.
        tokio::task::spawn_blocking(move || {
            importer.decode_all(&sources, jobs, publish, || Decoder::new(options));
        })
    };
    let published = publish_all(&writer, to_publish, &importer.tally.accepted).await;
    if published.is_err() {
        // Nothing more can be written: let the decoding threads stop early.
        importer.stop.store(true, Ordering::Relaxed);
    }
    decoding.await.context("a decoding thread panicked")?;
    bar.finish_and_clear();
    let imported_in = started.elapsed();
    let tally = &importer.tally;
    let fatal = importer
        .fatal
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();

    let mut text = String::new();
    let inputs = tally.inputs.load(Ordering::Relaxed);
    let accepted = tally.accepted.load(Ordering::Relaxed);
    let duplicates = tally.duplicates.load(Ordering::Relaxed);
    let refused_by_code =
        std::mem::take(&mut *tally.refused.lock().unwrap_or_else(|e| e.into_inner()));
    let refused: u64 = refused_by_code.values().map(|r| r.count).sum();
    let seconds = imported_in.as_secs_f64();
    text.push_str(&format!(
        "imported {inputs} inputs from {} files in {seconds:.1} s ({:.0}/s): {accepted} accepted, \
         {duplicates} duplicates, {refused} refused\n",
        tally.files.load(Ordering::Relaxed),
        inputs as f64 / seconds.max(1e-6),
    ));
    if refused > 0 {
        text.push_str("refused, by reason:\n");
        for (code, refused) in &refused_by_code {
            text.push_str(&format!(
                "  {:>6} {code}, e.g. {}\n",
                refused.count,
                shorten(&refused.example, 160)
            ));
        }
        let kept_before = tally.kept_before.load(Ordering::Relaxed);
        let before = if kept_before > 0 {
            format!(" ({kept_before} of them were already there)")
        } else {
            String::new()
        };
        text.push_str(&format!(
            "the refused inputs are kept, bytes and reason, in {}{before}; see them with: \
             tlsrpt rejected list --data-dir {}\n",
            data.rejected().display(),
            data.root().display()
        ));
    }

    // A failure to publish or to keep a refusal ends the import; what was acknowledged
    // stays on the bus and is written to Parquet below (or by `up`).
    let failure = match (published, fatal) {
        (Err(err), _) => Some(anyhow!(err).context("the bus stopped taking reports")),
        (Ok(()), Some(err)) => Some(err),
        (Ok(()), None) => None,
    };
    let finish = finish_writing(&data, writer, parquet, &mut text).await;
    if let Some(err) = failure {
        eprint!("{text}");
        return Err(err.context(
            "the import stopped early; run it again once fixed (what was accepted is not \
             written twice)",
        ));
    }
    finish?;
    Ok(Summary { text, refused })
}

/// When this process owns the bus: waits for its transformer to write everything on the bus
/// to Parquet, closes the bus, and says so in `text`. When `up` owns it: says that `up`
/// writes the reports; on Kafka, that the deployment's transformers do.
pub(crate) async fn finish_writing(
    data: &DataDir,
    writer: BusWriter,
    parquet: Option<ParquetWriting>,
    text: &mut String,
) -> anyhow::Result<()> {
    match writer {
        BusWriter::Owned(log) => {
            // The log is shut down whether or not the writing worked.
            let written = async {
                let parquet = match parquet {
                    Some(parquet) => parquet,
                    None => ParquetWriting::start(data, &log).await?,
                };
                eprintln!("writing Parquet…");
                parquet.finish().await
            }
            .await;
            log.shutdown();
            let written = written?;
            text.push_str(&format!(
                "wrote {} reports to Parquet (the last files {:.1} s after the last report \
                 was read); ask with: tlsrpt sql --data-dir {} \"SELECT count(*) FROM reports\"\n",
                written.reports,
                written.tail.as_secs_f64(),
                data.root().display()
            ));
            if written.dead_lettered > 0 {
                text.push_str(&format!(
                    "{} messages on the bus could not become rows and were kept (tlsrpt \
                     rejected list)\n",
                    written.dead_lettered
                ));
            }
        }
        BusWriter::Shared(_) => text.push_str(&format!(
            "a running `tlsrpt up` owns {}: it writes these reports to Parquet (queryable once \
             its next flush is done, within seconds)\n",
            data.root().display()
        )),
        BusWriter::Kafka(producer) => {
            // What was counted was acknowledged already; this drains what an error left in
            // flight.
            let flushed =
                tokio::task::spawn_blocking(move || producer.flush(KAFKA_DELIVERY_TIMEOUT)).await?;
            if let Err(err) = flushed {
                tracing::warn!("{err}");
            }
            text.push_str(
                "published to Kafka: the deployment's transformers write these reports to \
                 Parquet, each once (those already in the tables are dropped there)\n",
            );
        }
    }
    Ok(())
}

/// What [`ParquetWriting`] did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Written {
    pub(crate) reports: u64,
    pub(crate) dead_lettered: u64,
    /// From [`ParquetWriting::finish`] to the last commit: what the writing added to the
    /// command's time.
    pub(crate) tail: Duration,
}

/// The transformer of a process that owns the bus (no `up` runs, so no other transformer
/// either), writing Parquet while the command still publishes: a backfill's reading and
/// its writing overlap instead of following one another (figures in BENCHMARKS.md).
/// Batches are written as in `up` (full, or a flush interval after their first report) and
/// the rest when [`finish`](Self::finish) is called.
pub(crate) struct ParquetWriting {
    stop: tokio::sync::oneshot::Sender<()>,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
    stats: Arc<TransformStats>,
}

impl ParquetWriting {
    /// Opens the tables (recovering an interrupted flush) and starts consuming.
    pub(crate) async fn start(data: &DataDir, log: &EmbeddedLog) -> anyhow::Result<Self> {
        let transformer = {
            let log = log.clone();
            let root = data.tables();
            let dead_letters = data.dead_letters()?;
            tokio::task::spawn_blocking(move || {
                Transformer::open(log, root, dead_letters, TransformOptions::default())
            })
            .await?
            .context("cannot open the tables")?
        };
        let stats = transformer.stats();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(async move {
            let stopped = async {
                // A dropped sender (the command failed) stops it too.
                let _ = stopped.await;
            };
            transformer.run(stopped).await.context(
                "cannot write the Parquet files; the reports are safe on the bus, and the next \
                 `tlsrpt up` or `tlsrpt import` on this directory writes them",
            )
        });
        Ok(Self {
            stop,
            running,
            stats,
        })
    }

    /// Call once nothing more is published: reads what is left on the bus, writes it,
    /// commits, and returns once every report is in the tables.
    pub(crate) async fn finish(self) -> anyhow::Result<Written> {
        let started = Instant::now();
        let _ = self.stop.send(());
        self.running
            .await
            .context("the Parquet writer panicked")??;
        Ok(Written {
            reports: self.stats.reports_written(),
            dead_lettered: self.stats.dead_lettered(),
            tail: started.elapsed(),
        })
    }
}

/// The `report_uid`s in the tables, as numbers
/// ([`tlsrpt_schemas::dedup::report_uid_value_of_hex`]). A compaction by a running `up` may
/// delete a file between listing and reading it: then list again.
pub(crate) async fn known_report_uids(data: &DataDir) -> anyhow::Result<HashSet<u128>> {
    let root = data.tables();
    tokio::task::spawn_blocking(move || {
        let mut attempt = 0;
        loop {
            match existing_report_uids(&root) {
                Ok(uids) => return Ok(uids),
                Err(_) if attempt < 3 => attempt += 1,
                Err(err) => {
                    return Err(anyhow!(err))
                        .with_context(|| format!("cannot read the tables in {}", root.display()));
                }
            }
        }
    })
    .await?
}

/// The runtime of `import` and `rejected replay`.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tlsrpt-import")
        .build()
        .context("cannot start the runtime")
}

/// Logs to standard error, `warn` and up unless `TLSRPT_LOG` says otherwise: the
/// transformer's routine `info` lines would only clutter a command's own output.
pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TLSRPT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

/// `text` on one line, at most `max` characters.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut short: String = one_line.chars().take(max.saturating_sub(1)).collect();
    short.push('…');
    short
}

fn progress_bar(files: u64, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(files), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed:>4} {wide_bar} {human_pos}/{human_len} files  {per_sec}  ETA {eta}  {msg}",
        )
        .expect("a valid template"),
    );
    bar
}

/// Sends every chunk from `chunks` with up to [`CHUNKS_IN_FLIGHT`] in flight, counting the
/// messages the bus acknowledged in `accepted`. Stops at the first bus error.
async fn publish_all(
    writer: &BusWriter,
    mut chunks: tokio::sync::mpsc::Receiver<Vec<Message>>,
    accepted: &AtomicU64,
) -> Result<(), BusError> {
    let mut in_flight = FuturesUnordered::new();
    let mut open = true;
    while open || !in_flight.is_empty() {
        tokio::select! {
            chunk = chunks.recv(), if open && in_flight.len() < CHUNKS_IN_FLIGHT => match chunk {
                Some(chunk) => in_flight.push(writer.send_all(chunk)),
                None => open = false,
            },
            Some(delivered) = in_flight.next() => {
                accepted.fetch_add(delivered?.len() as u64, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

/// Files smaller than this are always read whole; the cap is twice the decompressed cap when
/// that is larger (a mail's base64 is a third larger than what it carries).
const MIN_INPUT_CAP: u64 = 64 << 20;

/// One thing the walk found.
#[derive(Debug)]
enum Source {
    File(PathBuf),
    /// A folder or file that could not be listed or opened; refused with the reason.
    Unreadable(PathBuf, std::io::Error),
}

/// The files under `paths`, in a stable order (sorted within each folder).
fn walk(paths: &[PathBuf]) -> Vec<Source> {
    let mut out = Vec::new();
    for path in paths {
        // The paths given are taken as they are, hidden or not.
        if path.is_dir() {
            walk_dir(path, &mut out);
        } else {
            out.push(Source::File(path.clone()));
        }
    }
    out
}

fn is_maildir(dir: &Path) -> bool {
    dir.join("cur").is_dir() || dir.join("new").is_dir()
}

fn walk_dir(dir: &Path, out: &mut Vec<Source>) {
    if is_maildir(dir) {
        // `tmp/` holds deliveries in progress: a message is complete once in `new/`.
        for sub in ["cur", "new"] {
            let sub = dir.join(sub);
            if sub.is_dir() {
                list_dir(&sub, out, false);
            }
        }
    } else {
        list_dir(dir, out, true);
    }
}

fn list_dir(dir: &Path, out: &mut Vec<Source>, recurse: bool) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            out.push(Source::Unreadable(dir.to_path_buf(), err));
            return;
        }
    };
    let mut entries: Vec<_> = entries
        .filter_map(|entry| match entry {
            Ok(entry) => Some(entry),
            Err(err) => {
                out.push(Source::Unreadable(dir.to_path_buf(), err));
                None
            }
        })
        .filter(|entry| !entry.file_name().to_string_lossy().starts_with('.'))
        .collect();
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => {
                if recurse {
                    walk_dir(&path, out);
                }
            }
            // A link to a folder is not followed (it could lead back up); one to a file is.
            Ok(kind) if kind.is_symlink() && path.is_dir() => {}
            Ok(_) => out.push(Source::File(path)),
            Err(err) => out.push(Source::Unreadable(path, err)),
        }
    }
}

/// Counts, shared by the decoding threads and the publisher.
#[derive(Debug, Default)]
struct Tally {
    files: AtomicU64,
    inputs: AtomicU64,
    duplicates: AtomicU64,
    /// Acknowledged by the bus.
    accepted: AtomicU64,
    /// Refused inputs whose bytes were in the dead-letter area already.
    kept_before: AtomicU64,
    /// Per error code.
    refused: Mutex<BTreeMap<String, Refused>>,
}

#[derive(Debug, Default)]
struct Refused {
    count: u64,
    /// The first one's message.
    example: String,
}

/// What the decoding threads share.
#[derive(Debug)]
struct Importer {
    dead_letters: Arc<DeadLetters>,
    /// `report_uid`s in the tables or met earlier in this import.
    seen: Mutex<HashSet<u128>>,
    /// SHA-256 of the inputs in the dead-letter area: importing a folder again must not
    /// keep its refused files again.
    kept: Mutex<HashSet<String>>,
    tally: Tally,
    bar: ProgressBar,
    /// Set when the import cannot go on (the bus stopped, a refusal could not be kept).
    stop: AtomicBool,
    fatal: Mutex<Option<anyhow::Error>>,
    max_input_bytes: u64,
}

/// Where an input came from, for messages: the file, or `file#n` for the n-th message
/// (1-based) of an mbox.
struct Origin<'a> {
    path: &'a Path,
    message: Option<usize>,
}

impl std::fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.message {
            Some(n) => write!(f, "{}#{n}", self.path.display()),
            None => write!(f, "{}", self.path.display()),
        }
    }
}

/// Why a thread stops.
struct Stop;

/// Where a decoding thread hands accepted reports to the publisher, [`CHUNK`] at a time.
struct Publish {
    sender: tokio::sync::mpsc::Sender<Vec<Message>>,
    chunk: Vec<Message>,
}

impl Publish {
    fn new(sender: tokio::sync::mpsc::Sender<Vec<Message>>) -> Self {
        Self {
            sender,
            chunk: Vec::with_capacity(CHUNK),
        }
    }

    fn push(&mut self, message: Message) -> Result<(), Stop> {
        self.chunk.push(message);
        if self.chunk.len() >= CHUNK {
            self.flush()
        } else {
            Ok(())
        }
    }

    /// Hands over what is collected. Fails only when the publisher has stopped (the bus
    /// failed): it says why.
    fn flush(&mut self) -> Result<(), Stop> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK));
        self.sender.blocking_send(chunk).map_err(|_| Stop)
    }
}

impl Importer {
    /// Decodes every source on `jobs` threads, each taking the next source when done.
    fn decode_all(
        &self,
        sources: &[Source],
        jobs: usize,
        publish: tokio::sync::mpsc::Sender<Vec<Message>>,
        decoder: impl Fn() -> Decoder + Sync,
    ) {
        let next = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..jobs.max(1) {
                let mut publish = Publish::new(publish.clone());
                let (next, decoder) = (&next, &decoder);
                scope.spawn(move || {
                    let mut decoder = decoder();
                    while !self.stop.load(Ordering::Relaxed) {
                        let Some(source) = sources.get(next.fetch_add(1, Ordering::Relaxed)) else {
                            break;
                        };
                        let result = self.source(&mut decoder, &mut publish, source);
                        self.tally.files.fetch_add(1, Ordering::Relaxed);
                        self.bar.inc(1);
                        if result.is_err() {
                            self.stop.store(true, Ordering::Relaxed);
                        }
                    }
                    if publish.flush().is_err() {
                        self.stop.store(true, Ordering::Relaxed);
                    }
                });
            }
        });
    }

    fn source(
        &self,
        decoder: &mut Decoder,
        publish: &mut Publish,
        source: &Source,
    ) -> Result<(), Stop> {
        let path = match source {
            Source::File(path) => path,
            Source::Unreadable(path, err) => {
                let origin = Origin {
                    path,
                    message: None,
                };
                return self.unreadable(&origin, err, 0);
            }
        };
        let origin = Origin {
            path,
            message: None,
        };
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(err) => return self.unreadable(&origin, &err, 0),
        };
        let size = file.metadata().map_or(0, |m| m.len());
        let mut reader = BufReader::with_capacity(64 << 10, file);
        let is_mbox = match reader.fill_buf() {
            Ok(head) => head.starts_with(b"From "),
            Err(err) => return self.unreadable(&origin, &err, size),
        };
        if is_mbox {
            // One thread per mbox: its messages are found in order, and splitting them
            // across threads would cost a copy each for little gain.
            let messages = mail_parser::mailbox::mbox::MessageIterator::new(reader);
            for (n, message) in messages.enumerate() {
                let origin = Origin {
                    path,
                    message: Some(n + 1),
                };
                match message {
                    Ok(message) => {
                        self.input(decoder, publish, &origin, message.unwrap_contents())?
                    }
                    Err(err) => return self.unreadable(&origin, &err, size),
                }
                if self.stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            return Ok(());
        }
        if size > self.max_input_bytes {
            return self.refuse(
                &origin,
                &[],
                Refusal {
                    code: "too_large",
                    error: format!(
                        "{size} bytes, more than the {} read from one file (a report is never \
                         that large; raise --max-decompressed-bytes if it is)",
                        self.max_input_bytes
                    ),
                    path: None,
                    bytes: usize::try_from(size).unwrap_or(usize::MAX),
                    complete: false,
                },
            );
        }
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        if let Err(err) = reader
            .take(self.max_input_bytes + 1)
            .read_to_end(&mut bytes)
        {
            return self.unreadable(&origin, &err, size);
        }
        self.input(decoder, publish, &origin, bytes)
    }

    /// Decodes one input; publishes it unless it is a duplicate, keeps it if refused.
    fn input(
        &self,
        decoder: &mut Decoder,
        publish: &mut Publish,
        origin: &Origin<'_>,
        bytes: Vec<u8>,
    ) -> Result<(), Stop> {
        self.tally.inputs.fetch_add(1, Ordering::Relaxed);
        // The message is made while the report's text is still borrowed from the decoded
        // JSON: copying it out first would be most of the decode's allocations.
        let decoded = decoder.decode_any_with(&bytes, |decoded, mail_headers| {
            let uid = decoded.report.report_uid_value();
            let first = self
                .seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(uid);
            if !first {
                return None;
            }
            let received = ReceivedReport {
                envelope: Envelope {
                    transport: Transport::Import,
                    received_at: Utc::now(),
                    submitter_header: mail_headers.and_then(|email| email.report_submitter),
                    // Imported mail is not verified: its signing keys may be long rotated.
                    dkim: None,
                },
                report: decoded.report,
                raw_json: decoded.raw_json.into(),
            };
            Some(message_for(&received, None, &sha256_hex(&bytes)).0)
        });
        match decoded {
            Ok(Some(message)) => publish.push(message),
            Ok(None) => {
                self.tally.duplicates.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(err) => {
                let refusal = Refusal {
                    code: err.code(),
                    error: err.to_string(),
                    path: err.path().map(str::to_owned),
                    bytes: bytes.len(),
                    complete: true,
                };
                self.refuse(origin, &bytes, refusal)
            }
        }
    }

    fn unreadable(&self, origin: &Origin<'_>, err: &std::io::Error, size: u64) -> Result<(), Stop> {
        self.refuse(
            origin,
            &[],
            Refusal {
                code: "unreadable",
                error: format!("cannot read: {err}"),
                path: None,
                bytes: usize::try_from(size).unwrap_or(usize::MAX),
                complete: false,
            },
        )
    }

    /// Keeps a refused input (bytes and reason) and counts it. Not being able to keep it
    /// stops the import: going on would refuse inputs without a trace.
    fn refuse(&self, origin: &Origin<'_>, kept: &[u8], refusal: Refusal) -> Result<(), Stop> {
        let message = format!("{origin}: {}", refusal.error);
        let rejection = Rejection {
            received_at: Utc::now(),
            transport: Transport::Import.as_str().to_owned(),
            remote_addr: None,
            code: refusal.code.to_owned(),
            message: message.clone(),
            path: refusal.path,
            bytes: refusal.bytes,
            complete: refusal.complete,
            sha256: sha256_hex(kept),
        };
        let known = refusal.complete
            && !self
                .kept
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(rejection.sha256.clone());
        if known {
            self.tally.kept_before.fetch_add(1, Ordering::Relaxed);
        } else if let Err(err) = self.dead_letters.keep(kept, &rejection) {
            let err = anyhow!(err).context(format!(
                "cannot keep the refused input {origin} in {}",
                self.dead_letters.dir().display()
            ));
            self.fatal
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(err);
            return Err(Stop);
        }
        let mut refused = self.tally.refused.lock().unwrap_or_else(|e| e.into_inner());
        let entry = refused.entry(refusal.code.to_owned()).or_default();
        if entry.count == 0 {
            entry.example = message;
        }
        entry.count += 1;
        Ok(())
    }
}

/// Why one input was refused.
struct Refusal {
    code: &'static str,
    error: String,
    path: Option<String>,
    /// The input's size (even when nothing of it is kept).
    bytes: usize,
    /// Whether the bytes kept are all of it.
    complete: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorten_keeps_one_line() {
        assert_eq!(shorten("a\nb", 10), "a b");
        assert_eq!(shorten("abcdef", 4), "abc…");
    }

    #[test]
    fn the_walk_reads_maildirs_and_skips_hidden_names() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for path in [
            "a/b.json",
            "a/.hidden.json",
            "m/cur/1",
            "m/new/2",
            "m/tmp/3",
            ".h/x",
        ] {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, b"x").unwrap();
        }
        let found: Vec<String> = walk(&[root.to_path_buf()])
            .iter()
            .map(|s| match s {
                Source::File(p) => p.strip_prefix(root).unwrap().display().to_string(),
                Source::Unreadable(p, e) => panic!("{}: {e}", p.display()),
            })
            .collect();
        assert_eq!(found, ["a/b.json", "m/cur/1", "m/new/2"]);
    }
}
