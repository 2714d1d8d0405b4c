//! The transformer's side of Kafka: a consumer-group member behind [`Consumer`].
//!
//! The embedded log has one reader that owns every partition; a Kafka consumer group shares
//! a topic's partitions among its members and moves them when members come and go. The
//! transformer learns what it owns from [`Consumer::assignment`]: every partition carries an
//! *epoch* that changes each time the partition is assigned or revoked, so that a batch read
//! under an earlier ownership is never written after another member may have read the same
//! offsets.
//!
//! librdkafka delivers messages one at a time from all assigned partitions through `poll`,
//! and runs the rebalance callbacks inside that call. This type polls under one lock and
//! sorts what arrives into a buffer per partition, tagged with the partition's epoch at that
//! moment, so the transformer can keep reading partition by partition as it does on the
//! embedded log. A buffer whose partition changed epoch is dropped: librdkafka starts an
//! assigned partition again from the committed offset, and the transformer skips what its
//! files already hold.
//!
//! Offsets are committed by the transformer only (`enable.auto.commit=false`), after the
//! files are in place; a commit refused because the group is rebalancing loses nothing,
//! since the next owner resumes from the files.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::{Assignment, BusError, Consumer, Message, Record};

/// How a consumer joins its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConsumerOptions {
    /// Bootstrap brokers, `host:port[,host:port...]`.
    pub brokers: String,
    pub topic: String,
    /// The consumer group: members of one group share the topic's partitions.
    pub group: String,
    /// How long the group waits for a silent member before giving its partitions to others
    /// (a crashed transformer's partitions move after this long).
    pub session_timeout: Duration,
    /// Further librdkafka properties, applied last (TLS, SASL).
    pub extra: Vec<(String, String)>,
}

impl KafkaConsumerOptions {
    pub fn new(brokers: impl Into<String>, group: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic: super::DEFAULT_TOPIC.to_owned(),
            group: group.into(),
            session_timeout: Duration::from_secs(10),
            extra: Vec::new(),
        }
    }
}

/// Messages pulled from librdkafka and not yet taken, at most (across partitions): past it,
/// polling pauses until the transformer catches up. librdkafka keeps its own prefetch queue
/// besides (`queued.max.messages.kbytes`).
const BUFFER_MAX: usize = 20_000;

/// How long one blocking poll lasts while waiting for messages: also how late a cancelled
/// wait notices it.
const WAIT_POLL: Duration = Duration::from_millis(100);

/// How long metadata and committed-offset requests may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A consumer-group member reading one topic. Cheap to clone (shared).
#[derive(Clone)]
pub struct KafkaConsumer {
    inner: Arc<Inner>,
}

struct Inner {
    consumer: BaseConsumer<GroupContext>,
    topic: String,
    group: String,
    partitions: u32,
    /// Polling and the buffers, under one lock: two threads polling at once could sort
    /// messages of one partition out of order.
    buffers: Mutex<Buffers>,
}

#[derive(Default)]
struct Buffers {
    /// Per partition: the epoch its messages were read under, and the messages.
    by_partition: BTreeMap<u32, (u64, VecDeque<Record>)>,
    /// Messages in all buffers.
    len: usize,
    /// One past the highest offset pulled, per partition (the consumer's view of the end).
    ends: Vec<u64>,
    /// Per partition: the epoch and the offset after the last message handed out (or
    /// skipped) by `fetch`. A fetch from below it asks for messages already gone from the
    /// buffers, and seeks (see `fetch`).
    next: BTreeMap<u32, (u64, u64)>,
    /// Per partition: the epoch and offset of the seeks `fetch` made because messages came
    /// with a gap before them, and how many: a gap seen again after a few seeks is taken
    /// to be real (offsets the log no longer has).
    gap_seeks: BTreeMap<u32, (u64, u64, u32)>,
}

/// Seeks to one offset at which messages keep arriving with a gap before them, after which
/// the gap is accepted as real (logged).
const GAP_SEEKS_MAX: u32 = 3;

/// Receives librdkafka's rebalance callbacks (inside `poll`, on the polling thread).
struct GroupContext {
    owned: Mutex<Owned>,
    topic: String,
}

#[derive(Debug, Default)]
struct Owned {
    /// Partition -> epoch, for the partitions assigned now.
    partitions: BTreeMap<u32, u64>,
    /// Bumped on every assignment and revocation; the epoch a partition gets.
    next_epoch: u64,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // Revocations take effect before librdkafka hands the partitions back, so nothing
        // read under the old ownership is written after the callback returns.
        if let Rebalance::Revoke(list) = rebalance {
            let mut owned = lock(&self.owned);
            for partition in partitions_of(list, &self.topic) {
                owned.partitions.remove(&partition);
            }
            owned.next_epoch += 1;
            tracing::info!(revoked = ?partitions_of(list, &self.topic), "Kafka partitions revoked.");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let mut owned = lock(&self.owned);
                owned.next_epoch += 1;
                let epoch = owned.next_epoch;
                for partition in partitions_of(list, &self.topic) {
                    owned.partitions.insert(partition, epoch);
                }
                tracing::info!(assigned = ?partitions_of(list, &self.topic), "Kafka partitions assigned.");
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => {
                tracing::warn!(%error, "Kafka consumer group rebalance failed; librdkafka retries.")
            }
        }
    }
}

fn partitions_of(list: &TopicPartitionList, topic: &str) -> Vec<u32> {
    list.elements_for_topic(topic)
        .iter()
        .filter_map(|e| u32::try_from(e.partition()).ok())
        .collect()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl std::fmt::Debug for KafkaConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConsumer")
            .field("topic", &self.inner.topic)
            .field("group", &self.inner.group)
            .field("partitions", &self.inner.partitions)
            .finish_non_exhaustive()
    }
}

impl KafkaConsumer {
    /// Makes librdkafka fetch `partition` from `from` again and drops what is buffered for
    /// it: the next `fetch` hands out messages from `from` on.
    fn seek_to(
        &self,
        buffers: &mut Buffers,
        partition: u32,
        epoch: Option<u64>,
        from: u64,
    ) -> Result<(), BusError> {
        self.inner
            .consumer
            .seek(
                &self.inner.topic,
                i32::try_from(partition).unwrap_or(i32::MAX),
                Offset::Offset(i64::try_from(from).unwrap_or(i64::MAX)),
                REQUEST_TIMEOUT,
            )
            .map_err(|e| {
                BusError::Storage(format!(
                    "cannot seek partition {partition} of {} to offset {from}: {e}",
                    self.inner.topic
                ))
            })?;
        if let Some((_, records)) = buffers.by_partition.remove(&partition) {
            buffers.len -= records.len();
        }
        if let Some(read_under) = epoch {
            buffers.next.insert(partition, (read_under, from));
        }
        Ok(())
    }

    /// Joins the group and subscribes to the topic. Fails when the brokers cannot be reached
    /// within a few seconds or the topic does not exist (a transformer started before the
    /// topic would otherwise wait without saying why).
    pub fn new(options: &KafkaConsumerOptions) -> Result<Self, BusError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &options.brokers)
            .set("group.id", &options.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // A partition nobody committed for is read from its start: reports are never
            // skipped because the transformer started after them.
            .set("auto.offset.reset", "earliest")
            .set(
                "session.timeout.ms",
                options.session_timeout.as_millis().to_string(),
            )
            // Incremental rebalancing: a member joining or leaving moves only the partitions
            // that change hands, and the others keep their batches.
            .set("partition.assignment.strategy", "cooperative-sticky");
        for (key, value) in &options.extra {
            config.set(key, value);
        }
        let context = GroupContext {
            owned: Mutex::new(Owned::default()),
            topic: options.topic.clone(),
        };
        let consumer: BaseConsumer<GroupContext> = config
            .create_with_context(context)
            .map_err(|e| BusError::Storage(format!("cannot create the Kafka consumer: {e}")))?;
        let metadata = consumer
            .fetch_metadata(Some(&options.topic), REQUEST_TIMEOUT)
            .map_err(|e| {
                BusError::Storage(format!(
                    "cannot read the metadata of topic {} from {}: {e}",
                    options.topic, options.brokers
                ))
            })?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == options.topic)
            .filter(|t| t.error().is_none())
            .map_or(0, |t| t.partitions().len());
        if partitions == 0 {
            return Err(BusError::Storage(format!(
                "the Kafka topic {} does not exist on {}; create it (with as many partitions as transformers may run), then start again",
                options.topic, options.brokers
            )));
        }
        consumer.subscribe(&[&options.topic]).map_err(|e| {
            BusError::Storage(format!("cannot subscribe to {}: {e}", options.topic))
        })?;
        let partitions = u32::try_from(partitions).unwrap_or(u32::MAX);
        Ok(Self {
            inner: Arc::new(Inner {
                consumer,
                topic: options.topic.clone(),
                group: options.group.clone(),
                partitions,
                buffers: Mutex::new(Buffers {
                    ends: vec![0; partitions as usize],
                    ..Buffers::default()
                }),
            }),
        })
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.inner.group
    }

    fn check_group(&self, group: &str) -> Result<(), BusError> {
        if group == self.inner.group {
            Ok(())
        } else {
            Err(BusError::Storage(format!(
                "this Kafka consumer belongs to group {}, not {group}",
                self.inner.group
            )))
        }
    }
}

impl Inner {
    /// Polls once, waiting up to `timeout`, and sorts what comes into the buffers. Returns
    /// whether a message came. Call with the buffers locked.
    fn poll_once(&self, buffers: &mut Buffers, timeout: Duration) -> Result<bool, BusError> {
        let polled = self.consumer.poll(timeout);
        let owned = lock(&self.consumer.context().owned);
        // Buffers read under an ownership that has ended are dropped (see the module docs).
        let mut dropped = 0;
        buffers.by_partition.retain(|partition, (epoch, records)| {
            let keep = owned.partitions.get(partition) == Some(epoch);
            if !keep {
                dropped += records.len();
            }
            keep
        });
        buffers.len -= dropped;
        buffers
            .next
            .retain(|partition, (epoch, _)| owned.partitions.get(partition) == Some(epoch));
        let message = match polled {
            None => return Ok(false),
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                // Fetch errors are reported and retried by librdkafka (a broker away, say):
                // not the transformer's to handle.
                tracing::warn!(%error, "Kafka consumer error.");
                return Ok(false);
            }
        };
        let Ok(partition) = u32::try_from(message.partition()) else {
            return Ok(false);
        };
        let Some(&epoch) = owned.partitions.get(&partition) else {
            return Ok(false);
        };
        let offset = u64::try_from(message.offset()).unwrap_or(0);
        let headers = message.headers().map_or_else(Vec::new, |headers| {
            let mut owned = Vec::with_capacity(headers.count());
            owned.extend(headers.iter().filter_map(|h| {
                let value = std::str::from_utf8(h.value?).ok()?;
                Some((h.key.to_owned(), value.to_owned()))
            }));
            owned
        });
        let record = Record {
            partition,
            offset,
            message: Message {
                key: message.key().unwrap_or_default().to_vec(),
                value: message.payload().unwrap_or_default().to_vec(),
                headers,
            },
        };
        let slot = buffers
            .by_partition
            .entry(partition)
            .or_insert_with(|| (epoch, VecDeque::new()));
        slot.1.push_back(record);
        buffers.len += 1;
        if let Some(end) = buffers.ends.get_mut(partition as usize) {
            *end = (*end).max(offset + 1);
        }
        Ok(true)
    }

    /// Pulls whatever librdkafka has ready, without waiting, up to the buffer's bound.
    fn pump(&self, buffers: &mut Buffers) -> Result<(), BusError> {
        while buffers.len < BUFFER_MAX && self.poll_once(buffers, Duration::ZERO)? {}
        Ok(())
    }

    fn assignment_now(&self) -> Assignment {
        let owned = lock(&self.consumer.context().owned);
        Assignment {
            partitions: owned.partitions.iter().map(|(&p, &e)| (p, e)).collect(),
        }
    }
}

impl Consumer for KafkaConsumer {
    fn partitions(&self) -> u32 {
        self.inner.partitions
    }

    fn assignment(&self) -> Assignment {
        let mut buffers = lock(&self.inner.buffers);
        // Rebalance callbacks run only inside poll: without one, nothing is ever assigned.
        if let Err(error) = self.inner.pump(&mut buffers) {
            tracing::warn!(%error, "Kafka consumer poll failed.");
        }
        drop(buffers);
        self.inner.assignment_now()
    }

    fn fetch(&self, partition: u32, from: u64, max: usize) -> Result<Vec<Record>, BusError> {
        let mut buffers = lock(&self.inner.buffers);
        self.inner.pump(&mut buffers)?;
        let epoch = self.inner.assignment_now().epoch_of(partition);
        if let Some(&(read_under, next)) = buffers.next.get(&partition)
            && Some(read_under) == epoch
            && from < next
        {
            // The transformer went back to offsets this consumer already handed out: a flush
            // that lost its claim to another writer resumes where the claims end, which may
            // be before what it had read. librdkafka fetches forward only, so seek; the
            // messages buffered for the partition are dropped and come again.
            self.seek_to(&mut buffers, partition, epoch, from)?;
            return Ok(Vec::new());
        }
        let Some((read_under, records)) = buffers.by_partition.get_mut(&partition) else {
            return Ok(Vec::new());
        };
        let read_under = *read_under;
        let mut taken = Vec::with_capacity(records.len().min(max));
        let mut removed = 0;
        let mut next = None;
        while taken.len() < max {
            let Some(record) = records.pop_front() else {
                break;
            };
            removed += 1;
            next = Some(record.offset + 1);
            if record.offset >= from {
                taken.push(record);
            }
        }
        buffers.len -= removed;
        if let Some(first) = taken.first().map(|r| r.offset)
            && first > from
        {
            // Messages after a gap: the offsets `from..first` never came. Seen around
            // cooperative rebalances (librdkafka restarts a partition's fetch and messages
            // already queued for it are lost on the way), on the partitions a member keeps
            // and on those it is given. A transformer would write the batch and skip those
            // reports for good; seek back and read them. Offsets can also be really absent
            // (deleted by retention, transaction markers): after a few seeks to the same
            // offset the gap is accepted.
            let seeks = match buffers.gap_seeks.get(&partition) {
                Some(&(under, at, count)) if Some(under) == epoch && at == from => count,
                _ => 0,
            };
            if seeks < GAP_SEEKS_MAX {
                tracing::info!(
                    partition,
                    from,
                    first,
                    "Kafka messages came after a gap; seeking back to read the gap."
                );
                if let Some(under) = epoch {
                    buffers
                        .gap_seeks
                        .insert(partition, (under, from, seeks + 1));
                }
                self.seek_to(&mut buffers, partition, epoch, from)?;
                return Ok(Vec::new());
            }
            tracing::warn!(
                partition,
                from,
                first,
                "Kafka offsets {from} to {} of partition {partition} cannot be read; going on after them.",
                first - 1
            );
        }
        if let Some(next) = next {
            buffers.next.insert(partition, (read_under, next));
        }
        Ok(taken)
    }

    fn end_offsets(&self) -> Vec<u64> {
        lock(&self.inner.buffers).ends.clone()
    }

    fn end_offsets_are_exact(&self) -> bool {
        false
    }

    fn wait_for_appends(
        &self,
        seen: &[u64],
    ) -> impl std::future::Future<Output = Result<Vec<u64>, BusError>> + Send {
        let inner = Arc::clone(&self.inner);
        let seen = seen.to_vec();
        let assignment = self.inner.assignment_now();
        async move {
            // Polling blocks, so it runs on a blocking thread, a short poll at a time; the
            // flag stops it soon after the wait is abandoned (a shutdown, a flush falling due).
            let cancelled = Arc::new(AtomicBool::new(false));
            let _cancel_on_drop = CancelOnDrop(Arc::clone(&cancelled));
            let task = tokio::task::spawn_blocking(move || {
                while !cancelled.load(Ordering::Relaxed) {
                    let mut buffers = lock(&inner.buffers);
                    if buffers.len < BUFFER_MAX {
                        inner.poll_once(&mut buffers, WAIT_POLL)?;
                    }
                    let ends = buffers.ends.clone();
                    drop(buffers);
                    if ends != seen || inner.assignment_now() != assignment {
                        return Ok(ends);
                    }
                    if lock(&inner.buffers).len >= BUFFER_MAX {
                        std::thread::sleep(WAIT_POLL);
                    }
                }
                Err(BusError::Closed)
            });
            task.await
                .map_err(|e| BusError::Storage(format!("the Kafka poll task failed: {e}")))?
        }
    }

    fn committed(&self, group: &str, partition: u32) -> Result<Option<u64>, BusError> {
        self.check_group(group)?;
        let mut list = TopicPartitionList::new();
        list.add_partition(&self.inner.topic, partition as i32);
        let committed = self
            .inner
            .consumer
            .committed_offsets(list, REQUEST_TIMEOUT)
            .map_err(|e| {
                BusError::Storage(format!(
                    "cannot read group {}'s committed offset of partition {partition}: {e}",
                    self.inner.group
                ))
            })?;
        Ok(committed
            .find_partition(&self.inner.topic, partition as i32)
            .and_then(|e| match e.offset() {
                Offset::Offset(n) => u64::try_from(n).ok(),
                _ => None,
            }))
    }

    fn commit(&self, group: &str, offsets: &[(u32, u64)]) -> Result<(), BusError> {
        self.check_group(group)?;
        let mut list = TopicPartitionList::new();
        for &(partition, offset) in offsets {
            let offset = i64::try_from(offset).unwrap_or(i64::MAX);
            list.add_partition_offset(&self.inner.topic, partition as i32, Offset::Offset(offset))
                .map_err(|e| BusError::Storage(format!("bad offset to commit: {e}")))?;
        }
        self.inner
            .consumer
            .commit(&list, CommitMode::Sync)
            .map_err(|e| {
                BusError::Storage(format!(
                    "group {} could not commit its offsets: {e}",
                    self.inner.group
                ))
            })
    }
}

/// Sets the flag when dropped: stops a blocking poll loop whose waiter went away.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
