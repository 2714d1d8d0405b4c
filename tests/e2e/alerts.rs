//! `tlsrpt alerts run` end to end: reports imported into a data directory, one pass that
//! finds an expired certificate, the alert delivered to a real HTTP webhook receiver and a
//! real SMTP sink (both on port 0), stored in the `alerts` table, and not sent again by the
//! next pass.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use chrono::{Datelike, Days, Utc};
use tokio_rustls::rustls;

fn tlsrpt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tlsrpt"))
        .args(args)
        .env("TLSRPT_LOG", "warn")
        .output()
        .expect("tlsrpt runs")
}

/// One day's report from Google for `shop.example` (MTA-STS in enforce), with
/// `expired` sessions failing with certificate-expired on mx1 and a few validation failures.
fn report(date: chrono::NaiveDate, expired: u64) -> String {
    let noise = 2 + date.day0() as u64 % 3;
    let mut details = vec![format!(
        r#"{{"result-type":"validation-failure","sending-mta-ip":"192.0.2.10","receiving-mx-hostname":"mx1.shop.example","failed-session-count":{noise}}}"#
    )];
    if expired > 0 {
        details.push(format!(
            r#"{{"result-type":"certificate-expired","sending-mta-ip":"192.0.2.11","receiving-mx-hostname":"mx1.shop.example","receiving-ip":"203.0.113.25","failed-session-count":{expired}}}"#
        ));
    }
    format!(
        r#"{{"organization-name":"Google Inc.","date-range":{{"start-datetime":"{date}T00:00:00Z","end-datetime":"{date}T23:59:59Z"}},"contact-info":"smtp-tls-reporting@google.com","report-id":"{date}_shop.example","policies":[{{"policy":{{"policy-type":"sts","policy-string":["version: STSv1","mode: enforce","mx: mx1.shop.example","max_age: 86400"],"policy-domain":"shop.example","mx-host":["mx1.shop.example"]}},"summary":{{"total-successful-session-count":500,"total-failure-session-count":{}}},"failure-details":[{}]}}]}}"#,
        noise + expired,
        details.join(",")
    )
}

/// An HTTP server that answers 200 to every request and hands over the bodies.
fn webhook_receiver() -> (String, mpsc::Receiver<serde_json::Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/tlsrpt", listener.local_addr().unwrap());
    let (sender, bodies) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            answer_webhook(stream, &sender);
        }
    });
    (url, bodies)
}

/// A TLS server configuration for `localhost` with a self-signed certificate, which is
/// written as a PEM file in `dir` for clients to trust.
fn localhost_tls(dir: &std::path::Path) -> (Arc<rustls::ServerConfig>, std::path::PathBuf) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let ca = dir.join("localhost-ca.pem");
    std::fs::write(&ca, certified.cert.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .unwrap();
    (Arc::new(config), ca)
}

/// The webhook receiver over HTTPS, as `localhost`.
fn https_webhook_receiver(
    tls: Arc<rustls::ServerConfig>,
) -> (String, mpsc::Receiver<serde_json::Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "https://localhost:{}/hooks/tlsrpt",
        listener.local_addr().unwrap().port()
    );
    let (sender, bodies) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let connection = rustls::ServerConnection::new(tls.clone()).unwrap();
            answer_webhook(rustls::StreamOwned::new(connection, stream), &sender);
        }
    });
    (url, bodies)
}

/// Reads one request, hands over its JSON body and answers 200; a connection that fails
/// (a client that refused the certificate) is dropped.
fn answer_webhook(stream: impl Read + Write, sender: &mpsc::Sender<serde_json::Value>) {
    let mut reader = BufReader::new(stream);
    let mut length = 0;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap();
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let _ = sender.send(serde_json::from_slice(&body).unwrap());
    let mut stream = reader.into_inner();
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    let _ = stream.flush();
}

/// An SMTP server that accepts every message and hands over its data.
fn smtp_sink() -> (String, mpsc::Receiver<String>) {
    smtp_sink_with(None)
}

/// With `tls`, the server offers STARTTLS and refuses mail before it (as a submission
/// server does).
fn smtp_sink_with(tls: Option<Arc<rustls::ServerConfig>>) -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (sender, messages) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            converse(stream, tls.clone(), &sender);
        }
    });
    (format!("localhost:{port}"), messages)
}

trait Duplex: Read + Write {}
impl<T: Read + Write> Duplex for T {}

/// One SMTP session; ends at QUIT or when the client goes away.
fn converse(
    stream: std::net::TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    sender: &mpsc::Sender<String>,
) {
    let mut reader: BufReader<Box<dyn Duplex>> = BufReader::new(Box::new(stream));
    let mut secure = false;
    let mut data: Option<String> = None;
    let _ = reader.get_mut().write_all(b"220 sink ESMTP\r\n");
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if let Some(message) = data.as_mut() {
            if line == ".\r\n" {
                let _ = sender.send(data.take().unwrap());
                let _ = reader.get_mut().write_all(b"250 queued\r\n");
            } else {
                message.push_str(&line);
            }
            continue;
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let offers_tls = tls.is_some() && !secure;
        let answer: &[u8] = match verb.as_str() {
            "EHLO" if offers_tls => b"250-sink\r\n250 STARTTLS\r\n",
            "EHLO" | "HELO" => b"250 sink\r\n",
            "STAR" if offers_tls => {
                let _ = reader.get_mut().write_all(b"220 go ahead\r\n");
                let connection = rustls::ServerConnection::new(tls.clone().unwrap()).unwrap();
                reader = BufReader::new(Box::new(rustls::StreamOwned::new(
                    connection,
                    reader.into_inner(),
                )));
                secure = true;
                continue;
            }
            "MAIL" if offers_tls => b"530 must issue a STARTTLS command first\r\n",
            "DATA" => {
                data = Some(String::new());
                b"354 go ahead\r\n"
            }
            "QUIT" => {
                let _ = reader.get_mut().write_all(b"221 bye\r\n");
                let _ = reader.get_mut().flush();
                return;
            }
            _ => b"250 ok\r\n",
        };
        if reader.get_mut().write_all(answer).is_err() {
            return;
        }
        let _ = reader.get_mut().flush();
    }
}

/// Imports three weeks of reports into `DIR/data`, the last day with an expired certificate.
fn import_three_weeks(dir: &std::path::Path) -> std::path::PathBuf {
    let data = dir.join("data");
    let reports = dir.join("reports");
    std::fs::create_dir_all(&reports).unwrap();
    // Three weeks of ordinary days, then yesterday with the certificate of mx1 expired.
    let today = Utc::now().date_naive();
    for back in 1..=21 {
        let date = today - Days::new(back);
        let expired = if back == 1 { 350 } else { 0 };
        std::fs::write(reports.join(format!("{date}.json")), report(date, expired)).unwrap();
    }
    let imported = tlsrpt(&[
        "import",
        "--quiet",
        "--data-dir",
        data.to_str().unwrap(),
        reports.to_str().unwrap(),
    ]);
    assert!(imported.status.success(), "{imported:?}");
    data
}

#[test]
fn an_expired_certificate_reaches_a_webhook_and_a_mailbox_once_and_the_alerts_table() {
    let dir = tempfile::tempdir().unwrap();
    let data = import_three_weeks(dir.path());

    let (url, webhook) = webhook_receiver();
    let (smtp, mailbox) = smtp_sink();
    let config = dir.path().join("alerts.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[notifier]]
name = "ops-chat"
kind = "webhook"
url = "{url}"

[[notifier]]
name = "postmaster"
kind = "mail"
smtp = "{smtp}"
from = "tlsrpt@provider.example"
to = ["postmaster@shop.example"]
domains = ["*.shop.example"]
min_severity = "critical"

[[rule]]
name = "expired-certificates"
description = "Renew the certificate of the MX host named."
every_minutes = 60
sql = """
SELECT policy_domain, receiving_mx_hostname, sum(failed_session_count) AS failed
FROM failures WHERE result_type = 'certificate-expired' GROUP BY 1, 2
"""

[[rule]]
name = "broken"
sql = "SELECT 1 AS one"
"#
        ),
    )
    .unwrap();
    let args = [
        "alerts",
        "run",
        "--data-dir",
        data.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ];

    let first = tlsrpt(&args);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert_eq!(first.status.code(), Some(1), "an alert fired: {first:?}");
    assert!(
        stdout.contains("shop.example: certificate-expired failures on mx1.shop.example"),
        "{stdout}"
    );

    // A broken rule is reported and does not stop the rest.
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(
        stderr.contains("rule broken: the query must return a `policy_domain` column"),
        "{stderr}"
    );

    let mut bodies: Vec<serde_json::Value> = (0..2)
        .map(|_| webhook.recv_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    bodies.sort_by_key(|b| b["alert"]["detector"].as_str().unwrap().to_owned());
    let rule = &bodies[1]["alert"];
    assert_eq!(rule["detector"], "rule");
    assert_eq!(rule["severity"], "warning");
    assert_eq!(
        rule["title"],
        "shop.example: expired-certificates (receiving_mx_hostname=mx1.shop.example)"
    );
    assert!(
        rule["text"].as_str().unwrap().contains("failed: 350"),
        "{rule}"
    );
    let body = &bodies[0];
    assert_eq!(body["alert"]["policy_domain"], "shop.example");
    assert_eq!(body["alert"]["state"], "firing");
    assert_eq!(body["alert"]["severity"], "critical");
    assert_eq!(body["alert"]["result_type"], "certificate-expired");
    let text = body["text"].as_str().unwrap();
    assert!(
        text.starts_with("[critical] shop.example: certificate-expired"),
        "{text}"
    );
    assert!(text.contains("350 of "), "{text}");
    assert!(text.contains("What to do:"), "{text}");
    assert!(
        text.contains("SELECT date, receiving_mx_hostname"),
        "{text}"
    );

    let mail = mailbox.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        mail.contains("Subject: [tlsrpt critical] shop.example: certificate-expired"),
        "{mail}"
    );
    assert!(mail.contains("To: postmaster@shop.example"), "{mail}");

    let table = tlsrpt(&[
        "sql",
        "--data-dir",
        data.to_str().unwrap(),
        "--format",
        "csv",
        "SELECT state, detector, severity, policy_domain, result_type, receiving_mx_hostnames FROM alerts",
    ]);
    assert!(table.status.success(), "{table:?}");
    let csv = String::from_utf8_lossy(&table.stdout);
    assert!(
        csv.contains(
            "firing,new-result-type,critical,shop.example,certificate-expired,[mx1.shop.example]"
        ),
        "{csv}"
    );

    // The next pass has nothing new (the rule's row is the same open incident): nothing
    // fires, nothing is sent again.
    let second = tlsrpt(&args);
    assert_eq!(second.status.code(), Some(0), "{second:?}");
    assert!(webhook.recv_timeout(Duration::from_millis(500)).is_err());
    assert!(mailbox.recv_timeout(Duration::from_millis(100)).is_err());
}

#[test]
fn tlsrpt_up_runs_the_alert_passes_itself_with_alerts_config() {
    let dir = tempfile::tempdir().unwrap();
    let data = import_three_weeks(dir.path());
    let (url, webhook) = webhook_receiver();
    let config = dir.path().join("alerts.toml");
    std::fs::write(
        &config,
        format!("[[notifier]]\nname = \"chat\"\nkind = \"webhook\"\nurl = \"{url}\"\n"),
    )
    .unwrap();
    let mut up = Command::new(env!("CARGO_BIN_EXE_tlsrpt"))
        .args(["up", "--data-dir", data.to_str().unwrap()])
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--smtp-listen",
            "127.0.0.1:0",
        ])
        .args([
            "--query-listen",
            "127.0.0.1:0",
            "--flight-listen",
            "127.0.0.1:0",
        ])
        .args(["--alerts-config", config.to_str().unwrap()])
        .env("TLSRPT_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The first pass runs at start.
    let body = webhook.recv_timeout(Duration::from_secs(60));
    let _ = up.kill();
    let _ = up.wait();
    let body = body.expect("tlsrpt up sent no alert within a minute");
    assert_eq!(body["alert"]["policy_domain"], "shop.example");
    assert_eq!(body["alert"]["result_type"], "certificate-expired");
    assert!(data.join("alerts-state.json").is_file());
}

#[test]
fn webhooks_over_https_and_mail_over_starttls_are_delivered_when_the_certificate_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let data = import_three_weeks(dir.path());
    let (tls, ca) = localhost_tls(dir.path());
    let (url, webhook) = https_webhook_receiver(tls.clone());
    let (smtp, mailbox) = smtp_sink_with(Some(tls));
    let config = dir.path().join("alerts.toml");
    // Two webhooks to the same HTTPS receiver: one trusts its CA, one knows only the
    // system's roots, which do not have it. The mail goes over STARTTLS.
    std::fs::write(
        &config,
        format!(
            r#"
[[notifier]]
name = "private-ca"
kind = "webhook"
url = "{url}"
ca_file = "{ca}"

[[notifier]]
name = "system-roots"
kind = "webhook"
url = "{url}"

[[notifier]]
name = "postmaster"
kind = "mail"
smtp = "{smtp}"
tls = "starttls"
ca_file = "{ca}"
from = "tlsrpt@provider.example"
to = ["postmaster@shop.example"]
"#,
            ca = ca.display()
        ),
    )
    .unwrap();
    let run = tlsrpt(&[
        "alerts",
        "run",
        "--data-dir",
        data.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(1), "an alert fired: {run:?}");
    let body = webhook.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(body["alert"]["policy_domain"], "shop.example");
    assert_eq!(body["alert"]["result_type"], "certificate-expired");
    assert!(
        webhook.recv_timeout(Duration::from_millis(500)).is_err(),
        "delivered once"
    );
    let mail = mailbox.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        mail.contains("Subject: [tlsrpt critical] shop.example: certificate-expired"),
        "{mail}"
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains(
            "not delivered (retried at the next pass): system-roots: POST https://localhost:"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("private-ca:"), "{stderr}");
    assert!(!stderr.contains("postmaster:"), "{stderr}");
}
