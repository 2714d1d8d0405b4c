//! The Kafka deployment's services as processes for the tests: `tlsrpt ingest`,
//! `tlsrpt transform` and `tlsrpt query`, each started on loopback port 0 and found by the
//! addresses its banner prints.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::{SmtpTransport, Transport as _};

use crate::support::{fixtures, gzip, post};

pub(crate) const TOPIC: &str = "tlsrpt.reports";
pub(crate) const DLQ_TOPIC: &str = "tlsrpt.reports.dlq";

/// A `tlsrpt` process, killed when dropped.
pub(crate) struct Service {
    child: Child,
    name: String,
}

impl Service {
    /// Starts `tlsrpt ARGS` with `env`, logging to `log`, and returns it with the lines of its
    /// banner up to the first one containing `last` (panics, with the log, if it exits first).
    fn start(
        args: &[&str],
        env: &[(&str, &str)],
        log: &Path,
        last: &str,
    ) -> (Service, Vec<String>) {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tlsrpt"))
            .args(args)
            .env("TLSRPT_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tlsrpt {}: {e}", args[0]));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut banner = Vec::new();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            let done = line.contains(last);
            banner.push(line);
            if done {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        if !banner.last().is_some_and(|l| l.contains(last)) {
            let status = child.wait().unwrap();
            panic!(
                "tlsrpt {} did not print its banner (exit {status}); its log:\n{}",
                args[0],
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        let service = Service {
            child,
            name: args[0].to_owned(),
        };
        (service, banner)
    }

    /// SIGTERM, and the exit status within 60 s.
    pub(crate) fn stop(mut self) -> ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "tlsrpt {} did not stop on SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to exit by itself, at most `limit`.
    pub(crate) fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "tlsrpt {} did not exit within {limit:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, and wait for it.
    pub(crate) fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first whitespace-separated word of `line` starting at `marker`.
fn word(line: &str, marker: &str) -> Option<String> {
    line.find(marker)
        .and_then(|at| line[at..].split_whitespace().next())
        .map(str::to_owned)
}

/// A running `tlsrpt ingest`.
pub(crate) struct Ingest {
    pub(crate) service: Service,
    reports_url: String,
    smtp: SocketAddr,
    http: reqwest::blocking::Client,
}

impl Ingest {
    /// `dir` keeps the refused inputs.
    pub(crate) fn start(dir: &Path, brokers: &str) -> Ingest {
        let (service, banner) = Service::start(
            &[
                "ingest",
                "--kafka",
                brokers,
                "--data-dir",
                dir.to_str().unwrap(),
                "--http-listen",
                "127.0.0.1:0",
                "--smtp-listen",
                "127.0.0.1:0",
                "--delivery-timeout",
                "3s",
            ],
            &[],
            &dir.with_extension("log"),
            "metrics",
        );
        let reports_url = banner
            .iter()
            .find(|l| l.contains("reports over HTTP"))
            .and_then(|l| word(l, "http"))
            .expect("the HTTP address in the banner");
        let smtp = banner
            .iter()
            .find(|l| l.contains("reports by mail"))
            .and_then(|l| word(l, "smtp://"))
            .and_then(|url| url.trim_start_matches("smtp://").parse().ok())
            .expect("the SMTP address in the banner");
        Ingest {
            service,
            reports_url,
            smtp,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    pub(crate) fn post(&self, body: Vec<u8>, content_type: &str) -> (u16, serde_json::Value) {
        post(&self.http, &self.reports_url, body, content_type)
    }

    pub(crate) fn reports_url(&self) -> &str {
        &self.reports_url
    }

    pub(crate) fn smtp(&self) -> SmtpTransport {
        SmtpTransport::builder_dangerous(self.smtp.ip().to_string())
            .port(self.smtp.port())
            .timeout(Some(Duration::from_secs(30)))
            .build()
    }

    /// SIGTERM, and the exit status.
    pub(crate) fn stop(self) -> ExitStatus {
        self.service.stop()
    }
}

pub(crate) fn envelope() -> Envelope {
    Envelope::new(
        Some("tlsrpt@sender.test".parse().unwrap()),
        vec!["tlsrpt@example.net".parse().unwrap()],
    )
    .unwrap()
}

/// A running `tlsrpt transform`.
pub(crate) struct Transform {
    pub(crate) service: Service,
    metrics_url: String,
}

impl Transform {
    /// A member of group `tlsrpt-transform` writing into `store`; `name` names its log
    /// beside the store. `env` is for the crash tests' `TLSRPT_TEST_CRASH_AT`.
    pub(crate) fn start(
        store: &Path,
        brokers: &str,
        name: &str,
        env: &[(&str, &str)],
    ) -> Transform {
        let log = store.with_file_name(format!("{name}.log"));
        Self::start_at(store.to_str().unwrap(), &log, brokers, env)
    }

    /// A member of group `tlsrpt-transform` writing into the store at `url` (a path or
    /// `s3://…`), logging to `log`.
    pub(crate) fn start_at(
        url: &str,
        log: &Path,
        brokers: &str,
        env: &[(&str, &str)],
    ) -> Transform {
        let (service, banner) = Service::start(
            &[
                "transform",
                "--kafka",
                brokers,
                "--store",
                url,
                "--metrics-listen",
                "127.0.0.1:0",
                "--flush-interval",
                "200ms",
                // A transformer killed in a test gives its partitions up after this long.
                "--session-timeout",
                "6s",
            ],
            env,
            log,
            "metrics",
        );
        let metrics_url = banner
            .iter()
            .find_map(|l| word(l, "http://"))
            .expect("the metrics address in the banner");
        Transform {
            service,
            metrics_url,
        }
    }

    /// One counter of `/metrics`.
    pub(crate) fn counter(&self, name: &str) -> u64 {
        let text = reqwest::blocking::get(&self.metrics_url)
            .and_then(|r| r.text())
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    }
}

/// A running `tlsrpt query`.
pub(crate) struct Query {
    pub(crate) service: Service,
    sql_url: String,
    http: reqwest::blocking::Client,
}

impl Query {
    pub(crate) fn start(store: &Path) -> Query {
        let log = store.with_file_name("query.log");
        Self::start_at(store.to_str().unwrap(), &log, &[])
    }

    /// The SQL service over the store at `url` (a path or `s3://…`), logging to `log`.
    pub(crate) fn start_at(url: &str, log: &Path, env: &[(&str, &str)]) -> Query {
        let (service, banner) = Service::start(
            &[
                "query",
                "--store",
                url,
                "--query-listen",
                "127.0.0.1:0",
                "--flight-listen",
                "127.0.0.1:0",
            ],
            env,
            log,
            "POST",
        );
        let sql_url = banner
            .iter()
            .find_map(|l| word(l, "http://"))
            .expect("the SQL address in the banner");
        Query {
            service,
            sql_url,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    /// Runs SQL; returns the rows.
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
}

/// The `report_uid` of every row of `reports`, sorted (duplicates kept: a test counts them),
/// through `sql` (a `tlsrpt query` or a `tlsrpt up`).
fn report_uids(sql: impl Fn(&str) -> Vec<serde_json::Value>) -> Vec<String> {
    let mut uids: Vec<String> = sql("SELECT report_uid FROM reports")
        .iter()
        .map(|row| row["report_uid"].as_str().unwrap().to_owned())
        .collect();
    uids.sort();
    uids
}

/// Waits (60 s at most) until the rows of `reports` are exactly `expected` (sorted).
pub(crate) fn wait_for_reports(sql: impl Fn(&str) -> Vec<serde_json::Value>, expected: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = report_uids(&sql);
        if found == expected {
            return;
        }
        if Instant::now() > deadline {
            let missing = expected.iter().filter(|u| !found.contains(u)).count();
            let mut dedup = found.clone();
            dedup.dedup();
            panic!(
                "after 60 s the tables hold {} rows ({} distinct) for {} acknowledged reports; {missing} missing",
                found.len(),
                dedup.len(),
                expected.len()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Posts every JSON report of the corpus, gzipped, through `post` (a receiver's
/// `POST /v1/reports`), checks each is answered 200, and returns their `report_uid`s.
pub(crate) fn post_json_corpus(
    post: impl Fn(Vec<u8>, &str) -> (u16, serde_json::Value),
) -> Vec<String> {
    let files = fixtures("json");
    assert!(files.len() >= 10, "the vendored corpus went missing");
    files
        .iter()
        .map(|path| {
            let (status, answer) = post(
                gzip(&std::fs::read(path).unwrap()),
                "application/tlsrpt+gzip",
            );
            assert_eq!(status, 200, "{}: {answer}", path.display());
            answer["report_uid"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// Mails every `.eml` of the corpus through `transport` and returns the `report_uid`s of
/// their reports.
pub(crate) fn mail_corpus(transport: &SmtpTransport) -> Vec<String> {
    fixtures("eml")
        .iter()
        .map(|path| {
            let bytes = std::fs::read(path).unwrap();
            transport
                .send_raw(&envelope(), &bytes)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let decoded = tlsrpt_schemas::Decoder::default()
                .decode_any(&bytes)
                .unwrap();
            decoded.decoded.report.report_uid()
        })
        .collect()
}
