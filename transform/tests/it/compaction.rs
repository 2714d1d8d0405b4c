//! Many small flushes become one file per (table, date, partition), with the same rows, and
//! no reader sees a row twice or misses one at any point.

use std::collections::BTreeMap;
use std::time::Duration;

use tlsrpt_transform::TransformOptions;

use crate::{
    Env, ids, list, message, read_file, read_table, report_ids, report_json, row_texts, rows,
    texts, visible,
};

#[tokio::test]
async fn small_flushes_are_merged_into_one_file_per_directory() {
    let env = Env::new(2);
    let mut first_day_flushes = [0usize; 2];
    // Twelve reports on one day and two on another, each flushed on its own
    // (`max_batch_reports: 1`): many small files on the first day, few on the second.
    for n in 0..14 {
        let day = if n < 12 { "2026-04-01" } else { "2026-04-02" };
        let mx = format!("mx{}.example", n % 4);
        let delivered = env
            .send(message(&report_json(
                "Google",
                &format!("r{n}"),
                day,
                &format!("d{}.example", n % 3),
                &[(&mx, 1), ("mx.z.example", 2)],
            )))
            .await;
        if n < 12 {
            first_day_flushes[delivered.partition as usize] += 1;
        }
    }
    let compacting = TransformOptions {
        max_batch_reports: 1,
        compact_min_files: 3,
        superseded_grace: Duration::ZERO,
        ..crate::options()
    };
    let stats = env.drain(compacting.clone()).await;
    assert_eq!(stats.flushes(), 14);
    assert_eq!(report_ids(&env.root), ids(0..14));

    // A run that is not asked to stop at once makes passes until no directory has
    // candidates left (a pass examines at most 16 directories and merges at most one run of
    // files). Run until a run merges nothing, and check after each that a reader sees every
    // row exactly once.
    let mut compactions = stats.compactions();
    for _ in 0..20 {
        let transformer = env.open(compacting.clone());
        let stats = transformer.stats();
        transformer
            .run(tokio::time::sleep(Duration::from_millis(300)))
            .await
            .unwrap();
        assert_eq!(report_ids(&env.root), ids(0..14));
        assert_eq!(rows(&env.root, "policies"), 14);
        assert_eq!(rows(&env.root, "failures"), 28);
        assert_eq!(crate::assert_rollups_agree(&env.root), 14);
        if stats.compactions() == 0 {
            break;
        }
        compactions += stats.compactions();
    }
    assert!(compactions > 0);
    // The last run deleted what the merges superseded (grace zero).
    let (files, stray) = list(&env.root);
    assert!(stray.is_empty(), "{stray:?}");
    assert_eq!(
        files.len(),
        visible(&env.root).len(),
        "superseded files deleted"
    );

    // Per (table, date, partition): one file where there were at least three, covering the
    // offsets of all; directories with fewer (the second day's) kept their small files.
    let mut per_dir: BTreeMap<(String, String, u32), Vec<(u64, u64)>> = BTreeMap::new();
    for file in &files {
        per_dir
            .entry((file.table.clone(), file.date.clone(), file.range.partition))
            .or_default()
            .push((file.range.first, file.range.last));
    }
    let ends = env.log.end_offsets();
    assert!(
        first_day_flushes.iter().any(|&n| n >= 3),
        "{first_day_flushes:?}"
    );
    for ((table, date, partition), ranges) in &per_dir {
        if date == "date=2026-04-01" && first_day_flushes[*partition as usize] >= 3 {
            assert_eq!(ranges.len(), 1, "{table} {date} p{partition}: {ranges:?}");
            assert!(ranges[0].1 < ends[*partition as usize]);
        } else {
            assert!(ranges.len() <= 2, "{table} {date} p{partition}: {ranges:?}");
        }
    }

    // A merged file is sorted like any other.
    for file in files.iter().filter(|f| f.table == "failures") {
        assert_failures_sorted(&file.path);
    }
}

#[tokio::test]
async fn a_merge_larger_than_what_it_reads_at_a_time_keeps_every_row_once_in_order() {
    let env = Env::new(1);
    // Three flushes of 1,500 reports of one day, two failure rows each: 3,000 failure rows
    // per file, more than a merge reads from one input at a time, so the merge streams.
    let sends = (0..4500).map(|n| {
        let mx = format!("mx{}.example", n % 11);
        env.send(message(&report_json(
            "Google",
            &format!("r{n}"),
            "2026-04-01",
            &format!("d{}.example", n % 7),
            &[(&mx, 1 + n as u64 % 3), ("mx.z.example", 2)],
        )))
    });
    futures::future::join_all(sends).await;
    let flushing = TransformOptions {
        max_batch_reports: 1500,
        flush_interval: Duration::from_secs(600),
        compact_min_files: 1000,
        ..crate::options()
    };
    // More than one fetch's worth: the shutdown reads all of it before it stops.
    let stats = env.drain(flushing).await;
    assert_eq!(stats.flushes(), 3);
    let before: Vec<Vec<String>> = ["reports", "policies", "failures"]
        .iter()
        .map(|table| row_texts(&read_table(&env.root, table)))
        .collect();
    assert_eq!(before[2].len(), 9000);

    let compacting = TransformOptions {
        compact_min_files: 3,
        superseded_grace: Duration::ZERO,
        ..crate::options()
    };
    for _ in 0..10 {
        if env.drain(compacting.clone()).await.compactions() == 0 {
            break;
        }
    }
    let shown = visible(&env.root);
    assert_eq!(shown.len(), 6, "one file per table: {shown:?}");
    for (table, rows_before) in ["reports", "policies", "failures"].iter().zip(&before) {
        assert_eq!(
            &row_texts(&read_table(&env.root, table)),
            rows_before,
            "{table}"
        );
    }
    let failures = shown.iter().find(|f| f.table == "failures").unwrap();
    assert_failures_sorted(&failures.path);
    assert_eq!(report_ids(&env.root).len(), 4500);
}

/// Asserts that the `failures` file at `path` is in its file order (policy domain, then
/// receiving MX).
fn assert_failures_sorted(path: &std::path::Path) {
    let batch = read_file(path);
    let one = std::slice::from_ref(&batch);
    let keys: Vec<(Option<String>, Option<String>)> = texts(one, "policy_domain")
        .into_iter()
        .zip(texts(one, "receiving_mx_hostname"))
        .collect();
    assert!(
        keys.windows(2).all(|w| w[0] <= w[1]),
        "{} out of order",
        path.display()
    );
}
