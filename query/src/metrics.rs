//! What the SQL service has done, for `GET /metrics` on its HTTP port (Prometheus text
//! format 0.0.4): statements by outcome and how long they took, turns in use and waited for,
//! the view cache ([`crate::view_cache`]) and the warming rounds ([`crate::warm`]).
//!
//! Until these, the cache's size and the warm rounds were only in the log, and an operator
//! could not tell a dashboard answered from memory from one computed at each question, nor
//! see queries queueing behind `--max-concurrent-queries`. Warming's own statements are not
//! counted as statements: they are counted as rounds.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tlsrpt_serve::metrics::{Histogram, labelled, single};

use crate::view_cache::ViewCacheStats;

/// Upper bounds of the statement duration buckets, in seconds: from an answer out of the
/// view cache (a few ms) to the default timeout (five minutes).
const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The counters of one engine.
#[derive(Debug)]
pub(crate) struct QueryMetrics {
    /// Statements by outcome: `ok`, or the error code clients see (`timeout`, ...).
    outcomes: Mutex<BTreeMap<&'static str, u64>>,
    duration: Histogram,
    /// Statements waiting for a turn, and running in one.
    waiting: AtomicU64,
    running: AtomicU64,
    warm: Mutex<WarmRounds>,
}

#[derive(Debug, Default)]
struct WarmRounds {
    /// Rounds that listed the tables and asked every view, whatever each view answered.
    done: u64,
    /// Rounds that could not list the tables.
    failed: u64,
    /// Views that could not be computed, over all rounds.
    view_failures: u64,
    /// How long the last round took, and when it ended.
    last: Option<(Duration, SystemTime)>,
    /// The per-day views the last round computed over every date, and those it estimated
    /// would not fit ([`crate::warm::AllTime`]).
    all_time: (usize, usize),
}

impl Default for QueryMetrics {
    fn default() -> Self {
        Self {
            outcomes: Mutex::default(),
            duration: Histogram::new(&DURATION_BUCKETS),
            waiting: AtomicU64::new(0),
            running: AtomicU64::new(0),
            warm: Mutex::default(),
        }
    }
}

/// Counts a statement in a gauge while it lives (a statement's future may be dropped at any
/// await: the client went away, or the timeout).
pub(crate) struct InGauge<'a>(&'a AtomicU64);

impl<'a> InGauge<'a> {
    pub(crate) fn enter(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Self(gauge)
    }
}

impl Drop for InGauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a client's statement when it ends: with its outcome when it got one
/// ([`Self::ended`]), as `cancelled` when its future was dropped before (the client went
/// away mid-statement).
pub(crate) struct StatementCount<'a> {
    metrics: &'a QueryMetrics,
    started: Instant,
    counted: bool,
}

impl<'a> StatementCount<'a> {
    pub(crate) fn start(metrics: &'a QueryMetrics) -> Self {
        Self {
            metrics,
            started: Instant::now(),
            counted: false,
        }
    }

    /// Counts the statement as ended with `outcome`; returns how long it took.
    pub(crate) fn ended(mut self, outcome: &'static str) -> Duration {
        self.counted = true;
        let elapsed = self.started.elapsed();
        self.metrics.statement(outcome, elapsed);
        elapsed
    }
}

impl Drop for StatementCount<'_> {
    fn drop(&mut self) {
        if !self.counted {
            self.metrics.statement(CANCELLED, self.started.elapsed());
        }
    }
}

/// The outcome of a statement whose client went away before its answer.
pub(crate) const CANCELLED: &str = "cancelled";

impl QueryMetrics {
    pub(crate) fn waiting(&self) -> &AtomicU64 {
        &self.waiting
    }

    pub(crate) fn running(&self) -> &AtomicU64 {
        &self.running
    }

    /// A client's statement ended: answered (`outcome` = `ok`) or with the error code
    /// `outcome`, after `elapsed` (the wait for a turn included).
    pub(crate) fn statement(&self, outcome: &'static str, elapsed: Duration) {
        *lock(&self.outcomes).entry(outcome).or_default() += 1;
        self.duration.observe(elapsed);
    }

    /// A warming round ended, having done what `warmed` says: the views it could not compute,
    /// and those it computed over every date or not.
    pub(crate) fn warm_round(&self, elapsed: Duration, warmed: &crate::WarmedViews) {
        let mut warm = lock(&self.warm);
        warm.done += 1;
        warm.view_failures += warmed.failed.len() as u64;
        warm.last = Some((elapsed, SystemTime::now()));
        let fitted = warmed.all_time.iter().filter(|view| view.warmed).count();
        warm.all_time = (fitted, warmed.all_time.len() - fitted);
    }

    /// A warming round could not list the tables.
    pub(crate) fn warm_round_failed(&self) {
        lock(&self.warm).failed += 1;
    }

    /// Appends every metric. `turns` is the concurrency limit; `cache` is `None` when the
    /// views keep nothing.
    pub(crate) fn render(&self, out: &mut String, turns: usize, cache: Option<&CacheMemory<'_>>) {
        // The outcomes clients meet most are listed even before they happen, so that a rate
        // over them exists from the start.
        let mut outcomes = lock(&self.outcomes).clone();
        for outcome in [
            "ok",
            "timeout",
            "resources_exhausted",
            "too_many_rows",
            CANCELLED,
        ] {
            outcomes.entry(outcome).or_default();
        }
        labelled(
            out,
            "tlsrpt_query_statements_total",
            "counter",
            "Statements of clients (HTTP and Flight SQL) that ended, by outcome: ok, or the \
             error code the client got.",
            "outcome",
            outcomes,
        );
        self.duration.render(
            out,
            "tlsrpt_query_statement_duration_seconds",
            "Time from a statement's arrival to its answer or error, the wait for a turn \
             included.",
        );
        single(
            out,
            "tlsrpt_query_statements_running",
            "gauge",
            "Statements running in a turn.",
            self.running.load(Ordering::Relaxed),
        );
        single(
            out,
            "tlsrpt_query_statements_waiting",
            "gauge",
            "Statements waiting for a turn (all turns taken).",
            self.waiting.load(Ordering::Relaxed),
        );
        single(
            out,
            "tlsrpt_query_turns",
            "gauge",
            "Statements that may run at once (--max-concurrent-queries).",
            turns,
        );
        if let Some(cache) = cache {
            render_cache(out, &cache.stats);
            // Each view's dates (or parts) together, so that an operator sizing
            // `--view-cache-memory` sees which views take it.
            labelled(
                out,
                "tlsrpt_query_view_cache_view_bytes",
                "gauge",
                "Memory of each view's rows kept between questions (all its dates, or parts).",
                "view",
                cache.by_view.iter().copied(),
            );
        }
        let warm = lock(&self.warm);
        labelled(
            out,
            "tlsrpt_query_view_warm_rounds_total",
            "counter",
            "Rounds of computing the views ahead of the questions: done, or failed to list the \
             tables.",
            "outcome",
            [("done", warm.done), ("failed", warm.failed)],
        );
        single(
            out,
            "tlsrpt_query_view_warm_view_failures_total",
            "counter",
            "Views a warming round could not compute (over the timeout, say); the log names \
             them.",
            warm.view_failures,
        );
        let (fitted, left) = warm.all_time;
        labelled(
            out,
            "tlsrpt_query_view_warm_all_time_views",
            "gauge",
            "Per-day views the last warming round computed over every date (fitted), and those \
             whose older dates would not fit in the view cache (left to the questions; the log \
             names them).",
            "all_time",
            [("fitted", fitted), ("left", left)],
        );
        if let Some((elapsed, ended)) = warm.last {
            single(
                out,
                "tlsrpt_query_view_warm_last_round_seconds",
                "gauge",
                "How long the last warming round took.",
                elapsed.as_secs_f64(),
            );
            let ended = ended
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            single(
                out,
                "tlsrpt_query_view_warm_last_round_end_timestamp_seconds",
                "gauge",
                "When the last warming round ended, in seconds since 1970.",
                ended.as_secs(),
            );
        }
    }
}

/// What the view cache holds, as `GET /metrics` shows it.
#[derive(Debug)]
pub(crate) struct CacheMemory<'a> {
    pub(crate) stats: ViewCacheStats,
    /// The memory of each view's dates (or parts), every view listed.
    pub(crate) by_view: Vec<(&'a str, usize)>,
}

fn render_cache(out: &mut String, cache: &ViewCacheStats) {
    single(
        out,
        "tlsrpt_query_view_cache_bytes",
        "gauge",
        "Memory of the views' rows kept between questions.",
        cache.bytes,
    );
    single(
        out,
        "tlsrpt_query_view_cache_budget_bytes",
        "gauge",
        "The most the views' rows kept may take (--view-cache-memory).",
        cache.budget_bytes,
    );
    single(
        out,
        "tlsrpt_query_view_cache_entries",
        "gauge",
        "Entries kept: a view's rows for one date, or its parts for a month, a year or all \
         dates.",
        cache.entries,
    );
    labelled(
        out,
        "tlsrpt_query_view_cache_lookups_total",
        "counter",
        "Lookups of a view's date (or month, year, whole answer): a hit is answered from \
         memory, a miss is computed from the files.",
        "result",
        [("hit", cache.hits), ("miss", cache.misses)],
    );
    single(
        out,
        "tlsrpt_query_view_cache_dropped_total",
        "counter",
        "Entries dropped to stay within the budget, least recently used first.",
        cache.dropped,
    );
    single(
        out,
        "tlsrpt_query_view_cache_too_large_total",
        "counter",
        "Answers computed but not kept because they alone exceed the budget.",
        cache.too_large,
    );
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Counters, consistent after every statement: a panic elsewhere leaves nothing half-done.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(metrics: &QueryMetrics, cache: Option<&CacheMemory<'_>>) -> String {
        let mut text = String::new();
        metrics.render(&mut text, 8, cache);
        text
    }

    fn has(text: &str, line: &str) {
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }

    #[test]
    fn statements_gauges_cache_and_warming_render_as_prometheus_text() {
        let metrics = QueryMetrics::default();
        metrics.statement("ok", Duration::from_millis(3));
        metrics.statement("ok", Duration::from_millis(30));
        metrics.statement("read_only", Duration::from_micros(200));
        let running = InGauge::enter(metrics.running());
        let waiting = [
            InGauge::enter(metrics.waiting()),
            InGauge::enter(metrics.waiting()),
        ];
        let view = |view, warmed| crate::AllTime {
            view,
            latest_bytes: 10,
            estimated_bytes: 100,
            warmed,
        };
        metrics.warm_round(
            Duration::from_millis(1500),
            &crate::WarmedViews {
                failed: vec![("a", "over time".into()), ("b", "over time".into())],
                all_time: vec![view("a", true), view("b", true), view("c", false)],
                ..crate::WarmedViews::default()
            },
        );
        metrics.warm_round_failed();
        let cache = CacheMemory {
            stats: ViewCacheStats {
                entries: 12,
                bytes: 4096,
                budget_bytes: 1 << 30,
                hits: 40,
                misses: 7,
                dropped: 3,
                too_large: 1,
            },
            by_view: vec![("failure_trend_by_mx", 4096), ("policy_overview", 0)],
        };
        let text = rendered(&metrics, Some(&cache));
        for line in [
            "tlsrpt_query_statements_total{outcome=\"ok\"} 2",
            "tlsrpt_query_statements_total{outcome=\"cancelled\"} 0",
            "tlsrpt_query_statements_total{outcome=\"read_only\"} 1",
            "tlsrpt_query_statements_total{outcome=\"timeout\"} 0",
            "tlsrpt_query_statement_duration_seconds_bucket{le=\"0.005\"} 2",
            "tlsrpt_query_statement_duration_seconds_bucket{le=\"0.025\"} 2",
            "tlsrpt_query_statement_duration_seconds_bucket{le=\"0.05\"} 3",
            "tlsrpt_query_statement_duration_seconds_count 3",
            "tlsrpt_query_statements_running 1",
            "tlsrpt_query_statements_waiting 2",
            "tlsrpt_query_turns 8",
            "tlsrpt_query_view_cache_bytes 4096",
            "tlsrpt_query_view_cache_budget_bytes 1073741824",
            "tlsrpt_query_view_cache_entries 12",
            "tlsrpt_query_view_cache_lookups_total{result=\"hit\"} 40",
            "tlsrpt_query_view_cache_lookups_total{result=\"miss\"} 7",
            "tlsrpt_query_view_cache_dropped_total 3",
            "tlsrpt_query_view_cache_too_large_total 1",
            "tlsrpt_query_view_cache_view_bytes{view=\"failure_trend_by_mx\"} 4096",
            "tlsrpt_query_view_cache_view_bytes{view=\"policy_overview\"} 0",
            "tlsrpt_query_view_warm_rounds_total{outcome=\"done\"} 1",
            "tlsrpt_query_view_warm_rounds_total{outcome=\"failed\"} 1",
            "tlsrpt_query_view_warm_view_failures_total 2",
            "tlsrpt_query_view_warm_last_round_seconds 1.5",
            "tlsrpt_query_view_warm_all_time_views{all_time=\"fitted\"} 2",
            "tlsrpt_query_view_warm_all_time_views{all_time=\"left\"} 1",
        ] {
            has(&text, line);
        }
        let ended = StatementCount::start(&metrics);
        assert!(ended.ended("ok") < Duration::from_secs(60));
        drop(StatementCount::start(&metrics));
        let text = rendered(&metrics, None);
        has(&text, "tlsrpt_query_statements_total{outcome=\"ok\"} 3");
        has(
            &text,
            "tlsrpt_query_statements_total{outcome=\"cancelled\"} 1",
        );
        has(&text, "tlsrpt_query_statement_duration_seconds_count 5");
        drop(running);
        drop(waiting);
        let text = rendered(&metrics, None);
        has(&text, "tlsrpt_query_statements_running 0");
        has(&text, "tlsrpt_query_statements_waiting 0");
        assert!(!text.contains("tlsrpt_query_view_cache_"), "{text}");
    }
}
