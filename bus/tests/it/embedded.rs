//! The embedded log as its users use it: appends that are durable when acknowledged, reads
//! by offset, committed offsets, reopening, and refusing a second process.

use std::path::PathBuf;

use tlsrpt_bus::embedded::{EmbeddedLog, EmbeddedOptions};
use tlsrpt_bus::{BusError, Message, partition_for_key};

/// A fresh directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tlsrpt-bus-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn message(key: &str, value: &str) -> Message {
    Message {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        headers: vec![
            ("transport".into(), "https".into()),
            ("received_at".into(), "2026-11-23T10:00:00Z".into()),
        ],
    }
}

fn options(partitions: u32) -> EmbeddedOptions {
    EmbeddedOptions::with_partitions(partitions)
}

#[tokio::test]
async fn messages_sent_together_are_one_commit_in_order_beside_single_sends() {
    let dir = TempDir::new("send-all");
    let log = EmbeddedLog::open(&dir.0, options(2)).unwrap();
    let chunk: Vec<Message> = (0..600)
        .map(|i| message(&format!("sender{}", i % 7), &format!("chunk {i}")))
        .collect();
    let commits_before = log.stats().commits;
    let (together, alone) = tokio::join!(
        log.send_all(chunk.clone()),
        log.send(message("sender1", "alone"))
    );
    let together = together.unwrap();
    alone.unwrap();
    assert_eq!(together.len(), 600);
    // One transaction for the 600 (the single send may share it or take its own).
    assert!(
        log.stats().commits - commits_before <= 2,
        "{:?}",
        log.stats()
    );
    for (sent, delivered) in chunk.iter().zip(&together) {
        assert_eq!(delivered.partition, partition_for_key(&sent.key, 2));
        let read = log.fetch(delivered.partition, delivered.offset, 1).unwrap();
        assert_eq!(read[0].message.value, sent.value, "at {delivered:?}");
    }
    // Within a partition the chunk's offsets keep its order.
    for partition in 0..2 {
        let offsets: Vec<u64> = together
            .iter()
            .filter(|d| d.partition == partition)
            .map(|d| d.offset)
            .collect();
        assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "{offsets:?}");
    }
    assert!(log.send_all(Vec::new()).await.unwrap().is_empty());
    log.shutdown();
    assert!(matches!(
        log.send_all(vec![message("k", "v")]).await,
        Err(BusError::Closed)
    ));
}

#[tokio::test]
async fn appended_messages_read_back_in_order_with_their_positions() {
    let dir = TempDir::new("order");
    let log = EmbeddedLog::open(&dir.0, options(3)).unwrap();
    let mut delivered = Vec::new();
    for i in 0..30 {
        let key = format!("sender{}", i % 5);
        delivered.push((
            key.clone(),
            log.send(message(&key, &format!("report {i}")))
                .await
                .unwrap(),
        ));
    }
    // The key chooses the partition; offsets count up from 0 within each partition.
    for (key, d) in &delivered {
        assert_eq!(d.partition, partition_for_key(key.as_bytes(), 3));
    }
    let mut total = 0;
    for partition in 0..3 {
        let end = log.end_offset(partition).unwrap();
        let records = log.fetch(partition, 0, 1000).unwrap();
        assert_eq!(records.len() as u64, end);
        for (expected, record) in records.iter().enumerate() {
            assert_eq!(record.offset, expected as u64);
            assert_eq!(record.partition, partition);
            assert_eq!(record.message.header("transport"), Some("https"));
        }
        total += records.len();
        // Reading from the middle, and with a limit.
        if end > 2 {
            let tail = log.fetch(partition, 1, 1).unwrap();
            assert_eq!(tail.len(), 1);
            assert_eq!(tail[0], records[1]);
        }
        assert!(log.fetch(partition, end, 10).unwrap().is_empty());
    }
    assert_eq!(total, 30);
    let sent: Vec<_> = delivered
        .iter()
        .map(|(_, d)| {
            log.fetch(d.partition, d.offset, 1)
                .unwrap()
                .remove(0)
                .message
                .value
        })
        .collect();
    let expected: Vec<Vec<u8>> = (0..30)
        .map(|i| format!("report {i}").into_bytes())
        .collect();
    assert_eq!(sent, expected);
}

#[tokio::test]
async fn acknowledged_messages_and_commits_survive_a_reopen() {
    let dir = TempDir::new("reopen");
    {
        let log = EmbeddedLog::open(&dir.0, options(2)).unwrap();
        for i in 0..10 {
            log.send(message(&format!("k{i}"), "x")).await.unwrap();
        }
        log.commit("transformer", &[(0, 3), (1, 1)]).unwrap();
        log.shutdown();
    }
    let log = EmbeddedLog::open(&dir.0, options(2)).unwrap();
    let ends = log.end_offsets();
    assert_eq!(ends.iter().sum::<u64>(), 10);
    assert_eq!(log.committed("transformer", 0).unwrap(), Some(3));
    assert_eq!(log.committed("transformer", 1).unwrap(), Some(1));
    assert_eq!(log.committed("someone-else", 0).unwrap(), None);
    // New appends continue after the old ones.
    let d = log.send(message("k0", "after reopen")).await.unwrap();
    assert_eq!(d.offset, ends[d.partition as usize]);
}

#[tokio::test]
async fn concurrent_sends_share_commits() {
    let dir = TempDir::new("group");
    let log = EmbeddedLog::open(&dir.0, options(4)).unwrap();
    let sends = 2000;
    let tasks: Vec<_> = (0..sends)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.send(message(&format!("k{i}"), "x")).await })
        })
        .collect();
    let mut positions = Vec::new();
    for task in tasks {
        positions.push(task.await.unwrap().unwrap());
    }
    positions.sort();
    positions.dedup();
    assert_eq!(positions.len(), sends, "every send got its own position");
    let stats = log.stats();
    assert_eq!(stats.appended, sends as u64);
    // One fsync per report would be `sends` commits; while one commit syncs, the others
    // queue and share the next.
    assert!(stats.commits < sends as u64 / 2, "{stats:?}");
    // Groups are stored as batches of up to 256 messages: every offset reads back once and in
    // order, from any starting point and with any limit, across batch boundaries.
    for partition in 0..4 {
        let end = log.end_offset(partition).unwrap();
        let all = log.fetch(partition, 0, usize::MAX).unwrap();
        let offsets: Vec<u64> = all.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (0..end).collect::<Vec<_>>());
        for from in [1, end / 3, end.saturating_sub(257), end - 1] {
            let some = log.fetch(partition, from, 300).unwrap();
            let expected = usize::try_from((end - from).min(300)).unwrap();
            assert_eq!(some.len(), expected, "partition {partition} from {from}");
            assert_eq!(some[..], all[from as usize..from as usize + expected]);
        }
    }
}

/// redb locks the file (an OS file lock), so this holds across processes too; the crash and
/// import tests of the pipeline run real second processes.
#[test]
fn a_second_opener_is_refused_with_the_path() {
    let dir = TempDir::new("locked");
    let _first = EmbeddedLog::open(&dir.0, options(1)).unwrap();
    let err = EmbeddedLog::open(&dir.0, options(1)).unwrap_err();
    assert!(matches!(err, BusError::Locked { .. }), "{err:?}");
    assert!(err.to_string().contains("bus.redb"), "{err}");
}

#[test]
fn the_partition_count_cannot_change_under_data() {
    let dir = TempDir::new("partitions");
    EmbeddedLog::open(&dir.0, options(2)).unwrap().shutdown();
    let err = EmbeddedLog::open(&dir.0, options(8)).unwrap_err();
    assert_eq!(
        err,
        BusError::PartitionCount {
            path: dir.0.join("bus.redb").display().to_string(),
            found: 2,
            asked: 8
        }
    );
}

#[test]
fn without_a_count_asked_a_log_keeps_its_own_and_a_new_one_has_one_partition() {
    let dir = TempDir::new("default-partitions");
    let log = EmbeddedLog::open(&dir.0, EmbeddedOptions::default()).unwrap();
    assert_eq!(log.partitions(), tlsrpt_bus::embedded::DEFAULT_PARTITIONS);
    assert_eq!(log.partitions(), 1);
    log.shutdown();
    let other = TempDir::new("default-partitions-kept");
    EmbeddedLog::open(&other.0, options(3)).unwrap().shutdown();
    let log = EmbeddedLog::open(&other.0, EmbeddedOptions::default()).unwrap();
    assert_eq!(log.partitions(), 3);
}

#[test]
fn a_log_in_the_older_format_is_refused_with_what_to_do() {
    let dir = TempDir::new("format");
    {
        // What development versions before the binary records left: a partition count and
        // no format.
        let db = redb::Database::create(dir.0.join("bus.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let meta: redb::TableDefinition<'_, &str, u64> = redb::TableDefinition::new("meta");
            txn.open_table(meta)
                .unwrap()
                .insert("partitions", 4)
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let err = EmbeddedLog::open(&dir.0, options(4)).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("log format 1"), "{text}");
    assert!(text.contains("Move the bus directory aside"), "{text}");
    // A log this version made opens again.
    let fresh = TempDir::new("format-fresh");
    EmbeddedLog::open(&fresh.0, options(4)).unwrap().shutdown();
    EmbeddedLog::open(&fresh.0, options(4)).unwrap().shutdown();
}

#[tokio::test]
async fn readers_wake_up_on_appends_and_sends_fail_after_shutdown() {
    let dir = TempDir::new("wake");
    let log = EmbeddedLog::open(&dir.0, options(1)).unwrap();
    let seen = log.end_offsets();
    let reader = {
        let log = log.clone();
        tokio::spawn(async move { log.wait_for_appends(&seen).await })
    };
    log.send(message("k", "v")).await.unwrap();
    assert_eq!(reader.await.unwrap().unwrap(), vec![1]);
    assert!(log.fetch(5, 0, 1).is_err());

    log.shutdown();
    assert_eq!(
        log.send(message("k", "v")).await.unwrap_err(),
        BusError::Closed
    );
    // What was acknowledged before stays readable.
    assert_eq!(log.fetch(0, 0, 10).unwrap().len(), 1);
}

#[test]
fn blocking_sends_work_outside_a_runtime() {
    let dir = TempDir::new("blocking");
    let log = EmbeddedLog::open(&dir.0, options(1)).unwrap();
    let d = log.send_blocking(message("k", "v")).unwrap();
    assert_eq!((d.partition, d.offset), (0, 0));
}
