//! The SMTP receiver over real sockets: the real client lettre for ordinary sends, a raw TCP
//! client for the protocol's edges, the embedded bus and the dead-letter area on real files.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lettre::address::Envelope as SmtpEnvelope;
use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
    DkimSigningKey,
};
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tlsrpt_bus::dead_letter::DeadLetters;
use tlsrpt_bus::embedded::{EmbeddedLog, EmbeddedOptions};
use tlsrpt_bus::{BusError, Delivered, Producer};
use tlsrpt_ingest::dkim::DkimVerifier;
use tlsrpt_ingest::metrics::Metrics;
use tlsrpt_ingest::smtp::{DkimPolicy, SmtpOptions, SmtpReceiver};
use tlsrpt_schemas::message::from_parts;
use tlsrpt_schemas::{DkimOutcome, ReceivedReport, Transport};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Test-only keys of the signing domain `sender.example` (generated for these tests).
const ED25519_SEED: &str = "BercwuwX9n+w9dN/9NFK6zGGKMJ2UK2NGdZmsgIGrFQ=";
const ED25519_PUBLIC: &str = "G8xU5Z46HfV2w8o7OKEWzRGMlAeg20KgF+LOH7lS9XM=";
const RSA_PRIVATE_PEM: &str = "-----BEGIN RSA PRIVATE KEY-----
MIIEogIBAAKCAQEAmLxdqNmcmtp5jab0pkkjzsIgYHgfjQ3bHjShDjaFeeIzBRfr
M3J+M4vIGI7RlC2DyVMpEmBn+Z8me6rwSAqh/bLcd5R0zQ7TQjOGI7ZaE2wfsJYW
nGsqiuOpsheTpxUYA4SRJlb97Zpm0kGUqs2AKlxoUaMmf/H6cIZyn3cTbxFlx30e
TiuSz6BtorhZNgztQWafRbZQvMGUGpEHO798JR5qNu/RvjkNx0zx9FkDXjxjsqgH
CNyq5EgH9FB7jCLq9++uVH2Kz33+E2CO5p+PImNCVRmNwiMw+7PWG6WeGDC7T8In
zU5jREf82r905oLDtmptGrCD9DMa7efV0l5XUwIDAQABAoIBAA0I3lFfqO7KQF9n
ZS+fxE+L36l79u1Zxl5wjWIiIwgA1uvTW747Qivx/PSjk506uSmAUFwCID18aJNb
RkBPr/1vu0L1R3aMklju/r6jfFJ2AspWNL3Ko4nQ3hWVz4MN2MvMD3sfJ3KUn7vH
3wEooox68GgvLUT0CLR7tOKJDf6HctCxoRuE0Mwy5KTIpPumbO/H+UlLPksMAaMd
aezYyI4Pi+5NYFPbyAZHAkToQNumfTmb7lIsTt5slYzZ7fCECKwgcHJM/CV8TMSN
vqKny9JaYXvwrmh3RsHjvNz9svTmu1YpPI8QdO0hkfzwNLl5UQYPzGkflsNHt/8g
R42QLjECgYEAx0w1EZpDawCxxHvgNZBUSvd7tLLPc7qd2LehL7JKodpfs4PSAVJI
nvB1DiCja0dfQyDMgPhS5+WkB+Ec289celrF9KnmmcNesNVehvYGlalQuKxLjMwk
Oj61HavjtS/8k24jkGlPiNzAbeOz+XFfhnvH35VSCJJfqFLZZcn463kCgYEAxDDW
LeFcibaBIwKgN5cZ9otrttb8TaOEJCbh4TqDkp71uzzrnqhC07eIudu9wI5EBvqf
EA+YCl1d7OB3AlrHk1jd5sNgxgAnzbrB8TgG8QtNlyW1IkadL4h48RF8+vWVUVru
+pwE5TmwhLwVEF3t+/EK4+U28MrCCrYj9wUomisCgYAh1k+AUJe3uCN2f62+imW1
YLVxJZbRSFL6c5r7VSMUvdXXzb6/GLBZw+ur3WDBmxmSdSQjlYXF95hU+iSDMX67
C2RmuN39J02RanilI2pUyK163U3qdtKDzRfFFOURYzdX9LA3GZo2W3yUa7+nz1bv
p151GI4YBHoXQxHEFXmcyQKBgCll+LvjswgoJ6XAlxhD3SmmD8ucH88uMuMCBWXm
V/8nZcjluP5YmQld0A8P7EFmg7pJRik4cSe2vewPDW3ExBo2hVR9Y71EKSIDR4tj
/Cr+7Jd5UHh0GBUAoiyUOSAnlCN/oa/mHi5Udwf7PCKg/2fLXDXslyRGVJ24A2zL
fN7TAoGAGEkbUWqTbEGhXrSgQUu+LBq/VQxhx7XefYbuK2QlP+R6bHIzpNtiogAs
8QOI1j0V1K/3SkGmZlOY+p40mhKvSfoOPvu+SJbdkAe7EEHVRTXZ9iZ2qsVNwMFC
32urFCApBVO58Srlbp6olD77P5NgTRMDXlp1d/rnwweIqO7cEGE=
-----END RSA PRIVATE KEY-----
";
const RSA_PUBLIC: &str = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAmLxdqNmcmtp5jab0pkkjzsIgYHgfjQ3bHjShDjaFeeIzBRfrM3J+M4vIGI7RlC2DyVMpEmBn+Z8me6rwSAqh/bLcd5R0zQ7TQjOGI7ZaE2wfsJYWnGsqiuOpsheTpxUYA4SRJlb97Zpm0kGUqs2AKlxoUaMmf/H6cIZyn3cTbxFlx30eTiuSz6BtorhZNgztQWafRbZQvMGUGpEHO798JR5qNu/RvjkNx0zx9FkDXjxjsqgHCNyq5EgH9FB7jCLq9++uVH2Kz33+E2CO5p+PImNCVRmNwiMw+7PWG6WeGDC7T8InzU5jREf82r905oLDtmptGrCD9DMa7efV0l5XUwIDAQAB";

const REPORT_TEXT: &str = "This is an aggregate TLS report from sender.example.";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/tests/fixtures/corpus")
}

fn eml_fixtures() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for owner in std::fs::read_dir(fixtures()).unwrap() {
        let owner = owner.unwrap().path();
        if !owner.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(owner).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_some_and(|e| e == "eml") {
                out.push(path);
            }
        }
    }
    out.sort();
    assert!(out.len() >= 5, "{out:?}");
    out
}

/// Mail as it travels: every line ending CRLF (several fixtures were saved with LF).
fn crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 40);
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' && (i == 0 || bytes[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// The RFC 8460 example report with `report-id` set to `id`.
fn report_json(id: &str) -> Vec<u8> {
    let text =
        std::fs::read(fixtures().join("cry-inc__dmarc-report-viewer/rfc-example.json")).unwrap();
    let mut report: serde_json::Value = serde_json::from_slice(&text).unwrap();
    report["report-id"] = id.into();
    serde_json::to_vec_pretty(&report).unwrap()
}

/// A report mail as a sender builds it: a human part and the gzipped report.
fn report_mail(json: &[u8]) -> Message {
    Message::builder()
        .from(
            "TLS Reporting <noreply-smtp-tls-reporting@sender.example>"
                .parse()
                .unwrap(),
        )
        .to("tlsrpt@receiver.example".parse().unwrap())
        .subject("Report Domain: receiver.example Submitter: sender.example")
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("TLS-Report-Domain"),
            "receiver.example".to_owned(),
        ))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("TLS-Report-Submitter"),
            "sender.example".to_owned(),
        ))
        .multipart(
            MultiPart::mixed()
                .singlepart(SinglePart::plain(REPORT_TEXT.to_owned()))
                .singlepart(
                    Attachment::new("sender.example!receiver.example.json.gz".to_owned()).body(
                        gzip(json),
                        ContentType::parse("application/tlsrpt+gzip").unwrap(),
                    ),
                ),
        )
        .unwrap()
}

/// A mail with a report attached as JSON text (`application/tlsrpt+json`).
fn json_report_mail(json: &[u8]) -> Vec<u8> {
    let mut mail = b"From: reports@sender.example\r\nTo: tlsrpt@receiver.example\r\nSubject: report\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=\"tlsrpt\"; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nA report.\r\n--b\r\nContent-Type: application/tlsrpt+json\r\n\r\n".to_vec();
    mail.extend_from_slice(&crlf(json));
    mail.extend_from_slice(b"\r\n--b--\r\n");
    mail
}

/// A mail with no report in it: text and HTML only.
fn mail_without_report() -> Vec<u8> {
    b"From: someone@sender.example\r\nTo: tlsrpt@receiver.example\r\nSubject: hello\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nHello.\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>Hello.</p>\r\n--b--\r\n".to_vec()
}

/// `message` signed by `selector` at `sender.example`, relaxed/relaxed as most senders sign.
/// (lettre's default, simple header canonicalisation, folds the signature header
/// differently after signing than it hashed it, so no verifier accepts it.)
fn signed(mut message: Message, selector: &str, key: DkimSigningKey) -> Message {
    let headers = ["From", "To", "Subject", "Date", "TLS-Report-Submitter"]
        .map(HeaderName::new_from_ascii_str)
        .to_vec();
    message.sign(&DkimConfig::new(
        selector.to_owned(),
        "sender.example".to_owned(),
        key,
        headers,
        DkimCanonicalization {
            header: DkimCanonicalizationType::Relaxed,
            body: DkimCanonicalizationType::Relaxed,
        },
    ));
    message
}

fn ed25519_key() -> DkimSigningKey {
    DkimSigningKey::new(ED25519_SEED, DkimSigningAlgorithm::Ed25519).unwrap()
}

fn rsa_key() -> DkimSigningKey {
    DkimSigningKey::new(RSA_PRIVATE_PEM, DkimSigningAlgorithm::Rsa).unwrap()
}

/// No DNS; the keys of selectors `ed` and `rsa` at `sender.example`.
fn verifier_with_keys() -> DkimVerifier {
    let verifier = DkimVerifier::offline();
    verifier
        .insert_key(
            "ed",
            "sender.example",
            &format!("v=DKIM1; k=ed25519; p={ED25519_PUBLIC}"),
        )
        .unwrap();
    verifier
        .insert_key(
            "rsa",
            "sender.example",
            &format!("v=DKIM1; k=rsa; p={RSA_PUBLIC}"),
        )
        .unwrap();
    verifier
}

/// What the test producer does on its next sends, before it hands messages to the log.
#[derive(Debug)]
enum Step {
    Fail(BusError),
    Panic,
}

/// The embedded log, after a script of failures.
#[derive(Debug)]
struct ScriptedProducer {
    log: EmbeddedLog,
    script: Mutex<VecDeque<Step>>,
}

impl Producer for ScriptedProducer {
    fn send(
        &self,
        message: tlsrpt_bus::Message,
    ) -> impl std::future::Future<Output = Result<Delivered, BusError>> + Send {
        let step = self.script.lock().unwrap().pop_front();
        let log = self.log.clone();
        async move {
            match step {
                Some(Step::Fail(err)) => Err(err),
                Some(Step::Panic) => panic!("the test producer panics, as asked"),
                None => log.send(message).await,
            }
        }
    }
}

/// A receiver on 127.0.0.1:0 over a fresh embedded log in a temporary directory.
struct Running {
    _dir: tempfile::TempDir,
    addr: SocketAddr,
    log: EmbeddedLog,
    rejected: Arc<DeadLetters>,
    metrics: Arc<Metrics>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Running {
    async fn start(options: SmtpOptions, verifier: DkimVerifier) -> Self {
        Self::start_scripted(options, verifier, Vec::new()).await
    }

    async fn start_scripted(
        options: SmtpOptions,
        verifier: DkimVerifier,
        script: Vec<Step>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(&dir.path().join("bus"), EmbeddedOptions::default()).unwrap();
        let rejected = Arc::new(DeadLetters::open(&dir.path().join("rejected")).unwrap());
        let metrics = Arc::new(Metrics::new());
        let producer = ScriptedProducer {
            log: log.clone(),
            script: Mutex::new(script.into()),
        };
        let receiver = SmtpReceiver::new(
            producer,
            Arc::clone(&rejected),
            Arc::clone(&metrics),
            verifier,
            options,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(receiver.serve(listener, async {
            let _ = stopped.await;
        }));
        Self {
            _dir: dir,
            addr,
            log,
            rejected,
            metrics,
            stop: Some(stop),
            server: Some(server),
        }
    }

    fn transport(&self) -> AsyncSmtpTransport<Tokio1Executor> {
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(self.addr.ip().to_string())
            .port(self.addr.port())
            .build()
    }

    /// Every report on the bus, all partitions, by report-id.
    fn reports(&self) -> BTreeMap<String, ReceivedReport<'static>> {
        (0..self.log.partitions())
            .flat_map(|p| self.log.fetch(p, 0, usize::MAX).unwrap())
            .map(|record| {
                let report = from_parts(record.message.value, &record.message.headers).unwrap();
                (report.report.report_id.to_string(), report)
            })
            .collect()
    }

    fn message_count(&self) -> usize {
        (0..self.log.partitions())
            .map(|p| self.log.fetch(p, 0, usize::MAX).unwrap().len())
            .sum()
    }

    fn metrics_text(&self) -> String {
        let mut text = String::new();
        self.metrics.render(&mut text);
        text
    }

    /// Asks the server to stop and waits until it has.
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.server.take().unwrap().await.unwrap().unwrap();
        self.log.shutdown();
    }
}

fn envelope() -> SmtpEnvelope {
    SmtpEnvelope::new(
        Some("bounces@sender.example".parse().unwrap()),
        vec!["tlsrpt@receiver.example".parse().unwrap()],
    )
    .unwrap()
}

/// A raw SMTP client: lines in, replies out.
struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        let (read, writer) = TcpStream::connect(addr).await.unwrap().into_split();
        Self {
            reader: BufReader::new(read),
            writer,
        }
    }

    /// Connected, greeted, and past EHLO.
    async fn hello(addr: SocketAddr) -> Self {
        let mut client = Self::connect(addr).await;
        assert!(client.reply().await.starts_with("220 "));
        let ehlo = client.command("EHLO client.example").await;
        assert!(ehlo.starts_with("250-"), "{ehlo}");
        client
    }

    /// The next reply, its lines joined with `\n`. A generous bound keeps a broken server
    /// from hanging the suite; it is not a timing assertion.
    async fn reply(&mut self) -> String {
        let read = async {
            let mut reply = String::new();
            loop {
                let mut line = String::new();
                let n = self.reader.read_line(&mut line).await.unwrap();
                assert!(n > 0, "the connection closed; reply so far: {reply:?}");
                assert!(line.ends_with("\r\n"), "{line:?}");
                reply.push_str(line.trim_end());
                if line.as_bytes().get(3) == Some(&b'-') {
                    reply.push('\n');
                } else {
                    return reply;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .expect("a reply")
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.unwrap();
    }

    async fn command(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// Whether the server closed the connection (after any replies already read).
    async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(30), self.reader.read_to_end(&mut rest));
        matches!(read.await, Ok(Ok(0)))
    }

    /// MAIL, RCPT, DATA, the message (dot-stuffed), and the reply to its final dot.
    async fn transaction(&mut self, message: &[u8]) -> String {
        assert_eq!(
            self.command("MAIL FROM:<bounces@sender.example>").await,
            "250 2.1.0 OK"
        );
        assert_eq!(
            self.command("RCPT TO:<tlsrpt@receiver.example>").await,
            "250 2.1.5 OK"
        );
        let go = self.command("DATA").await;
        assert!(go.starts_with("354 "), "{go}");
        self.send(&stuffed(message)).await;
        self.reply().await
    }
}

/// `message` as the DATA of a transaction: dot-stuffed, ending with CRLF and the final dot.
fn stuffed(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 16);
    let mut line_start = true;
    for &b in message {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n' && out.len() >= 2 && out[out.len() - 2] == b'\r';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

fn uid_in(reply: &str) -> &str {
    reply
        .strip_prefix("250 2.0.0 OK: report ")
        .and_then(|rest| rest.strip_suffix(" accepted"))
        .unwrap_or_else(|| panic!("not an acceptance: {reply}"))
}

#[tokio::test]
async fn mailed_reports_are_on_the_bus_when_250_comes_with_submitter_and_dkim() {
    let running = Running::start(SmtpOptions::default(), DkimVerifier::offline()).await;
    let transport = running.transport();
    let mut expected = Vec::new();
    for path in eml_fixtures() {
        let mail = crlf(&std::fs::read(&path).unwrap());
        let response = transport
            .send_raw(&envelope(), &mail)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(response.code().to_string(), "250", "{}", path.display());
        let reply = format!("250 {}", response.message().collect::<Vec<_>>().join(" "));
        // Offline, the fixtures' real signatures cannot be checked: recorded as failing.
        let dkim = if String::from_utf8_lossy(&mail).contains("DKIM-Signature:") {
            DkimOutcome::Fail
        } else {
            DkimOutcome::None
        };
        expected.push((path, uid_in(&reply).to_owned(), dkim));
    }
    let built = report_mail(&report_json("built-by-lettre"));
    let response = transport.send(built).await.unwrap();
    let reply = format!("250 {}", response.message().collect::<Vec<_>>().join(" "));
    let built_uid = uid_in(&reply).to_owned();

    // 250 means durable: everything is already on the bus, with the mail's envelope.
    assert_eq!(running.message_count(), expected.len() + 1);
    let on_bus: BTreeMap<String, ReceivedReport<'static>> = running
        .reports()
        .into_values()
        .map(|r| (r.report.report_uid(), r))
        .collect();
    for (path, uid, dkim) in &expected {
        let report = on_bus
            .get(uid)
            .unwrap_or_else(|| panic!("{} not on the bus", path.display()));
        assert_eq!(report.envelope.transport, Transport::Smtp);
        assert_eq!(report.envelope.dkim, Some(*dkim), "{}", path.display());
        let text = String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned();
        let submitter = text
            .lines()
            .find_map(|l| l.strip_prefix("TLS-Report-Submitter: "))
            .map(|s| s.trim().to_owned());
        assert_eq!(
            report.envelope.submitter_header,
            submitter,
            "{}",
            path.display()
        );
    }
    let built = &on_bus[&built_uid];
    assert_eq!(built.report.report_id, "built-by-lettre");
    assert_eq!(
        built.envelope.submitter_header.as_deref(),
        Some("sender.example")
    );
    assert_eq!(built.envelope.dkim, Some(DkimOutcome::None));

    let metrics = running.metrics_text();
    let accepted = format!(
        "tlsrpt_accepted_total{{transport=\"smtp\"}} {}",
        expected.len() + 1
    );
    assert!(metrics.lines().any(|l| l == accepted), "{metrics}");
    assert!(running.rejected.list().unwrap().is_empty());
    running.stop().await;
}

#[tokio::test]
async fn dkim_signatures_are_checked_against_the_senders_keys() {
    let running = Running::start(SmtpOptions::default(), verifier_with_keys()).await;
    let transport = running.transport();

    let ed = signed(report_mail(&report_json("ed25519")), "ed", ed25519_key());
    let rsa = signed(report_mail(&report_json("rsa")), "rsa", rsa_key());
    let unknown_selector = signed(
        report_mail(&report_json("unknown-key")),
        "gone",
        ed25519_key(),
    );
    let unsigned = report_mail(&report_json("unsigned"));
    let signed_then_changed = {
        let message = signed(report_mail(&report_json("tampered")), "ed", ed25519_key());
        tamper(&message.formatted())
    };
    for message in [ed, rsa, unknown_selector, unsigned] {
        transport.send(message).await.unwrap();
    }
    transport
        .send_raw(&envelope(), &signed_then_changed)
        .await
        .unwrap();

    let reports = running.reports();
    let outcome = |id: &str| reports[id].envelope.dkim.unwrap();
    assert_eq!(outcome("ed25519"), DkimOutcome::Pass);
    assert_eq!(outcome("rsa"), DkimOutcome::Pass);
    assert_eq!(outcome("unknown-key"), DkimOutcome::Fail);
    assert_eq!(outcome("tampered"), DkimOutcome::Fail);
    assert_eq!(outcome("unsigned"), DkimOutcome::None);
    running.stop().await;
}

/// A signed mail with its human-readable text changed after signing.
fn tamper(formatted: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(formatted.to_vec()).unwrap();
    assert!(text.contains("DKIM-Signature:"), "{text}");
    assert!(text.contains(REPORT_TEXT), "{text}");
    text.replace(REPORT_TEXT, &REPORT_TEXT.replace("aggregate", "AGGREGATE"))
        .into_bytes()
}

#[tokio::test]
async fn enforcing_dkim_refuses_unsigned_and_failing_mail_and_keeps_it() {
    let options = SmtpOptions {
        dkim: DkimPolicy::Enforce,
        ..SmtpOptions::default()
    };
    let running = Running::start(options, verifier_with_keys()).await;
    let mut client = Client::hello(running.addr).await;

    let unsigned = report_mail(&report_json("unsigned")).formatted();
    let reply = client.transaction(&unsigned).await;
    assert!(reply.starts_with("550 5.7.20 No DKIM signature"), "{reply}");

    let tampered =
        tamper(&signed(report_mail(&report_json("tampered")), "ed", ed25519_key()).formatted());
    let reply = client.transaction(&tampered).await;
    assert!(
        reply.starts_with("550 5.7.20 No passing DKIM signature (d=sender.example s=ed: "),
        "{reply}"
    );

    // A key that cannot be looked up now may be found later: the sender should retry.
    let unknown = signed(
        report_mail(&report_json("unknown-key")),
        "gone",
        ed25519_key(),
    )
    .formatted();
    let reply = client.transaction(&unknown).await;
    assert!(reply.starts_with("451 4.4.3 "), "{reply}");

    let good = signed(report_mail(&report_json("signed")), "rsa", rsa_key()).formatted();
    let reply = client.transaction(&good).await;
    assert!(reply.starts_with("250 2.0.0 "), "{reply}");

    let reports = running.reports();
    assert_eq!(reports.keys().collect::<Vec<_>>(), ["signed"]);
    assert_eq!(reports["signed"].envelope.dkim, Some(DkimOutcome::Pass));

    // Both refusals are kept byte for byte; the 451 is not (the sender still has it).
    let kept = running.rejected.list().unwrap();
    let codes: Vec<&str> = kept.iter().map(|(_, r)| r.code.as_str()).collect();
    assert_eq!(codes, ["dkim_none", "dkim_fail"]);
    assert_eq!(running.rejected.bytes(&kept[0].0).unwrap(), unsigned);
    assert_eq!(running.rejected.bytes(&kept[1].0).unwrap(), tampered);
    assert!(
        kept.iter()
            .all(|(_, r)| r.transport == "smtp" && r.complete)
    );
    running.stop().await;
}

#[tokio::test]
async fn a_mail_without_a_report_is_refused_kept_and_the_connection_goes_on() {
    let running = Running::start(SmtpOptions::default(), DkimVerifier::offline()).await;
    let mut client = Client::hello(running.addr).await;
    let local = client.writer.local_addr().unwrap();

    let mail = mail_without_report();
    let reply = client.transaction(&mail).await;
    assert_eq!(
        reply,
        "550 5.6.0 no TLS-RPT report in the message: no part is a report (expected application/tlsrpt+gzip or +json; parts seen: text/plain, text/html)"
    );
    let kept = running.rejected.list().unwrap();
    assert_eq!(kept.len(), 1);
    let (id, rejection) = &kept[0];
    assert_eq!(rejection.code, "no_report_in_message");
    assert_eq!(rejection.transport, "smtp");
    assert_eq!(
        rejection.remote_addr.as_deref(),
        Some(local.to_string().as_str())
    );
    assert_eq!(rejection.bytes, mail.len());
    assert!(rejection.complete);
    assert_eq!(running.rejected.bytes(id).unwrap(), mail);

    // The same connection carries the next message.
    let reply = client
        .transaction(&report_mail(&report_json("after")).formatted())
        .await;
    assert!(reply.starts_with("250 2.0.0 "), "{reply}");
    assert!(running.reports().contains_key("after"));
    assert_eq!(
        client.command("QUIT").await,
        "221 2.0.0 localhost closing connection"
    );
    assert!(client.closed().await);

    let metrics = running.metrics_text();
    for line in [
        "tlsrpt_received_total{transport=\"smtp\"} 2",
        "tlsrpt_accepted_total{transport=\"smtp\"} 1",
        "tlsrpt_refused_total{transport=\"smtp\",reason=\"no_report_in_message\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing in\n{metrics}"
        );
    }
    running.stop().await;
}

#[tokio::test]
async fn a_refusal_that_cannot_be_kept_is_451_so_the_sender_keeps_the_message() {
    let running = Running::start(SmtpOptions::default(), DkimVerifier::offline()).await;
    // A file where the dead-letter directory was: nothing can be written there, even as root.
    let dir = running.rejected.dir().to_path_buf();
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();

    let mut client = Client::hello(running.addr).await;
    let reply = client.transaction(&mail_without_report()).await;
    assert_eq!(
        reply,
        "451 4.3.0 Cannot record the refusal of this message; try again later"
    );
    assert_eq!(client.command("NOOP").await, "250 2.0.0 OK");
    running.stop().await;
}

#[tokio::test]
async fn a_malformed_report_is_refused_with_the_json_path() {
    let running = Running::start(SmtpOptions::default(), DkimVerifier::offline()).await;
    let mut client = Client::hello(running.addr).await;
    let mut report: serde_json::Value = serde_json::from_slice(&report_json("bad")).unwrap();
    report["policies"][0]["failure-details"][1]["failed-session-count"] = "twenty".into();
    let mail = json_report_mail(&serde_json::to_vec_pretty(&report).unwrap());

    let reply = client.transaction(&mail).await;
    assert!(
        reply.starts_with("550 5.6.0 policies[0].failure-details[1].failed-session-count: "),
        "{reply}"
    );
    let kept = running.rejected.list().unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(
        kept[0].1.path.as_deref(),
        Some("policies[0].failure-details[1].failed-session-count")
    );
    assert_eq!(running.rejected.bytes(&kept[0].0).unwrap(), mail);
    assert_eq!(running.message_count(), 0);
    running.stop().await;
}

#[tokio::test]
async fn messages_over_the_size_cap_get_552_announced_or_counted() {
    let options = SmtpOptions {
        max_message_bytes: 64 << 10,
        ..SmtpOptions::default()
    };
    let running = Running::start(options, DkimVerifier::offline()).await;
    let mut client = Client::connect(running.addr).await;
    client.reply().await;
    let ehlo = client.command("EHLO client.example").await;
    assert!(ehlo.lines().any(|l| l == "250-SIZE 65536"), "{ehlo}");

    // Announced: refused before a byte of the message is sent.
    let reply = client
        .command("MAIL FROM:<bounces@sender.example> SIZE=65537")
        .await;
    assert_eq!(
        reply,
        "552 5.3.4 Message size exceeds the limit of 65536 bytes"
    );
    assert_eq!(
        client
            .command("MAIL FROM:<bounces@sender.example> SIZE=1000 BODY=8BITMIME")
            .await,
        "250 2.1.0 OK"
    );
    assert_eq!(client.command("RSET").await, "250 2.0.0 OK");

    // Not announced (or announced wrongly): read to the final dot, counted, refused.
    let mut big = report_mail(&report_json("big")).formatted();
    let padding = format!("X-Padding: {}\r\n", "p".repeat(70));
    let mut headers = Vec::new();
    while headers.len() < 100 << 10 {
        headers.extend_from_slice(padding.as_bytes());
    }
    big.splice(0..0, headers);
    let reply = client.transaction(&big).await;
    assert_eq!(
        reply,
        "552 5.3.4 Message size exceeds the limit of 65536 bytes"
    );

    // The refusal is recorded with the prefix that was held, marked incomplete.
    let kept = running.rejected.list().unwrap();
    assert_eq!(kept.len(), 1);
    let (id, rejection) = &kept[0];
    assert_eq!(rejection.code, "too_large");
    assert_eq!(rejection.bytes, big.len());
    assert!(!rejection.complete);
    assert_eq!(running.rejected.bytes(id).unwrap(), big[..64 << 10]);

    assert_eq!(client.command("NOOP").await, "250 2.0.0 OK");
    assert_eq!(running.message_count(), 0);
    running.stop().await;
}

#[tokio::test]
async fn only_configured_recipients_are_accepted_when_there_are_some() {
    let options = SmtpOptions {
        recipients: Some(vec!["tlsrpt@receiver.example".to_owned()]),
        ..SmtpOptions::default()
    };
    let running = Running::start(options, DkimVerifier::offline()).await;
    let mut client = Client::hello(running.addr).await;
    client.command("MAIL FROM:<>").await;
    assert_eq!(
        client
            .command("RCPT TO:<postmaster@receiver.example>")
            .await,
        "550 5.1.1 <postmaster@receiver.example>: this address does not take TLS reports here"
    );
    assert_eq!(
        client.command("RCPT TO:<TLSRPT@Receiver.Example>").await,
        "250 2.1.5 OK"
    );
    let reply = client.command("DATA").await;
    assert!(reply.starts_with("354 "), "{reply}");
    client
        .send(&stuffed(
            &report_mail(&report_json("to-the-right-address")).formatted(),
        ))
        .await;
    assert!(client.reply().await.starts_with("250 2.0.0 "));

    // lettre sees the refusal as permanent.
    let err = running
        .transport()
        .send_raw(
            &SmtpEnvelope::new(None, vec!["other@receiver.example".parse().unwrap()]).unwrap(),
            &report_mail(&report_json("elsewhere")).formatted(),
        )
        .await
        .unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert_eq!(
        running.reports().keys().collect::<Vec<_>>(),
        ["to-the-right-address"]
    );
    running.stop().await;
}

#[tokio::test]
async fn commands_out_of_sequence_garbage_and_long_lines_are_answered_not_fatal() {
    let running = Running::start(SmtpOptions::default(), DkimVerifier::offline()).await;
    let mut client = Client::connect(running.addr).await;
    assert_eq!(client.reply().await, "220 localhost ESMTP tlsrpt");
    for (command, reply) in [
        (
            "MAIL FROM:<a@sender.example>",
            "503 5.5.1 Error: send HELO/EHLO first",
        ),
        ("EHLO", "501 5.5.4 Syntax: EHLO hostname"),
        ("HELO client.example", "250 localhost"),
        (
            "RCPT TO:<tlsrpt@receiver.example>",
            "503 5.5.1 Error: need MAIL command",
        ),
        ("DATA", "503 5.5.1 Error: need MAIL command"),
        (
            "MAIL TO:<a@sender.example>",
            "501 5.5.4 Syntax: MAIL FROM:<address>",
        ),
        (
            "MAIL FROM:<a@sender.example> SMTPUTF8",
            "555 5.5.4 Unsupported MAIL parameter",
        ),
        ("mail from:<a@sender.example>", "250 2.1.0 OK"),
        (
            "MAIL FROM:<a@sender.example>",
            "503 5.5.1 Error: nested MAIL command",
        ),
        ("DATA", "503 5.5.1 Error: need RCPT command"),
        ("RCPT TO:<>", "501 5.1.3 Bad recipient address syntax"),
        ("RSET", "250 2.0.0 OK"),
        ("DATA", "503 5.5.1 Error: need MAIL command"),
        ("GET / HTTP/1.1", "500 5.5.2 Command not recognized"),
        ("STARTTLS", "502 5.5.1 Command not implemented"),
        (
            "VRFY postmaster",
            "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery",
        ),
        ("NOOP", "250 2.0.0 OK"),
    ] {
        assert_eq!(client.command(command).await, reply, "{command}");
    }
    let long = format!("NOOP {}", "x".repeat(5000));
    assert_eq!(client.command(&long).await, "500 5.5.2 Line too long");
    assert!(client.command("HELP").await.starts_with("214 2.0.0 "));
    let ehlo = client.command("EHLO client.example").await;
    assert_eq!(
        ehlo,
        "250-localhost greets client.example\n250-SIZE 10485760\n250-8BITMIME\n250-ENHANCEDSTATUSCODES\n250 PIPELINING"
    );
    assert_eq!(
        client.command("QUIT").await,
        "221 2.0.0 localhost closing connection"
    );
    assert!(client.closed().await);

    // A client that keeps sending nonsense is let go.
    let mut client = Client::hello(running.addr).await;
    for _ in 0..20 {
        assert_eq!(
            client.command("BOGUS").await,
            "500 5.5.2 Command not recognized"
        );
    }
    // The 21st gets its answer, then the connection ends.
    assert_eq!(
        client.command("BOGUS").await,
        "500 5.5.2 Command not recognized"
    );
    assert_eq!(
        client.reply().await,
        "421 4.7.0 localhost Too many errors; closing"
    );
    assert!(client.closed().await);
    running.stop().await;
}

#[tokio::test]
async fn dot_stuffing_round_trips_through_raw_and_real_clients() {
    let running = Running::start(SmtpOptions::default(), DkimVerifier::offline()).await;
    // Not a report, so it is kept byte for byte where the test can read it back.
    let mut mail =
        b"From: a@sender.example\r\nSubject: dots\r\nContent-Type: text/plain\r\n\r\n".to_vec();
    mail.extend_from_slice(
        b".leading dot\r\n..two dots\r\n.\r\n.\r\rnot an end\r\nbare\n.\nLF\r\nlast\r\n",
    );

    let mut client = Client::hello(running.addr).await;
    let reply = client.transaction(&mail).await;
    assert!(reply.starts_with("550 5.6.0 "), "{reply}");

    // lettre stuffs on its own, and ends the data with CRLF.CRLF after the message.
    let err = running
        .transport()
        .send_raw(&envelope(), &mail)
        .await
        .unwrap_err();
    assert!(err.is_permanent(), "{err}");

    let kept = running.rejected.list().unwrap();
    assert_eq!(kept.len(), 2);
    assert_eq!(running.rejected.bytes(&kept[0].0).unwrap(), mail);
    let mut by_lettre = mail.clone();
    by_lettre.extend_from_slice(b"\r\n");
    assert_eq!(running.rejected.bytes(&kept[1].0).unwrap(), by_lettre);
    running.stop().await;
}

#[tokio::test]
async fn pipelined_commands_get_their_replies_in_order() {
    let running = Running::start(SmtpOptions::default(), DkimVerifier::offline()).await;
    let mut client = Client::hello(running.addr).await;
    client
        .send(b"MAIL FROM:<bounces@sender.example>\r\nRCPT TO:<a@receiver.example>\r\nRCPT TO:<b@receiver.example>\r\nDATA\r\n")
        .await;
    assert_eq!(client.reply().await, "250 2.1.0 OK");
    assert_eq!(client.reply().await, "250 2.1.5 OK");
    assert_eq!(client.reply().await, "250 2.1.5 OK");
    assert!(client.reply().await.starts_with("354 "));
    let mut rest = stuffed(&report_mail(&report_json("pipelined")).formatted());
    rest.extend_from_slice(b"MAIL FROM:<bounces@sender.example>\r\nRSET\r\nQUIT\r\n");
    client.send(&rest).await;
    assert!(client.reply().await.starts_with("250 2.0.0 OK: report "));
    assert_eq!(client.reply().await, "250 2.1.0 OK");
    assert_eq!(client.reply().await, "250 2.0.0 OK");
    assert_eq!(
        client.reply().await,
        "221 2.0.0 localhost closing connection"
    );
    assert!(client.closed().await);
    assert!(running.reports().contains_key("pipelined"));
    running.stop().await;
}

#[tokio::test]
async fn a_bus_that_cannot_take_reports_gets_451_and_nothing_is_dead_lettered() {
    let running = Running::start_scripted(
        SmtpOptions::default(),
        DkimVerifier::offline(),
        vec![Step::Fail(BusError::Storage("disk full".to_owned()))],
    )
    .await;
    let mut client = Client::hello(running.addr).await;
    let mail = report_mail(&report_json("retried")).formatted();
    let reply = client.transaction(&mail).await;
    assert_eq!(
        reply,
        "451 4.3.0 the bus cannot store the message: disk full; try again later"
    );
    assert!(running.rejected.list().unwrap().is_empty());
    // The sender retries on the same connection, and this time the bus takes it.
    let reply = client.transaction(&mail).await;
    assert!(reply.starts_with("250 2.0.0 "), "{reply}");

    // A log that has shut down: lettre hears a transient error.
    running.log.shutdown();
    let err = running
        .transport()
        .send(report_mail(&report_json("after-shutdown")))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(running.rejected.list().unwrap().is_empty());
    let metrics = running.metrics_text();
    let line = "tlsrpt_refused_total{transport=\"smtp\",reason=\"bus_unavailable\"} 2";
    assert!(metrics.lines().any(|l| l == line), "{metrics}");
    running.stop().await;
}

#[tokio::test]
async fn a_panic_in_one_connection_leaves_the_server_serving() {
    let running = Running::start_scripted(
        SmtpOptions::default(),
        DkimVerifier::offline(),
        vec![Step::Panic],
    )
    .await;
    let mut client = Client::hello(running.addr).await;
    client.command("MAIL FROM:<bounces@sender.example>").await;
    client.command("RCPT TO:<tlsrpt@receiver.example>").await;
    client.command("DATA").await;
    client
        .send(&stuffed(&report_mail(&report_json("lost")).formatted()))
        .await;
    // The connection dies without a reply: the sender has no 250 and retries.
    assert!(client.closed().await);

    let mut client = Client::hello(running.addr).await;
    let reply = client
        .transaction(&report_mail(&report_json("retried")).formatted())
        .await;
    assert!(reply.starts_with("250 2.0.0 "), "{reply}");
    assert_eq!(running.reports().keys().collect::<Vec<_>>(), ["retried"]);
    running.stop().await;
}

#[tokio::test]
async fn connections_over_the_cap_get_421_and_a_freed_slot_is_reused() {
    let options = SmtpOptions {
        max_connections: 1,
        ..SmtpOptions::default()
    };
    let running = Running::start(options, DkimVerifier::offline()).await;
    let mut first = Client::connect(running.addr).await;
    assert!(first.reply().await.starts_with("220 "));

    let mut second = Client::connect(running.addr).await;
    assert_eq!(
        second.reply().await,
        "421 4.3.2 localhost Too many connections; try again later"
    );
    assert!(second.closed().await);

    assert!(first.command("QUIT").await.starts_with("221 "));
    assert!(first.closed().await);
    let mut third = Client::connect(running.addr).await;
    assert!(third.reply().await.starts_with("220 "));
    let metrics = running.metrics_text();
    let line = "tlsrpt_refused_total{transport=\"smtp\",reason=\"busy\"} 1";
    assert!(metrics.lines().any(|l| l == line), "{metrics}");
    running.stop().await;
}

#[tokio::test]
async fn slow_clients_get_421() {
    let options = SmtpOptions {
        command_timeout: Duration::from_millis(200),
        ..SmtpOptions::default()
    };
    let running = Running::start(options, DkimVerifier::offline()).await;
    let mut idle = Client::connect(running.addr).await;
    assert!(idle.reply().await.starts_with("220 "));
    assert_eq!(
        idle.reply().await,
        "421 4.4.2 localhost Timeout waiting for a command"
    );
    assert!(idle.closed().await);
    running.stop().await;

    let options = SmtpOptions {
        data_timeout: Duration::from_millis(200),
        ..SmtpOptions::default()
    };
    let running = Running::start(options, DkimVerifier::offline()).await;
    let mut slow = Client::hello(running.addr).await;
    slow.command("MAIL FROM:<bounces@sender.example>").await;
    slow.command("RCPT TO:<tlsrpt@receiver.example>").await;
    assert!(slow.command("DATA").await.starts_with("354 "));
    slow.send(b"Subject: half a message\r\n").await;
    assert_eq!(
        slow.reply().await,
        "421 4.4.2 localhost Timeout: the message did not arrive within 200ms"
    );
    assert!(slow.closed().await);
    // An unfinished message is not a refusal to keep: the sender still has it.
    assert!(running.rejected.list().unwrap().is_empty());
    running.stop().await;
}

#[tokio::test]
async fn shutdown_lets_a_transaction_finish_and_tells_idle_clients_421() {
    let running = Running::start(SmtpOptions::default(), DkimVerifier::offline()).await;
    let mut idle = Client::hello(running.addr).await;
    let mut busy = Client::hello(running.addr).await;
    busy.command("MAIL FROM:<bounces@sender.example>").await;
    busy.command("RCPT TO:<tlsrpt@receiver.example>").await;
    assert!(busy.command("DATA").await.starts_with("354 "));
    let message = stuffed(&report_mail(&report_json("in-flight")).formatted());
    let (head, tail) = message.split_at(message.len() / 2);
    busy.send(head).await;

    let Running {
        _dir,
        log,
        mut stop,
        mut server,
        ..
    } = running;
    let _ = stop.take().unwrap().send(());
    assert_eq!(
        idle.reply().await,
        "421 4.3.2 localhost Service shutting down"
    );
    assert!(idle.closed().await);

    busy.send(tail).await;
    assert!(busy.reply().await.starts_with("250 2.0.0 "));
    assert_eq!(
        busy.reply().await,
        "421 4.3.2 localhost Service shutting down"
    );
    assert!(busy.closed().await);
    server.take().unwrap().await.unwrap().unwrap();
    assert_eq!(
        (0..log.partitions())
            .map(|p| log.fetch(p, 0, usize::MAX).unwrap().len())
            .sum::<usize>(),
        1
    );
    log.shutdown();
}
