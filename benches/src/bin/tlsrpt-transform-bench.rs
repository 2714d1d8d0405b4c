//! `tlsrpt-transform-bench`: the transformer alone, from a full bus to committed Parquet
//! files, timed.
//!
//! Setup (not timed): generate `--reports` reports, decode each as a receiver would and
//! append it to a fresh embedded log in a temporary directory, or with `--kafka` produce it to
//! a topic of a Kafka-protocol broker this program starts (tansu, in-memory storage, as the
//! tests use; a process of its own, so its CPU is not counted). Timed: open a transformer
//! with `tlsrpt up`'s defaults (compaction on) and run it until every offset is committed, as
//! `tlsrpt import` does. Prints one JSON line: reports per second of wall time, and the
//! process's CPU time per report (the other threads are idle while the transformer runs, so
//! that is the transformer's cost, librdkafka's fetching and decompression included with
//! `--kafka`): `reports_per_cpu_second` is what one instance does on one core.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use futures::stream::{FuturesUnordered, StreamExt};
use tlsrpt_benches::generator::{Generator, GeneratorConfig};
use tlsrpt_bus::dead_letter::DeadLetters;
use tlsrpt_bus::embedded::{EmbeddedLog, EmbeddedOptions};
use tlsrpt_bus::kafka::{
    DEFAULT_TOPIC, KafkaConsumer, KafkaConsumerOptions, KafkaProducer, KafkaProducerOptions,
};
use tlsrpt_bus::test_broker::TestBroker;
use tlsrpt_bus::{Consumer, Message, Producer};
use tlsrpt_schemas::message::to_parts;
use tlsrpt_schemas::{Decoder, Envelope, ReceivedReport, Transport};
use tlsrpt_transform::{TransformOptions, Transformer};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Time the transformer alone: bus to committed Parquet.
#[derive(Debug, Parser)]
#[command(name = "tlsrpt-transform-bench", about, long_about)]
struct Args {
    /// Reports on the log before the transformer starts.
    #[arg(long, default_value_t = 100_000)]
    reports: usize,
    /// `bench`: about 2 KB of JSON and 4-8 failure details per report (what the HTTP load
    /// posts); `default`: the generator's mix, about 650 bytes.
    #[arg(long, value_enum, default_value_t = Profile::Bench)]
    profile: Profile,
    /// Generator seed.
    #[arg(long, default_value_t = 8460)]
    seed: u64,
    /// Partitions of the log.
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Keep the data directory here instead of a temporary one (it must not exist).
    #[arg(long)]
    keep: Option<std::path::PathBuf>,
    /// Read from a topic of `--partitions` partitions on a Kafka-protocol broker started for
    /// the run, through the consumer `tlsrpt transform` uses, instead of the embedded log.
    #[arg(long)]
    kafka: bool,
    /// Transformers in the group (`--kafka` only), each on its own thread as separate
    /// `tlsrpt transform` processes would be.
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// Messages per flush at most (`TransformOptions::max_batch_reports`; default that of
    /// `tlsrpt up`).
    #[arg(long, default_value_t = TransformOptions::default().max_batch_reports)]
    max_batch_reports: usize,
    /// Seconds after its first message a batch is flushed however small
    /// (`TransformOptions::flush_interval`; default that of `tlsrpt up`). A long one makes
    /// every flush hold `--max-batch-reports` messages whatever the machine's speed, so that
    /// runs under an instruction counter flush as a full-speed run does.
    #[arg(long, default_value_t = TransformOptions::default().flush_interval.as_secs_f64())]
    flush_interval: f64,
    /// Policy domains of the generated provider (default the generator's 1,000: about 3,300
    /// reports a day, so a batch spans many days and each flush writes a file per table and
    /// day). More domains put more reports in each day, as at a large provider.
    #[arg(long)]
    domains: Option<usize>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Profile {
    Default,
    Bench,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The transformer's log, when asked for (`TLSRPT_LOG=info`): rebalances, claims lost.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("TLSRPT_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let temp;
    let dir = match &args.keep {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let dead_letters = Arc::new(DeadLetters::open(&dir.join("rejected"))?);
    let tables = dir.join("tables");
    let expected = args.reports as u64;
    let measured = if args.kafka {
        let broker = TestBroker::start();
        broker.create_topic(DEFAULT_TOPIC, args.partitions);
        // The group settles on the empty topic: librdkafka runs rebalances while it is
        // polled, and a consumer whose buffers are full does not poll.
        let consumers = (0..args.instances)
            .map(|_| {
                KafkaConsumer::new(&KafkaConsumerOptions::new(
                    broker.address(),
                    TransformOptions::default().group,
                ))
            })
            .collect::<Result<Vec<_>, _>>()?;
        settle(&consumers, args.partitions)?;
        let producer = KafkaProducer::new(&KafkaProducerOptions::new(broker.address()))?;
        runtime.block_on(fill(&producer, &args))?;
        producer.flush(Duration::from_secs(30))?;
        drop(producer);
        time_transformers(
            &runtime,
            consumers,
            &tables,
            &dead_letters,
            expected,
            transform_options(&args)?,
        )?
    } else {
        anyhow::ensure!(
            args.instances == 1,
            "the embedded log has one transformer; --instances needs --kafka"
        );
        let log = EmbeddedLog::open(
            &dir.join("bus"),
            EmbeddedOptions::with_partitions(args.partitions),
        )?;
        runtime.block_on(fill(&log, &args))?;
        let measured = time_transformers(
            &runtime,
            vec![log.clone()],
            &tables,
            &dead_letters,
            expected,
            transform_options(&args)?,
        )?;
        log.shutdown();
        measured
    };
    let (wall, cpu, written) = measured;
    anyhow::ensure!(
        written == args.reports as u64,
        "consumed {written} messages of {}",
        args.reports
    );
    println!(
        "{}",
        serde_json::json!({
            "bus": if args.kafka { "kafka" } else { "embedded" },
            "partitions": args.partitions,
            "instances": args.instances,
            "reports": written,
            "seconds": wall.as_secs_f64(),
            "reports_per_second": written as f64 / wall.as_secs_f64(),
            "cpu_us_per_report": cpu.as_secs_f64() * 1e6 / written as f64,
            "reports_per_cpu_second": written as f64 / cpu.as_secs_f64(),
        })
    );
    Ok(())
}

/// The transformers' options: `tlsrpt up`'s, with the batch bounds of the flags, and a flush
/// as soon as the log is read to its end (else the last batch would wait for its interval).
fn transform_options(args: &Args) -> anyhow::Result<TransformOptions> {
    let flush_interval = Duration::try_from_secs_f64(args.flush_interval)
        .map_err(|e| anyhow::anyhow!("--flush-interval {}: {e}", args.flush_interval))?;
    Ok(TransformOptions {
        flush_when_caught_up: true,
        max_batch_reports: args.max_batch_reports,
        flush_interval,
        ..TransformOptions::default()
    })
}

/// Runs one transformer per consumer (the members of one group on Kafka) until together
/// they have consumed `expected` messages; the wall time, the process's CPU time, and the
/// messages consumed (reports written, duplicates skipped).
fn time_transformers<C: Consumer>(
    runtime: &tokio::runtime::Runtime,
    consumers: Vec<C>,
    tables: &std::path::Path,
    dead_letters: &Arc<DeadLetters>,
    expected: u64,
    options: TransformOptions,
) -> anyhow::Result<(Duration, Duration, u64)> {
    eprintln!("tlsrpt-transform-bench: the bus is full; timing the transformer");
    let usage_before = cpu_time();
    let started = Instant::now();
    let mut transformers = Vec::new();
    for consumer in consumers {
        transformers.push(Transformer::open(
            consumer,
            tables.to_path_buf(),
            dead_letters.clone(),
            options.clone(),
        )?);
    }
    let stats: Vec<_> = transformers.iter().map(Transformer::stats).collect();
    // Every message accounted for: written, or skipped as a duplicate (the generator repeats
    // a dedup key now and then in long runs).
    let consumed = || {
        stats
            .iter()
            .map(|s| s.reports_written() + s.duplicates_skipped() + s.dead_lettered())
            .sum::<u64>()
    };
    runtime.block_on(async {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let running: Vec<_> = transformers
            .into_iter()
            .map(|transformer| {
                let mut stopped = stopped.clone();
                tokio::spawn(transformer.run(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                }))
            })
            .collect();
        // A transformer that stops before the end (a failed flush) would leave this loop
        // waiting for messages nobody reads: its error ends the run instead.
        while consumed() < expected && !running.iter().any(|task| task.is_finished()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = stop.send(true);
        for task in running {
            task.await??;
        }
        anyhow::ensure!(
            consumed() >= expected,
            "the transformers stopped after {} of {expected} messages",
            consumed()
        );
        anyhow::Ok(())
    })?;
    Ok((started.elapsed(), cpu_time() - usage_before, consumed()))
}

/// Waits (setup, not timed) until the group has shared the partitions among all members,
/// so that no rebalance happens while the transformers are timed.
///
/// Not only for steadier figures: tansu 0.6.0 loses messages when a consumer starts
/// fetching in the middle of a record batch, as a member given a partition in a rebalance
/// does (it resumes at the committed offset, where the last flush ended). Fetching from
/// such an offset returns the records from the *next* batch on: seeking back to the
/// offset again and again gives the same gap, whose length is a producer batch. A Kafka
/// broker returns the batch that holds the offset (the client skips the records before
/// it). A mid-run rebalance here left up to a few hundred reports of a partition unread
/// and the run waiting for them.
fn settle(consumers: &[KafkaConsumer], partitions: u32) -> anyhow::Result<()> {
    let members = consumers.len().min(partitions as usize);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let owned: Vec<Vec<u32>> = consumers
            .iter()
            .map(|c| c.assignment().partitions.iter().map(|&(p, _)| p).collect())
            .collect();
        let mut all: Vec<u32> = owned.iter().flatten().copied().collect();
        all.sort_unstable();
        let busy = owned.iter().filter(|o| !o.is_empty()).count();
        if busy == members && all == (0..partitions).collect::<Vec<_>>() {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the consumer group did not share the partitions among its {} members within a minute: {owned:?}",
            consumers.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Appends the generated reports, many in flight so the bus groups them.
async fn fill(bus: &impl Producer, args: &Args) -> anyhow::Result<()> {
    let mut config = match args.profile {
        Profile::Default => GeneratorConfig::default(),
        Profile::Bench => GeneratorConfig::bench(),
    };
    if let Some(domains) = args.domains {
        config.domains = domains;
    }
    let mut decoder = Decoder::default();
    let mut in_flight = FuturesUnordered::new();
    for generated in Generator::new(config, args.seed).take(args.reports) {
        let decoded = decoder
            .decode(generated.json.as_bytes())
            .context("a generated report does not decode")?;
        let received = ReceivedReport {
            envelope: Envelope::now(Transport::Https),
            report: decoded.report,
            raw_json: decoded.raw_json.into(),
        };
        let parts = to_parts(&received, Some("192.0.2.1:4000"), None);
        in_flight.push(bus.send(Message {
            key: parts.key,
            value: parts.value,
            headers: parts.headers,
        }));
        if in_flight.len() >= 4096 {
            in_flight.next().await.transpose()?;
        }
    }
    while let Some(delivered) = in_flight.next().await {
        delivered?;
    }
    Ok(())
}

/// The process's user plus system CPU time so far (from `/proc/self/stat`, in the kernel's
/// clock ticks of 10 ms: runs of a second or more keep the error near 1%).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}
