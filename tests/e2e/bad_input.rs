//! Garbage in: each kind is refused with the status and message a sender's operator can act
//! on, the bytes are kept in the dead-letter area, and the receivers keep serving.

use lettre::address::Envelope;
use lettre::{SmtpTransport, Transport as _};

use crate::support::{Up, gzip, report};

fn rejected_bins(up: &Up) -> Vec<Vec<u8>> {
    let dir = up.dir.join("rejected");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("bin"))
        .collect();
    names.sort();
    names.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

#[test]
fn each_malformed_kind_is_refused_by_name_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(
        &dir.path().join("data"),
        &["--max-body-bytes", "200000"],
        &[],
    );

    let broken = br#"{"organization-name": "X", "date-range": {"#.to_vec();
    let (status, answer) = up.post(broken.clone(), "application/tlsrpt+json");
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["code"], "json_syntax", "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("byte"),
        "{answer}"
    );

    let bad_count = report(1, "example.net").replace(
        "\"failed-session-count\":1",
        "\"failed-session-count\":\"twenty\"",
    );
    assert!(bad_count.contains("twenty"));
    let (status, answer) = up.post(gzip(bad_count.as_bytes()), "application/tlsrpt+gzip");
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer["path"], "policies[0].failure-details[0].failed-session-count",
        "{answer}"
    );
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("non-negative integer"),
        "{answer}"
    );

    let missing = r#"{"organization-name": "X", "report-id": "r", "policies": []}"#;
    let (status, answer) = up.post(missing.into(), "application/json");
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("date-range"),
        "{answer}"
    );

    let html = b"<html><body>Not Found</body></html>".to_vec();
    let (status, answer) = up.post(html.clone(), "text/html");
    assert_eq!(status, 415, "{answer}");

    let (status, _) = up.post(Vec::new(), "application/tlsrpt+json");
    assert_eq!(status, 415);

    // A gzip bomb: 200 MiB of zeros in about 200 KB... over the body cap here, so make
    // it smaller than the cap but still far over the decompressed cap.
    let bomb = gzip(&vec![b' '; 64 << 20]);
    assert!(bomb.len() < 200_000, "bomb is {} bytes", bomb.len());
    let (status, answer) = up.post(bomb.clone(), "application/tlsrpt+gzip");
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["code"], "too_large", "{answer}");

    let (status, answer) = up.post(vec![b'{'; 300_000], "application/tlsrpt+json");
    assert_eq!(status, 413, "{answer}");

    // Still serving, and what was refused is kept byte for byte (all but the over-cap
    // body, which was not read to its end).
    let (status, answer) = up.post(report(2, "example.net").into_bytes(), "application/json");
    assert_eq!(status, 200, "{answer}");
    let kept = rejected_bins(&up);
    for body in [&broken, &gzip(bad_count.as_bytes()), &html, &bomb] {
        assert!(
            kept.iter().any(|k| k == body),
            "a refused body was not kept"
        );
    }
    assert_eq!(kept.len(), 7, "one record per refusal");

    // Mail without a report: 550 naming it; the bytes kept; the next mail is fine.
    let transport = SmtpTransport::builder_dangerous(up.smtp.ip().to_string())
        .port(up.smtp.port())
        .build();
    let envelope = Envelope::new(
        Some("a@sender.test".parse().unwrap()),
        vec!["tlsrpt@example.net".parse().unwrap()],
    )
    .unwrap();
    let no_report =
        b"From: a@sender.test\r\nTo: tlsrpt@example.net\r\nSubject: hello\r\n\r\nJust text.\r\n";
    let err = transport.send_raw(&envelope, no_report).unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert!(err.to_string().contains("550"), "{err}");
    assert_eq!(rejected_bins(&up).len(), 8);

    up.wait_for_count("SELECT count(*) AS n FROM reports", 1);
    let metrics = up.metrics();
    assert!(
        metrics.contains("tlsrpt_refused_total{transport=\"https\",reason=\"too_large\"} 2"),
        "{metrics}"
    );
    up.stop();
}

/// A client that stops sending (mid-body, or before its headers) gets a 408 or is cut off
/// at the deadline, and does not hold the receiver.
#[test]
fn slow_clients_are_cut_off_at_the_deadline() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(&dir.path().join("data"), &["--client-timeout", "1s"], &[]);
    let address = up
        .reports_url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();

    let mut stalled_body = std::net::TcpStream::connect(&address).unwrap();
    stalled_body
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    stalled_body
        .write_all(b"POST /v1/reports HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        .unwrap();
    let mut answer = String::new();
    let _ = stalled_body.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");

    let mut silent = std::net::TcpStream::connect(&address).unwrap();
    silent
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut buffer = [0u8; 256];
    // Closed by the server (0 bytes, or an error response) rather than our read timeout.
    match silent.read(&mut buffer) {
        Ok(_) => {}
        Err(err) => panic!("the server kept a silent connection open: {err}"),
    }

    let (status, _) = up.post(report(3, "example.net").into_bytes(), "application/json");
    assert_eq!(status, 200);
    up.stop();
}
