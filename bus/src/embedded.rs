//! The embedded log: the bus when no Kafka broker is configured.
//!
//! One redb file, `bus.redb`, in the directory given. Messages are stored under
//! `(partition, offset)` in one table, each as one record ([`record`]: key, headers and the
//! value compressed with LZ4); committed consumer offsets under `(group, partition)`; the
//! partition count in `meta`. redb holds an exclusive lock on
//! the file, so a second process gets [`BusError::Locked`] instead of a corrupt log.
//!
//! ## Group commit
//! A synced write costs 0.15 to 2.3 ms on these machines; one per report would cap a receiver
//! near 500 reports/s. So appends go to one writer thread through a queue. The writer takes
//! everything queued, writes it in one transaction, commits it with an fsync, and only then
//! answers each waiting sender. While it syncs, new appends queue up and go into the next
//! transaction: the cost of a sync is shared by every report that arrived meanwhile, and a
//! sender still hears back only once its message is on disk.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use redb::{Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{oneshot, watch};

use crate::{BusError, Delivered, Message, Record, partition_for_key};

/// One encoded [`record`] per message. A first layout kept keys, values and JSON headers in
/// three tables: three B-tree inserts per message and the JSON made the writer thread cost
/// 26 us per 2 KB report under load; one insert of an LZ4-compressed record (a report
/// shrinks about 3x) costs a fraction of that.
const RECORDS: TableDefinition<'_, (u32, u64), &[u8]> = TableDefinition::new("records");
const COMMITTED: TableDefinition<'_, (&str, u32), u64> = TableDefinition::new("committed");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
/// The layout of the tables above, kept in `meta` under `format`: 2 is one `records` table of
/// binary records (module `record`).
const LOG_FORMAT: u64 = 2;

/// The most appends written in one transaction; more wait for the next one. Bounds the
/// memory a burst can pin and the latency of the first sender in it.
const MAX_GROUP: usize = 4096;

/// Options of the embedded log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// Partitions of a new log. An existing log keeps its own; asking for another count is an
    /// error rather than a silent reshuffle.
    pub partitions: u32,
    /// redb's page cache. Its default, 1 GiB, fills with every page the writer touches and
    /// made a loaded `tlsrpt up` hold 2 GB; the transformer reads what was just written,
    /// which a small cache (and the kernel's page cache) holds.
    pub cache_bytes: usize,
}

impl EmbeddedOptions {
    /// The default options with `partitions` partitions.
    pub fn with_partitions(partitions: u32) -> Self {
        Self {
            partitions,
            ..Self::default()
        }
    }
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            partitions: 4,
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

struct Append {
    partition: u32,
    message: Message,
    reply: oneshot::Sender<Result<Delivered, BusError>>,
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
        let partitions = Self::partition_count(&db, &path, options.partitions)?;
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

    fn partition_count(db: &Database, path: &Path, asked: u32) -> Result<u32, BusError> {
        let txn = db.begin_write().map_err(storage)?;
        let found = {
            let mut meta = txn.open_table(META).map_err(storage)?;
            let found = meta.get("partitions").map_err(storage)?.map(|v| v.value());
            let format = meta.get("format").map_err(storage)?.map(|v| v.value());
            match (found, format) {
                (Some(found), Some(LOG_FORMAT)) => found,
                (Some(_), format) => {
                    return Err(storage(format!(
                        "{} holds log format {} and this tlsrpt reads format {LOG_FORMAT} \
                         (development versions before 2026-11-23 wrote format 1); move the \
                         bus directory aside to start a new log: what the transformer had \
                         committed is in the Parquet tables",
                        path.display(),
                        format.unwrap_or(1)
                    )));
                }
                (None, _) => {
                    meta.insert("partitions", u64::from(asked.max(1)))
                        .map_err(storage)?;
                    meta.insert("format", LOG_FORMAT).map_err(storage)?;
                    u64::from(asked.max(1))
                }
            }
        };
        // Create the other tables too, so readers never meet a missing table.
        txn.open_table(RECORDS).map_err(storage)?;
        txn.open_table(COMMITTED).map_err(storage)?;
        txn.commit().map_err(storage)?;
        let found = u32::try_from(found).map_err(|_| storage("damaged partition count"))?;
        if found != asked.max(1) {
            return Err(BusError::PartitionCount {
                path: path.display().to_string(),
                found,
                asked,
            });
        }
        Ok(found)
    }

    fn read_ends(db: &Database, partitions: u32) -> Result<Vec<u64>, BusError> {
        let txn = db.begin_read().map_err(storage)?;
        let keys = txn.open_table(RECORDS).map_err(storage)?;
        (0..partitions)
            .map(|p| {
                let last = keys
                    .range((p, 0)..=(p, u64::MAX))
                    .map_err(storage)?
                    .next_back()
                    .transpose()
                    .map_err(storage)?;
                Ok(last.map_or(0, |(key, _)| key.value().1 + 1))
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
        let reply = self.enqueue(message)?;
        reply.await.unwrap_or(Err(BusError::Closed))
    }

    /// [`send`](Self::send) for threads outside an async runtime (the file importer).
    pub fn send_blocking(&self, message: Message) -> Result<Delivered, BusError> {
        let reply = self.enqueue(message)?;
        reply.blocking_recv().unwrap_or(Err(BusError::Closed))
    }

    fn enqueue(
        &self,
        message: Message,
    ) -> Result<oneshot::Receiver<Result<Delivered, BusError>>, BusError> {
        let partition = partition_for_key(&message.key, self.shared.partitions);
        let (reply, answer) = oneshot::channel();
        let queue = self.shared.queue.lock().map_err(|_| BusError::Closed)?;
        queue
            .as_ref()
            .ok_or(BusError::Closed)?
            .send(Append {
                partition,
                message,
                reply,
            })
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
        let records = txn.open_table(RECORDS).map_err(storage)?;
        let mut out = Vec::new();
        for entry in records
            .range((partition, from)..(partition, end))
            .map_err(storage)?
            .take(max)
        {
            let (position, bytes) = entry.map_err(storage)?;
            let position = position.value();
            let message = record::decode(bytes.value())
                .map_err(|e| storage(format!("record at {position:?}: {e}")))?;
            out.push(Record {
                partition,
                offset: position.1,
                message,
            });
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
}

impl Writer {
    fn run(mut self, queue: &mpsc::Receiver<Append>) {
        // `recv` fails once every sender is gone: shut down after the last group.
        while let Ok(first) = queue.recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match queue.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
            match self.write(&group) {
                Ok(positions) => {
                    self.appended
                        .fetch_add(group.len() as u64, Ordering::Relaxed);
                    self.commits.fetch_add(1, Ordering::Relaxed);
                    self.published.send_replace(self.ends.clone());
                    for (append, offset) in group.into_iter().zip(positions) {
                        let _ = append.reply.send(Ok(Delivered {
                            partition: append.partition,
                            offset,
                        }));
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

    /// Writes one group in one transaction; returns each append's offset. `self.ends` moves
    /// only if the commit succeeded.
    fn write(&mut self, group: &[Append]) -> Result<Vec<u64>, BusError> {
        let mut ends = self.ends.clone();
        let mut txn = self.db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::Immediate).map_err(storage)?;
        let mut positions = Vec::with_capacity(group.len());
        {
            let mut records = txn.open_table(RECORDS).map_err(storage)?;
            let mut encoded = Vec::new();
            for append in group {
                let partition = append.partition as usize;
                let offset = ends[partition];
                ends[partition] += 1;
                record::encode(&append.message, &mut encoded);
                records
                    .insert((append.partition, offset), encoded.as_slice())
                    .map_err(storage)?;
                positions.push(offset);
            }
        }
        txn.commit().map_err(storage)?;
        self.ends = ends;
        Ok(positions)
    }
}

/// A message as the bytes of one record:
///
/// ```text
/// version u8 (1) | key_len u32 | key | header_count u16 |
///   (name_len u16 | name | value_len u32 | value) * header_count |
/// value_len u32 (uncompressed) | LZ4 block of the value
/// ```
/// Integers little-endian. The value is compressed because it is most of the bytes the
/// writer copies and syncs; LZ4 costs about a microsecond per report either way.
mod record {
    use crate::Message;

    const VERSION: u8 = 1;

    pub(super) fn encode(message: &Message, out: &mut Vec<u8>) {
        out.clear();
        out.push(VERSION);
        put_bytes32(out, &message.key);
        let count = u16::try_from(message.headers.len()).expect("fewer than 65536 headers");
        out.extend_from_slice(&count.to_le_bytes());
        for (name, value) in &message.headers {
            let len = u16::try_from(name.len()).expect("a header name under 64 KiB");
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            put_bytes32(out, value.as_bytes());
        }
        let len = u32::try_from(message.value.len()).expect("a value under 4 GiB");
        out.extend_from_slice(&len.to_le_bytes());
        let start = out.len();
        out.resize(
            start + lz4_flex::block::get_maximum_output_size(message.value.len()),
            0,
        );
        let written = lz4_flex::block::compress_into(&message.value, &mut out[start..])
            .expect("the buffer has the maximum size");
        out.truncate(start + written);
    }

    fn put_bytes32(out: &mut Vec<u8>, bytes: &[u8]) {
        let len = u32::try_from(bytes.len()).expect("a field under 4 GiB");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(bytes);
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Message, String> {
        let mut reader = Reader { bytes };
        let version = reader.take(1)?[0];
        if version != VERSION {
            return Err(format!("unknown record version {version}"));
        }
        let key_len = reader.u32()? as usize;
        let key = reader.take(key_len)?.to_vec();
        let count = u16::from_le_bytes(reader.array()?);
        let mut headers = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let name_len = usize::from(u16::from_le_bytes(reader.array()?));
            let name = reader.text(name_len)?;
            let value_len = reader.u32()? as usize;
            let value = reader.text(value_len)?;
            headers.push((name, value));
        }
        let value_len = reader.u32()? as usize;
        let value = lz4_flex::block::decompress(reader.bytes, value_len)
            .map_err(|e| format!("the value does not decompress: {e}"))?;
        Ok(Message {
            key,
            value,
            headers,
        })
    }

    struct Reader<'a> {
        bytes: &'a [u8],
    }

    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
            if self.bytes.len() < n {
                return Err("truncated".to_owned());
            }
            let (head, rest) = self.bytes.split_at(n);
            self.bytes = rest;
            Ok(head)
        }

        fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
            Ok(self.take(N)?.try_into().expect("N bytes"))
        }

        fn u32(&mut self) -> Result<u32, String> {
            Ok(u32::from_le_bytes(self.array()?))
        }

        fn text(&mut self, n: usize) -> Result<String, String> {
            String::from_utf8(self.take(n)?.to_vec())
                .map_err(|_| "a header is not UTF-8".to_owned())
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_record_reads_back_as_written() {
            let message = Message {
                key: b"sender\x1fid".to_vec(),
                value: br#"{"organization-name":"x","policies":[]}"#.repeat(20),
                headers: vec![
                    ("transport".to_owned(), "https".to_owned()),
                    ("warnings".to_owned(), String::new()),
                ],
            };
            let mut bytes = Vec::new();
            encode(&message, &mut bytes);
            assert!(bytes.len() < message.value.len(), "the value is compressed");
            assert_eq!(decode(&bytes).unwrap(), message);
        }

        #[test]
        fn a_damaged_record_is_an_error_not_a_panic() {
            let message = Message {
                key: b"k".to_vec(),
                value: b"value".to_vec(),
                headers: vec![("a".to_owned(), "b".to_owned())],
            };
            let mut bytes = Vec::new();
            encode(&message, &mut bytes);
            for cut in 0..bytes.len() {
                assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
            bytes[0] = 9;
            assert!(decode(&bytes).unwrap_err().contains("version 9"));
        }
    }
}
