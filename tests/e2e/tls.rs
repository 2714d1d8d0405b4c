//! The report receiver over HTTPS with a certificate given as files, spoken to by curl (a
//! client every sender's operator has), and the plain-text health and metrics endpoints.

use std::process::Command;

use crate::support::{Up, report};

#[test]
fn reports_arrive_over_https_with_the_given_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let up = Up::start(
        &dir.path().join("data"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    assert!(up.reports_url.starts_with("https://"), "{}", up.reports_url);
    let port = up
        .reports_url
        .rsplit(':')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let url = format!("https://localhost:{port}/v1/reports");
    let body = dir.path().join("report.json");
    std::fs::write(&body, report(1, "tls.test")).unwrap();
    // curl verifies the server's certificate against the one we made.
    let output = Command::new("curl")
        .args(["-sS", "--fail-with-body", "--cacert"])
        .arg(&cert)
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args([
            "-H",
            "Content-Type: application/tlsrpt+json",
            "--data-binary",
        ])
        .arg(format!("@{}", body.display()))
        .arg(&url)
        .output()
        .expect("curl is needed for this test (Debian package curl)");
    let answer = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "curl: {answer} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["status"], "accepted");

    // Plain HTTP on the TLS port is not answered as if it were fine.
    let plain = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(format!("http://127.0.0.1:{port}/healthz"))
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&plain.stdout), "200");

    up.wait_for_count(
        "SELECT count(*) AS n FROM reports WHERE report_id = 'report-1'",
        1,
    );
    up.stop();
}
