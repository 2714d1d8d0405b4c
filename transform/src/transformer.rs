//! The transformer: its state, the recovery at open, and the loop.
//!
//! All file and bus work happens in [`Core`], synchronously; [`Transformer::run`] hands the
//! core to a thread of its own for each pass and waits between passes without blocking the
//! runtime. One thread rather than `spawn_blocking`: a pass allocates tens of MB (a flush's
//! batches), and on whichever of the blocking pool's threads it lands (DataFusion's file reads
//! keep dozens busy under query load) the allocator keeps those pages for that thread;
//! measured under HTTP load with SQL polling, the process grew to 2.4 GB that way. Keeping
//! the steps synchronous also lets the tests stop a flush at any step ([`CrashPoint`]) and
//! open again, as after a crash.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tlsrpt_bus::dead_letter::{DeadLetterSink, Rejection};
use tlsrpt_bus::embedded::EmbeddedLog;
use tlsrpt_bus::{Assignment, Consumer, Record};
use tlsrpt_schemas::dedup;
use tlsrpt_schemas::layout::FileRange;
use tlsrpt_schemas::message::{self, MessageError, WireEnvelope};
use tlsrpt_schemas::rollup::Rollups;
use tlsrpt_schemas::tables::TablesBuilder;

use crate::compact::Compactor;
use crate::error::{Result, TransformError};
use crate::files::{self, Table};
use crate::staging::{self, FlushFile, Outcome};
use crate::stats::TransformStats;
use crate::store::TableStore;
use crate::{CrashPoint, TransformOptions};

/// Consumes the bus into the Parquet tables, exactly once. See the crate documentation for
/// the protocol.
pub struct Transformer<C: Consumer = EmbeddedLog> {
    core: Box<Core<C>>,
}

impl<C: Consumer> std::fmt::Debug for Transformer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transformer")
            .field("store", &self.core.store)
            .field("group", &self.core.options.group)
            .field("positions", &self.core.positions)
            .finish_non_exhaustive()
    }
}

/// Messages read from one partition per pass, at most: a pass (which also flushes and
/// compacts) stays short, so a shutdown request is noticed soon. Batches span passes.
const FETCH_MAX: usize = 1024;

/// The reports read from one partition and not yet written: one flush's worth.
struct Batch {
    /// The offsets read, contiguous: the range the flush accounts for, including messages
    /// that were duplicates or dead-lettered.
    range: FileRange,
    builder: TablesBuilder,
    /// Messages read into this batch (reports, duplicates and dead letters).
    messages: usize,
    /// Reports appended to `builder`.
    reports: usize,
    /// Bytes of report JSON appended.
    bytes: usize,
    /// When it must be written, full or not: `flush_interval` after its first message.
    due: Instant,
}

struct Core<C> {
    consumer: Arc<C>,
    store: Arc<TableStore>,
    /// Names this transformer instance in its staging directories, so that two writers of
    /// one store never touch each other's (`staging`).
    writer: String,
    dead_letters: Arc<dyn DeadLetterSink>,
    options: TransformOptions,
    stats: Arc<TransformStats>,
    /// The partitions this transformer owns, with the epoch it took each over at (see
    /// [`Assignment`]): only these are read, written and compacted.
    owned: BTreeMap<u32, u64>,
    /// Where reading resumed at the last take-over, per partition (for logs and tests).
    resumed: Vec<u64>,
    /// The next offset to fetch, per partition.
    positions: Vec<u64>,
    pending: Vec<Option<Batch>>,
    /// Per partition, the `report_uid`s written or pending: a report is written once, however
    /// often it comes (its copies share a dedup key, hence a partition). Rebuilt from the
    /// partition's `reports` files when it is taken over, so it holds across restarts and
    /// owners.
    seen: Vec<files::UidSet>,
    /// Per partition, the claims there are (first offset, when made), oldest first: kept to
    /// delete them once their grace has passed (`staging::prune_claims`).
    claims: Vec<Vec<(u64, SystemTime)>>,
    /// Per partition: the next flush is the first since the take-over, and sweeps up
    /// staging that its claim makes unclaimable (`staging::sweep`).
    sweep_pending: Vec<bool>,
    /// Builders of written batches, emptied: a new batch takes one rather than a fresh
    /// builder, as its columns start with the capacity the last batch needed (growing
    /// `raw_json` by doubling copied it several times and faulted in fresh pages each time).
    spare_builders: Vec<TablesBuilder>,
    compactor: Compactor,
    crash: Option<CrashPoint>,
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy)]
struct Progress {
    read: usize,
    compacted: bool,
}

impl<C: Consumer> Transformer<C> {
    /// Opens the transformer over `consumer`, writing the tables under `root` and keeping
    /// unreadable messages in `dead_letters`, and takes over the partitions the consumer
    /// owns now (on the embedded log, all of them; on Kafka, those assigned later are taken
    /// over as they come, by the same steps). Taking over a partition means, in this order:
    ///
    /// 1. its interrupted flushes: those past their commit point (their claim) are finished,
    ///    the others discarded (their offsets are read again);
    /// 2. leftover temporary files of its interrupted compactions are deleted, and its
    ///    superseded files whose grace has passed;
    /// 3. reading resumes at the largest of the group's committed offset, one past the
    ///    highest offset its data files account for and the end of its claims (the files are
    ///    the truth: a crash between publishing a flush's files and committing its offset
    ///    loses nothing and writes nothing twice);
    /// 4. the `report_uid`s of its `reports` files are loaded, to skip duplicates.
    ///
    /// Blocking (file and bus I/O): call it at start-up or from a blocking context.
    pub fn open(
        consumer: C,
        store: impl Into<TableStore>,
        dead_letters: Arc<dyn DeadLetterSink>,
        options: TransformOptions,
    ) -> Result<Self> {
        let store = Arc::new(store.into());
        store.prepare()?;
        let partitions = consumer.partitions() as usize;
        let writer = writer_id();
        let compactor = Compactor::new(
            Arc::clone(&store),
            writer.clone(),
            options.compact_min_files,
            options.compact_max_file_bytes,
            options.superseded_grace,
            options.row_group_rows,
        );
        let mut core = Box::new(Core {
            consumer: Arc::new(consumer),
            store,
            writer,
            dead_letters,
            options,
            stats: Arc::new(TransformStats::new(&vec![0; partitions])),
            owned: BTreeMap::new(),
            resumed: vec![0; partitions],
            positions: vec![0; partitions],
            pending: (0..partitions).map(|_| None).collect(),
            seen: (0..partitions).map(|_| files::UidSet::default()).collect(),
            claims: vec![Vec::new(); partitions],
            sweep_pending: vec![false; partitions],
            spare_builders: Vec::new(),
            compactor,
            crash: None,
        });
        core.follow_assignment()?;
        tracing::info!(
            store = %core.store.describe(),
            writer = %core.writer,
            group = %core.options.group,
            partitions = ?core.owned.keys().collect::<Vec<_>>(),
            "Transformer opened."
        );
        Ok(Self { core })
    }

    /// The counters, shared: keep the `Arc` to read them while [`run`](Self::run) goes on.
    pub fn stats(&self) -> Arc<TransformStats> {
        Arc::clone(&self.core.stats)
    }

    /// Per partition, the offset reading resumed at when opened.
    pub fn resume_offsets(&self) -> &[u64] {
        &self.core.resumed
    }

    /// Reports known to be written in the partitions owned (the dedup sets' size).
    pub fn known_reports(&self) -> usize {
        self.core.seen.iter().map(files::UidSet::len).sum()
    }

    /// The partitions this transformer owns now.
    pub fn owned_partitions(&self) -> Vec<u32> {
        self.core.owned.keys().copied().collect()
    }

    /// Stops the next flush or compaction at `point` with
    /// [`TransformError::SimulatedCrash`], leaving the files as a crash there would. For the
    /// crash-recovery tests: production never sets it, and the order of steps is the same
    /// with or without it.
    #[doc(hidden)]
    pub fn crash_at(&mut self, point: CrashPoint) {
        self.core.crash = Some(point);
    }

    /// Consumes every partition until `shutdown` resolves, then reads what is left on the
    /// bus, writes it, commits and returns. Returns an error, without skipping anything, when a file or the
    /// bus fails: what was not written is not committed, and is read again at the next start.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let mut shutdown = std::pin::pin!(shutdown);
        let consumer = Arc::clone(&self.core.consumer);
        let mut core = self.core;
        let worker = Worker::start()?;
        loop {
            // Taken before the pass reads, so an append during the pass wakes the wait.
            let seen = consumer.end_offsets();
            let progress;
            (core, progress) = worker.run(core, Core::pass).await?;
            let stop = tokio::select! {
                biased;
                () = &mut shutdown => true,
                () = std::future::ready(()) => false,
            };
            if stop {
                break;
            }
            if progress.read > 0 || progress.compacted || core.compactor.has_candidates() {
                continue;
            }
            let deadline = core.next_deadline();
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                ends = consumer.wait_for_appends(&seen) => { ends?; }
                () = sleep => {}
            }
        }
        worker.run(core, Core::finish).await?;
        Ok(())
    }
}

/// The transformer's own thread: runs one step at a time on the core and hands it back.
struct Worker {
    jobs: std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>,
}

impl Worker {
    /// Starts the thread; it ends when the worker is dropped (or a step panics).
    fn start() -> Result<Self> {
        let (jobs, queue) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        std::thread::Builder::new()
            .name("tlsrpt-transform".to_owned())
            .spawn(move || {
                for job in queue {
                    job();
                }
            })
            .map_err(|e| TransformError::Thread {
                message: e.to_string(),
            })?;
        Ok(Self { jobs })
    }

    /// Runs `step` on the core in the worker's thread and hands the core back.
    async fn run<C: Consumer, T: Send + 'static>(
        &self,
        mut core: Box<Core<C>>,
        step: fn(&mut Core<C>) -> Result<T>,
    ) -> Result<(Box<Core<C>>, T)> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let job = Box::new(move || {
            let _ = done.send(step(&mut core).map(|value| (core, value)));
        });
        // A step that panicked took the thread down: the send fails or the answer never comes.
        self.jobs.send(job).map_err(|_| TransformError::Panicked)?;
        answer.await.map_err(|_| TransformError::Panicked)?
    }
}

impl<C: Consumer> Core<C> {
    /// Brings the partitions owned in line with the consumer's assignment: releases those
    /// revoked (or assigned anew, with another epoch) and takes over those assigned.
    fn follow_assignment(&mut self) -> Result<()> {
        let Assignment { partitions } = self.consumer.assignment();
        let now: BTreeMap<u32, u64> = partitions
            .into_iter()
            .filter(|&(p, _)| (p as usize) < self.positions.len())
            .collect();
        let released: Vec<u32> = self
            .owned
            .iter()
            .filter(|&(p, epoch)| now.get(p) != Some(epoch))
            .map(|(&p, _)| p)
            .collect();
        for partition in released {
            self.release(partition);
        }
        let taken: Vec<(u32, u64)> = now
            .into_iter()
            .filter(|(p, _)| !self.owned.contains_key(p))
            .collect();
        if !taken.is_empty() {
            self.take_over(&taken)?;
        }
        self.stats.set_partitions_owned(self.owned.len());
        Ok(())
    }

    /// Stops working on a partition another transformer may now own. Its batch is dropped
    /// unwritten: the new owner reads those offsets again from the files' end.
    fn release(&mut self, partition: u32) {
        let p = partition as usize;
        self.owned.remove(&partition);
        let dropped = self.pending[p].take().map_or(0, |b| b.messages);
        self.seen[p] = files::UidSet::default();
        self.claims[p] = Vec::new();
        self.compactor.release(partition);
        tracing::info!(partition, dropped, "Partition released.");
    }

    /// Takes partitions over (the steps are in [`Transformer::open`]'s documentation).
    fn take_over(&mut self, taken: &[(u32, u64)]) -> Result<()> {
        let is_taken = |p: u32| taken.iter().any(|&(t, _)| t == p);
        let (mut rolled_forward, mut discarded) = (0, 0);
        let mut claims_end: BTreeMap<u32, u64> = BTreeMap::new();
        for &(partition, _) in taken {
            let recovered = staging::recover(&self.store, partition)?;
            rolled_forward += recovered.rolled_forward;
            discarded += recovered.discarded;
            claims_end.insert(partition, recovered.claims_end);
            self.claims[partition as usize] = recovered.claims;
            self.sweep_pending[partition as usize] = true;
        }
        let mut scan = files::scan(&self.store)?;
        scan.retain_partitions(is_taken);
        let now = Instant::now();
        self.compactor.start(&scan, now, SystemTime::now())?;
        let deleted = self.compactor.delete_due(now);
        self.stats.add_superseded_deleted(deleted);

        let mut from_files: BTreeMap<u32, u64> = BTreeMap::new();
        for file in &scan.files {
            let next = from_files.entry(file.range.partition).or_default();
            *next = (*next).max(file.range.last + 1);
        }
        let ends = self.consumer.end_offsets();
        let mut behind = Vec::new();
        for &(partition, epoch) in taken {
            let p = partition as usize;
            let committed = self
                .consumer
                .committed(&self.options.group, partition)?
                .unwrap_or(0);
            let files_next = from_files.get(&partition).copied().unwrap_or(0);
            let claimed_next = claims_end.get(&partition).copied().unwrap_or(0);
            let position = committed.max(files_next).max(claimed_next);
            if position > committed {
                // Files ahead of the group's offset (a stop between publishing a flush and
                // its commit): bring the group up to them, so lag on the bus tells the truth.
                behind.push((partition, position));
            }
            if self.consumer.end_offsets_are_exact()
                && ends.get(p).is_some_and(|&end| position > end)
            {
                // The tables account for offsets the bus never had: the bus was replaced
                // under existing tables. New messages below `position` would be skipped.
                tracing::warn!(
                    partition,
                    position,
                    end = ends[p],
                    "The tables hold offsets past the end of the bus partition; was the bus recreated?"
                );
            }
            self.positions[p] = position;
            self.resumed[p] = position;
            self.pending[p] = None;
            self.stats.set_committed(partition, position);
            self.owned.insert(partition, epoch);
        }
        if !behind.is_empty() {
            self.commit(&behind);
        }
        for file in files::visible(&scan.files) {
            if file.table == Table::Reports {
                files::read_report_uids(
                    &self.store,
                    file,
                    &mut self.seen[file.range.partition as usize],
                )?;
            }
        }
        tracing::info!(
            partitions = ?taken.iter().map(|&(p, _)| p).collect::<Vec<_>>(),
            rolled_forward,
            discarded,
            superseded_deleted = deleted,
            positions = ?taken.iter().map(|&(p, _)| self.positions[p as usize]).collect::<Vec<_>>(),
            "Partitions taken over."
        );
        Ok(())
    }

    /// Records the next offsets to read for the group. A commit that fails loses nothing
    /// (the files are the truth, and resuming takes the larger of the two), so it is logged,
    /// not fatal: on Kafka it fails while the group rebalances.
    fn commit(&self, offsets: &[(u32, u64)]) {
        if let Err(error) = self.consumer.commit(&self.options.group, offsets) {
            tracing::warn!(%error, ?offsets, "Could not commit offsets; the files hold them.");
        }
    }

    /// Whether `partition` is still this transformer's, as taken over: asked of the consumer
    /// right before a flush publishes, so that a transformer that lost a partition (a
    /// rebalance while it was busy) does not write offsets another one may be reading. The
    /// window between this check and the publish remains; see the crate documentation.
    fn still_owns(&self, partition: u32) -> bool {
        let epoch = self.owned.get(&partition);
        epoch.is_some()
            && self
                .consumer
                .assignment()
                .partitions
                .iter()
                .any(|(p, e)| *p == partition && Some(e) == epoch)
    }

    /// Reads what is there (a bounded amount per partition), writes the batches that are
    /// full or due, deletes superseded files whose time has come, and merges at most one run
    /// of small files.
    fn pass(&mut self) -> Result<Progress> {
        self.follow_assignment()?;
        let mut progress = Progress {
            read: self.read_available()?,
            compacted: false,
        };
        let now = Instant::now();
        let caught_up = self.options.flush_when_caught_up && progress.read == 0;
        for partition in self.owned_list() {
            if self.pending[partition as usize]
                .as_ref()
                .is_some_and(|b| caught_up || b.due <= now)
            {
                self.flush(partition)?;
            }
        }
        let deleted = self.compactor.delete_due(Instant::now());
        self.stats.add_superseded_deleted(deleted);
        if let Some(merged) = self.compactor.step(self.crash)? {
            self.stats.compacted(merged.inputs, merged.bytes);
            progress.compacted = true;
        }
        Ok(progress)
    }

    /// Reads up to [`FETCH_MAX`] messages of each partition into the batches, writing those
    /// that fill up. Returns how many it read.
    fn read_available(&mut self) -> Result<usize> {
        let mut read = 0;
        for partition in self.owned_list() {
            let p = partition as usize;
            let records = self
                .consumer
                .fetch(partition, self.positions[p], FETCH_MAX)?;
            for record in records {
                if record.offset < self.positions[p] {
                    continue;
                }
                let next = record.offset + 1;
                self.positions[p] = next;
                read += 1;
                self.accept(record)?;
                if self.is_full(p) {
                    self.flush(partition)?;
                    if self.positions[p] != next {
                        // The flush lost its claim and the partition was taken over again:
                        // reading goes on from where the claims end, not from these records.
                        break;
                    }
                }
            }
        }
        Ok(read)
    }

    fn owned_list(&self) -> Vec<u32> {
        self.owned.keys().copied().collect()
    }

    fn is_full(&self, p: usize) -> bool {
        self.pending[p].as_ref().is_some_and(|b| {
            b.messages >= self.options.max_batch_reports.max(1)
                || b.bytes >= self.options.max_batch_bytes
        })
    }

    /// The earliest time something must happen without new messages: a batch falling due,
    /// a superseded file to delete.
    fn next_deadline(&self) -> Option<Instant> {
        let batches = self.pending.iter().flatten().map(|b| b.due);
        batches.chain(self.compactor.next_deletion()).min()
    }

    /// Takes one message into its partition's batch: a new report is flattened, a duplicate
    /// skipped, an unreadable message dead-lettered. Each of the three is consumed: the
    /// batch's range covers it.
    fn accept(&mut self, record: Record) -> Result<()> {
        let p = record.partition as usize;
        let interval = self.options.flush_interval;
        let batch = self.pending[p].get_or_insert_with(|| Batch {
            range: FileRange {
                partition: record.partition,
                first: record.offset,
                last: record.offset,
            },
            builder: self.spare_builders.pop().unwrap_or_default(),
            messages: 0,
            reports: 0,
            bytes: 0,
            due: Instant::now() + interval,
        });
        batch.range.last = record.offset;
        batch.messages += 1;
        // The report borrows its text from the message, which outlives it here.
        let received = match message::from_message(&record.message.value, &record.message.headers) {
            Ok(received) => received,
            Err(error) => {
                let path = match &error {
                    MessageError::Report(decode) => decode.path().map(str::to_owned),
                    _ => None,
                };
                return self.dead_letter(&record, "undecodable_message", &error.to_string(), path);
            }
        };
        let uid = received.report.report_uid_value();
        if !self.seen[p].insert(uid) {
            self.stats.add_duplicate();
            return Ok(());
        }
        match batch
            .builder
            .append_with_uid(&received, dedup::ReportUidHex::of(uid).as_str())
        {
            Ok(()) => {
                batch.reports += 1;
                batch.bytes += received.raw_json.len();
                Ok(())
            }
            Err(error) => {
                // Validation refuses what cannot be flattened; a message that gets here was
                // written by another program. Set aside like an unreadable one.
                self.seen[p].remove(&uid);
                self.dead_letter(&record, "unflattenable_report", &error.to_string(), None)
            }
        }
    }

    /// Keeps a message that cannot become rows in the dead-letter area. Only once it is kept
    /// may its offset be committed, so a failure here stops the transformer.
    fn dead_letter(
        &self,
        record: &Record,
        code: &str,
        error: &str,
        path: Option<String>,
    ) -> Result<()> {
        let message = &record.message;
        let bytes = &message.value;
        let sha256: String = Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        // What the envelope says, as far as it can be read: a dead letter may be one because
        // its envelope is not.
        let envelope = WireEnvelope::of(&message.headers).unwrap_or_default();
        let received_at = envelope
            .received_at
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map_or_else(Utc::now, |t| t.with_timezone(&Utc));
        let rejection = Rejection {
            received_at,
            transport: envelope
                .transport
                .as_deref()
                .unwrap_or("unknown")
                .chars()
                .take(32)
                .collect(),
            remote_addr: envelope.remote_addr.map(Cow::into_owned),
            code: code.to_owned(),
            message: format!(
                "bus partition {} offset {}: {error}",
                record.partition, record.offset
            ),
            path,
            bytes: bytes.len(),
            complete: true,
            sha256,
        };
        let kept = self
            .dead_letters
            .keep_record(record, &rejection)
            .map_err(TransformError::DeadLetter)?;
        self.stats.add_dead_lettered();
        tracing::warn!(
            partition = record.partition,
            offset = record.offset,
            kept,
            code,
            error,
            "Message set aside as a dead letter."
        );
        Ok(())
    }

    /// Writes one partition's batch and commits its offsets: files first (staged, then
    /// published all at once), the commit only after they are in place.
    fn flush(&mut self, partition: u32) -> Result<()> {
        let Some(mut batch) = self.pending[partition as usize].take() else {
            return Ok(());
        };
        if !self.still_owns(partition) {
            tracing::info!(
                partition,
                first = batch.range.first,
                last = batch.range.last,
                "Partition lost before its batch was written; the batch is left to the new owner."
            );
            return Ok(());
        }
        let started = Instant::now();
        // A batch of duplicates and dead letters only writes no file, but is claimed like any
        // other: the claims say where the next flush of the partition starts, for every
        // writer (`staging`).
        let mut flush_files = Vec::new();
        let mut written = None;
        if batch.reports > 0 {
            let tables = written.insert(batch.builder.finish()?);
            // Summed from the same rows and published in the same claim: the rollups are
            // exactly once because the rows are.
            let rollups = Rollups::of(tables)?;
            for table in Table::ALL {
                let batch = table.of(tables, &rollups);
                for (date, rows) in files::sorted_by_date(table, batch)? {
                    flush_files.push(FlushFile {
                        table,
                        date,
                        batch: batch.clone(),
                        rows,
                    });
                }
            }
        }
        let outcome = staging::publish(
            &self.store,
            &self.writer,
            batch.range,
            &flush_files,
            self.options.row_group_rows,
            self.crash,
        )?;
        let published = match outcome {
            Outcome::Published(published) => published,
            Outcome::Lost { winner } => {
                // Another transformer published from the same offset: this one lost the
                // partition without knowing it yet, or the other did. Either way the range
                // is written; take the partition over again from the claims.
                tracing::warn!(
                    partition,
                    first = batch.range.first,
                    last = batch.range.last,
                    winner_last = winner.last,
                    "Another transformer claimed this range first; the batch is dropped and the partition taken over again."
                );
                self.stats.add_claim_lost();
                let epoch = self.owned.get(&partition).copied().unwrap_or_default();
                self.release(partition);
                return self.take_over(&[(partition, epoch)]);
            }
        };
        let p = partition as usize;
        if std::mem::take(&mut self.sweep_pending[p]) {
            staging::sweep(&self.store, partition, batch.range.first, &self.writer)?;
        }
        staging::prune_claims(
            &self.store,
            partition,
            &mut self.claims[p],
            batch.range.first,
        )?;
        for (file, done) in flush_files.iter().zip(&published) {
            self.stats
                .file_written(done.table, file.rows.len(), done.bytes);
            self.compactor.touched((done.table, done.date, partition));
        }
        // The files hold the rows now: the batch's memory goes back to its builder, which
        // the next batch takes.
        drop(flush_files);
        if let Some(tables) = written {
            batch.builder.recycle(tables);
        }
        self.spare_builders.push(std::mem::take(&mut batch.builder));
        if self.crash == Some(CrashPoint::FlushPublished) {
            return Err(TransformError::SimulatedCrash(CrashPoint::FlushPublished));
        }
        let next = batch.range.last + 1;
        self.commit(&[(partition, next)]);
        self.stats
            .flushed(partition, next, batch.reports, started.elapsed());
        tracing::debug!(
            partition,
            first = batch.range.first,
            last = batch.range.last,
            reports = batch.reports,
            "Flushed."
        );
        Ok(())
    }

    /// At shutdown: reads everything on the bus (the receivers have stopped, so it ends), then
    /// writes and commits every batch. Stopping after the last pass instead left the messages
    /// appended since (the receivers' last requests) and any backlog past one fetch for the
    /// next start: acknowledged, durable, but not in the tables when `up` exited.
    fn finish(&mut self) -> Result<()> {
        self.follow_assignment()?;
        // Up to the ends seen now: on Kafka other producers go on, and the end never comes.
        let ends = self.consumer.end_offsets();
        let behind = |core: &Self| {
            core.owned
                .keys()
                .any(|&p| core.positions[p as usize] < ends.get(p as usize).copied().unwrap_or(0))
        };
        while behind(self) && self.read_available()? > 0 {}
        for partition in self.owned_list() {
            self.flush(partition)?;
        }
        Ok(())
    }
}

/// The `report_uid`s of every report in the tables under `root` (superseded files excluded),
/// read-only: for `tlsrpt import` and for tests. A flush interrupted past its commit point
/// is not seen until a transformer opens the tables and finishes it.
pub fn existing_report_uids(root: &Path) -> Result<HashSet<u128>> {
    let store = TableStore::local(root);
    let scan = files::scan(&store)?;
    let mut uids = HashSet::new();
    for file in files::visible(&scan.files) {
        if file.table == Table::Reports {
            files::read_report_uids(&store, file, &mut uids)?;
        }
    }
    Ok(uids)
}

/// A name for this transformer instance, unique among the writers of one store: the process
/// id, the time and the standard library's per-process random hash keys.
fn writer_id() -> String {
    use std::hash::BuildHasher;
    let random = std::collections::hash_map::RandomState::new().hash_one((
        std::process::id(),
        SystemTime::now(),
        std::thread::current().id(),
    ));
    format!("{random:016x}")
}
