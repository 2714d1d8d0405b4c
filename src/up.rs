//! `tlsrpt up`: the whole pipeline in one process on the embedded bus: the HTTP and SMTP
//! receivers, the transformer writing Parquet, and the SQL service. With `--kafka` the same
//! three run on Kafka instead: the receivers publish as `tlsrpt ingest` does, and the
//! transformer is a member of a consumer group as `tlsrpt transform` is; the embedded log
//! is not opened.
//!
//! Start-up binds every listener before anything is accepted, so a port in use is an error
//! at once rather than half a service. Shutdown (SIGTERM or Ctrl-C) goes in the order that
//! loses nothing: stop accepting and finish the requests in flight (each answered only once
//! durable), then let the transformer write and commit what it has read, then stop the SQL
//! service and close the log.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use futures::future::BoxFuture;
use tlsrpt_bus::dead_letter::DeadLetterSink;
use tlsrpt_bus::embedded::EmbeddedLog;
use tlsrpt_bus::kafka::KafkaProducer;
use tlsrpt_bus::{BusError, Consumer};
use tlsrpt_ingest::metrics::Metrics;
use tlsrpt_query::QueryEngine;
use tlsrpt_transform::{CrashPoint, TransformError, TransformOptions, TransformStats, Transformer};
use tokio::sync::watch;

use crate::data_dir::DataDir;
use crate::receivers::{self, Addresses, bind, stopped};
use crate::settings::{Resolved, Settings, SqlResolved, UpKafkaResolved};

/// Run the TLS-RPT receiver: HTTPS and SMTP in, Parquet tables out, SQL on top.
///
/// The reports go through an embedded durable log in the data directory, or, with --kafka,
/// through a Kafka topic (the receivers of `tlsrpt ingest`, a transformer of `tlsrpt
/// transform`'s consumer group and the SQL service of `tlsrpt query`, in one process).
///
/// Every setting below can also be given as a `TLSRPT_*` environment variable (shown with
/// each) or in a TOML file given with --config, using the flag's name without the dashes
/// (`flush-interval = "2s"`). A flag or its variable wins over the file, and the file over
/// the default.
///
/// Logs go to standard error; set TLSRPT_LOG (e.g. `debug`, `tlsrpt_transform=debug`) for
/// more or less.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A TOML file with settings (names as the flags, without `--`).
    #[arg(long, env = "TLSRPT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: Settings,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let file = match &args.config {
        Some(path) => crate::settings::from_file::<Settings>(path)?,
        None => Settings::default(),
    };
    let settings = args.settings.or(file).resolve()?;
    crate::logging::init();
    runtime()?.block_on(up(settings))?;
    Ok(ExitCode::SUCCESS)
}

/// The runtime of the long-running services (`up`, `ingest`).
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tlsrpt")
        .build()
        .context("cannot start the runtime")
}

/// The bus `up` runs on.
#[expect(
    clippy::large_enum_variant,
    reason = "one value for the life of the process"
)]
enum Bus {
    /// The data directory's embedded log, owned by this process.
    Embedded(EmbeddedLog),
    /// Kafka: the receivers' producer, and where the transformer reads.
    Kafka {
        producer: KafkaProducer,
        kafka: UpKafkaResolved,
    },
}

async fn up(settings: Resolved) -> anyhow::Result<()> {
    let data = DataDir::new(&settings.data_dir);
    std::fs::create_dir_all(data.root())
        .with_context(|| format!("cannot create the data directory {}", data.root().display()))?;
    let bus = match &settings.kafka {
        None => {
            data.check_tables_match_embedded_log()?;
            Bus::Embedded(own_bus(&data, settings.partitions)?)
        }
        Some(kafka) => {
            if data.bus().exists() {
                // The tables' file names record bus offsets, not which bus: the Kafka
                // transformer would take the embedded log's offsets for the topic's, and skip
                // (or hide) the topic's reports at those offsets.
                bail!(
                    "{} holds an embedded log, and its tables were written from it; give \
                     `tlsrpt up --kafka` a data directory of its own (--data-dir)",
                    data.root().display()
                );
            }
            Bus::Kafka {
                producer: crate::kafka::producer(
                    &kafka.brokers,
                    &kafka.topic,
                    kafka.delivery_timeout,
                )?,
                kafka: kafka.clone(),
            }
        }
    };
    // What the receivers refuse is kept here on either bus.
    let dead_letters = data.dead_letters()?;

    let listeners = receivers::bind_all(&settings.receivers).await?;
    let query_listener = bind(settings.query_listen, "SQL", "--query-listen").await?;
    let flight_listener = bind(settings.sql.flight_listen, "Flight SQL", "--flight-listen").await?;

    // Opened now, started once the receivers are: the future runs only when spawned.
    let (stop_transformer, transformer_stop) = watch::channel(false);
    let transformer_stop = stopped(transformer_stop);
    let options = TransformOptions {
        flush_interval: settings.flush_interval,
        compact_min_files: settings.compact_min_files,
        ..TransformOptions::default()
    };
    let (transform_stats, transform_run) = match &bus {
        Bus::Embedded(log) => {
            let dead_letters: Arc<dyn DeadLetterSink> = dead_letters.clone();
            open_transformer(log.clone(), &data, dead_letters, options, transformer_stop).await?
        }
        Bus::Kafka { kafka, .. } => {
            let consumer = crate::kafka::consumer(
                &kafka.brokers,
                &kafka.topic,
                &kafka.group,
                kafka.session_timeout,
            )
            .await?;
            let dead_letters =
                crate::kafka::dead_letter_topic(&kafka.brokers, &kafka.dlq_topic, &kafka.topic)?;
            let options = TransformOptions {
                group: kafka.group.clone(),
                ..options
            };
            open_transformer(consumer, &data, dead_letters, options, transformer_stop).await?
        }
    };

    let metrics = Arc::new(Metrics::new());
    metrics.add_source(Box::new(move |out| transform_stats.render_prometheus(out)));
    if let Bus::Embedded(log) = &bus {
        let log = log.clone();
        metrics.add_source(Box::new(move |out| render_bus(&log, out)));
    }

    let query = Arc::new(
        QueryEngine::new(data.tables(), settings.sql.limits)
            .context("cannot start the SQL engine")?,
    );

    // Receivers stop first; the transformer after them; the SQL service last.
    let (stop_receivers, receivers_stop) = watch::channel(false);
    let (stop_query, query_stop) = watch::channel(false);

    let query_address = query_listener.local_addr()?;
    let flight_address = flight_listener.local_addr()?;
    let mut receivers = tokio::task::JoinSet::new();
    let addresses = match &bus {
        Bus::Embedded(log) => {
            let addresses = receivers::spawn(
                log,
                &dead_letters,
                &metrics,
                &settings.receivers,
                listeners,
                &receivers_stop,
                &mut receivers,
            )?;
            let socket = data.socket();
            let log = Arc::new(log.clone());
            let stop = stopped(receivers_stop.clone());
            receivers.spawn(async move {
                tlsrpt_ingest::local::serve(&socket, log, stop)
                    .await
                    .with_context(|| format!("the local socket {} failed", socket.display()))
            });
            addresses
        }
        // No local socket: `tlsrpt import` reaches this bus with --kafka, straight.
        Bus::Kafka { producer, .. } => receivers::spawn(
            producer,
            &dead_letters,
            &metrics,
            &settings.receivers,
            listeners,
            &receivers_stop,
            &mut receivers,
        )?,
    };
    let mut transform_task = tokio::spawn(async move {
        let result = transform_run.await;
        if let Err(TransformError::SimulatedCrash(point)) = &result {
            // The crash tests' stand-in for SIGKILL at an exact step: no cleanup at all.
            eprintln!("tlsrpt: simulated crash at {point:?}");
            std::process::abort();
        }
        result.context("the transformer failed")
    });
    if let Some(config) = settings.sql.alerts.clone() {
        let state = crate::alerts::default_state(&data);
        let alerts =
            crate::alerts::schedule(config, data.tables(), state, stopped(query_stop.clone()));
        tokio::spawn(async move {
            if let Err(err) = alerts.await {
                tracing::error!("The alert jobs cannot run: {err:#}");
            }
        });
    }
    let mut query_task = {
        let stop = stopped(query_stop);
        let service = tlsrpt_query::SqlService {
            engine: query,
            access: settings.sql.access.clone(),
            tls: settings.sql.tls.clone(),
        };
        tokio::spawn(async move { service.serve(query_listener, flight_listener, stop).await })
    };

    print_banner(&data, addresses, query_address, flight_address, &settings);

    // Run until a signal, or until a part fails (then stop the rest in order and report).
    let mut failure: Option<anyhow::Error> = None;
    let mut transform_done = None;
    let mut query_done = None;
    tokio::select! {
        signal = shutdown_signal() => {
            tracing::info!("{signal}: stopping (receivers, then the transformer, then SQL).");
        }
        Some(finished) = receivers.join_next() => {
            failure = Some(flatten_join(finished).err().unwrap_or_else(|| anyhow!("a receiver stopped")));
        }
        finished = &mut transform_task => {
            transform_done = Some(());
            failure = Some(flatten_join(finished).err().unwrap_or_else(|| anyhow!("the transformer stopped")));
        }
        finished = &mut query_task => {
            query_done = Some(());
            failure = Some(flatten_join(finished).err().unwrap_or_else(|| anyhow!("the SQL service stopped")));
        }
    }
    if let Some(err) = &failure {
        tracing::error!("{err:#}; stopping.");
    }

    let _ = stop_receivers.send(true);
    while let Some(finished) = receivers.join_next().await {
        if let Err(err) = flatten_join(finished) {
            failure.get_or_insert(err);
        }
    }
    let _ = stop_transformer.send(true);
    if transform_done.is_none()
        && let Err(err) = flatten_join(transform_task.await)
    {
        failure.get_or_insert(err);
    }
    let _ = stop_query.send(true);
    if query_done.is_none()
        && let Err(err) = flatten_join(query_task.await)
    {
        failure.get_or_insert(err);
    }
    match bus {
        Bus::Embedded(log) => log.shutdown(),
        Bus::Kafka { producer, kafka } => {
            // Every answered request already had its acknowledgement; this only drains what
            // a request gave up waiting for.
            let timeout = kafka.delivery_timeout;
            let flushed = tokio::task::spawn_blocking(move || producer.flush(timeout)).await?;
            if let Err(err) = flushed {
                tracing::warn!("{err}");
            }
        }
    }
    match failure {
        None => {
            tracing::info!("stopped; everything acknowledged is written.");
            Ok(())
        }
        Some(err) => Err(err),
    }
}

/// The data directory's embedded log, for this process alone.
fn own_bus(data: &DataDir, partitions: Option<u32>) -> anyhow::Result<EmbeddedLog> {
    match data.own_bus(partitions) {
        Ok(log) => Ok(log),
        Err(BusError::Locked { .. }) => bail!(
            "another tlsrpt process is running on {}; stop it first (tlsrpt import and tlsrpt sql \
             can run beside it)",
            data.root().display()
        ),
        Err(err) => Err(err).context("cannot open the embedded log"),
    }
}

/// Opens the transformer over `consumer`, writing DATA_DIR/tables, and returns its counters
/// and its run until `stop` (not started: a future runs once polled).
async fn open_transformer<C: Consumer>(
    consumer: C,
    data: &DataDir,
    dead_letters: Arc<dyn DeadLetterSink>,
    options: TransformOptions,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(
    Arc<TransformStats>,
    BoxFuture<'static, tlsrpt_transform::Result<()>>,
)> {
    let root = data.tables();
    let mut transformer = tokio::task::spawn_blocking(move || {
        Transformer::open(consumer, root, dead_letters, options)
    })
    .await?
    .context("cannot open the tables")?;
    if let Some(point) = test_crash_point()? {
        transformer.crash_at(point);
    }
    Ok((transformer.stats(), Box::pin(transformer.run(stop))))
}

/// `TLSRPT_TEST_CRASH_AT`: for the crash tests only, the transformer step at which the
/// process aborts, as if killed there: `flush-staged`, `flush-moving`, `flush-published`
/// or `compaction-renamed`. Unset in production.
pub(crate) fn test_crash_point() -> anyhow::Result<Option<CrashPoint>> {
    let Ok(text) = std::env::var("TLSRPT_TEST_CRASH_AT") else {
        return Ok(None);
    };
    Ok(Some(match text.as_str() {
        "flush-staged" => CrashPoint::FlushStaged,
        "flush-moving" => CrashPoint::FlushMoving { moved: 1 },
        "flush-published" => CrashPoint::FlushPublished,
        "compaction-renamed" => CrashPoint::CompactionRenamed,
        other => bail!("TLSRPT_TEST_CRASH_AT={other:?} is not a crash point"),
    }))
}

pub(crate) fn flatten_join(
    joined: Result<anyhow::Result<()>, tokio::task::JoinError>,
) -> anyhow::Result<()> {
    joined.map_err(|e| anyhow!("a task panicked: {e}"))?
}

pub(crate) async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    }
}

fn render_bus(log: &EmbeddedLog, out: &mut String) {
    use std::fmt::Write as _;
    let stats = log.stats();
    let _ = writeln!(
        out,
        "# HELP tlsrpt_bus_appended_total Messages appended to the embedded log since start.\n\
         # TYPE tlsrpt_bus_appended_total counter\ntlsrpt_bus_appended_total {}\n\
         # HELP tlsrpt_bus_commits_total Durable transactions (fsyncs) of the embedded log since start.\n\
         # TYPE tlsrpt_bus_commits_total counter\ntlsrpt_bus_commits_total {}",
        stats.appended, stats.commits
    );
    let _ = writeln!(
        out,
        "# HELP tlsrpt_bus_end_offset The next offset of each partition.\n# TYPE tlsrpt_bus_end_offset gauge"
    );
    for (partition, end) in log.end_offsets().iter().enumerate() {
        let _ = writeln!(
            out,
            "tlsrpt_bus_end_offset{{partition=\"{partition}\"}} {end}"
        );
    }
}

/// An address a client on this machine can use: a wildcard listen address becomes loopback.
pub(crate) fn reachable(address: SocketAddr) -> SocketAddr {
    let mut address = address;
    if address.ip().is_unspecified() {
        address.set_ip(if address.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    address
}

/// The Flight SQL JDBC driver's URL for the service at `address` (DBeaver: new connection,
/// driver "Arrow Flight SQL"). Plain text until the listener has TLS.
fn jdbc_url(address: SocketAddr, tls: bool) -> String {
    let address = reachable(address);
    format!(
        "jdbc:arrow-flight-sql://{}:{}/?useEncryption={tls}",
        match address.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        },
        address.port()
    )
}

/// The banner's lines for the SQL services: their URLs, and whether a client needs a token.
pub(crate) fn sql_endpoints(query: SocketAddr, flight: SocketAddr, sql: &SqlResolved) -> String {
    let tls = sql.tls.is_some();
    let (http, grpc) = if tls {
        ("https", "grpc+tls")
    } else {
        ("http", "grpc")
    };
    let (note, jdbc_token) = if sql.access.is_open() {
        ("", "")
    } else {
        ("  (bearer token from --sql-tokens)", "&token=TOKEN")
    };
    format!(
        "  SQL                POST {http}://{}/v1/sql{note}\n  \
         Flight SQL         {grpc}://{}  (JDBC: {}{jdbc_token})\n",
        reachable(query),
        reachable(flight),
        jdbc_url(flight, tls),
    )
}

fn print_banner(
    data: &DataDir,
    addresses: Addresses,
    query: SocketAddr,
    flight: SocketAddr,
    settings: &Resolved,
) {
    let (http, smtp) = (addresses.http, addresses.smtp);
    use std::io::Write as _;
    let scheme = if settings.receivers.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let reports_url = format!("{scheme}://{}/v1/reports", reachable(http));
    let data_dir = data.root().display();
    let mut out = String::new();
    match &settings.kafka {
        None => out.push_str(&format!(
            "tlsrpt up: receiving SMTP TLS reports; data in {data_dir}\n"
        )),
        Some(kafka) => out.push_str(&format!(
            "tlsrpt up: receiving SMTP TLS reports on Kafka {} (topic {}, group {}, dead \
             letters to {}); data in {data_dir}\n",
            kafka.brokers, kafka.topic, kafka.group, kafka.dlq_topic
        )),
    }
    out.push_str(&format!("  reports over HTTP  POST {reports_url}\n"));
    match smtp {
        Some(smtp) => out.push_str(&format!(
            "  reports by mail    smtp://{}  ({})\n",
            reachable(smtp),
            match &settings.receivers.smtp_recipients {
                Some(list) => format!("for {}", list.join(", ")),
                None => "any recipient".to_owned(),
            }
        )),
        None => out.push_str("  reports by mail    off\n"),
    }
    out.push_str(&sql_endpoints(query, flight, &settings.sql));
    out.push_str(&format!(
        "  metrics            GET  {scheme}://{}/metrics\n",
        reachable(http)
    ));
    let insecure = if settings.receivers.tls.is_some() {
        " -k"
    } else {
        ""
    };
    out.push_str("Post a sample report:\n");
    out.push_str(&format!(
        "  curl -sS{insecure} -H 'Content-Type: application/tlsrpt+json' --data-binary '{}' {reports_url}\n",
        sample_report()
    ));
    out.push_str(&format!(
        "Then ask:\n  tlsrpt sql --data-dir {data_dir} \"SELECT organization_name, policy_domain, result_type, failed_session_count FROM failures\"\n"
    ));
    let stdout = std::io::stdout();
    let mut stdout = stdout.lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}

/// A small, valid report for yesterday (UTC), as a sender would post it: an MTA-STS domain
/// whose MX certificate expired for some sessions. Its report-id carries the start time, so
/// each start gives a new report (and posting it twice shows the dedup).
fn sample_report() -> String {
    let now = chrono::Utc::now();
    let day = (now - chrono::Duration::days(1)).format("%Y-%m-%d");
    serde_json::json!({
        "organization-name": "Example Sender",
        "date-range": {
            "start-datetime": format!("{day}T00:00:00Z"),
            "end-datetime": format!("{day}T23:59:59Z"),
        },
        "contact-info": "mailto:tlsrpt@sender.example",
        "report-id": format!("sample-{}", now.format("%Y%m%dT%H%M%SZ")),
        "policies": [{
            "policy": {
                "policy-type": "sts",
                "policy-string": ["version: STSv1", "mode: enforce", "mx: mx.example.com", "max_age: 86400"],
                "policy-domain": "example.com",
                "mx-host": ["mx.example.com"],
            },
            "summary": {
                "total-successful-session-count": 95,
                "total-failure-session-count": 5,
            },
            "failure-details": [{
                "result-type": "certificate-expired",
                "sending-mta-ip": "192.0.2.1",
                "receiving-mx-hostname": "mx.example.com",
                "failed-session-count": 5,
            }],
        }],
    })
    .to_string()
}
