//! One pass as `tlsrpt alerts run` and the schedulers in `tlsrpt up` and `tlsrpt query`
//! run it: read the window of reports the pass needs, evaluate, store the alerts, deliver.
//!
//! The order is what makes a restart safe: alerts are written to the `alerts` table and
//! put in the state's outbox, the state is saved, and only then are they sent, each one
//! marked sent (and the state saved again) as its notifiers take it. A crash before the
//! save repeats the pass from the old watermark and writes the same alerts under the same
//! names; a crash after it sends what the outbox still holds.

use std::path::PathBuf;
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, Utc};
use tlsrpt_query::{QueryEngine, QueryOptions};

use crate::alert::AlertEvent;
use crate::config::{AlertConfig, NotifierConfig, NotifierKind};
use crate::state::{AlertState, Pending};
use crate::{Result, evaluate, load, notify, table};

/// Deliveries of one alert to one notifier are given up after this many failed passes.
const MAX_ATTEMPTS: u32 = 50;

/// What a pass needs: the configuration, where the tables and the state are.
#[derive(Debug)]
pub struct Runner {
    config: AlertConfig,
    tables: PathBuf,
    state_path: PathBuf,
    engine: QueryEngine,
    http: reqwest::Client,
}

/// What a pass did, for the command line and the log.
#[derive(Debug, Clone, Default)]
pub struct PassReport {
    pub fired: Vec<AlertEvent>,
    pub resolved: Vec<AlertEvent>,
    /// Alerts recorded but not sent: found while catching up, too old to page about.
    pub not_sent: usize,
    /// Deliveries made, and failed (retried at the next pass).
    pub delivered: usize,
    pub delivery_errors: Vec<String>,
    /// Custom rules that could not run (the others did).
    pub rule_errors: Vec<String>,
    pub reports_read: usize,
    pub steps: u64,
    pub open_incidents: usize,
    pub read_time: StdDuration,
    pub evaluate_time: StdDuration,
}

impl Runner {
    /// A runner over the tables under `tables` with its state file at `state_path`.
    pub fn new(config: AlertConfig, tables: PathBuf, state_path: PathBuf) -> Result<Self> {
        // The reports are read from the files directly (`load`); the engine runs the custom
        // rules, which may read whole windows: no row limit, no view cache, its own engine so
        // that analysts' limits and the rules do not meet.
        let options = QueryOptions {
            max_rows: usize::MAX,
            timeout: StdDuration::from_secs(3600),
            max_concurrent: 2,
            memory_limit_bytes: None,
            view_cache_bytes: None,
            view_warm_days: 0,
            view_warm_every: None,
            view_warm_all_time: false,
        };
        let engine =
            QueryEngine::new(tables.clone(), options).map_err(|source| crate::Error::Query {
                what: "the tables",
                source,
            })?;
        Ok(Self {
            config,
            tables,
            state_path,
            engine,
            http: reqwest::Client::new(),
        })
    }

    /// One pass up to `now`.
    pub async fn pass(&self, now: DateTime<Utc>) -> Result<PassReport> {
        let mut state = AlertState::load(&self.state_path)?;
        let evaluation = &self.config.evaluation;
        let mut report = PassReport::default();

        // The window: the days the pass judges, and the baseline days before them.
        let first_step = state
            .watermark
            .unwrap_or(now - Duration::days(i64::from(evaluation.first_pass_days)));
        let reach = i64::from(evaluation.baseline_days)
            + i64::from(evaluation.lookback_days)
            + i64::from(evaluation.lateness_hours.div_ceil(24))
            + 1;
        let from = (first_step - Duration::days(reach)).date_naive();
        let started = Instant::now();
        let tables = self.tables.clone();
        let observations = tokio::task::spawn_blocking(move || {
            load::observations(&tables, from, now.date_naive(), now)
        })
        .await
        .expect("the reader does not panic")?;
        report.read_time = started.elapsed();
        report.reports_read = observations.len();

        let started = Instant::now();
        let config = self.config.clone();
        let (outcome, mut state) = tokio::task::spawn_blocking(move || {
            let outcome = evaluate(&config, &observations, &mut state, now);
            (outcome, state)
        })
        .await
        .expect("the evaluation does not panic");
        report.steps = outcome.steps;
        let mut events = outcome.events;
        let (rule_events, rule_errors) = crate::rules::run(
            &self.engine,
            &self.config.rules,
            &mut state,
            now,
            Duration::hours(i64::from(evaluation.cooldown_hours)),
        )
        .await;
        events.extend(rule_events);
        for error in rule_errors {
            tracing::error!("{error}");
            report.rule_errors.push(error.to_string());
        }
        report.evaluate_time = started.elapsed();

        // Store, then queue for delivery, then save: nothing is sent before it is durable.
        let first_seq = state.next_event_seq;
        let numbered: Vec<(u64, &AlertEvent)> = events
            .iter()
            .enumerate()
            .map(|(i, e)| (first_seq + i as u64, e))
            .collect();
        table::write(&self.tables, &numbered)?;
        state.next_event_seq += events.len() as u64;
        let notify_from = now - Duration::hours(i64::from(evaluation.notify_within_hours));
        for event in &events {
            match event.state {
                crate::alert::AlertState::Firing => report.fired.push(event.clone()),
                crate::alert::AlertState::Resolved => report.resolved.push(event.clone()),
            }
            if event.at < notify_from {
                report.not_sent += 1;
                continue;
            }
            let notifiers: Vec<String> = self
                .notifiers()
                .filter(|n| n.routes(&event.policy_domain) && event.severity >= n.min_severity)
                .map(|n| n.name.clone())
                .collect();
            if !notifiers.is_empty() {
                state.outbox.push(Pending {
                    event: event.clone(),
                    notifiers,
                    attempts: 0,
                });
            }
        }
        state.save(&self.state_path)?;

        self.deliver(&mut state, &mut report).await;
        state.save(&self.state_path)?;
        report.open_incidents = state.open_count();
        Ok(report)
    }

    /// The configured notifiers; with none configured, the log.
    fn notifiers(&self) -> impl Iterator<Item = &NotifierConfig> {
        static LOG: std::sync::LazyLock<NotifierConfig> =
            std::sync::LazyLock::new(|| NotifierConfig {
                name: "log".into(),
                kind: NotifierKind::Log,
                domains: Vec::new(),
                min_severity: crate::Severity::Info,
            });
        let configured = &self.config.notifiers;
        configured
            .iter()
            .chain(configured.is_empty().then(|| &*LOG))
    }

    /// Sends what the outbox holds, removing each delivery that succeeds.
    async fn deliver(&self, state: &mut AlertState, report: &mut PassReport) {
        let mut kept = Vec::new();
        for mut pending in std::mem::take(&mut state.outbox) {
            let mut left = Vec::new();
            for name in &pending.notifiers {
                let Some(notifier) = self.notifiers().find(|n| &n.name == name) else {
                    // Removed from the configuration since: nothing to send it to.
                    continue;
                };
                match notify::send(notifier, &pending.event, &self.http).await {
                    Ok(()) => report.delivered += 1,
                    Err(err) => {
                        tracing::warn!(notifier = %name, incident = pending.event.incident_id, "Alert not delivered: {err}");
                        report.delivery_errors.push(format!("{name}: {err}"));
                        left.push(name.clone());
                    }
                }
            }
            if left.is_empty() {
                continue;
            }
            pending.attempts += 1;
            if pending.attempts >= MAX_ATTEMPTS {
                tracing::error!(incident = pending.event.incident_id, notifiers = ?left, "Alert given up after {MAX_ATTEMPTS} failed deliveries; it stays in the alerts table.");
                continue;
            }
            pending.notifiers = left;
            kept.push(pending);
        }
        state.outbox = kept;
    }
}
