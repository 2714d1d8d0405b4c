//! Many small flushes become one file per (table, date, partition), with the same rows, and
//! no reader sees a row twice or misses one at any point.

use std::collections::BTreeMap;
use std::time::Duration;

use tlsrpt_transform::TransformOptions;

use crate::{Env, ids, list, message, read_file, report_ids, report_json, rows, texts, visible};

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

    // Each run merges at most one run of files per pass; run until nothing changes, and
    // check after each that a reader sees every row exactly once.
    let mut compactions = stats.compactions();
    for _ in 0..50 {
        let stats = env.drain(compacting.clone()).await;
        assert_eq!(report_ids(&env.root), ids(0..14));
        assert_eq!(rows(&env.root, "policies"), 14);
        assert_eq!(rows(&env.root, "failures"), 28);
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
        let batch = read_file(&file.path);
        let one = std::slice::from_ref(&batch);
        let keys: Vec<(Option<String>, Option<String>)> = texts(one, "policy_domain")
            .into_iter()
            .zip(texts(one, "receiving_mx_hostname"))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] <= w[1]), "{keys:?}");
    }
}
