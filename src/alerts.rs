//! `tlsrpt alerts`: the anomaly jobs from the command line (one pass, for cron), and the
//! configuration check.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use tlsrpt_alerts::run::{PassReport, Runner};
use tlsrpt_alerts::{AlertConfig, AlertEvent};

use crate::data_dir::{DEFAULT, DataDir};

/// Anomaly alerts: failure spikes, new failure types, policy mode changes, reporters gone
/// quiet.
///
/// The detectors compare each domain's recent reports with its own past (median and MAD of
/// the days before) and alert once per incident, plus once when it ends. Alerts go to the
/// notifiers of the configuration file (webhook, mail, log) and to the `alerts` table
/// (`tlsrpt sql "SELECT * FROM alerts"`).
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// One pass: evaluate what arrived since the last pass, alert, and exit.
    ///
    /// Exit code 0 when nothing fired, 1 when at least one alert fired, 2 on an error, so
    /// cron or a monitoring check can act on it. The pass remembers where it stopped (in
    /// DATA_DIR/alerts-state.json), so running it every few minutes or every few hours gives
    /// the same alerts; the first pass replays the last `first_pass_days` (90) hour by hour,
    /// stores what it finds in the `alerts` table and sends only what is recent
    /// (`notify_within_hours`, 24).
    Run(RunArgs),
    /// Read a configuration file and print it with every default filled in.
    Config(ConfigArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The data directory of `tlsrpt up` or `tlsrpt import`.
    #[arg(long, env = "TLSRPT_DATA_DIR", default_value = DEFAULT, value_name = "DIR")]
    data_dir: PathBuf,
    /// The alert configuration (TOML: thresholds, notifiers, routes; see the README).
    /// Without one, the defaults, alerting to the log.
    #[arg(long, env = "TLSRPT_ALERTS_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// The state file (where the last pass stopped, open incidents, undelivered alerts).
    /// Default: DATA_DIR/alerts-state.json.
    #[arg(long, env = "TLSRPT_ALERTS_STATE", value_name = "FILE")]
    state: Option<PathBuf>,
    /// Evaluate up to this time (RFC 3339) instead of now: for replaying history and for
    /// tests. Reports received after it are not read.
    #[arg(long, value_name = "TIME")]
    now: Option<DateTime<Utc>>,
    /// Print the alerts of the pass as JSON lines on standard output (one object per alert,
    /// the webhook's `alert` object) instead of a summary.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ConfigArgs {
    /// The alert configuration to check.
    #[arg(long, env = "TLSRPT_ALERTS_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

pub(crate) fn run(command: &Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(args) => run_pass(args),
        Command::Config(args) => {
            let config = load_config(args.config.as_ref())?;
            println!("# The alert configuration in effect, defaults filled in.");
            print!("{}", config.to_toml());
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(crate) fn load_config(path: Option<&PathBuf>) -> anyhow::Result<AlertConfig> {
    Ok(match path {
        Some(path) => AlertConfig::from_file(path)?,
        None => AlertConfig::default(),
    })
}

/// The state file of a data directory.
pub(crate) fn default_state(data: &DataDir) -> PathBuf {
    data.root().join("alerts-state.json")
}

fn run_pass(args: &RunArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init();
    let data = DataDir::existing(&args.data_dir)?;
    let config = load_config(args.config.as_ref())?;
    let state = args.state.clone().unwrap_or_else(|| default_state(&data));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let now = args.now.unwrap_or_else(Utc::now);
    let report = runtime.block_on(async {
        let runner = Runner::new(config, data.tables(), state)?;
        runner.pass(now).await
    })?;
    if args.json {
        for event in report.fired.iter().chain(&report.resolved) {
            println!("{}", serde_json::to_string(event)?);
        }
    } else {
        print_summary(&report);
    }
    Ok(if report.fired.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_summary(report: &PassReport) {
    let line = |e: &AlertEvent| {
        format!(
            "  {} #{} [{}] {}",
            e.at.format("%Y-%m-%d %H:%M"),
            e.incident_id,
            e.severity.as_str(),
            e.title
        )
    };
    eprintln!(
        "tlsrpt alerts: read {} reports in {:.1} s, evaluated {} hours in {:.1} s: {} fired, {} resolved, {} open",
        report.reports_read,
        report.read_time.as_secs_f64(),
        report.steps,
        report.evaluate_time.as_secs_f64(),
        report.fired.len(),
        report.resolved.len(),
        report.open_incidents,
    );
    for event in report.fired.iter().chain(&report.resolved) {
        println!("{}", line(event));
    }
    if report.not_sent > 0 {
        eprintln!(
            "tlsrpt alerts: {} alerts older than notify_within_hours were stored, not sent \
             (SELECT * FROM alerts)",
            report.not_sent
        );
    }
    for error in &report.rule_errors {
        eprintln!("tlsrpt alerts: {error}");
    }
    for error in &report.delivery_errors {
        eprintln!("tlsrpt alerts: not delivered (retried at the next pass): {error}");
    }
}

/// The anomaly jobs inside `tlsrpt up` and `tlsrpt query`: a pass at start, then one every
/// `interval_minutes`, until `stop`. A failed pass is logged and the next one tries again
/// (a pass resumes where the last good one stopped).
pub(crate) async fn schedule(
    config: AlertConfig,
    tables: PathBuf,
    state: PathBuf,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let interval = config.evaluation.interval();
    let runner = Runner::new(config, tables, state)?;
    let passes = async {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match runner.pass(Utc::now()).await {
                Ok(report) => tracing::info!(
                    fired = report.fired.len(),
                    resolved = report.resolved.len(),
                    open = report.open_incidents,
                    reports = report.reports_read,
                    seconds = report.read_time.as_secs_f64() + report.evaluate_time.as_secs_f64(),
                    "Alert pass done."
                ),
                Err(err) => tracing::error!("Alert pass failed (the next one retries): {err}"),
            }
        }
    };
    tokio::select! {
        () = stop => Ok(()),
        () = passes => Ok(()),
    }
}
