//! `tlsrpt alerts run` end to end: reports imported into a data directory, one pass that
//! finds an expired certificate, the alert delivered to a real HTTP webhook receiver and a
//! real SMTP sink (both on port 0), stored in the `alerts` table, and not sent again by the
//! next pass.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::Duration;

use chrono::{Datelike, Days, Utc};

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

/// The same over HTTPS, with a certificate for `localhost` from a CA of its own; returns
/// the URL, the CA's certificate as a PEM file in `dir`, and the bodies.
fn https_webhook_receiver(
    dir: &std::path::Path,
) -> (
    String,
    std::path::PathBuf,
    mpsc::Receiver<serde_json::Value>,
) {
    use tokio_rustls::rustls;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let ca = dir.join("webhook-ca.pem");
    std::fs::write(&ca, certified.cert.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config = std::sync::Arc::new(
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "https://localhost:{}/hooks/tlsrpt",
        listener.local_addr().unwrap().port()
    );
    let (sender, bodies) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let connection = rustls::ServerConnection::new(config.clone()).unwrap();
            answer_webhook(rustls::StreamOwned::new(connection, stream), &sender);
        }
    });
    (url, ca, bodies)
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
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (sender, messages) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            stream.write_all(b"220 sink ESMTP\r\n").unwrap();
            let mut data: Option<String> = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(message) = data.as_mut() {
                    if line == ".\r\n" {
                        let _ = sender.send(data.take().unwrap());
                        stream.write_all(b"250 queued\r\n").unwrap();
                    } else {
                        message.push_str(&line);
                    }
                    continue;
                }
                let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                let answer: &[u8] = match verb.as_str() {
                    "EHLO" | "HELO" => b"250 sink\r\n",
                    "DATA" => {
                        data = Some(String::new());
                        b"354 go ahead\r\n"
                    }
                    "QUIT" => {
                        let _ = stream.write_all(b"221 bye\r\n");
                        break;
                    }
                    _ => b"250 ok\r\n",
                };
                stream.write_all(answer).unwrap();
            }
        }
    });
    (address, messages)
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
fn a_webhook_over_https_is_delivered_when_its_certificate_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let data = import_three_weeks(dir.path());
    let (url, ca, webhook) = https_webhook_receiver(dir.path());
    let config = dir.path().join("alerts.toml");
    // Two notifiers to the same HTTPS receiver: one trusts its CA, one knows only the
    // system's roots, which do not have it.
    std::fs::write(
        &config,
        format!(
            r#"
[[notifier]]
name = "private-ca"
kind = "webhook"
url = "{url}"
ca_file = "{}"

[[notifier]]
name = "system-roots"
kind = "webhook"
url = "{url}"
"#,
            ca.display()
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
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains(
            "not delivered (retried at the next pass): system-roots: POST https://localhost:"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("private-ca:"), "{stderr}");
}
