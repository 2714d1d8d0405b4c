//! # tlsrpt-bus: the log between the receivers and the transformer
//!
//! A receiver may tell a sender "accepted" only once the report is durable, and the
//! transformer must be able to resume exactly where its Parquet files end. Both needs are met
//! by a Kafka-shaped log: keyed messages with headers, appended to numbered partitions at
//! increasing offsets, read back by offset, with offsets committed per consumer group.
//!
//! This crate holds that interface and its embedded implementation ([`embedded::EmbeddedLog`]),
//! a log in the data directory on redb (an ACID, crash-safe B-tree file), with group commit so
//! that one fsync covers every report that arrived while the previous one ran. The Kafka
//! implementation ([`kafka`], over librdkafka) sits behind the same types, so that neither
//! the receivers (`tlsrpt-ingest`) nor the transformer (`tlsrpt-transform`) know which one
//! runs.
//!
//! Why a crate of its own: both sides of the log use it, and the receivers must not depend on
//! the transformer or the other way round (DESIGN.md, "Workspace").
//!
//! It does no decoding: messages are bytes; what they hold is `tlsrpt-schemas`' business.

pub mod dead_letter;
pub mod embedded;
pub mod kafka;
pub mod test_broker;

use thiserror::Error;

/// One message: the report's dedup key (which also chooses the partition, so that a
/// duplicate lands beside its first copy), the decoded report JSON, and headers (the
/// receivers write one, `envelope`: transport, received_at, submitter, remote address,
/// content hash, warnings; see `tlsrpt_schemas::message`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Message {
    /// The value of the first header named `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Where an appended message is, once it is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Delivered {
    pub partition: u32,
    pub offset: u64,
}

/// A message read back from the log, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub partition: u32,
    pub offset: u64,
    pub message: Message,
}

/// Why the bus could not do what was asked.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum BusError {
    /// Another process holds the log. Two writers would corrupt it, so the second is refused.
    #[error(
        "the bus at {path} is in use by another tlsrpt process; stop it, or send the reports to it"
    )]
    Locked { path: String },
    /// The log exists with another partition count; partitions cannot change under data.
    #[error("the bus at {path} has {found} partitions, not the {asked} asked for")]
    PartitionCount {
        path: String,
        found: u32,
        asked: u32,
    },
    /// A partition number outside the log.
    #[error("partition {partition} does not exist (the bus has {partitions})")]
    NoSuchPartition { partition: u32, partitions: u32 },
    /// The storage failed (disk full, I/O error, a damaged file): nothing of the failed
    /// write was acknowledged. A receiver answers "try again later" (HTTP 503, SMTP 451).
    #[error("the bus cannot store the message: {0}")]
    Storage(String),
    /// The log was shut down while the request waited.
    #[error("the bus is shut down")]
    Closed,
    /// The message is larger than the bus takes (Kafka's `message.max.bytes`): retrying
    /// cannot help, so the receivers refuse it (HTTP 413, SMTP 552) and keep the bytes.
    #[error("the decoded report ({bytes} bytes) is larger than the bus takes ({limit})")]
    TooLarge { bytes: usize, limit: String },
}

impl BusError {
    /// Whether the sender should retry later (the report itself was fine).
    pub fn is_transient(&self) -> bool {
        matches!(self, BusError::Storage(_) | BusError::Closed)
    }
}

/// What a receiver needs of the bus: append a message and hear back once it is durable.
/// The embedded log implements it, and so does [`kafka::KafkaProducer`].
pub trait Producer: Send + Sync + 'static {
    /// Appends `message` and resolves once it is durable (or refused).
    fn send(
        &self,
        message: Message,
    ) -> impl std::future::Future<Output = Result<Delivered, BusError>> + Send;
}

impl Producer for embedded::EmbeddedLog {
    fn send(
        &self,
        message: Message,
    ) -> impl std::future::Future<Output = Result<Delivered, BusError>> + Send {
        embedded::EmbeddedLog::send(self, message)
    }
}

/// The partitions a consumer owns now, each with its *epoch*: a number that changes
/// whenever the partition is assigned anew (after being revoked, or to another member in
/// between). Work read under one epoch must not be written under another: another member may
/// have read the same offsets meanwhile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    /// `(partition, epoch)`, by partition.
    pub partitions: Vec<(u32, u64)>,
}

impl Assignment {
    /// The epoch `partition` is owned under, if it is owned.
    pub fn epoch_of(&self, partition: u32) -> Option<u64> {
        self.partitions
            .iter()
            .find(|(p, _)| *p == partition)
            .map(|&(_, epoch)| epoch)
    }
}

/// What the transformer needs of the bus: learn which partitions it owns, read each by
/// offset, wait for new messages, and keep per consumer group the next offset to read. The
/// embedded log (one reader owning every partition) and [`kafka::KafkaConsumer`] (a
/// consumer-group member) implement it, so the transformer cannot tell them apart.
///
/// Every method but [`wait_for_appends`](Consumer::wait_for_appends) may block on I/O:
/// call them from a blocking context (`spawn_blocking` or a thread of one's own).
pub trait Consumer: Send + Sync + 'static {
    /// The partition count (fixed for the life of the log).
    fn partitions(&self) -> u32;

    /// The partitions this consumer owns now. The embedded log owns all of them, always.
    fn assignment(&self) -> Assignment;

    /// Up to `max` records of `partition` from offset `from` on, in offset order; empty when
    /// nothing is there yet. `from` may go back to offsets returned before (a transformer
    /// whose flush lost its claim resumes where the claims end): they are read again.
    fn fetch(&self, partition: u32, from: u64, max: usize) -> Result<Vec<Record>, BusError>;

    /// The end offset of every partition: the offset its next message will get. On Kafka,
    /// one past the last offset this consumer has received.
    fn end_offsets(&self) -> Vec<u64>;

    /// Whether [`end_offsets`](Consumer::end_offsets) are the partitions' true ends (the
    /// embedded log), rather than what this consumer has received so far (Kafka).
    fn end_offsets_are_exact(&self) -> bool {
        true
    }

    /// Resolves once some partition's end offset differs from `seen` (as returned by
    /// [`end_offsets`](Consumer::end_offsets)), with the new ends; on Kafka, also when the
    /// assignment changes.
    fn wait_for_appends(
        &self,
        seen: &[u64],
    ) -> impl std::future::Future<Output = Result<Vec<u64>, BusError>> + Send;

    /// The offset `group` committed for `partition` (the next one it will read), if any.
    fn committed(&self, group: &str, partition: u32) -> Result<Option<u64>, BusError>;

    /// Durably records, for `group`, the next offset to read of each partition given.
    fn commit(&self, group: &str, offsets: &[(u32, u64)]) -> Result<(), BusError>;
}

impl Consumer for embedded::EmbeddedLog {
    fn partitions(&self) -> u32 {
        embedded::EmbeddedLog::partitions(self)
    }

    fn assignment(&self) -> Assignment {
        Assignment {
            partitions: (0..self.partitions()).map(|p| (p, 0)).collect(),
        }
    }

    fn fetch(&self, partition: u32, from: u64, max: usize) -> Result<Vec<Record>, BusError> {
        embedded::EmbeddedLog::fetch(self, partition, from, max)
    }

    fn end_offsets(&self) -> Vec<u64> {
        embedded::EmbeddedLog::end_offsets(self)
    }

    fn wait_for_appends(
        &self,
        seen: &[u64],
    ) -> impl std::future::Future<Output = Result<Vec<u64>, BusError>> + Send {
        embedded::EmbeddedLog::wait_for_appends(self, seen)
    }

    fn committed(&self, group: &str, partition: u32) -> Result<Option<u64>, BusError> {
        embedded::EmbeddedLog::committed(self, group, partition)
    }

    fn commit(&self, group: &str, offsets: &[(u32, u64)]) -> Result<(), BusError> {
        embedded::EmbeddedLog::commit(self, group, offsets)
    }
}

/// The partition for a key: FNV-1a of the key, modulo the partition count. Stable across
/// versions and machines, since it decides where data already on disk lives.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for &byte in key {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitioning_is_stable_and_spread() {
        // Fixed values: a change here would move existing data to other partitions.
        assert_eq!(partition_for_key(b"", 8), 0x811c_9dc5 % 8);
        assert_eq!(partition_for_key(b"a", 1000), 0xe40c_292c % 1000);
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            counts[partition_for_key(format!("google.com\u{1f}{i}").as_bytes(), 4) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}
