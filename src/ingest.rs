//! `tlsrpt ingest`: the receivers of `tlsrpt up` (HTTP and SMTP), publishing to Kafka.
//!
//! Stateless but for the refused inputs it keeps: run several behind a load balancer. A
//! sender hears 200 / 250 only once the brokers acknowledged the report (`acks=all`), and
//! 503 / 451 while they cannot; the producer reconnects by itself when they are back.
//! Shutdown stops accepting, finishes the requests in flight (each still waiting for its
//! acknowledgement), then waits for the producer to drain.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use tlsrpt_ingest::metrics::Metrics;
use tokio::sync::watch;

use crate::data_dir::DataDir;
use crate::receivers;
use crate::settings::{IngestResolved, IngestSettings};

/// Receive TLS-RPT reports over HTTPS and SMTP and publish them to a Kafka topic, acknowledging
/// each only once the brokers have it. Stateless: run several behind a load balancer.
///
/// Every setting below can also be given as a `TLSRPT_*` environment variable (shown with
/// each) or in a TOML file given with --config, using the flag's name without the dashes
/// (`kafka = "broker1:9092,broker2:9092"`). A flag or its variable wins over the file, and
/// the file over the default.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A TOML file with settings (names as the flags, without `--`).
    #[arg(long, env = "TLSRPT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: IngestSettings,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let file = match &args.config {
        Some(path) => crate::settings::from_file::<IngestSettings>(path)?,
        None => IngestSettings::default(),
    };
    let settings = args.settings.or(file).resolve()?;
    crate::logging::init();
    crate::up::runtime()?.block_on(ingest(settings))?;
    Ok(ExitCode::SUCCESS)
}

async fn ingest(settings: IngestResolved) -> anyhow::Result<()> {
    let data = DataDir::new(&settings.data_dir);
    std::fs::create_dir_all(data.root())
        .with_context(|| format!("cannot create the data directory {}", data.root().display()))?;
    let dead_letters = data.dead_letters()?;
    let producer =
        crate::kafka::producer(&settings.kafka, &settings.topic, settings.delivery_timeout)?;
    let listeners = receivers::bind_all(&settings.receivers).await?;
    let metrics = Arc::new(Metrics::new());

    let (stop_receivers, receivers_stop) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let addresses = receivers::spawn(
        &producer,
        &dead_letters,
        &metrics,
        &settings.receivers,
        listeners,
        &receivers_stop,
        &mut tasks,
    )?;
    print_banner(&data, addresses, &settings);

    let mut failure = None;
    tokio::select! {
        signal = crate::up::shutdown_signal() => {
            tracing::info!("{signal}: stopping (receivers, then the Kafka producer).");
        }
        Some(finished) = tasks.join_next() => {
            failure = Some(crate::up::flatten_join(finished).err().unwrap_or_else(|| anyhow!("a receiver stopped")));
        }
    }
    if let Some(err) = &failure {
        tracing::error!("{err:#}; stopping.");
    }
    let _ = stop_receivers.send(true);
    while let Some(finished) = tasks.join_next().await {
        if let Err(err) = crate::up::flatten_join(finished) {
            failure.get_or_insert(err);
        }
    }
    // Every answered request already had its acknowledgement; this only drains what a
    // request gave up waiting for.
    let timeout = settings.delivery_timeout;
    let flushed = tokio::task::spawn_blocking(move || producer.flush(timeout)).await?;
    if let Err(err) = flushed {
        tracing::warn!("{err}");
    }
    match failure {
        None => {
            tracing::info!("stopped; every report answered 200 or 250 is on the brokers.");
            Ok(())
        }
        Some(err) => Err(err),
    }
}

fn print_banner(data: &DataDir, addresses: receivers::Addresses, settings: &IngestResolved) {
    use std::io::Write as _;
    let scheme = if settings.receivers.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let http = crate::up::reachable(addresses.http);
    let mut out = format!(
        "tlsrpt ingest: receiving SMTP TLS reports into Kafka {} topic {}; refused inputs in {}\n",
        settings.kafka,
        settings.topic,
        data.rejected().display()
    );
    out.push_str(&format!(
        "  reports over HTTP  POST {scheme}://{http}/v1/reports\n"
    ));
    match addresses.smtp {
        Some(smtp) => out.push_str(&format!(
            "  reports by mail    smtp://{}\n",
            crate::up::reachable(smtp)
        )),
        None => out.push_str("  reports by mail    off\n"),
    }
    out.push_str(&format!(
        "  metrics            GET  {scheme}://{http}/metrics\n"
    ));
    let stdout = std::io::stdout();
    let mut stdout = stdout.lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}
