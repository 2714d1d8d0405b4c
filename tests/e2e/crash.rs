//! Acknowledged means durable, whatever happens to the process: SIGKILL while clients post,
//! an abort at each step of the transformer's commit protocol, and SIGTERM with requests in
//! flight. After a restart on the same directory every acknowledged report is in the tables
//! exactly once.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{Up, gzip, report};

/// Clients posting distinct reports until told to stop (or the server is gone); returns the
/// report-ids the server acknowledged.
struct Posters {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<BTreeSet<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl Posters {
    fn start(up: &Up, clients: usize, pause: Duration) -> Posters {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
        let threads = (0..clients)
            .map(|_| {
                let url = up.reports_url.clone();
                let stop = Arc::clone(&stop);
                let acknowledged = Arc::clone(&acknowledged);
                std::thread::spawn(move || {
                    let client = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(10))
                        .build()
                        .unwrap();
                    while !stop.load(Ordering::Relaxed) {
                        let n = NEXT.fetch_add(1, Ordering::Relaxed);
                        let body = gzip(report(n, "crash.test").as_bytes());
                        let sent = client
                            .post(&url)
                            .header("content-type", "application/tlsrpt+gzip")
                            .body(body)
                            .send();
                        match sent {
                            Ok(response) if response.status() == 200 => {
                                acknowledged.lock().unwrap().insert(format!("report-{n}"));
                            }
                            Ok(_) => {}
                            // The server is gone (killed): stop.
                            Err(_) => return,
                        }
                        std::thread::sleep(pause);
                    }
                })
            })
            .collect();
        Posters {
            stop,
            acknowledged,
            threads,
        }
    }

    fn acknowledged_so_far(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    fn finish(self) -> BTreeSet<String> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().unwrap();
        }
        Arc::try_unwrap(self.acknowledged)
            .unwrap()
            .into_inner()
            .unwrap()
    }
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every acknowledged report is in the tables once, and no report is there twice.
fn assert_exactly_once(up: &Up, acknowledged: &BTreeSet<String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = up.sql("SELECT report_id, count(*) AS n FROM reports GROUP BY report_id");
        let present: BTreeSet<String> = rows
            .iter()
            .map(|r| r["report_id"].as_str().unwrap().to_owned())
            .collect();
        let twice: Vec<_> = rows.iter().filter(|r| r["n"] != 1).collect();
        assert!(twice.is_empty(), "reports written twice: {twice:?}");
        for table in ["policies", "failures"] {
            let doubled = up.sql(&format!(
                "SELECT report_uid FROM {table} GROUP BY report_uid HAVING count(*) > 1"
            ));
            assert!(
                doubled.is_empty(),
                "{table} rows written twice: {doubled:?}"
            );
        }
        let missing: Vec<_> = acknowledged.difference(&present).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} acknowledged reports missing after restart, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sigkill_while_clients_post_loses_no_acknowledged_report() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut acknowledged = BTreeSet::new();
    // Kill at different moments: early (first flush pending), later (files written and
    // compaction under way with --compact-min-files 2).
    for (round, after) in [5usize, 60, 150].into_iter().enumerate() {
        let up = Up::start(&data, &["--compact-min-files", "2"], &[]);
        let posters = Posters::start(&up, 4, Duration::ZERO);
        wait_until("acknowledgements", Duration::from_secs(60), || {
            posters.acknowledged_so_far() >= after
        });
        up.kill();
        let acked = posters.finish();
        assert!(acked.len() >= after, "round {round}");
        acknowledged.extend(acked);
    }
    let up = Up::start(&data, &[], &[]);
    assert_exactly_once(&up, &acknowledged);
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
    assert_exactly_once(&up, &acknowledged);
    // And the directory is clean: nothing left in staging.
    let staging = data.join("tables/_staging");
    let leftovers = std::fs::read_dir(&staging).map(|d| d.count()).unwrap_or(0);
    assert_eq!(leftovers, 0, "{point}: staging not cleaned up");
    up.stop();
}

#[test]
fn abort_after_staging_before_the_manifest() {
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
    let posters = Posters::start(&up, 6, Duration::ZERO);
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
