//! Counters of the transformer, for `GET /metrics` and tests.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::files::Table;

/// Counters since the transformer was opened. Shared ([`crate::Transformer::stats`]); every
/// field is an atomic, read without locking.
#[derive(Debug)]
pub struct TransformStats {
    reports_written: AtomicU64,
    /// Rows per table, in `Table::ALL` order.
    rows_written: [AtomicU64; 6],
    duplicates_skipped: AtomicU64,
    dead_lettered: AtomicU64,
    claims_lost: AtomicU64,
    files_written: AtomicU64,
    bytes_written: AtomicU64,
    flushes: AtomicU64,
    compactions: AtomicU64,
    files_compacted: AtomicU64,
    bytes_compacted: AtomicU64,
    superseded_deleted: AtomicU64,
    last_flush_micros: AtomicU64,
    /// Partitions owned now (a gauge): all of them on the embedded log; this member's share
    /// of the group's on Kafka.
    partitions_owned: AtomicU64,
    /// Per partition, the next offset committed to the bus; a watch, so that a caller can
    /// wait for a commit instead of polling ([`TransformStats::wait_for_committed`]).
    committed: watch::Sender<Vec<u64>>,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl TransformStats {
    pub(crate) fn new(committed: &[u64]) -> Self {
        Self {
            reports_written: AtomicU64::new(0),
            rows_written: Default::default(),
            duplicates_skipped: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            claims_lost: AtomicU64::new(0),
            files_written: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            compactions: AtomicU64::new(0),
            files_compacted: AtomicU64::new(0),
            bytes_compacted: AtomicU64::new(0),
            superseded_deleted: AtomicU64::new(0),
            last_flush_micros: AtomicU64::new(0),
            partitions_owned: AtomicU64::new(0),
            committed: watch::Sender::new(committed.to_vec()),
        }
    }

    pub(crate) fn set_partitions_owned(&self, n: usize) {
        self.partitions_owned.store(n as u64, Ordering::Relaxed);
    }

    /// Partitions this transformer owns now.
    pub fn partitions_owned(&self) -> u64 {
        get(&self.partitions_owned)
    }

    pub(crate) fn add_duplicate(&self) {
        add(&self.duplicates_skipped, 1);
    }

    pub(crate) fn add_dead_lettered(&self) {
        add(&self.dead_lettered, 1);
    }

    pub(crate) fn add_claim_lost(&self) {
        add(&self.claims_lost, 1);
    }

    pub(crate) fn file_written(&self, table: Table, rows: usize, bytes: u64) {
        add(&self.files_written, 1);
        add(&self.bytes_written, bytes);
        add(&self.rows_written[table as usize], rows as u64);
    }

    pub(crate) fn flushed(&self, partition: u32, next_offset: u64, reports: usize, took: Duration) {
        add(&self.flushes, 1);
        add(&self.reports_written, reports as u64);
        self.last_flush_micros
            .store(took.as_micros() as u64, Ordering::Relaxed);
        self.committed.send_modify(|committed| {
            if let Some(slot) = committed.get_mut(partition as usize) {
                *slot = next_offset;
            }
        });
    }

    /// Where a partition taken over resumes (its offsets up to there are in the files).
    pub(crate) fn set_committed(&self, partition: u32, next_offset: u64) {
        self.committed.send_modify(|committed| {
            if let Some(slot) = committed.get_mut(partition as usize) {
                *slot = next_offset;
            }
        });
    }

    pub(crate) fn compacted(&self, inputs: usize, bytes: u64) {
        add(&self.compactions, 1);
        add(&self.files_compacted, inputs as u64);
        add(&self.bytes_compacted, bytes);
    }

    pub(crate) fn add_superseded_deleted(&self, n: usize) {
        add(&self.superseded_deleted, n as u64);
    }

    /// Reports written to Parquet (each once: duplicates are not counted).
    pub fn reports_written(&self) -> u64 {
        get(&self.reports_written)
    }

    /// Rows written per table by flushes (compactions rewrite rows without counting them),
    /// as `(table, rows)`.
    pub fn rows_written(&self) -> [(&'static str, u64); 6] {
        Table::ALL.map(|t| (t.name(), get(&self.rows_written[t as usize])))
    }

    /// Messages skipped because their report was already written or read.
    pub fn duplicates_skipped(&self) -> u64 {
        get(&self.duplicates_skipped)
    }

    /// Flushes dropped because another transformer had claimed their range first (a
    /// partition that moved while this one was busy; see the crate docs).
    pub fn claims_lost(&self) -> u64 {
        get(&self.claims_lost)
    }

    /// Messages set aside in the dead-letter area.
    pub fn dead_lettered(&self) -> u64 {
        get(&self.dead_lettered)
    }

    /// Data files written by flushes.
    pub fn files_written(&self) -> u64 {
        get(&self.files_written)
    }

    /// Flushes done (including those that wrote no file: every message was a duplicate or
    /// dead-lettered).
    pub fn flushes(&self) -> u64 {
        get(&self.flushes)
    }

    /// Merges done.
    pub fn compactions(&self) -> u64 {
        get(&self.compactions)
    }

    /// Superseded files deleted.
    pub fn superseded_deleted(&self) -> u64 {
        get(&self.superseded_deleted)
    }

    /// Per partition, the next offset committed to the bus (at open: where it resumed).
    pub fn committed_offsets(&self) -> Vec<u64> {
        self.committed.borrow().clone()
    }

    /// Resolves once every partition's committed offset is at least the one given for it
    /// (say, the bus's end offsets after an import: then every report sent is queryable).
    pub async fn wait_for_committed(&self, targets: &[u64]) {
        let mut committed = self.committed.subscribe();
        // Cannot fail: `self` holds the sender.
        let _ = committed
            .wait_for(|now| now.iter().zip(targets).all(|(now, target)| now >= target))
            .await;
    }

    /// How long the last flush took, from the first file written to the offset committed.
    pub fn last_flush_duration(&self) -> Duration {
        Duration::from_micros(get(&self.last_flush_micros))
    }

    /// Appends the counters in Prometheus text format (0.0.4).
    pub fn render_prometheus(&self, out: &mut String) {
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            "tlsrpt_transform_reports_written_total",
            "Reports written to Parquet.",
            self.reports_written(),
        );
        counter(
            "tlsrpt_transform_duplicates_skipped_total",
            "Bus messages skipped as duplicates of a report already written.",
            self.duplicates_skipped(),
        );
        counter(
            "tlsrpt_transform_dead_lettered_total",
            "Bus messages that could not be read, kept in the dead-letter area.",
            self.dead_lettered(),
        );
        counter(
            "tlsrpt_transform_claims_lost_total",
            "Flushes dropped because another transformer claimed their range first.",
            self.claims_lost(),
        );
        counter(
            "tlsrpt_transform_files_written_total",
            "Parquet files written by flushes.",
            self.files_written(),
        );
        counter(
            "tlsrpt_transform_bytes_written_total",
            "Bytes of Parquet written by flushes.",
            get(&self.bytes_written),
        );
        counter(
            "tlsrpt_transform_flushes_total",
            "Flushes (a partition's offset range made durable and committed).",
            self.flushes(),
        );
        counter(
            "tlsrpt_transform_compactions_total",
            "Merges of small files.",
            self.compactions(),
        );
        counter(
            "tlsrpt_transform_files_compacted_total",
            "Files merged into larger ones.",
            get(&self.files_compacted),
        );
        counter(
            "tlsrpt_transform_compacted_bytes_total",
            "Bytes of Parquet written by merges.",
            get(&self.bytes_compacted),
        );
        counter(
            "tlsrpt_transform_superseded_deleted_total",
            "Superseded files deleted after their grace period.",
            self.superseded_deleted(),
        );
        let name = "tlsrpt_transform_partitions_owned";
        let _ = writeln!(
            out,
            "# HELP {name} Bus partitions this transformer owns now.\n# TYPE {name} gauge\n{name} {}",
            self.partitions_owned()
        );
        let name = "tlsrpt_transform_rows_written_total";
        let _ = writeln!(
            out,
            "# HELP {name} Rows written by flushes, per table.\n# TYPE {name} counter"
        );
        for (table, rows) in self.rows_written() {
            let _ = writeln!(out, "{name}{{table=\"{table}\"}} {rows}");
        }
        let name = "tlsrpt_transform_committed_offset";
        let _ = writeln!(
            out,
            "# HELP {name} Next offset committed to the bus, per partition.\n# TYPE {name} gauge"
        );
        for (partition, offset) in self.committed_offsets().iter().enumerate() {
            let _ = writeln!(out, "{name}{{partition=\"{partition}\"}} {offset}");
        }
        let name = "tlsrpt_transform_last_flush_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Duration of the last flush.\n# TYPE {name} gauge\n{name} {}",
            self.last_flush_duration().as_secs_f64()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_as_prometheus_text() {
        let stats = TransformStats::new(&[0, 7]);
        stats.file_written(Table::Failures, 12, 1000);
        stats.flushed(1, 9, 3, Duration::from_millis(250));
        stats.add_duplicate();
        let mut out = String::new();
        stats.render_prometheus(&mut out);
        for line in [
            "tlsrpt_transform_reports_written_total 3",
            "tlsrpt_transform_duplicates_skipped_total 1",
            "tlsrpt_transform_rows_written_total{table=\"failures\"} 12",
            "tlsrpt_transform_rows_written_total{table=\"reports\"} 0",
            "tlsrpt_transform_committed_offset{partition=\"0\"} 0",
            "tlsrpt_transform_committed_offset{partition=\"1\"} 9",
            "tlsrpt_transform_last_flush_seconds 0.25",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing in\n{out}");
        }
    }
}
