//! Pieces of the Prometheus text format (0.0.4) that more than one service's `GET /metrics`
//! page writes.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A histogram of durations with fixed bucket bounds, in seconds, as Prometheus expects
/// them: each bucket counts the observations at or under its bound, so the counts grow from
/// the first bucket to the last. Lock-free.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// A histogram with these upper bounds, in seconds, ascending.
    pub fn new(bounds: &'static [f64]) -> Self {
        debug_assert!(bounds.windows(2).all(|pair| pair[0] < pair[1]));
        Self {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        for (bound, count) in self.bounds.iter().zip(&self.buckets) {
            if seconds <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Appends the histogram as `name` (its `# HELP` and `# TYPE` lines, the buckets, the
    /// sum and the count).
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, count) in self.bounds.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Appends one metric without labels: its `# HELP` and `# TYPE` lines (`kind` is `counter`
/// or `gauge`) and its value.
pub fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// Appends one metric with one label: its `# HELP` and `# TYPE` lines (`kind` is `counter`
/// or `gauge`), then a line per `(label value, value)`, in the order given.
pub fn labelled<L: std::fmt::Display, V: std::fmt::Display>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (L, V)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (label_value, value) in values {
        let _ = writeln!(out, "{name}{{{label}=\"{label_value}\"}} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_labelled_metric_has_one_line_per_label_value_in_order() {
        let mut text = String::new();
        labelled(
            &mut text,
            "t_total",
            "counter",
            "A test.",
            "outcome",
            [("ok", 3), ("failed", 0)],
        );
        assert_eq!(
            text,
            "# HELP t_total A test.\n# TYPE t_total counter\n\
             t_total{outcome=\"ok\"} 3\n\
             t_total{outcome=\"failed\"} 0\n"
        );
    }

    #[test]
    fn buckets_count_the_observations_at_or_under_their_bound() {
        const BOUNDS: [f64; 3] = [0.001, 0.01, 0.1];
        let histogram = Histogram::new(&BOUNDS);
        histogram.observe(Duration::from_micros(500));
        histogram.observe(Duration::from_millis(10));
        histogram.observe(Duration::from_secs(2));
        let mut text = String::new();
        histogram.render(&mut text, "t_seconds", "A test.");
        assert_eq!(
            text,
            "# HELP t_seconds A test.\n# TYPE t_seconds histogram\n\
             t_seconds_bucket{le=\"0.001\"} 1\n\
             t_seconds_bucket{le=\"0.01\"} 2\n\
             t_seconds_bucket{le=\"0.1\"} 2\n\
             t_seconds_bucket{le=\"+Inf\"} 3\n\
             t_seconds_sum 2.0105\n\
             t_seconds_count 3\n"
        );
    }
}
