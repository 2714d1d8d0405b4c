//! `tlsrpt transform`: one member of a consumer group turning the Kafka topic into the
//! Parquet tables, exactly once.
//!
//! Several run side by side (one per partition at most); the group shares the topic's
//! partitions among them and moves them when one comes or goes. Each writes only the
//! partitions it owns, into one shared store, with the commit protocol of the embedded
//! deployment (`tlsrpt-transform`'s documentation): the files are the truth, offsets are
//! committed after them, and a partition taken over resumes where its files end. Messages
//! that cannot become rows go to the dead-letter topic with the reason in a header.
//!
//! It serves `GET /healthz` and `GET /metrics` on `--metrics-listen` for orchestrators and
//! Prometheus; nothing else.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use tlsrpt_query::TablesLocation;
use tlsrpt_transform::{TableStore, TransformError, TransformOptions, Transformer};
use tokio::sync::watch;

use crate::receivers::{bind, stopped};
use crate::settings::{TransformResolved, TransformSettings};
use crate::up::{flatten_join, shutdown_signal};

/// Consume the report topic as a member of a consumer group and write the Parquet tables,
/// exactly once. Run several with one --group to share the topic's partitions; a partition
/// moves to the others when one stops or dies, and resumes where its files end.
///
/// Every setting below can also be given as a `TLSRPT_*` environment variable (shown with
/// each) or in a TOML file given with --config, using the flag's name without the dashes
/// (`kafka = "broker1:9092"`). A flag or its variable wins over the file, and the file over
/// the default.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A TOML file with settings (names as the flags, without `--`).
    #[arg(long, env = "TLSRPT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: TransformSettings,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let file = match &args.config {
        Some(path) => crate::settings::from_file::<TransformSettings>(path)?,
        None => TransformSettings::default(),
    };
    let settings = args.settings.or(file).resolve()?;
    crate::logging::init();
    crate::up::runtime()?.block_on(transform(settings))?;
    Ok(ExitCode::SUCCESS)
}

async fn transform(settings: TransformResolved) -> anyhow::Result<()> {
    let described = settings.store.describe();
    let store = match settings.store.clone() {
        TablesLocation::Local(root) => TableStore::local(root),
        TablesLocation::Object { store, prefix, .. } => {
            TableStore::object(store, prefix.as_ref(), described.clone())?
        }
    };
    let metrics_listener = bind(settings.metrics_listen, "metrics", "--metrics-listen").await?;

    let consumer = crate::kafka::consumer(
        &settings.kafka,
        &settings.topic,
        &settings.group,
        settings.session_timeout,
    )
    .await?;
    let dead_letters =
        crate::kafka::dead_letter_topic(&settings.kafka, &settings.dlq_topic, &settings.topic)?;
    let mut transformer = {
        let options = TransformOptions {
            group: settings.group.clone(),
            flush_interval: settings.flush_interval,
            compact_min_files: settings.compact_min_files,
            ..TransformOptions::default()
        };
        tokio::task::spawn_blocking(move || {
            Transformer::open(consumer, store, dead_letters, options)
        })
        .await?
        .with_context(|| format!("cannot open the tables in {described}"))?
    };
    if let Some(point) = crate::up::test_crash_point()? {
        transformer.crash_at(point);
    }
    let stats = transformer.stats();
    let metrics_address = metrics_listener.local_addr()?;

    let (stop_transformer, transformer_stop) = watch::channel(false);
    let (stop_metrics, metrics_stop) = watch::channel(false);
    let mut transform_task = tokio::spawn(async move {
        let result = transformer.run(stopped(transformer_stop)).await;
        if let Err(TransformError::SimulatedCrash(point)) = &result {
            // The crash tests' stand-in for SIGKILL at an exact step: no cleanup at all.
            eprintln!("tlsrpt: simulated crash at {point:?}");
            std::process::abort();
        }
        result.context("the transformer failed")
    });
    let mut metrics_task = tokio::spawn(async move {
        let router = axum::Router::new()
            .route("/healthz", axum::routing::get(|| async { "ok\n" }))
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let stats = Arc::clone(&stats);
                    async move {
                        let mut out = String::new();
                        stats.render_prometheus(&mut out);
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "text/plain; version=0.0.4",
                            )],
                            out,
                        )
                    }
                }),
            );
        axum::serve(metrics_listener, router)
            .with_graceful_shutdown(stopped(metrics_stop))
            .await
            .context("the metrics service failed")
    });
    println!(
        "tlsrpt transform: group {} consuming {} from {} into {}; dead letters to {}\n  metrics            GET  http://{}/metrics",
        settings.group,
        settings.topic,
        settings.kafka,
        described,
        settings.dlq_topic,
        crate::up::reachable(metrics_address),
    );

    let mut failure = None;
    let mut transform_done = false;
    tokio::select! {
        signal = shutdown_signal() => {
            tracing::info!("{signal}: writing what was read, then stopping.");
        }
        finished = &mut transform_task => {
            transform_done = true;
            failure = Some(flatten_join(finished).err().unwrap_or_else(|| anyhow!("the transformer stopped")));
        }
        finished = &mut metrics_task => {
            failure = Some(flatten_join(finished).err().unwrap_or_else(|| anyhow!("the metrics service stopped")));
        }
    }
    if let Some(err) = &failure {
        tracing::error!("{err:#}; stopping.");
    }
    let _ = stop_transformer.send(true);
    if !transform_done && let Err(err) = flatten_join(transform_task.await) {
        failure.get_or_insert(err);
    }
    let _ = stop_metrics.send(true);
    let _ = metrics_task.await;
    match failure {
        None => {
            tracing::info!("stopped; everything read is written and committed.");
            Ok(())
        }
        Some(err) => Err(err),
    }
}
