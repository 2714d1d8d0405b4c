//! `POST /v1/reports` over a real socket with a real HTTP client, onto the embedded bus.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tlsrpt_bus::dead_letter::DeadLetters;
use tlsrpt_bus::embedded::{EmbeddedLog, EmbeddedOptions};
use tlsrpt_ingest::http::{HttpOptions, HttpReceiver};
use tlsrpt_schemas::message::WireEnvelope;
use tlsrpt_schemas::{DecodeOptions, decode};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/tests/fixtures/corpus")
}

fn json_fixtures() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for owner in std::fs::read_dir(fixtures()).unwrap() {
        let owner = owner.unwrap().path();
        if owner.is_dir() {
            for file in std::fs::read_dir(owner).unwrap() {
                let path = file.unwrap().path();
                if path.extension().is_some_and(|e| e == "json") {
                    out.push(path);
                }
            }
        }
    }
    out.sort();
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// A receiver on 127.0.0.1:0 over a fresh embedded log, and a client for it.
struct Running {
    dir: PathBuf,
    base: String,
    log: EmbeddedLog,
    rejected: Arc<DeadLetters>,
    client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Running {
    async fn start(name: &str, options: HttpOptions) -> Self {
        let dir = std::env::temp_dir().join(format!("tlsrpt-ingest-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log = EmbeddedLog::open(&dir.join("bus"), EmbeddedOptions::default()).unwrap();
        let rejected = Arc::new(DeadLetters::open(&dir.join("rejected")).unwrap());
        let receiver = HttpReceiver::new(
            log.clone(),
            Arc::clone(&rejected),
            Arc::new(tlsrpt_ingest::metrics::Metrics::new()),
            options,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            receiver
                .serve(listener, Default::default(), async {
                    let _ = stopped.await;
                })
                .await
        });
        Self {
            dir,
            base: format!("http://{addr}"),
            log,
            rejected,
            client: reqwest::Client::new(),
            stop: Some(stop),
            server: Some(server),
        }
    }

    async fn post(&self, content_type: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
        let response = self
            .client
            .post(format!("{}/v1/reports", self.base))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("the receiver answers");
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").cloned();
        let mut json: serde_json::Value = response.json().await.expect("a JSON body");
        if let Some(retry_after) = retry_after {
            json["retry-after header"] = retry_after.to_str().unwrap().into();
        }
        (status, json)
    }

    /// Every message on the bus, all partitions.
    fn messages(&self) -> Vec<tlsrpt_bus::Record> {
        (0..self.log.partitions())
            .flat_map(|p| self.log.fetch(p, 0, usize::MAX).unwrap())
            .collect()
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.server.take().unwrap().await.unwrap().unwrap();
        self.log.shutdown();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn every_fixture_is_accepted_as_json_and_as_gzip_and_lands_on_the_bus() {
    let running = Running::start("fixtures", HttpOptions::default()).await;
    let files = json_fixtures();
    assert!(files.len() >= 10);
    for path in &files {
        let json = std::fs::read(path).unwrap();
        let (status, body) = running.post("application/tlsrpt+json", json.clone()).await;
        assert_eq!(status, 200, "{}: {body}", path.display());
        assert_eq!(body["status"], "accepted");
        // The answer names the report as the tables will.
        let uid = decode(&json).unwrap().report.report_uid();
        assert_eq!(body["report_uid"], uid.as_str(), "{}", path.display());
        let (status, body) = running.post("application/tlsrpt+gzip", gzip(&json)).await;
        assert_eq!(status, 200, "{}: {body}", path.display());
        assert_eq!(body["report_uid"], uid.as_str());
    }
    let messages = running.messages();
    assert_eq!(messages.len(), files.len() * 2);
    for record in &messages {
        // The value is the report as received; the key is its dedup key.
        let report = decode(&record.message.value).unwrap().report;
        assert_eq!(record.message.key, report.dedup_key().into_bytes());
        // The envelope travels as one header.
        assert_eq!(record.message.headers.len(), 1);
        let envelope = WireEnvelope::of(&record.message.headers).unwrap();
        assert_eq!(envelope.transport.as_deref(), Some("https"));
        assert_eq!(
            envelope.report_uid.as_deref(),
            Some(report.report_uid().as_str())
        );
        assert!(
            envelope
                .remote_addr
                .as_deref()
                .unwrap()
                .starts_with("127.0.0.1:")
        );
        assert_eq!(envelope.content_sha256.as_deref().map(str::len), Some(64));
    }
    // Both copies of a report share a partition (same key).
    let mut by_key = std::collections::HashMap::new();
    for record in &messages {
        by_key
            .entry(record.message.key.clone())
            .or_insert_with(Vec::new)
            .push(record.partition);
    }
    assert!(by_key.values().all(|p| p.iter().all(|&x| x == p[0])));
    running.stop().await;
}

#[tokio::test]
async fn refusals_name_the_problem_and_keep_the_bytes() {
    let running = Running::start(
        "refusals",
        HttpOptions {
            max_body_bytes: 64 << 10,
            decode: DecodeOptions {
                max_decompressed_bytes: 1 << 20,
            },
            ..HttpOptions::default()
        },
    )
    .await;
    let rfc =
        std::fs::read_to_string(fixtures().join("cry-inc__dmarc-report-viewer/rfc-example.json"))
            .unwrap();
    let bad_count = rfc.replacen(
        "\"failed-session-count\": 200",
        "\"failed-session-count\": \"twenty\"",
        1,
    );
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![b' '; 1 << 20];
    for _ in 0..8 {
        bomb.write_all(&zeros).unwrap();
    }
    let bomb = bomb.finish().unwrap();

    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("bad count", bad_count.into_bytes(), 400, "invalid"),
        (
            "broken JSON",
            b"{\"organization-name\": \"x\", ".to_vec(),
            400,
            "json_syntax",
        ),
        (
            "an HTML page",
            b"<!DOCTYPE html><html><body>hello</body></html>".to_vec(),
            415,
            "not_a_report",
        ),
        ("empty", Vec::new(), 415, "not_a_report"),
        (
            "damaged gzip",
            gzip(rfc.as_bytes())[..200].to_vec(),
            400,
            "compression",
        ),
        ("a gzip bomb", bomb, 413, "too_large"),
        ("over the body cap", vec![b'{'; 100 << 10], 413, "too_large"),
    ];
    for (what, body, status, code) in &cases {
        let (got, answer) = running.post("application/tlsrpt+gzip", body.clone()).await;
        assert_eq!(got, *status, "{what}: {answer}");
        assert_eq!(answer["code"], *code, "{what}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().len() < 600,
            "{what}: {answer}"
        );
    }
    let (_, answer) = running.post("application/json", cases[0].1.clone()).await;
    assert_eq!(
        answer["path"],
        "policies[0].failure-details[1].failed-session-count"
    );

    // Nothing refused reached the bus; every refusal is kept, the bytes with it.
    assert!(running.messages().is_empty());
    let kept = running.rejected.list().unwrap();
    assert_eq!(kept.len(), cases.len() + 1);
    for ((id, rejection), (what, body, _, code)) in kept.iter().zip(&cases) {
        assert_eq!(rejection.code, *code, "{what}");
        assert_eq!(rejection.transport, "https");
        if rejection.complete {
            assert_eq!(&running.rejected.bytes(id).unwrap(), body, "{what}");
        } else {
            assert_eq!(*what, "over the body cap");
        }
    }

    // And it keeps serving.
    let (status, _) = running
        .post("application/tlsrpt+json", rfc.into_bytes())
        .await;
    assert_eq!(status, 200);
    running.stop().await;
}

#[tokio::test]
async fn a_bus_that_cannot_take_reports_gets_senders_to_retry() {
    let running = Running::start("unavailable", HttpOptions::default()).await;
    running.log.shutdown();
    let rfc =
        std::fs::read(fixtures().join("cry-inc__dmarc-report-viewer/rfc-example.json")).unwrap();
    let (status, answer) = running.post("application/tlsrpt+json", rfc).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["retry-after header"], "60");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("try again later")
    );
    running.stop().await;
}
