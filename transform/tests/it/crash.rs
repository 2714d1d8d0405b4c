//! A crash at each step of a flush and of a merge, simulated by stopping the transformer
//! there ([`CrashPoint`]), then a restart: no row lost, none twice, offsets right.

use std::time::Duration;

use tlsrpt_transform::{CrashPoint, TransformError, TransformOptions, existing_report_uids};

use crate::{
    Env, claim, ids, list, message, nth_report, options, report_ids, report_json, rows, staged,
    visible,
};

/// Six reports over three days on one partition: a flush of them writes nine files.
async fn six_reports() -> Env {
    let env = Env::new(1);
    env.send_reports(0..6).await;
    env
}

/// Runs a transformer that stops at `point`, as a crash there would.
async fn crash_at(env: &Env, point: CrashPoint, options: TransformOptions) {
    let mut transformer = env.open(options);
    transformer.crash_at(point);
    match transformer.run(std::future::ready(())).await {
        Err(TransformError::SimulatedCrash(at)) => assert_eq!(at, point),
        other => panic!("expected a simulated crash, got {other:?}"),
    }
}

#[tokio::test]
async fn a_flush_staged_without_its_claim_is_discarded_and_done_again() {
    let env = six_reports().await;
    crash_at(&env, CrashPoint::FlushStaged, options()).await;
    assert!(list(&env.root).0.is_empty(), "nothing is published");
    let flushes = staged(&env.root);
    assert_eq!(flushes.len(), 1);
    assert_eq!(std::fs::read_dir(&flushes[0]).unwrap().count(), 18);
    assert!(claim(&env.root, 0, 0).is_none());
    assert_eq!(env.log.committed("transform", 0).unwrap(), None);

    let transformer = env.open(options());
    // Another writer could still claim offset 0 with it (a transformer that lost the
    // partition without knowing yet): it stays until this one's claim there makes it dead.
    assert_eq!(staged(&env.root), flushes, "kept at open");
    assert_eq!(transformer.resume_offsets(), [0]);
    drop(transformer);
    let stats = env.drain(options()).await;
    assert!(staged(&env.root).is_empty(), "swept after the first claim");
    assert!(claim(&env.root, 0, 0).is_some());
    assert_eq!(stats.reports_written(), 6);
    assert_eq!(report_ids(&env.root), ids(0..6));
    assert_eq!(rows(&env.root, "failures"), 12);
    crate::assert_rollups_agree(&env.root);
}

#[tokio::test]
async fn a_flush_past_its_claim_is_finished_at_open() {
    let env = six_reports().await;
    crash_at(&env, CrashPoint::FlushMoving { moved: 4 }, options()).await;
    assert_eq!(list(&env.root).0.len(), 4, "four of 18 files moved");
    let flushes = staged(&env.root);
    assert_eq!(flushes.len(), 1);
    let claimed = claim(&env.root, 0, 0).expect("claimed");
    assert_eq!(claimed["last"], 5);
    assert_eq!(claimed["files"].as_array().unwrap().len(), 18);
    assert_eq!(env.log.committed("transform", 0).unwrap(), None);

    let transformer = env.open(options());
    assert!(staged(&env.root).is_empty(), "rolled forward at open");
    assert_eq!(list(&env.root).0.len(), 18);
    // The files now say offsets 0..=5 are written: reading resumes after them.
    assert_eq!(transformer.resume_offsets(), [6]);
    assert_eq!(transformer.known_reports(), 6);
    drop(transformer);
    assert_eq!(env.log.committed("transform", 0).unwrap(), Some(6));
    let stats = env.drain(options()).await;
    assert_eq!(stats.flushes(), 0);
    assert_eq!(report_ids(&env.root), ids(0..6));
    assert_eq!(rows(&env.root, "failures"), 12);
    crate::assert_rollups_agree(&env.root);
}

#[tokio::test]
async fn files_in_place_without_a_commit_are_not_written_again() {
    let env = six_reports().await;
    crash_at(&env, CrashPoint::FlushPublished, options()).await;
    assert_eq!(list(&env.root).0.len(), 18);
    assert!(staged(&env.root).is_empty());
    assert_eq!(env.log.committed("transform", 0).unwrap(), None);
    assert_eq!(existing_report_uids(&env.root).unwrap().len(), 6);

    env.send(message(&nth_report(6))).await;
    let transformer = env.open(options());
    // Resumed from the files, not from the (missing) commit: offsets 0..=5 are not read
    // again, so not even counted as duplicates.
    assert_eq!(transformer.resume_offsets(), [6]);
    drop(transformer);
    let stats = env.drain(options()).await;
    assert_eq!(stats.duplicates_skipped(), 0);
    assert_eq!(stats.reports_written(), 1);
    assert_eq!(report_ids(&env.root), ids(0..7));
    assert_eq!(env.log.committed("transform", 0).unwrap(), Some(7));
}

#[tokio::test]
async fn a_merge_renamed_before_its_inputs_went_changes_nothing_readers_see() {
    let env = Env::new(1);
    // Four flushes of one report each, one day: four small files per table (six tables:
    // three raw, three rollups).
    for n in 0..4 {
        env.send(message(&report_json(
            "Google",
            &format!("r{n}"),
            "2026-03-01",
            "a.example",
            &[("mx.a.example", 1)],
        )))
        .await;
        env.drain(options()).await;
    }
    assert_eq!(list(&env.root).0.len(), 24);
    let before: Vec<_> = visible(&env.root).iter().map(|f| f.path.clone()).collect();
    assert_eq!(before.len(), 24);

    let keep = TransformOptions {
        compact_min_files: 3,
        superseded_grace: Duration::from_secs(3600),
        ..options()
    };
    crash_at(&env, CrashPoint::CompactionRenamed, keep.clone()).await;
    let (files, stray) = list(&env.root);
    assert!(stray.is_empty(), "{stray:?}");
    assert_eq!(files.len(), 25, "one merged file beside its four inputs");
    let merged: Vec<_> = files
        .iter()
        .filter(|f| (f.range.first, f.range.last) == (0, 3))
        .collect();
    assert_eq!(merged.len(), 1);
    // Readers see the merged file instead of its inputs, and the same rows.
    let shown = visible(&env.root);
    assert_eq!(shown.len(), 21);
    assert!(shown.iter().any(|f| f.path == merged[0].path));
    assert_eq!(report_ids(&env.root), ids(0..4));
    assert_eq!(rows(&env.root, "failures"), 4);
    crate::assert_rollups_agree(&env.root);

    // Within the grace period a restart keeps the inputs (a query may be reading them) ...
    let transformer = env.open(keep.clone());
    assert_eq!(transformer.stats().superseded_deleted(), 0);
    drop(transformer);
    assert_eq!(list(&env.root).0.len(), 25);
    // ... and once it has passed, deletes them.
    let transformer = env.open(TransformOptions {
        superseded_grace: Duration::ZERO,
        ..keep
    });
    assert_eq!(transformer.stats().superseded_deleted(), 4);
    drop(transformer);
    assert_eq!(list(&env.root).0.len(), 21);
    assert_eq!(report_ids(&env.root), ids(0..4));
    assert_eq!(rows(&env.root, "failures"), 4);
    crate::assert_rollups_agree(&env.root);
}
