//! The commit protocol on an object store and between writers: the same flows as on a local
//! disk, written through `object_store`'s in-memory store (the S3 code path of the
//! transformer: PUTs, conditional creates for the claims, server-side copies, no rename);
//! and two transformers racing for the same ranges, kept apart by their claims.
//!
//! The S3 implementation itself, against a local S3-compatible server, is exercised end to
//! end in the binary's tests (`tests/e2e/scale_out.rs`).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use futures::StreamExt;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tlsrpt_schemas::layout::{self, FileRange};
use tlsrpt_transform::{CrashPoint, TableStore, TransformError, TransformOptions, Transformer};

use crate::{Env, ids, options, report_ids, rows, staged, texts};

/// An in-memory object store holding the tables under `tables/`.
fn memory() -> Arc<InMemory> {
    Arc::new(InMemory::new())
}

fn store(memory: &Arc<InMemory>) -> TableStore {
    TableStore::object(
        Arc::clone(memory) as Arc<dyn ObjectStore>,
        "tables",
        "memory://tables",
    )
    .unwrap()
}

fn open(env: &Env, memory: &Arc<InMemory>, options: TransformOptions) -> Transformer {
    Transformer::open(
        env.log.clone(),
        store(memory),
        env.dead_letters.clone(),
        options,
    )
    .unwrap()
}

async fn keys(memory: &InMemory, prefix: &str) -> Vec<String> {
    let prefix = ObjectPath::from(prefix);
    let listed: Vec<_> = memory.list(Some(&prefix)).collect().await;
    listed
        .into_iter()
        .map(|meta| meta.unwrap().location.to_string())
        .collect()
}

/// Every row a query would see of `table`: the visible objects (`layout::visible` per date
/// directory), read back with parquet's reader.
async fn read_table(memory: &InMemory, table: &str) -> Vec<RecordBatch> {
    let mut by_dir: BTreeMap<String, Vec<(FileRange, String)>> = BTreeMap::new();
    for key in keys(memory, &format!("tables/{table}")).await {
        let (dir, name) = key.rsplit_once('/').unwrap();
        let range = FileRange::parse(name).unwrap_or_else(|| panic!("stray object {key}"));
        by_dir
            .entry(dir.to_owned())
            .or_default()
            .push((range, key.clone()));
    }
    let mut batches = Vec::new();
    for files in by_dir.values() {
        let ranges: Vec<FileRange> = files.iter().map(|(r, _)| *r).collect();
        let shown = layout::visible(&ranges);
        for (range, key) in files {
            if !shown.contains(range) {
                continue;
            }
            let bytes = memory
                .get(&ObjectPath::from(key.as_str()))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
                .unwrap()
                .build()
                .unwrap();
            batches.extend(reader.map(Result::unwrap));
        }
    }
    batches
}

async fn report_ids_in(memory: &InMemory) -> Vec<String> {
    let mut ids: Vec<String> = texts(&read_table(memory, "reports").await, "report_id")
        .into_iter()
        .map(Option::unwrap)
        .collect();
    ids.sort();
    ids
}

async fn rows_in(memory: &InMemory, table: &str) -> usize {
    read_table(memory, table)
        .await
        .iter()
        .map(RecordBatch::num_rows)
        .sum()
}

#[tokio::test]
async fn an_object_store_gets_every_report_once_and_no_leftovers() {
    let env = Env::new(3);
    env.send_reports(0..30).await;
    let memory = memory();
    let transformer = open(&env, &memory, options());
    let stats = transformer.stats();
    transformer.run(std::future::ready(())).await.unwrap();
    assert_eq!(stats.committed_offsets(), env.log.end_offsets());

    assert_eq!(report_ids_in(&memory).await, ids(0..30));
    assert_eq!(rows_in(&memory, "policies").await, 30);
    assert_eq!(rows_in(&memory, "failures").await, 60);
    assert!(keys(&memory, "tables/_staging").await.is_empty());
    // One claim per flush: one flush per partition here.
    let claims = keys(&memory, "tables/_claims").await;
    assert_eq!(claims.len(), 3, "{claims:?}");
    assert!(claims[0].starts_with("tables/_claims/p00000/"));

    // Opened again, nothing is read twice: it resumes where the claims and files end.
    env.send_reports(30..33).await;
    let transformer = open(&env, &memory, options());
    let resumed: u64 = transformer.resume_offsets().iter().sum();
    assert_eq!(resumed, 30);
    let stats = transformer.stats();
    transformer.run(std::future::ready(())).await.unwrap();
    assert_eq!(stats.duplicates_skipped(), 0);
    assert_eq!(report_ids_in(&memory).await, ids(0..33));
}

#[tokio::test]
async fn an_interrupted_copy_into_place_is_finished_when_taken_over() {
    let env = Env::new(1);
    env.send_reports(0..6).await;
    let memory = memory();
    let mut transformer = open(&env, &memory, options());
    transformer.crash_at(CrashPoint::FlushMoving { moved: 4 });
    match transformer.run(std::future::ready(())).await {
        Err(TransformError::SimulatedCrash(_)) => {}
        other => panic!("expected a simulated crash, got {other:?}"),
    }
    // Claimed, four of 18 files copied, the staging still there.
    assert_eq!(keys(&memory, "tables/_claims").await.len(), 1);
    assert_eq!(keys(&memory, "tables/_staging").await.len(), 18);
    let published = keys(&memory, "tables/reports").await.len()
        + keys(&memory, "tables/policies").await.len()
        + keys(&memory, "tables/failures").await.len();
    assert_eq!(published, 4);

    let transformer = open(&env, &memory, options());
    assert_eq!(transformer.resume_offsets(), [6]);
    assert_eq!(transformer.known_reports(), 6);
    assert!(keys(&memory, "tables/_staging").await.is_empty());
    transformer.run(std::future::ready(())).await.unwrap();
    assert_eq!(report_ids_in(&memory).await, ids(0..6));
    assert_eq!(rows_in(&memory, "failures").await, 12);
}

#[tokio::test]
async fn a_flush_staged_without_a_claim_is_done_again_and_its_staging_swept() {
    let env = Env::new(1);
    env.send_reports(0..6).await;
    let memory = memory();
    let mut transformer = open(&env, &memory, options());
    transformer.crash_at(CrashPoint::FlushStaged);
    assert!(transformer.run(std::future::ready(())).await.is_err());
    assert_eq!(keys(&memory, "tables/_staging").await.len(), 18);
    assert!(keys(&memory, "tables/_claims").await.is_empty());

    let transformer = open(&env, &memory, options());
    assert_eq!(transformer.resume_offsets(), [0]);
    transformer.run(std::future::ready(())).await.unwrap();
    assert!(keys(&memory, "tables/_staging").await.is_empty());
    assert_eq!(report_ids_in(&memory).await, ids(0..6));
}

#[tokio::test]
async fn merges_on_an_object_store_keep_every_row_once() {
    let env = Env::new(1);
    let memory = memory();
    let options = TransformOptions {
        compact_min_files: 2,
        superseded_grace: Duration::ZERO,
        ..options()
    };
    // One flush per run: several small files in each date directory.
    for round in 0..4 {
        env.send_reports(round * 6..round * 6 + 6).await;
        let transformer = open(&env, &memory, options.clone());
        transformer.run(std::future::ready(())).await.unwrap();
    }
    // Opening again merges what the last run left and deletes what merges superseded.
    let transformer = open(&env, &memory, options.clone());
    let stats = transformer.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(transformer.run(async {
        let _ = stopped.await;
    }));
    for _ in 0..100 {
        if stats.compactions() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    assert!(stats.compactions() > 0, "a merge ran");
    assert_eq!(report_ids_in(&memory).await, ids(0..24));
    assert_eq!(rows_in(&memory, "failures").await, 48);
    for key in keys(&memory, "tables/failures").await {
        assert!(!key.contains(".tmp-"), "no temporary objects: {key}");
    }
}

/// Two transformers on one store both believe they own every partition (two embedded-log
/// consumers: the worst case of a partition moving while its old owner is busy). Each flush
/// races for the claim at its first offset; the loser drops its batch and resumes after the
/// winner's range. Every report must be in the tables exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_racing_for_the_same_ranges_write_each_report_once() {
    let env = Env::new(2);
    let options = TransformOptions {
        flush_interval: Duration::from_millis(20),
        max_batch_reports: 7,
        ..options()
    };
    let first = env.open(options.clone());
    let second = env.open(options.clone());
    let stats = [first.stats(), second.stats()];
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run = |transformer: Transformer| {
        let mut stopped = stopped.clone();
        tokio::spawn(transformer.run(async move {
            let _ = stopped.wait_for(|s| *s).await;
        }))
    };
    let running = [run(first), run(second)];
    for chunk in 0..10 {
        env.send_reports(chunk * 20..chunk * 20 + 20).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    stop.send(true).unwrap();
    for task in running {
        task.await.unwrap().unwrap();
    }

    let written: u64 = stats.iter().map(|s| s.reports_written()).sum();
    let lost: u64 = stats.iter().map(|s| s.claims_lost()).sum();
    assert!(lost > 0, "the writers raced (claims lost: {lost})");
    let ids_found = report_ids(&env.root);
    let distinct: HashSet<&String> = ids_found.iter().collect();
    assert_eq!(distinct.len(), ids_found.len(), "no report twice");
    assert_eq!(ids_found, ids(0..200));
    assert_eq!(written, 200, "each report written by one writer only");
    assert_eq!(rows(&env.root, "failures"), 400);
    assert!(staged(&env.root).is_empty(), "{:?}", staged(&env.root));
}
