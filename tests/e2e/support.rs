//! A `tlsrpt up` process for a test: started on port 0 in a data directory, its addresses
//! read from the banner, and the ways a user talks to it (HTTP POST, SMTP, SQL).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every vendored corpus file with the given extension.
pub(crate) fn fixtures(extension: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let corpus = root().join("schemas/tests/fixtures/corpus");
    for source in std::fs::read_dir(&corpus).unwrap() {
        let source = source.unwrap().path();
        if !source.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&source).unwrap() {
            let file = file.unwrap().path();
            if file.extension().and_then(|e| e.to_str()) == Some(extension) {
                out.push(file);
            }
        }
    }
    out.sort();
    out
}

pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// A running `tlsrpt up`.
pub(crate) struct Up {
    child: Child,
    pub(crate) dir: PathBuf,
    pub(crate) reports_url: String,
    pub(crate) smtp: SocketAddr,
    pub(crate) sql_url: String,
    pub(crate) metrics_url: String,
    /// The banner's first line (`tlsrpt up: ...`).
    pub(crate) headline: String,
    http: reqwest::blocking::Client,
}

fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let at = line.find(marker)?;
    line[at..].split_whitespace().next()
}

impl Up {
    /// Starts `tlsrpt up` on `dir` with loopback port 0 everywhere, plus `extra` flags and
    /// environment, and waits for its banner.
    pub(crate) fn start(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Up {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.with_extension("log"))
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tlsrpt"))
            .args([
                "up",
                "--data-dir",
                dir.to_str().unwrap(),
                "--http-listen",
                "127.0.0.1:0",
                "--smtp-listen",
                "127.0.0.1:0",
                "--query-listen",
                "127.0.0.1:0",
                "--flight-listen",
                "127.0.0.1:0",
                "--flush-interval",
                "200ms",
            ])
            .args(extra)
            .envs(env.iter().copied())
            .env("TLSRPT_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("cannot start tlsrpt up");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let (mut reports, mut smtp, mut sql, mut metrics) = (None, None, None, None);
        let mut headline = String::new();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if line.starts_with("tlsrpt up:") {
                headline = line;
            } else if line.contains("reports over HTTP") {
                reports = after(&line, "http").map(str::to_owned);
            } else if line.contains("reports by mail") {
                smtp = after(&line, "smtp://")
                    .and_then(|url| url.trim_start_matches("smtp://").parse().ok());
            } else if line.contains("  SQL ") {
                sql = after(&line, "http").map(str::to_owned);
            } else if line.contains("metrics") {
                metrics = after(&line, "http").map(str::to_owned);
            } else if line.starts_with("Then ask:") {
                break;
            }
        }
        // Keep draining stdout so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let (Some(reports_url), Some(smtp), Some(sql_url), Some(metrics_url)) =
            (reports, smtp, sql, metrics)
        else {
            let status = child.wait().unwrap();
            panic!(
                "tlsrpt up did not print its banner (exit {status}); its log: {}",
                std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default()
            );
        };
        Up {
            child,
            dir: dir.to_path_buf(),
            reports_url,
            smtp,
            sql_url,
            metrics_url,
            headline,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Posts a body; returns the status and the JSON answer.
    pub(crate) fn post(&self, body: Vec<u8>, content_type: &str) -> (u16, serde_json::Value) {
        post(&self.http, &self.reports_url, body, content_type)
    }

    /// Runs SQL through the HTTP service; returns the rows.
    pub(crate) fn sql(&self, sql: &str) -> Vec<serde_json::Value> {
        let response = self
            .http
            .post(&self.sql_url)
            .header("accept", "application/json")
            .body(sql.to_owned())
            .send()
            .unwrap();
        let status = response.status();
        let text = response.text().unwrap();
        assert!(status.is_success(), "SQL {sql:?} answered {status}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// One integer from a query such as `SELECT count(*) AS n FROM reports`.
    pub(crate) fn count(&self, sql: &str) -> i64 {
        let rows = self.sql(sql);
        rows[0]
            .as_object()
            .and_then(|row| row.values().next())
            .and_then(|v| v.as_i64())
            .unwrap_or_else(|| panic!("{sql} gave {rows:?}"))
    }

    /// Waits until `sql` counts `expected` (the transformer flushes every 200 ms here).
    pub(crate) fn wait_for_count(&self, sql: &str, expected: i64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let n = self.count(sql);
            if n == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{sql} still counts {n}, not {expected}, after 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) fn metrics(&self) -> String {
        self.http
            .get(&self.metrics_url)
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    /// Sends a signal with kill(1) (no libc binding needed).
    pub(crate) fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit, at most `limit`.
    pub(crate) fn wait(mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("tlsrpt up did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, and wait for it.
    pub(crate) fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, and expect a clean exit.
    pub(crate) fn stop(self) {
        self.signal("TERM");
        let status = self.wait(Duration::from_secs(60));
        assert!(
            status.success(),
            "tlsrpt up exited with {status} on SIGTERM"
        );
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn post(
    client: &reqwest::blocking::Client,
    url: &str,
    body: Vec<u8>,
    content_type: &str,
) -> (u16, serde_json::Value) {
    let response = client
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().unwrap();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, json)
}

/// A distinct, valid report; `n` makes its report-id (and so its report_uid) unique.
pub(crate) fn report(n: usize, domain: &str) -> String {
    serde_json::json!({
        "organization-name": "Test Sender",
        "date-range": {"start-datetime": "2026-11-01T00:00:00Z", "end-datetime": "2026-11-01T23:59:59Z"},
        "contact-info": "mailto:tlsrpt@sender.test",
        "report-id": format!("report-{n}"),
        "policies": [{
            "policy": {"policy-type": "sts", "policy-domain": domain, "mx-host": ["mx.test"]},
            "summary": {"total-successful-session-count": 10, "total-failure-session-count": 1},
            "failure-details": [{
                "result-type": "certificate-expired",
                "sending-mta-ip": "192.0.2.1",
                "receiving-mx-hostname": "mx.test",
                "failed-session-count": 1
            }]
        }]
    })
    .to_string()
}

/// Clients posting distinct reports until told to stop (or the server is gone); returns the
/// report-ids the server acknowledged.
pub(crate) struct Posters {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<BTreeSet<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl Posters {
    pub(crate) fn start(url: &str, clients: usize, pause: Duration) -> Posters {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
        let threads = (0..clients)
            .map(|_| {
                let url = url.to_owned();
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

    pub(crate) fn acknowledged_so_far(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    pub(crate) fn finish(self) -> BTreeSet<String> {
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

pub(crate) fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every acknowledged report (a [`Posters`] report-id) is in the tables once, and no report
/// is there twice.
pub(crate) fn assert_exactly_once(
    sql: impl Fn(&str) -> Vec<serde_json::Value>,
    acknowledged: &BTreeSet<String>,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = sql("SELECT report_id, count(*) AS n FROM reports GROUP BY report_id");
        let present: BTreeSet<String> = rows
            .iter()
            .map(|r| r["report_id"].as_str().unwrap().to_owned())
            .collect();
        let twice: Vec<_> = rows.iter().filter(|r| r["n"] != 1).collect();
        assert!(twice.is_empty(), "reports written twice: {twice:?}");
        // The posters' reports have one policy with one failure detail each (other reports,
        // from the corpus say, may have several).
        for table in ["policies", "failures"] {
            let doubled = sql(&format!(
                "SELECT t.report_uid FROM {table} t JOIN reports r ON t.report_uid = r.report_uid \
                 WHERE r.report_id LIKE 'report-%' GROUP BY t.report_uid HAVING count(*) > 1"
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
