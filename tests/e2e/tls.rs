//! The report receiver over HTTPS with a certificate given as files, spoken to by curl (a
//! client every sender's operator has), and the plain-text health and metrics endpoints.

use std::process::Command;

use crate::support::{Up, report};

/// A self-signed certificate for `localhost` and its key, as PEM files in `dir`.
fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

#[test]
fn reports_arrive_over_https_with_the_given_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
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

/// The SQL service with tokens made by `tlsrpt token new` and TLS from files, spoken to by
/// curl: no token and a wrong one are refused, a token limited to a domain sees only that
/// domain. And SQL reachable from other machines without tokens is refused at start.
#[test]
fn sql_over_tls_requires_a_token_from_tlsrpt_token_new() {
    let dir = tempfile::tempdir().unwrap();

    let exposed = Command::new(env!("CARGO_BIN_EXE_tlsrpt"))
        .args(["query", "--store"])
        .arg(dir.path().join("tables"))
        .args([
            "--query-listen",
            "0.0.0.0:0",
            "--flight-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    let message = String::from_utf8_lossy(&exposed.stderr);
    assert!(!exposed.status.success(), "{message}");
    assert!(
        message.contains("--query-listen 0.0.0.0:0 can be reached from other machines")
            && message.contains("--sql-tokens"),
        "{message}"
    );

    // One token for every domain, one for tls.test only.
    let tokens_file = dir.path().join("sql-tokens.toml");
    let mut tokens = Vec::new();
    for args in [
        &["token", "new", "--name", "analysts"][..],
        &[
            "token",
            "new",
            "--name",
            "tls-test",
            "--domain",
            "TLS.test.",
        ],
    ] {
        let made = Command::new(env!("CARGO_BIN_EXE_tlsrpt"))
            .args(args)
            .output()
            .unwrap();
        assert!(made.status.success());
        let entry = String::from_utf8(made.stdout).unwrap();
        assert!(
            entry.contains("[[token]]") && entry.contains("sha256 = "),
            "{entry}"
        );
        let shown = String::from_utf8(made.stderr).unwrap();
        let token = shown
            .lines()
            .find(|l| l.starts_with("tlsrpt_"))
            .unwrap_or_else(|| panic!("no token in {shown:?}"))
            .to_owned();
        assert!(!entry.contains(&token), "the file holds only the digest");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&tokens_file)
            .unwrap();
        std::io::Write::write_all(&mut file, entry.as_bytes()).unwrap();
        tokens.push(token);
    }
    assert!(
        std::fs::read_to_string(&tokens_file)
            .unwrap()
            .contains("domains = [\"tls.test\"]")
    );

    let (cert, key) = self_signed(dir.path());
    let up = Up::start(
        &dir.path().join("data"),
        &[
            "--sql-tokens",
            tokens_file.to_str().unwrap(),
            "--sql-tls-cert",
            cert.to_str().unwrap(),
            "--sql-tls-key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    assert!(up.sql_url.starts_with("https://"), "{}", up.sql_url);
    for (n, domain) in [(1, "tls.test"), (2, "other.test")] {
        let (status, answer) = up.post(report(n, domain).into_bytes(), "application/tlsrpt+json");
        assert_eq!(status, 200, "{answer}");
    }
    let port = up
        .sql_url
        .rsplit(':')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let url = format!("https://localhost:{port}/v1/sql");
    let sql = |token: Option<&str>, sql: &str| -> (String, String) {
        let mut curl = Command::new("curl");
        curl.args(["-sS", "--cacert"])
            .arg(&cert)
            .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
            .args(["-w", "\n%{http_code}", "--data", sql]);
        if let Some(token) = token {
            curl.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        let output = curl.arg(&url).output().expect("curl runs");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
        (code.to_owned(), body.trim_end().to_owned())
    };
    let count = "SELECT count(*) AS n FROM policies";
    let mut last = (String::new(), String::new());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while last.1 != r#"[{"n":2}]"# {
        assert!(
            std::time::Instant::now() < deadline,
            "both reports did not reach the tables; last answer {last:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
        last = sql(Some(&tokens[0]), count);
    }
    let (code, body) = sql(None, count);
    assert_eq!(code, "401", "{body}");
    assert!(body.contains("unauthenticated"), "{body}");
    let (code, body) = sql(Some("tlsrpt_not-a-token"), count);
    assert_eq!(code, "401", "{body}");
    let (code, body) = sql(
        Some(&tokens[1]),
        "SELECT DISTINCT policy_domain FROM failures",
    );
    assert_eq!(code, "200", "{body}");
    assert_eq!(body, r#"[{"policy_domain":"tls.test"}]"#);
    up.stop();
}
