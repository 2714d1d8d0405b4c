//! Acknowledged means durable, whatever happens to the process: SIGKILL while clients post,
//! an abort at each step of the transformer's commit protocol, and SIGTERM with requests in
//! flight. After a restart on the same directory every acknowledged report is in the tables
//! exactly once.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{Posters, Up, assert_exactly_once, report, wait_until};

#[test]
fn sigkill_while_clients_post_loses_no_acknowledged_report() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut acknowledged = BTreeSet::new();
    // Kill at different moments: early (first flush pending), later (files written and
    // compaction under way with --compact-min-files 2).
    for (round, after) in [5usize, 60, 150].into_iter().enumerate() {
        let up = Up::start(&data, &["--compact-min-files", "2"], &[]);
        let posters = Posters::start(&up.reports_url, 4, Duration::ZERO);
        wait_until("acknowledgements", Duration::from_secs(60), || {
            posters.acknowledged_so_far() >= after
        });
        up.kill();
        let acked = posters.finish();
        assert!(acked.len() >= after, "round {round}");
        acknowledged.extend(acked);
    }
    let up = Up::start(&data, &[], &[]);
    assert_exactly_once(|sql| up.sql(sql), &acknowledged);
    up.stop();
}

/// Aborts the process at one step of the commit protocol (`TLSRPT_TEST_CRASH_AT`), then
/// restarts and checks.
fn abort_at(point: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // One partition, so that consecutive flushes share a directory and compaction runs.
    let flags = ["--partitions", "1", "--compact-min-files", "2"];
    let up = Up::start(&data, &flags, &[("TLSRPT_TEST_CRASH_AT", point)]);
    let client = reqwest::blocking::Client::new();
    let mut acknowledged = BTreeSet::new();
    let mut n = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    // Post slowly, one report per flush, until the process aborts.
    loop {
        n += 1;
        let id = 1_000_000 + n;
        let sent = client
            .post(&up.reports_url)
            .header("content-type", "application/tlsrpt+json")
            .body(report(id, "abort.test"))
            .send();
        match sent {
            Ok(response) if response.status() == 200 => {
                acknowledged.insert(format!("report-{id}"));
            }
            Ok(response) => panic!("unexpected answer {}", response.status()),
            Err(_) => break,
        }
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            Instant::now() < deadline,
            "tlsrpt up never reached the crash point {point}"
        );
    }
    let status = up.wait(Duration::from_secs(30));
    assert!(
        !status.success(),
        "{point}: the process should have aborted"
    );
    assert!(!acknowledged.is_empty());
    let up = Up::start(&data, &flags, &[]);
    assert_exactly_once(|sql| up.sql(sql), &acknowledged);
    // And the directory is clean: no flush left in staging (`_staging/p<partition>/<flush>`;
    // one interrupted before its claim goes with the first claim of the restarted process).
    // Waited for: a flush deletes its staging directory, and sweeps the interrupted one,
    // after its files are in place, so the rows can be visible a moment before (on a loaded
    // machine this check once ran in between).
    let staging = data.join("tables/_staging");
    let leftovers = || -> usize {
        std::fs::read_dir(&staging)
            .map(|partitions| {
                partitions
                    .flatten()
                    .map(|p| std::fs::read_dir(p.path()).map_or(0, Iterator::count))
                    .sum()
            })
            .unwrap_or(0)
    };
    wait_until(
        &format!("{point}: staging cleaned up"),
        Duration::from_secs(10),
        || leftovers() == 0,
    );
    up.stop();
}

#[test]
fn abort_after_staging_before_the_claim() {
    abort_at("flush-staged");
}

#[test]
fn abort_while_moving_files_into_place() {
    abort_at("flush-moving");
}

#[test]
fn abort_after_rename_before_commit() {
    abort_at("flush-published");
}

#[test]
fn abort_during_compaction() {
    abort_at("compaction-renamed");
}

#[test]
fn sigterm_with_requests_in_flight_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let up = Up::start(&data, &[], &[]);
    let posters = Posters::start(&up.reports_url, 6, Duration::ZERO);
    wait_until("acknowledgements", Duration::from_secs(60), || {
        posters.acknowledged_so_far() >= 100
    });
    up.signal("TERM");
    let acknowledged = posters.finish();
    let status = up.wait(Duration::from_secs(60));
    assert!(status.success(), "exit status {status} after SIGTERM");

    // Before any restart, the tables already hold every acknowledged report: the
    // transformer flushed and committed on the way out. Read them with `tlsrpt sql`.
    let present = sql_report_ids(&data);
    let missing: Vec<_> = acknowledged.difference(&present).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged reports not written at shutdown",
        missing.len()
    );
}

fn sql_report_ids(data: &Path) -> BTreeSet<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_tlsrpt"))
        .args([
            "sql",
            "--data-dir",
            data.to_str().unwrap(),
            "--format",
            "json",
        ])
        .arg("SELECT report_id FROM reports")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    rows.iter()
        .map(|r| r["report_id"].as_str().unwrap().to_owned())
        .collect()
}
