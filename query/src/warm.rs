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
//! Then, for the per-day views whose answers over all time fit in the cache beside that
//! ([`ALL_TIME_SHARE`] of its budget, the smallest views first, each estimated from its
//! latest dates' memory, or from the older dates a question kept when it has no rows among
//! the latest), warming computes every older date too, so that their all-time
//! questions are answered from memory; the others keep the latest dates only, and the log
//! names them with their estimates. A new view date costs the same to keep warm either way;
//! what warming every date adds at each round is the listing of every date's directories.
//!
//! Warming runs as ordinary queries: within the service's limits (a turn, the timeout, the
//! memory pool) and only for the shared cache (domain-limited clients never read it). A view
//! that does not finish in time keeps the blocks of dates it computed, and the next round
//! carries on from there. When the cache is full, the dates warmed (and `policy_overview`'s
//! parts) are dropped last: on the bench, one all-time question of `failure_trend_by_mx`
//! (0.66 GB) pushed the warmed dates of the views not asked since out of the then default 1 GiB,
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
use crate::view_cache::ViewCache;
use crate::views::VIEWS;

/// The share of the view cache's budget that warming may fill when it computes every date of
/// the views that fit (numerator, denominator): the rest is left to questions warming does
/// not foresee, the older dates of the views that did not fit among them.
pub const ALL_TIME_SHARE: (usize, usize) = (3, 4);

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
    /// The per-day views' answers over every date, as estimated from the latest dates',
    /// smallest first, and which of them were computed over every date; empty when no date
    /// is older than the latest `days` (or `view_warm_all_time` is off). A view with no rows
    /// kept for any date, not even older ones, is not listed.
    pub all_time: Vec<AllTime>,
}

/// What a per-day view's answer over every date would keep, and whether warming computed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllTime {
    pub view: &'static str,
    /// The memory of its rows for the latest dates, which warming keeps anyway.
    pub latest_bytes: usize,
    /// The memory of its latest dates' rows, per date kept, times every date with data; for a
    /// view with nothing among the latest dates, the same from its older dates kept.
    pub estimated_bytes: usize,
    /// Whether it fitted, and so was computed over every date.
    pub warmed: bool,
}

impl WarmedViews {
    /// The per-day views that were (`warmed`) or were not computed over every date.
    fn all_time_where(&self, warmed: bool) -> impl Iterator<Item = &AllTime> {
        self.all_time
            .iter()
            .filter(move |view| view.warmed == warmed)
    }
}

impl QueryEngine {
    /// Computes into the view cache each per-day view's rows for the `days` dates up to the
    /// latest date any table has data for, and `policy_overview`'s parts for all dates; then,
    /// with `view_warm_all_time`, every older date of the per-day views whose all-time answers
    /// fit ([`ALL_TIME_SHARE`]), smallest first. Does nothing when the views keep nothing
    /// (`view_cache_bytes: None`) or `days` is 0. Fails only when the tables cannot be listed;
    /// a view that fails is named in [`WarmedViews::failed`] and the others are still
    /// computed.
    pub async fn warm_views(&self, days: u32) -> Result<WarmedViews> {
        let Some(cache) = self.view_cache().filter(|_| days > 0) else {
            return Ok(WarmedViews::default());
        };
        let started = Instant::now();
        let round = self.warm_round(cache, days).await;
        match &round {
            Ok(warmed) => self.metrics.warm_round(started.elapsed(), warmed),
            Err(_) => self.metrics.warm_round_failed(),
        }
        round
    }

    /// One round of [`Self::warm_views`], with `days` at least 1.
    async fn warm_round(&self, cache: &ViewCache, days: u32) -> Result<WarmedViews> {
        let mut warmed = WarmedViews::default();
        let dates = dates_with_data(self.sources()).await?;
        let Some(&last) = dates.last() else {
            return Ok(warmed);
        };
        let first = last
            .checked_sub_days(chrono::Days::new(u64::from(days - 1)))
            .unwrap_or(NaiveDate::MIN);
        warmed.dates = Some((first, last));
        for view in VIEWS {
            // A view warmed over every date last round stays so until this round has
            // estimated again whether it fits: what it keeps is not pushed out meanwhile.
            let from = match (view.parts, cache.warmed_from(view.name)) {
                (Some(_), _) => NaiveDate::MIN,
                (None, Some(kept)) => kept.min(first),
                (None, None) => first,
            };
            cache.warm_from(view.name, from);
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
        let older = dates.partition_point(|date| *date < first);
        if self.options().view_warm_all_time && older > 0 {
            self.warm_all_time(cache, first, dates.len(), &mut warmed)
                .await;
        }
        Ok(warmed)
    }

    /// Computes every date of the per-day views whose all-time answers fit in
    /// [`ALL_TIME_SHARE`] of the budget beside what warming keeps from `first` on, smallest
    /// first; `dates` is how many dates have data. The others are kept warm from `first` on
    /// only.
    ///
    /// Why: with only the latest dates warm, a view's first question over all time computed
    /// every older date (5 to 33 s on the bench's 100 million failure rows over 14 years),
    /// while five of the seven views keep all of theirs in 31 to 59 MB there (BENCHMARKS.md,
    /// issue 5, session 29). The estimate scales the latest dates' memory to every date:
    /// a provider's older dates, from fewer domains, usually hold less, so it errs on the
    /// side of memory left free.
    async fn warm_all_time(
        &self,
        cache: &ViewCache,
        first: NaiveDate,
        dates: usize,
        warmed: &mut WarmedViews,
    ) {
        let (share, of) = ALL_TIME_SHARE;
        let mut room =
            (cache.budget_bytes() / of * share).saturating_sub(cache.bytes_warmed_from(first));
        let kept = cache.dates_kept(first);
        let mut estimates: Vec<(&'static str, usize, usize)> = VIEWS
            .iter()
            .filter(|view| view.parts.is_none() && warmed.views.contains(&view.name))
            .filter_map(|view| {
                let kept = kept.get(view.name)?;
                // A view with no rows among the latest dates (failures that all predate them,
                // say) is estimated from the older dates a question or an earlier round left
                // in the cache; with none either, it is not estimated, and its older dates are
                // computed when asked.
                let ((dates_kept, bytes), recent_bytes) = match kept.from_first {
                    (0, _) => (kept.all, 0),
                    recent => (recent, recent.1),
                };
                let estimated = bytes.checked_div(dates_kept)?.saturating_mul(dates);
                Some((view.name, recent_bytes, estimated))
            })
            .collect();
        estimates.sort_by_key(|(_, _, estimated)| *estimated);
        for (view, recent_bytes, estimated_bytes) in estimates {
            let more = estimated_bytes.saturating_sub(recent_bytes);
            let fits = more <= room;
            if fits {
                room -= more;
                cache.warm_from(view, NaiveDate::MIN);
                let question = format!("SELECT count(*) FROM {view}");
                if let Err(error) = self.answer(&Scope::All, &question, Vec::new()).await {
                    warmed.failed.push((view, error.to_string()));
                }
            } else {
                // Its dates before `first`, kept last round, go first when the cache is full.
                cache.warm_from(view, first);
                // Those after it would not fit either: the estimates are sorted.
                room = 0;
            }
            warmed.all_time.push(AllTime {
                view,
                latest_bytes: recent_bytes,
                estimated_bytes,
                warmed: fits,
            });
        }
    }

    /// Warms the views ([`Self::warm_views`]) now, then every `every` (`None`: once), until
    /// dropped. Logs the first round and every failure; later rounds only at debug level.
    pub async fn keep_views_warm(self: Arc<Self>, days: u32, every: Option<Duration>) {
        if days == 0 || self.view_cache().is_none() {
            return;
        }
        let mut round = 0u64;
        // The views last said not to fit over every date, so that it is said again only when
        // they change.
        let mut left_to_questions: Vec<&str> = Vec::new();
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
                    let fitted: Vec<&str> = warmed.all_time_where(true).map(|v| v.view).collect();
                    let all_time = if fitted.is_empty() {
                        "none".to_owned()
                    } else {
                        fitted.join(", ")
                    };
                    if round == 0 {
                        info!(
                            views = warmed.views.len(),
                            %dates,
                            all_time = all_time.as_str(),
                            elapsed_ms = elapsed_ms(),
                            "Views computed ahead of the questions."
                        );
                    } else {
                        debug!(
                            views = warmed.views.len(),
                            %dates,
                            all_time = all_time.as_str(),
                            elapsed_ms = elapsed_ms(),
                            "Views computed again ahead of the questions."
                        );
                    }
                    let too_large: Vec<&str> =
                        warmed.all_time_where(false).map(|v| v.view).collect();
                    if !too_large.is_empty() && too_large != left_to_questions {
                        let estimates: Vec<String> = warmed
                            .all_time_where(false)
                            .map(|view| {
                                let megabytes = view.estimated_bytes.div_ceil(1_000_000);
                                format!("{} (about {megabytes} MB)", view.view)
                            })
                            .collect();
                        info!(
                            views = estimates.join(", ").as_str(),
                            "These views over every date would not fit in the view cache beside \
                             what warming keeps: their dates before the latest --view-warm-days \
                             are computed when asked. A larger --view-cache-memory keeps them."
                        );
                    }
                    left_to_questions = too_large;
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

/// The dates any table but the alerts has a directory for, sorted, once each.
async fn dates_with_data(
    sources: &BTreeMap<String, crate::catalog::TableSource>,
) -> Result<Vec<NaiveDate>> {
    // Collected before the await: a future holding the filtering closures is not `Send`
    // (their lifetimes are not general enough for `tokio::spawn`).
    let tables: Vec<&crate::catalog::TableSource> = sources
        .iter()
        .filter(|(name, _)| name.as_str() != ALERTS)
        .map(|(_, source)| source)
        .collect();
    crate::view_cache::dates_of(tables)
        .await
        .map_err(QueryError::execution)
}
