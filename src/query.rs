//! `tlsrpt query`: the SQL service of `tlsrpt up` alone, over tables that `tlsrpt transform`
//! writes. Stateless: run several behind a load balancer; each sees new files at its next
//! query.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use tlsrpt_query::QueryEngine;

use crate::settings::{QueryResolved, QuerySettings};

/// Answer SQL over the report tables (`POST /v1/sql`, Arrow Flight SQL), as `tlsrpt up`
/// does, for tables that `tlsrpt transform` writes. Read-only.
///
/// Every setting below can also be given as a `TLSRPT_*` environment variable (shown with
/// each) or in a TOML file given with --config, using the flag's name without the dashes.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A TOML file with settings (names as the flags, without `--`).
    #[arg(long, env = "TLSRPT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: QuerySettings,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let file = match &args.config {
        Some(path) => crate::settings::from_file::<QuerySettings>(path)?,
        None => QuerySettings::default(),
    };
    let settings = args.settings.or(file).resolve()?;
    crate::logging::init();
    crate::up::runtime()?.block_on(query(settings))?;
    Ok(ExitCode::SUCCESS)
}

async fn query(settings: QueryResolved) -> anyhow::Result<()> {
    let listener = crate::receivers::bind(settings.query_listen, "SQL", "--query-listen").await?;
    let flight_listener =
        crate::receivers::bind(settings.sql.flight_listen, "Flight SQL", "--flight-listen").await?;
    let described = settings.store.describe();
    if let Some(config) = settings.sql.alerts.clone() {
        let tlsrpt_query::TablesLocation::Local(root) = &settings.store else {
            anyhow::bail!(
                "--alerts-config needs the tables in a local directory (--store DIR); for tables \
                 in an object store, run `tlsrpt alerts run` where they are mounted"
            );
        };
        // Beside the tables, under a name readers skip (`_`).
        let state = root.join("_alerts-state.json");
        let alerts = crate::alerts::schedule(config, root.clone(), state, std::future::pending());
        tokio::spawn(async move {
            if let Err(err) = alerts.await {
                tracing::error!("The alert jobs cannot run: {err:#}");
            }
        });
    }
    let engine = Arc::new(
        QueryEngine::at(settings.store, settings.sql.limits)
            .context("cannot start the SQL engine")?,
    );
    let curl = if settings.sql.access.is_open() {
        ""
    } else {
        " -H 'Authorization: Bearer TOKEN'"
    };
    let insecure = if settings.sql.tls.is_some() { "k" } else { "" };
    let scheme = if settings.sql.tls.is_some() {
        "https"
    } else {
        "http"
    };
    println!(
        "tlsrpt query: SQL over the tables in {described}\n{}  try: curl -s{insecure}{curl} {scheme}://{}/v1/sql -d 'SELECT count(*) FROM reports'",
        crate::up::sql_endpoints(
            listener.local_addr()?,
            flight_listener.local_addr()?,
            &settings.sql
        ),
        crate::up::reachable(listener.local_addr()?),
    );
    let signal = async {
        let signal = crate::up::shutdown_signal().await;
        tracing::info!("{signal}: finishing the queries in flight, then stopping.");
    };
    let service = tlsrpt_query::SqlService {
        engine,
        access: settings.sql.access,
        tls: settings.sql.tls,
    };
    service.serve(listener, flight_listener, signal).await
}
