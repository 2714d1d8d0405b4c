//! # tlsrpt-transform: from the bus to Parquet, exactly once
//!
//! Owns consuming the report topic, batching reports into the Arrow tables defined in
//! `tlsrpt-schemas`, writing them as Parquet under `<root>/<table>/date=YYYY-MM-DD/` with
//! names that record the bus partition and offset range they hold
//! (`tlsrpt_schemas::layout`), committing offsets only after the files are durable, skipping
//! duplicated deliveries, and compacting small files. It must not serve HTTP; it reads the
//! bus only through [`tlsrpt_bus::Consumer`], so the embedded log and Kafka look the same.
//!
//! Start reading at [`Transformer::open`] (recovery) and [`Transformer::run`] (the loop).
//!
//! ## The commit protocol
//! Messages of each partition collect into a batch until it holds `max_batch_reports`
//! messages or `max_batch_bytes` of JSON, or `flush_interval` has passed since its first
//! message. A flush of the offsets `first..=last` of one partition then:
//!
//! 1. flattens the new reports (`TablesBuilder`), splits each table by `date`, sorts each
//!    part (failures by policy domain, receiving MX, date; policies by policy domain, date;
//!    reports by organisation, date);
//! 2. writes every file into `<root>/_staging/p<partition>/<first>-<last>-<writer>/` and
//!    makes them durable;
//! 3. **claims** the range: creates `_claims/p<partition>/<first>.json`, naming the staging
//!    directory and the final paths, only if it does not exist yet (`O_EXCL` on a local
//!    disk; on S3, whose PUT cannot rename, a conditional PUT with `If-None-Match: *`). This
//!    is the commit point of the flush, and the fence between writers (below);
//! 4. moves each file to `<table>/date=…/p<partition>-<first>-<last>.parquet` (a rename and
//!    directory syncs on disk, a server-side copy on S3), then deletes the staging directory;
//! 5. commits `last + 1` for the consumer group.
//!
//! On open, a claimed staging directory is finished and one that can no longer be claimed
//! is deleted; each partition resumes at the largest of the committed offset, one past the
//! highest `last` of its files and the end of its claims. A crash at any instant therefore
//! neither loses a report (its offset is committed only once its rows are in place) nor
//! writes one twice (a range in the files is never read again). A report delivered several
//! times (same dedup key, hence same `report_uid` and same partition) is written once: the
//! transformer keeps the set of `report_uid`s written, rebuilt at open from the `reports`
//! files. The module `staging` has the details; `store` the two kinds of store.

//! Messages that are not reports are kept as dead letters (the dead-letter area beside the
//! embedded log, the dead-letter topic on Kafka) and count as consumed.
//!
//! ## Several transformers
//! On Kafka, transformers in one consumer group share the topic's partitions and write one
//! store. Each works only on the partitions it owns ([`tlsrpt_bus::Assignment`]): it takes a
//! partition over with the steps of [`Transformer::open`] (finish or discard that partition's
//! interrupted flushes, resume at the larger of the committed offset and its files' end,
//! reload its `report_uid`s), and releases it by dropping its unwritten batch, which the new
//! owner reads again. Recovery and compaction touch only owned partitions, so one
//! transformer never deletes another's staging files.
//!
//! A transformer that lost a partition while busy (its session timed out during a long
//! flush) could publish a batch that the new owner also reads. Before publishing, a flush
//! asks the consumer whether the partition is still owned under the same epoch and drops the
//! batch if not. The claim closes the window that remains: both owners start their flush
//! where the partition's claims end, so they race for the same claim key and only one
//! creates it; the other drops its batch and takes the partition over again from the
//! claims. Every flush claims, also one of duplicates only, so the claims always say where
//! the next flush starts.

//! ## Compaction
//! Between flushes, the loop merges runs of small files of one (table, date, partition)
//! into one file covering their range; readers ignore the inputs from the rename on
//! (`layout::visible`), and the inputs are deleted after `superseded_grace` (the module
//! `compact` has the rules).
//!
//! ## Layout
//! - `transformer`: the state, recovery at open, the loop, reading messages into batches.
//! - `staging`: publishing one flush atomically under a claim, and finishing or discarding
//!   interrupted ones when a partition is taken over.
//! - `store`: a local directory or an object store, behind the operations the others need.
//! - `compact`: merging small files, deleting superseded ones.
//! - `files`: listing the tables, Parquet writer settings, reading and writing files, row
//!   order.
//! - `stats`: counters and their Prometheus text.

mod compact;
mod error;
mod files;
mod staging;
mod stats;
mod store;
mod transformer;

use std::time::Duration;

pub use error::{Result, TransformError};
pub use stats::TransformStats;
pub use store::TableStore;
pub use transformer::{Transformer, existing_report_uids};

/// How the transformer batches, writes and compacts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformOptions {
    /// The consumer group whose committed offsets the transformer keeps. Default
    /// `transform`.
    pub group: String,
    /// The longest a message waits in memory before its batch is written, so a report is
    /// queryable within a few seconds of its acknowledgement. Default 1 s.
    pub flush_interval: Duration,
    /// A batch is written once it holds this many messages. Default 50 000. Under live load
    /// a partition rarely gathers that many within `flush_interval`; the bound matters when
    /// a backlog is read, where larger batches write fewer, larger files: 20 000 -> 50 000
    /// cost 3.5% less CPU per report on the generator's mix (BENCHMARKS.md; with 2 MiB
    /// pages, before mimalloc's `no_thp`, it had cost 9% more). `max_batch_bytes` still
    /// bounds a batch's memory for large reports.
    pub max_batch_reports: usize,
    /// ... or this many bytes of report JSON. Default 64 MiB.
    pub max_batch_bytes: usize,
    /// Merge once a (table, date, partition) has this many consecutive small files (at
    /// least 2). Default 8.
    pub compact_min_files: usize,
    /// Files from this size on are left alone, and a merge's inputs add up to at most this
    /// (a merge streams, so this bounds file sizes, not memory). Default 16 MiB.
    pub compact_max_file_bytes: u64,
    /// How long a file superseded by a merge stays on disk for queries that listed it
    /// before. Default 60 s.
    pub superseded_grace: Duration,
    /// The most rows in a Parquet row group. Default 1 048 576.
    pub row_group_rows: usize,
    /// Write every batch as soon as a pass finds nothing new on the bus, without waiting for
    /// `flush_interval`. For a backfill, where everything is on the bus before the
    /// transformer starts; under a live stream it would write a file per trickle. Default
    /// false.
    pub flush_when_caught_up: bool,
}

impl Default for TransformOptions {
    fn default() -> Self {
        Self {
            group: "transform".to_owned(),
            flush_interval: Duration::from_secs(1),
            max_batch_reports: 50_000,
            max_batch_bytes: 64 << 20,
            compact_min_files: 8,
            compact_max_file_bytes: 16 << 20,
            superseded_grace: Duration::from_secs(60),
            row_group_rows: 1 << 20,
            flush_when_caught_up: false,
        }
    }
}

/// A point where a test stops a flush or a merge as a crash there would
/// ([`Transformer::crash_at`]). Not for production use.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// A flush's files are staged and synced; its range is not claimed yet.
    FlushStaged,
    /// The range is claimed and `moved` of the flush's files are in place.
    FlushMoving { moved: usize },
    /// Every file of the flush is in place; its offset is not committed.
    FlushPublished,
    /// A merge's output is in place; its inputs are neither deleted nor scheduled.
    CompactionRenamed,
}
