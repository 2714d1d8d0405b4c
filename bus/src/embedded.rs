//! The embedded log: the bus when no Kafka broker is configured.
//!
//! One redb file, `bus.redb`, in the directory given. Messages are stored in record batches
//! ([`batch`]): each group commit writes, per partition, runs of consecutive messages as one
//! value under `(partition, offset of its first message)`, LZ4-compressed as a whole (the
//! reports of one run share most of their keys and names, which compressing the run finds).
//! Committed consumer offsets are kept under `(group, partition)`; the partition count and
//! the layout's format in `meta`. redb holds an exclusive lock on the file, so a second
//! process gets [`BusError::Locked`] instead of a corrupt log.
//!
//! ## Group commit
//! A synced write costs 0.15 to 2.3 ms on these machines; one per report would cap a receiver
//! near 500 reports/s. So appends go to one writer thread through a queue. The writer takes
//! everything queued, writes it in one transaction, commits it with an fsync, and only then
//! answers each waiting sender. While it syncs, new appends queue up and go into the next
//! transaction: the cost of a sync is shared by every report that arrived meanwhile, and a
//! sender still hears back only once its message is on disk.
//!
//! ## Formats
//! 1 (development versions before 2026-11-23): three tables with JSON headers; refused with
//! what to do. 2: one record per message in a `records` table; upgraded to batches in place
//! when opened. 3: record batches in `batches`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use redb::{Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{oneshot, watch};

use crate::{BusError, Delivered, Message, Record, partition_for_key};

/// Record batches ([`batch`]) under `(partition, offset of the batch's first message)`. A
/// first layout kept keys, values and JSON headers in three tables (three B-tree inserts per
/// message; the writer thread cost 26 us per 2 KB report under load); the second one
/// LZ4-compressed record per message (16 us per report at 18,000 reports/s, half of it in
/// redb's inserts and commit); a batch is one insert for up to [`BATCH_MAX_MESSAGES`].
const BATCHES: TableDefinition<'_, (u32, u64), &[u8]> = TableDefinition::new("batches");
/// Format 2's table: one record per message under `(partition, offset)`; read only to
/// upgrade a log.
const RECORDS_V2: TableDefinition<'_, (u32, u64), &[u8]> = TableDefinition::new("records");
const COMMITTED: TableDefinition<'_, (&str, u32), u64> = TableDefinition::new("committed");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
/// The layout of the tables above, kept in `meta` under `format` (see "Formats" above).
const LOG_FORMAT: u64 = 3;

/// A batch holds at most this many messages ...
const BATCH_MAX_MESSAGES: usize = 256;
/// ... and, unless it holds one message, at most this many bytes before compression, so that
/// reading one message from the middle of a batch decompresses a bounded amount.
const BATCH_MAX_BYTES: usize = 1 << 20;

/// Partitions of a new log unless asked otherwise. One: the embedded log has one writer and
/// one transformer thread, so partitions buy no parallelism, and each partition multiplies
/// the small Parquet files of every flush (measured: 4 partitions cost 84 us of CPU per
/// report under HTTP load, 1 partition 77 us).
pub const DEFAULT_PARTITIONS: u32 = 1;

/// Messages written in one transaction, at most (one `send_all` larger than this is still one
/// transaction); more wait for the next one. Bounds the memory a burst can pin and the
/// latency of the first sender in it.
const MAX_GROUP: usize = 4096;

/// Options of the embedded log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// Partitions: `None` takes an existing log's count, or [`DEFAULT_PARTITIONS`] for a
    /// new one; `Some(n)` asks for `n`, and an existing log with another count is an error
    /// rather than a silent reshuffle.
    pub partitions: Option<u32>,
    /// redb's page cache. Its default, 1 GiB, fills with every page the writer touches and
    /// made a loaded `tlsrpt up` hold 2 GB; the transformer reads what was just written,
    /// which a small cache (and the kernel's page cache) holds.
    pub cache_bytes: usize,
}

impl EmbeddedOptions {
    /// The default options, asking for `partitions` partitions.
    pub fn with_partitions(partitions: u32) -> Self {
        Self {
            partitions: Some(partitions),
            ..Self::default()
        }
    }
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            partitions: None,
            cache_bytes: 64 << 20,
        }
    }
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EmbeddedStats {
    /// Messages appended since the log was opened.
    pub appended: u64,
    /// Transactions committed for them: `appended / commits` is the group size.
    pub commits: u64,
}

/// The embedded log. Cheap to clone; the writer thread stops when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct EmbeddedLog {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    path: PathBuf,
    db: Arc<Database>,
    partitions: u32,
    /// `None` once shut down. A `Mutex` because `mpsc::Sender` is not `Sync` on every
    /// supported toolchain; it is held only to clone or send.
    queue: Mutex<Option<mpsc::Sender<Append>>>,
    /// The next offset of each partition, as far as readers may see (published after commit).
    ends: watch::Receiver<Vec<u64>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    appended: Arc<AtomicU64>,
    commits: Arc<AtomicU64>,
}

/// One or more messages sent together: they go into one transaction, and their sender gets
/// one answer.
struct Append {
    /// Each message with its partition.
    messages: Vec<(u32, Message)>,
    reply: oneshot::Sender<Result<Vec<Delivered>, BusError>>,
}

fn storage(err: impl std::fmt::Display) -> BusError {
    BusError::Storage(err.to_string())
}

impl EmbeddedLog {
    /// Opens the log in `dir` (created if missing), or creates it with `options`.
    pub fn open(dir: &Path, options: EmbeddedOptions) -> Result<Self, BusError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| BusError::Storage(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("bus.redb");
        let db = match Database::builder()
            .set_cache_size(options.cache_bytes)
            .create(&path)
        {
            Ok(db) => db,
            Err(DatabaseError::DatabaseAlreadyOpen) => {
                return Err(BusError::Locked {
                    path: path.display().to_string(),
                });
            }
            Err(e) => return Err(storage(format!("cannot open {}: {e}", path.display()))),
        };
        let partitions = Self::prepare(&db, &path, options.partitions)?;
        let ends = Self::read_ends(&db, partitions)?;
        let db = Arc::new(db);
        let (ends_tx, ends_rx) = watch::channel(ends.clone());
        let (queue_tx, queue_rx) = mpsc::channel();
        let appended = Arc::new(AtomicU64::new(0));
        let commits = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            db: Arc::clone(&db),
            ends,
            published: ends_tx,
            appended: Arc::clone(&appended),
            commits: Arc::clone(&commits),
            encoder: batch::Encoder::default(),
        };
        let handle = std::thread::Builder::new()
            .name("tlsrpt-bus-writer".into())
            .spawn(move || writer.run(&queue_rx))
            .map_err(|e| storage(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            shared: Arc::new(Shared {
                path,
                db,
                partitions,
                queue: Mutex::new(Some(queue_tx)),
                ends: ends_rx,
                writer: Mutex::new(Some(handle)),
                appended,
                commits,
            }),
        })
    }

    /// Reads (or, for a new log, writes) the partition count and format, upgrading a format 2
    /// log to batches in the same transaction.
    fn prepare(db: &Database, path: &Path, asked: Option<u32>) -> Result<u32, BusError> {
        let txn = db.begin_write().map_err(storage)?;
        let (found, format) = {
            let meta = txn.open_table(META).map_err(storage)?;
            let found = meta.get("partitions").map_err(storage)?.map(|v| v.value());
            let format = meta.get("format").map_err(storage)?.map(|v| v.value());
            (found, format)
        };
        let found = match (found, format) {
            (Some(found), Some(LOG_FORMAT)) => found,
            (Some(found), Some(2)) => {
                let upgraded = upgrade_from_records(&txn)?;
                tracing::info!(
                    path = %path.display(),
                    messages = upgraded,
                    "The embedded log was upgraded from format 2 to record batches."
                );
                txn.open_table(META)
                    .map_err(storage)?
                    .insert("format", LOG_FORMAT)
                    .map_err(storage)?;
                found
            }
            (Some(_), format) => {
                return Err(storage(format!(
                    "{} holds log format {} and this tlsrpt reads format {LOG_FORMAT} (and \
                     upgrades format 2); format 1 was written by development versions before \
                     2026-11-23. Move the bus directory aside to start a new log: what the \
                     transformer had committed is in the Parquet tables",
                    path.display(),
                    format.unwrap_or(1)
                )));
            }
            (None, _) => {
                let count = u64::from(asked.unwrap_or(DEFAULT_PARTITIONS).max(1));
                let mut meta = txn.open_table(META).map_err(storage)?;
                meta.insert("partitions", count).map_err(storage)?;
                meta.insert("format", LOG_FORMAT).map_err(storage)?;
                count
            }
        };
        // Create the other tables too, so readers never meet a missing table.
        txn.open_table(BATCHES).map_err(storage)?;
        txn.open_table(COMMITTED).map_err(storage)?;
        txn.commit().map_err(storage)?;
        let found = u32::try_from(found).map_err(|_| storage("damaged partition count"))?;
        match asked {
            Some(asked) if asked.max(1) != found => Err(BusError::PartitionCount {
                path: path.display().to_string(),
                found,
                asked,
            }),
            _ => Ok(found),
        }
    }

    fn read_ends(db: &Database, partitions: u32) -> Result<Vec<u64>, BusError> {
        let txn = db.begin_read().map_err(storage)?;
        let batches = txn.open_table(BATCHES).map_err(storage)?;
        (0..partitions)
            .map(|p| {
                let last = batches
                    .range((p, 0)..=(p, u64::MAX))
                    .map_err(storage)?
                    .next_back()
                    .transpose()
                    .map_err(storage)?;
                match last {
                    None => Ok(0),
                    Some((key, bytes)) => {
                        let count = batch::count(bytes.value())
                            .map_err(|e| storage(format!("batch at {:?}: {e}", key.value())))?;
                        Ok(key.value().1 + u64::from(count))
                    }
                }
            })
            .collect()
    }

    /// The partition count.
    pub fn partitions(&self) -> u32 {
        self.shared.partitions
    }

    /// Where the log lives.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Appends `message` to the partition its key chooses and returns once it is on disk.
    pub async fn send(&self, message: Message) -> Result<Delivered, BusError> {
        let reply = self.enqueue(vec![message])?;
        one(reply.await.unwrap_or(Err(BusError::Closed)))
    }

    /// [`send`](Self::send) for threads outside an async runtime.
    pub fn send_blocking(&self, message: Message) -> Result<Delivered, BusError> {
        let reply = self.enqueue(vec![message])?;
        one(reply.blocking_recv().unwrap_or(Err(BusError::Closed)))
    }

    /// Appends `messages` in one transaction (all or none) and returns once they are on disk,
    /// with their places in the order given. For a backfill: one wake-up of the writer and
    /// one answer for the lot, and runs of hundreds per commit, where reports sent one by one
    /// by fast decoders went about a dozen to a commit.
    pub async fn send_all(&self, messages: Vec<Message>) -> Result<Vec<Delivered>, BusError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let reply = self.enqueue(messages)?;
        reply.await.unwrap_or(Err(BusError::Closed))
    }

    fn enqueue(
        &self,
        messages: Vec<Message>,
    ) -> Result<oneshot::Receiver<Result<Vec<Delivered>, BusError>>, BusError> {
        let partitions = self.shared.partitions;
        let messages = messages
            .into_iter()
            .map(|message| (partition_for_key(&message.key, partitions), message))
            .collect();
        let (reply, answer) = oneshot::channel();
        let queue = self.shared.queue.lock().map_err(|_| BusError::Closed)?;
        queue
            .as_ref()
            .ok_or(BusError::Closed)?
            .send(Append { messages, reply })
            .map_err(|_| BusError::Closed)?;
        Ok(answer)
    }

    /// The offset the next message of `partition` will get: everything below it is durable
    /// and readable.
    pub fn end_offset(&self, partition: u32) -> Result<u64, BusError> {
        self.check(partition)?;
        Ok(self.shared.ends.borrow()[partition as usize])
    }

    /// Up to `max` records of `partition` from offset `from` on, in offset order.
    pub fn fetch(&self, partition: u32, from: u64, max: usize) -> Result<Vec<Record>, BusError> {
        self.check(partition)?;
        // Only what is committed and published: the writer may be mid-transaction.
        let end = self.shared.ends.borrow()[partition as usize];
        if from >= end || max == 0 {
            return Ok(Vec::new());
        }
        let txn = self.shared.db.begin_read().map_err(storage)?;
        let batches = txn.open_table(BATCHES).map_err(storage)?;
        // The batch holding `from` starts at or before it.
        let first = batches
            .range((partition, 0)..=(partition, from))
            .map_err(storage)?
            .next_back()
            .transpose()
            .map_err(storage)?
            .map_or(from, |(key, _)| key.value().1);
        let mut out = Vec::new();
        for entry in batches
            .range((partition, first)..(partition, end))
            .map_err(storage)?
        {
            let (key, bytes) = entry.map_err(storage)?;
            let base = key.value().1;
            let messages = batch::decode(bytes.value())
                .map_err(|e| storage(format!("batch at {:?}: {e}", key.value())))?;
            for (offset, message) in (base..).zip(messages) {
                if offset < from {
                    continue;
                }
                out.push(Record {
                    partition,
                    offset,
                    message,
                });
                if out.len() == max {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// Waits until some partition's end offset differs from `seen` (as returned by
    /// [`end_offsets`](Self::end_offsets)), and returns the new ends.
    pub async fn wait_for_appends(&self, seen: &[u64]) -> Result<Vec<u64>, BusError> {
        let mut ends = self.shared.ends.clone();
        let changed = ends
            .wait_for(|ends| ends.as_slice() != seen)
            .await
            .map_err(|_| BusError::Closed)?;
        Ok(changed.clone())
    }

    /// The end offset of every partition.
    pub fn end_offsets(&self) -> Vec<u64> {
        self.shared.ends.borrow().clone()
    }

    /// The offset `group` committed for `partition`: the next offset it will read.
    pub fn committed(&self, group: &str, partition: u32) -> Result<Option<u64>, BusError> {
        self.check(partition)?;
        let txn = self.shared.db.begin_read().map_err(storage)?;
        let table = txn.open_table(COMMITTED).map_err(storage)?;
        Ok(table
            .get((group, partition))
            .map_err(storage)?
            .map(|v| v.value()))
    }

    /// Durably records, for `group`, the next offset to read of each partition given.
    pub fn commit(&self, group: &str, offsets: &[(u32, u64)]) -> Result<(), BusError> {
        for &(partition, _) in offsets {
            self.check(partition)?;
        }
        let txn = self.shared.db.begin_write().map_err(storage)?;
        {
            let mut table = txn.open_table(COMMITTED).map_err(storage)?;
            for &(partition, offset) in offsets {
                table.insert((group, partition), offset).map_err(storage)?;
            }
        }
        txn.commit().map_err(storage)
    }

    /// Counters since the log was opened.
    pub fn stats(&self) -> EmbeddedStats {
        EmbeddedStats {
            appended: self.shared.appended.load(Ordering::Relaxed),
            commits: self.shared.commits.load(Ordering::Relaxed),
        }
    }

    /// Stops taking appends, lets the writer finish what is queued (each sender gets its
    /// answer), and waits for it. Later sends get [`BusError::Closed`].
    pub fn shutdown(&self) {
        if let Ok(mut queue) = self.shared.queue.lock() {
            queue.take();
        }
        let handle = self.shared.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(handle) = handle {
            // A panicked writer has answered nobody; the senders saw Closed.
            let _ = handle.join();
        }
    }

    fn check(&self, partition: u32) -> Result<(), BusError> {
        if partition < self.shared.partitions {
            Ok(())
        } else {
            Err(BusError::NoSuchPartition {
                partition,
                partitions: self.shared.partitions,
            })
        }
    }
}

/// The one place of a one-message append.
fn one(delivered: Result<Vec<Delivered>, BusError>) -> Result<Delivered, BusError> {
    delivered?.pop().ok_or(BusError::Closed)
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Ok(mut queue) = self.queue.lock() {
            queue.take();
        }
        if let Some(handle) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            let _ = handle.join();
        }
    }
}

/// The writer thread's state.
struct Writer {
    db: Arc<Database>,
    /// Next offset per partition, as written (published to readers after each commit).
    ends: Vec<u64>,
    published: watch::Sender<Vec<u64>>,
    appended: Arc<AtomicU64>,
    commits: Arc<AtomicU64>,
    /// Its buffers are reused from one group to the next.
    encoder: batch::Encoder,
}

impl Writer {
    fn run(mut self, queue: &mpsc::Receiver<Append>) {
        // `recv` fails once every sender is gone: shut down after the last group.
        while let Ok(first) = queue.recv() {
            let mut messages = first.messages.len();
            let mut group = vec![first];
            while messages < MAX_GROUP {
                match queue.try_recv() {
                    Ok(next) => {
                        messages += next.messages.len();
                        group.push(next);
                    }
                    Err(_) => break,
                }
            }
            match self.write(&group) {
                Ok(offsets) => {
                    self.appended.fetch_add(messages as u64, Ordering::Relaxed);
                    self.commits.fetch_add(1, Ordering::Relaxed);
                    self.published.send_replace(self.ends.clone());
                    let mut offsets = offsets.into_iter();
                    for append in group {
                        let delivered = append
                            .messages
                            .iter()
                            .zip(offsets.by_ref())
                            .map(|(&(partition, _), offset)| Delivered { partition, offset })
                            .collect();
                        let _ = append.reply.send(Ok(delivered));
                    }
                }
                Err(err) => {
                    // Nothing of the group is on disk (the transaction was not committed),
                    // so the offsets are not advanced and every sender hears the error.
                    for append in group {
                        let _ = append.reply.send(Err(err.clone()));
                    }
                }
            }
        }
    }

    /// Writes one group in one transaction; returns each message's offset, in the group's
    /// order. `self.ends` moves only if the commit succeeded.
    fn write(&mut self, group: &[Append]) -> Result<Vec<u64>, BusError> {
        let mut ends = self.ends.clone();
        let mut positions = Vec::new();
        let mut by_partition: Vec<Vec<&Message>> = vec![Vec::new(); ends.len()];
        for (partition, message) in group.iter().flat_map(|append| &append.messages) {
            let partition = *partition as usize;
            positions.push(ends[partition]);
            ends[partition] += 1;
            by_partition[partition].push(message);
        }
        let mut txn = self.db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::Immediate).map_err(storage)?;
        {
            let mut batches = txn.open_table(BATCHES).map_err(storage)?;
            for (partition, messages) in (0u32..).zip(&by_partition) {
                let mut base = self.ends[partition as usize];
                for run in batch::runs(messages) {
                    let bytes = self.encoder.encode(run);
                    batches.insert((partition, base), bytes).map_err(storage)?;
                    base += run.len() as u64;
                }
            }
        }
        txn.commit().map_err(storage)?;
        self.ends = ends;
        Ok(positions)
    }
}

/// Rewrites format 2's `records` table as batches inside `txn`, then drops it. Returns the
/// number of messages moved.
fn upgrade_from_records(txn: &redb::WriteTransaction) -> Result<u64, BusError> {
    let mut moved = 0;
    let mut encoder = batch::Encoder::default();
    {
        let records = txn.open_table(RECORDS_V2).map_err(storage)?;
        let mut batches = txn.open_table(BATCHES).map_err(storage)?;
        // (partition, first offset, messages) of the run being collected.
        let mut run: Option<(u32, u64, Vec<Message>)> = None;
        let mut flush = |run: (u32, u64, Vec<Message>)| -> Result<(), BusError> {
            let (partition, mut base, messages) = run;
            let messages: Vec<&Message> = messages.iter().collect();
            for part in batch::runs(&messages) {
                batches
                    .insert((partition, base), encoder.encode(part))
                    .map_err(storage)?;
                base += part.len() as u64;
            }
            Ok(())
        };
        for entry in records.iter().map_err(storage)? {
            let (key, bytes) = entry.map_err(storage)?;
            let (partition, offset) = key.value();
            let message = record_v2::decode(bytes.value())
                .map_err(|e| storage(format!("format 2 record at {:?}: {e}", key.value())))?;
            moved += 1;
            match &mut run {
                Some((p, base, messages))
                    if *p == partition
                        && *base + messages.len() as u64 == offset
                        && messages.len() < BATCH_MAX_MESSAGES =>
                {
                    messages.push(message);
                }
                _ => {
                    if let Some(done) = run.take() {
                        flush(done)?;
                    }
                    run = Some((partition, offset, vec![message]));
                }
            }
        }
        if let Some(done) = run.take() {
            flush(done)?;
        }
    }
    txn.delete_table(RECORDS_V2).map_err(storage)?;
    Ok(moved)
}

/// A run of consecutive messages of one partition as the bytes of one batch:
///
/// ```text
/// version u8 (1) | count u32 | entries_len u32 | LZ4 block of the entries
/// entry: key_len u32 | key | header_count u16 |
///        (name_len u16 | name | value_len u32 | value) * header_count |
///        value_len u32 | value
/// ```
/// Integers little-endian. The entries are compressed because they are most of the bytes the
/// writer copies and syncs; LZ4 costs about a microsecond per report either way.
mod batch {
    use super::{BATCH_MAX_BYTES, BATCH_MAX_MESSAGES};
    use crate::Message;

    const VERSION: u8 = 1;
    const HEADER_LEN: usize = 9;

    /// Splits one partition's messages into runs that each make one batch.
    pub(super) fn runs<'m, 'a>(
        messages: &'a [&'m Message],
    ) -> impl Iterator<Item = &'a [&'m Message]> {
        let mut rest = messages;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let mut bytes = 0;
            let mut take = 0;
            while take < rest.len() && take < BATCH_MAX_MESSAGES {
                let size = entry_len(rest[take]);
                if take > 0 && bytes + size > BATCH_MAX_BYTES {
                    break;
                }
                bytes += size;
                take += 1;
            }
            let (run, after) = rest.split_at(take);
            rest = after;
            Some(run)
        })
    }

    fn entry_len(message: &Message) -> usize {
        let headers: usize = message
            .headers
            .iter()
            .map(|(name, value)| 6 + name.len() + value.len())
            .sum();
        4 + message.key.len() + 2 + headers + 4 + message.value.len()
    }

    /// Reusable buffers for encoding batches.
    #[derive(Default)]
    pub(super) struct Encoder {
        entries: Vec<u8>,
        out: Vec<u8>,
    }

    impl Encoder {
        pub(super) fn encode(&mut self, messages: &[&Message]) -> &[u8] {
            let entries = &mut self.entries;
            entries.clear();
            for message in messages {
                put_bytes32(entries, &message.key);
                put_headers(entries, &message.headers);
                put_bytes32(entries, &message.value);
            }
            let out = &mut self.out;
            out.clear();
            out.push(VERSION);
            let count = u32::try_from(messages.len()).expect("a batch under 4 billion messages");
            out.extend_from_slice(&count.to_le_bytes());
            let len = u32::try_from(entries.len()).expect("a batch under 4 GiB");
            out.extend_from_slice(&len.to_le_bytes());
            out.resize(
                HEADER_LEN + lz4_flex::block::get_maximum_output_size(entries.len()),
                0,
            );
            let written = lz4_flex::block::compress_into(entries, &mut out[HEADER_LEN..])
                .expect("the buffer has the maximum size");
            out.truncate(HEADER_LEN + written);
            out
        }
    }

    pub(super) fn put_bytes32(out: &mut Vec<u8>, bytes: &[u8]) {
        let len = u32::try_from(bytes.len()).expect("a field under 4 GiB");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(bytes);
    }

    /// `header_count u16 | (name_len u16 | name | value_len u32 | value) * header_count`, as
    /// in a batch's entries and in format 2's records.
    pub(super) fn put_headers(out: &mut Vec<u8>, headers: &[(String, String)]) {
        let count = u16::try_from(headers.len()).expect("fewer than 65536 headers");
        out.extend_from_slice(&count.to_le_bytes());
        for (name, value) in headers {
            let len = u16::try_from(name.len()).expect("a header name under 64 KiB");
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            put_bytes32(out, value.as_bytes());
        }
    }

    /// The number of messages in a batch, from its header alone.
    pub(super) fn count(bytes: &[u8]) -> Result<u32, String> {
        let (count, _) = header(bytes)?;
        Ok(count)
    }

    fn header(bytes: &[u8]) -> Result<(u32, usize), String> {
        if bytes.len() < HEADER_LEN {
            return Err("truncated".to_owned());
        }
        if bytes[0] != VERSION {
            return Err(format!("unknown batch version {}", bytes[0]));
        }
        let count = u32::from_le_bytes(bytes[1..5].try_into().expect("4 bytes"));
        let len = u32::from_le_bytes(bytes[5..9].try_into().expect("4 bytes")) as usize;
        Ok((count, len))
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Vec<Message>, String> {
        let (count, len) = header(bytes)?;
        let entries = lz4_flex::block::decompress(&bytes[HEADER_LEN..], len)
            .map_err(|e| format!("the batch does not decompress: {e}"))?;
        let mut reader = Reader { bytes: &entries };
        let mut messages = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let key = reader.bytes32()?.to_vec();
            let headers = reader.headers()?;
            let value = reader.bytes32()?.to_vec();
            messages.push(Message {
                key,
                value,
                headers,
            });
        }
        if !reader.bytes.is_empty() {
            return Err(format!(
                "{} bytes after the last of {count} messages",
                reader.bytes.len()
            ));
        }
        Ok(messages)
    }

    pub(super) struct Reader<'a> {
        pub(super) bytes: &'a [u8],
    }

    impl<'a> Reader<'a> {
        pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
            if self.bytes.len() < n {
                return Err("truncated".to_owned());
            }
            let (head, rest) = self.bytes.split_at(n);
            self.bytes = rest;
            Ok(head)
        }

        pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
            Ok(self.take(N)?.try_into().expect("N bytes"))
        }

        pub(super) fn u32(&mut self) -> Result<u32, String> {
            Ok(u32::from_le_bytes(self.array()?))
        }

        pub(super) fn bytes32(&mut self) -> Result<&'a [u8], String> {
            let len = self.u32()? as usize;
            self.take(len)
        }

        /// What [`put_headers`] wrote.
        pub(super) fn headers(&mut self) -> Result<Vec<(String, String)>, String> {
            let text = |bytes: &[u8]| {
                String::from_utf8(bytes.to_vec()).map_err(|_| "a header is not UTF-8".to_owned())
            };
            let count = u16::from_le_bytes(self.array()?);
            let mut headers = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                let name_len = usize::from(u16::from_le_bytes(self.array()?));
                let name = text(self.take(name_len)?)?;
                let value = text(self.bytes32()?)?;
                headers.push((name, value));
            }
            Ok(headers)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn message(i: usize) -> Message {
            Message {
                key: format!("sender\x1fid{i}").into_bytes(),
                value: format!(r#"{{"organization-name":"x","report-id":"{i}","policies":[]}}"#)
                    .repeat(20)
                    .into_bytes(),
                headers: vec![
                    ("transport".to_owned(), "https".to_owned()),
                    ("warnings".to_owned(), String::new()),
                ],
            }
        }

        #[test]
        fn a_batch_reads_back_as_written() {
            let messages: Vec<Message> = (0..10).map(message).collect();
            let refs: Vec<&Message> = messages.iter().collect();
            let mut encoder = Encoder::default();
            let bytes = encoder.encode(&refs).to_vec();
            let raw: usize = messages.iter().map(|m| m.value.len()).sum();
            assert!(
                bytes.len() < raw / 4,
                "compressed: {} of {raw}",
                bytes.len()
            );
            assert_eq!(count(&bytes).unwrap(), 10);
            assert_eq!(decode(&bytes).unwrap(), messages);
        }

        #[test]
        fn runs_respect_the_count_and_size_bounds() {
            let small: Vec<Message> = (0..600).map(message).collect();
            let refs: Vec<&Message> = small.iter().collect();
            let sizes: Vec<usize> = runs(&refs).map(<[_]>::len).collect();
            assert_eq!(sizes, [256, 256, 88]);
            let mut big = message(0);
            big.value = vec![b'x'; BATCH_MAX_BYTES];
            let mixed = [&small[0], &big, &small[1], &small[2]];
            let sizes: Vec<usize> = runs(&mixed).map(<[_]>::len).collect();
            assert_eq!(
                sizes,
                [1, 1, 2],
                "a message over the size bound is a batch alone"
            );
        }

        #[test]
        fn a_damaged_batch_is_an_error_not_a_panic() {
            let messages: Vec<Message> = (0..3).map(message).collect();
            let refs: Vec<&Message> = messages.iter().collect();
            let mut bytes = Encoder::default().encode(&refs).to_vec();
            for cut in 0..bytes.len() {
                assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
            bytes[0] = 9;
            assert!(decode(&bytes).unwrap_err().contains("version 9"));
        }
    }
}

/// Format 2's record of one message, read only to upgrade a log:
///
/// ```text
/// version u8 (1) | key_len u32 | key | header_count u16 |
///   (name_len u16 | name | value_len u32 | value) * header_count |
/// value_len u32 (uncompressed) | LZ4 block of the value
/// ```
mod record_v2 {
    use super::batch::Reader;
    use crate::Message;

    const VERSION: u8 = 1;

    pub(super) fn decode(bytes: &[u8]) -> Result<Message, String> {
        let mut reader = Reader { bytes };
        let version = reader.take(1)?[0];
        if version != VERSION {
            return Err(format!("unknown record version {version}"));
        }
        let key = reader.bytes32()?.to_vec();
        let headers = reader.headers()?;
        let value_len = reader.u32()? as usize;
        let value = lz4_flex::block::decompress(reader.bytes, value_len)
            .map_err(|e| format!("the value does not decompress: {e}"))?;
        Ok(Message {
            key,
            value,
            headers,
        })
    }

    /// Format 2's encoder, for the upgrade test.
    #[cfg(test)]
    pub(super) fn encode(message: &Message) -> Vec<u8> {
        use super::batch::{put_bytes32, put_headers};
        let mut out = vec![VERSION];
        put_bytes32(&mut out, &message.key);
        put_headers(&mut out, &message.headers);
        out.extend_from_slice(&(message.value.len() as u32).to_le_bytes());
        out.extend_from_slice(&lz4_flex::block::compress(&message.value));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_format_2_log_is_upgraded_to_batches_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let message = |i: u64| Message {
            key: format!("k{i}").into_bytes(),
            value: format!("report {i}").into_bytes(),
            headers: vec![("transport".to_owned(), "https".to_owned())],
        };
        {
            // What format 2 left: two partitions of records, a committed offset.
            let db = Database::create(dir.path().join("bus.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut meta = txn.open_table(META).unwrap();
                meta.insert("partitions", 2).unwrap();
                meta.insert("format", 2).unwrap();
                let mut records = txn.open_table(RECORDS_V2).unwrap();
                for offset in 0..300 {
                    let bytes = record_v2::encode(&message(offset));
                    records.insert((0, offset), bytes.as_slice()).unwrap();
                }
                for offset in 0..5 {
                    let bytes = record_v2::encode(&message(1000 + offset));
                    records.insert((1, offset), bytes.as_slice()).unwrap();
                }
                let mut committed = txn.open_table(COMMITTED).unwrap();
                committed.insert(("transform", 0), 120).unwrap();
            }
            txn.commit().unwrap();
        }
        let log = EmbeddedLog::open(dir.path(), EmbeddedOptions::default()).unwrap();
        assert_eq!(log.partitions(), 2);
        assert_eq!(log.end_offsets(), [300, 5]);
        assert_eq!(log.committed("transform", 0).unwrap(), Some(120));
        let read = log.fetch(0, 120, 1000).unwrap();
        assert_eq!(read.len(), 180);
        assert_eq!(read[0].offset, 120);
        assert_eq!(read[0].message, message(120));
        assert_eq!(read[179].message, message(299));
        let other = log.fetch(1, 0, 10).unwrap();
        let values: Vec<&[u8]> = other.iter().map(|r| r.message.value.as_slice()).collect();
        assert_eq!(
            values,
            [
                b"report 1000",
                b"report 1001",
                b"report 1002",
                b"report 1003",
                b"report 1004"
            ]
        );
        log.shutdown();
        drop(log);
        // Upgraded once: the old table is gone and the log opens as format 3.
        let log = EmbeddedLog::open(dir.path(), EmbeddedOptions::with_partitions(2)).unwrap();
        let txn = log.shared.db.begin_read().unwrap();
        assert!(
            txn.open_table(RECORDS_V2).is_err(),
            "the format 2 table was dropped"
        );
        assert_eq!(log.fetch(0, 299, 5).unwrap()[0].message, message(299));
    }
}
