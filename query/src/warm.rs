//! The views computed before anyone asks: when the SQL service starts, and again at an
//! interval.
//!
//! The view cache ([`crate::view_cache`]) answers from memory only the dates it has computed,
//! so the first dashboard after a restart paid for every date it showed: on the bench's 100
//! million failure rows, 44 to 205 ms for a 30-day window of the six per-day views and about 6
//! s for `policy_overview` (BENCHMARKS.md, issue 5), where the same questions answered from the
//! cache take 4 to 10 ms and 175 ms. Warming asks each view about the latest dates that have
//! data (and `policy_overview`, whose rows span every date, about everything) in the
//! background, so the cache holds them when the first dashboard comes. Asked again at an
//! interval, it computes the dates whose files flushes and compactions changed since, before a
//! dashboard finds them changed.
//!
//! Warming runs as ordinary queries: within the service's limits (a turn, the timeout, the
//! memory pool) and only for the shared cache (domain-limited clients never read it). A view
//! that does not finish in time keeps the blocks of dates it computed, and the next round
//! carries on from there. When the cache is full, the dates warmed (and `policy_overview`'s
//! parts) are dropped last: on the bench, one all-time question of `failure_trend_by_mx`
//! (0.66 GB) pushed the warmed dates of the views not asked since out of the default 1 GiB,
//! and their next 30-day question took 129 ms again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use tlsrpt_schemas::alerts_table::ALERTS;
use tracing::{debug, info, warn};

use crate::access::Scope;
use crate::engine::QueryEngine;
use crate::error::{QueryError, Result};
use crate::views::VIEWS;

/// What one round of warming did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WarmedViews {
    /// The dates the per-day views were asked about, first and last; `None` when no table
    /// has data yet (or the views keep nothing).
    pub dates: Option<(NaiveDate, NaiveDate)>,
    /// The views whose rows are now kept.
    pub views: Vec<&'static str>,
    /// The views that could not be computed, with the reason (over the timeout, say).
    pub failed: Vec<(&'static str, String)>,
}

impl QueryEngine {
    /// Computes into the view cache each per-day view's rows for the `days` dates up to the
    /// latest date any table has data for, and `policy_overview`'s parts for all dates. Does
    /// nothing when the views keep nothing (`view_cache_bytes: None`) or `days` is 0. Fails
    /// only when the tables cannot be listed; a view that fails is named in
    /// [`WarmedViews::failed`] and the others are still computed.
    pub async fn warm_views(&self, days: u32) -> Result<WarmedViews> {
        if days == 0 || !self.caches_views() {
            return Ok(WarmedViews::default());
        }
        let started = Instant::now();
        let round = self.warm_round(days).await;
        match &round {
            Ok(warmed) => self
                .metrics
                .warm_round(started.elapsed(), warmed.failed.len()),
            Err(_) => self.metrics.warm_round_failed(),
        }
        round
    }

    /// One round of [`Self::warm_views`], with the cache on and `days` at least 1.
    async fn warm_round(&self, days: u32) -> Result<WarmedViews> {
        let mut warmed = WarmedViews::default();
        let Some(last) = latest_date(self.sources()).await? else {
            return Ok(warmed);
        };
        let first = last
            .checked_sub_days(chrono::Days::new(u64::from(days - 1)))
            .unwrap_or(NaiveDate::MIN);
        warmed.dates = Some((first, last));
        self.warm_views_from(first);
        for view in VIEWS {
            // `count(*)` still computes every row of every date asked about (the cache keeps a
            // date's rows whole), and hands nothing over.
            let question = if view.parts.is_some() {
                format!("SELECT count(*) FROM {}", view.name)
            } else {
                format!(
                    "SELECT count(*) FROM {} WHERE date >= DATE '{first}'",
                    view.name
                )
            };
            match self.answer(&Scope::All, &question, Vec::new()).await {
                Ok(_) => warmed.views.push(view.name),
                Err(error) => warmed.failed.push((view.name, error.to_string())),
            }
        }
        Ok(warmed)
    }

    /// Warms the views ([`Self::warm_views`]) now, then every `every` (`None`: once), until
    /// dropped. Logs the first round and every failure; later rounds only at debug level.
    pub async fn keep_views_warm(self: Arc<Self>, days: u32, every: Option<Duration>) {
        if days == 0 || !self.caches_views() {
            return;
        }
        let mut round = 0u64;
        loop {
            let started = Instant::now();
            let elapsed_ms = || started.elapsed().as_millis() as u64;
            match self.warm_views(days).await {
                Ok(warmed) => {
                    for (view, reason) in &warmed.failed {
                        warn!(
                            view,
                            reason = reason.as_str(),
                            "Could not compute a view ahead of the questions; it will be \
                             computed when asked, and warming tries again at its next round."
                        );
                    }
                    let dates = warmed.dates.map_or_else(
                        || "none (no data yet)".to_owned(),
                        |(first, last)| format!("{first} to {last}"),
                    );
                    if round == 0 {
                        info!(
                            views = warmed.views.len(),
                            %dates,
                            elapsed_ms = elapsed_ms(),
                            "Views computed ahead of the questions."
                        );
                    } else {
                        debug!(
                            views = warmed.views.len(),
                            %dates,
                            elapsed_ms = elapsed_ms(),
                            "Views computed again ahead of the questions."
                        );
                    }
                }
                Err(error) => warn!(
                    %error,
                    "Could not list the tables to compute the views ahead of the questions."
                ),
            }
            let Some(every) = every else { return };
            round += 1;
            tokio::time::sleep(every).await;
        }
    }
}

/// The latest date any table but the alerts has a directory for.
async fn latest_date(
    sources: &BTreeMap<String, crate::catalog::TableSource>,
) -> Result<Option<NaiveDate>> {
    // Collected before the await: a future holding the filtering closures is not `Send`
    // (their lifetimes are not general enough for `tokio::spawn`).
    let tables: Vec<&crate::catalog::TableSource> = sources
        .iter()
        .filter(|(name, _)| name.as_str() != ALERTS)
        .map(|(_, source)| source)
        .collect();
    let dates = crate::view_cache::dates_of(tables)
        .await
        .map_err(QueryError::execution)?;
    Ok(dates.last().copied())
}
