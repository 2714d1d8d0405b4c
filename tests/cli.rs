//! The `tlsrpt` binary as a user runs it: real processes, real files, standard input, exit
//! codes and output. `explain` output is compared with golden files in `tests/golden/`
//! (regenerate with `UPDATE_GOLDEN=1 cargo test --test cli`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn vendored(name: &str) -> PathBuf {
    root().join("schemas/tests/fixtures/corpus").join(name)
}

/// `../shared/corpus`; CI always has it, so its absence fails there.
fn shared_corpus() -> Option<PathBuf> {
    let dir = std::env::var_os("TLSRPT_SHARED_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/corpus"));
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must have the shared corpus at {}",
        dir.display()
    );
    None
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                stack.push(path);
            } else if !name.ends_with(".md") && name != "SHA256SUMS" {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn tlsrpt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tlsrpt"))
        .args(args)
        .output()
        .expect("cannot run the tlsrpt binary")
}

fn tlsrpt_stdin(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tlsrpt"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run the tlsrpt binary");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("stdout is UTF-8")
}

/// A file in a fresh temporary directory, removed with the directory when the guard drops.
struct TempFile {
    dir: PathBuf,
    path: PathBuf,
}

impl TempFile {
    fn new(name: &str, bytes: &[u8]) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tlsrpt-cli-{}-{}",
            std::process::id(),
            name.replace('.', "-")
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        Self { dir, path }
    }

    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn validate_accepts_every_corpus_file() {
    let mut files = files_under(&root().join("schemas/tests/fixtures/corpus"));
    if let Some(shared) = shared_corpus() {
        files.extend(files_under(&shared));
    }
    assert!(files.len() >= 29, "found only {} files", files.len());
    let args: Vec<&str> = std::iter::once("validate")
        .chain(files.iter().map(|p| p.to_str().unwrap()))
        .collect();
    let output = tlsrpt(&args);
    let text = stdout(&output);
    assert!(
        output.status.success(),
        "exit {:?}\n{text}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(text.lines().count(), files.len());
    assert!(text.lines().all(|l| l.starts_with("OK ")), "{text}");
    // The quirks are named, not hidden.
    assert!(text.contains("tlsa_policy_string_json_encoded"));
    assert!(text.contains("mx_host_prefixed"));
}

#[test]
fn validate_walks_directories() {
    let dir = root().join("schemas/tests/fixtures/corpus/mjl-__mox");
    let output = tlsrpt(&["validate", dir.to_str().unwrap()]);
    assert!(output.status.success());
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("OK ") && lines[0].ends_with("example.eml"));
    assert!(lines[1].contains("microsoft.eml") && lines[1].contains("datetime_without_zone"));
}

#[test]
fn validate_refuses_a_bad_count_with_its_json_path() {
    let bad = RFC_EXAMPLE.replacen(
        "\"failed-session-count\": 200",
        "\"failed-session-count\": \"twenty\"",
        1,
    );
    assert_ne!(bad, RFC_EXAMPLE, "the fixture changed; adjust the edit");
    let file = TempFile::new("bad.json", bad.as_bytes());
    let good = vendored("cry-inc__dmarc-report-viewer/google.json");
    let output = tlsrpt(&["validate", good.to_str().unwrap(), file.path()]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("OK "));
    let refusal = lines.next().unwrap();
    assert!(refusal.starts_with("FAIL "), "{refusal}");
    assert!(
        refusal.contains(
            "policies[0].failure-details[1].failed-session-count: expected a non-negative integer, found \"twenty\""
        ),
        "{refusal}"
    );
}

#[test]
fn validate_json_output_is_for_programs() {
    let broken = TempFile::new(
        "broken.json",
        br#"{"organization-name": "x", "policies": [}"#,
    );
    let good = vendored("cry-inc__dmarc-report-viewer/no-contact.json");
    let output = tlsrpt(&[
        "validate",
        "--format",
        "json",
        good.to_str().unwrap(),
        broken.path(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let results: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["ok"], true);
    assert_eq!(results[0]["report_uid"].as_str().unwrap().len(), 32);
    let codes: Vec<&str> = results[0]["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"contact_info_null"), "{codes:?}");
    assert_eq!(results[1]["ok"], false);
    assert_eq!(results[1]["error"]["code"], "json_syntax");
    assert!(
        results[1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("byte"),
        "{}",
        results[1]["error"]["message"]
    );
}

#[test]
fn validate_reads_gzip_from_standard_input() {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(RFC_EXAMPLE.as_bytes()).unwrap();
    let output = tlsrpt_stdin(&["validate", "-"], &gz.finish().unwrap());
    assert!(output.status.success());
    assert!(stdout(&output).starts_with("OK    -"));
}

#[test]
fn validate_names_a_missing_file() {
    let output = tlsrpt(&["validate", "/nonexistent/report.json"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).contains("cannot open /nonexistent/report.json"));
}

const RFC_EXAMPLE: &str =
    include_str!("../schemas/tests/fixtures/corpus/cry-inc__dmarc-report-viewer/rfc-example.json");

/// Compares `actual` with `tests/golden/NAME`, or writes it with `UPDATE_GOLDEN` set.
fn golden(name: &str, actual: &str) {
    let path = root().join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} is missing; run with UPDATE_GOLDEN=1", path.display()));
    assert!(
        expected == actual,
        "{} differs; run with UPDATE_GOLDEN=1 and review the diff.\n--- actual:\n{actual}",
        path.display()
    );
}

fn explain(path: &Path, format: &str) -> String {
    let output = tlsrpt(&["explain", "--format", format, path.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout(&output)
}

#[test]
fn explain_the_rfc_example() {
    let text = explain(
        &vendored("cry-inc__dmarc-report-viewer/rfc-example.json"),
        "text",
    );
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with("FAILURES: 303 of 5,629 sessions"),
        "{first}"
    );
    assert!(text.contains("94.6 % success"));
    // Most sessions first, with the MX and sending IP involved.
    let starttls = text.find("200 x starttls-not-supported").unwrap();
    let expired = text.find("100 x certificate-expired").unwrap();
    assert!(starttls < expired);
    assert!(text.contains("mx2.mail.company-y.example (200)"));
    assert!(text.contains("2001:db8:abcd:0012::1 (100)"));
    assert!(text.contains("X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED"));
    // The fix names this report's MX, and the mode decides the impact.
    assert!(text.contains("-connect mx2.mail.company-y.example:25"));
    assert!(text.contains("-servername mx1.mail.company-y.example"));
    assert!(text.contains("testing mode: senders delivered anyway"));
    // 100 columns, except where one word (a URL) is longer than a line can hold.
    assert!(
        text.lines()
            .all(|l| l.chars().count() <= 100 || l.split_whitespace().any(|w| w.len() > 60))
    );
    golden("explain/rfc-example.txt", &text);
}

#[test]
fn explain_the_microsoft_two_policy_report() {
    let text = explain(
        &vendored("cry-inc__dmarc-report-viewer/microsoft.json"),
        "text",
    );
    assert!(text.starts_with("OK: no TLS failures."), "{text}");
    assert!(text.contains("Policy 1: MTA-STS policy for random.net"));
    assert!(text.contains("Mode enforce; max_age 2592000 s (30 days)"));
    assert!(text.contains("Policy 2: DANE (TLSA) policy for random.net"));
    assert!(text.contains("2 TLSA records"));
    assert!(text.contains("tlsa_policy_string_json_encoded at policies[1].policy.policy-string"));
    golden("explain/microsoft.txt", &text);
}

#[test]
fn explain_the_mail_ru_fetch_error_report() {
    let path = vendored("domainaware__parsedmarc/mail.ru.json");
    let text = explain(&path, "text");
    assert!(text.starts_with("FAILURES: 1 of 1 session under MTA-STS for example.com failed"));
    assert!(text.contains("2 x sts-policy-fetch-error: MTA-STS policy could not be fetched"));
    assert!(text.contains("bad https response code: 404 (1), bad https response code: 500 (1)"));
    assert!(
        text.contains("The failure details add up to 2 failed sessions, but the summary counts 1")
    );
    assert!(text.contains("curl -v https://mta-sts.example.com/.well-known/mta-sts.txt"));
    assert!(text.contains("failure_sum_mismatch"));
    golden("explain/mail.ru.txt", &text);

    let markdown = explain(&path, "markdown");
    assert!(markdown.starts_with("# TLS report from Mail.ru: 2024-02-22 (1 day)"));
    assert!(markdown.contains("### 2 × `sts-policy-fetch-error`"));
    assert!(markdown.contains("| Reason | `bad https response code: 404` (1)"));
    golden("explain/mail.ru.md", &markdown);

    let json: serde_json::Value = serde_json::from_str(&explain(&path, "json")).unwrap();
    assert_eq!(json["verdict"]["status"], "failures");
    assert_eq!(json["period"]["days"], 1);
    let policy = &json["policies"][0];
    assert_eq!(policy["failed_sessions"], 1);
    assert_eq!(policy["success_rate"], 0.0);
    assert_eq!(policy["detail_sum_mismatch"]["sum_of_details"], 2);
    assert_eq!(policy["failures"][0]["sessions"], 2);
    assert_eq!(policy["failures"][0]["impact"], "protection");
}

#[test]
fn explain_advises_a_domain_without_a_policy() {
    let text = explain(
        &vendored("cry-inc__dmarc-report-viewer/no-policy.json"),
        "text",
    );
    assert!(text.starts_with("OK: no TLS failures."), "{text}");
    assert!(
        text.contains("Advice: No MTA-STS policy or DANE was found"),
        "{text}"
    );
}

#[test]
fn explain_a_mail_shows_the_submitter() {
    let text = explain(&vendored("mjl-__mox/microsoft.eml"), "text");
    assert!(text.contains("Submitter    microsoft.com"), "{text}");
    assert!(text.contains("datetime_without_zone"));
}

#[test]
fn explain_refuses_what_is_not_a_report() {
    let file = TempFile::new("notes.txt", b"shopping list: milk, eggs");
    let output = tlsrpt(&["explain", file.path()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is not a report tlsrpt accepts"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}

/// Tables written from Kafka (`up --kafka`, `transform --store`) record Kafka's offsets: an
/// embedded log started beside them would reuse those offsets and its first reports would be
/// skipped, so `up` and `import` refuse, and create nothing.
#[test]
fn no_embedded_log_is_started_beside_tables_from_another_bus() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let date_dir = dir.path().join("tables/reports/date=2026-01-01");
    std::fs::create_dir_all(&date_dir).unwrap();
    std::fs::write(
        date_dir.join("p00000-00000000000000000000-00000000000000000009.parquet"),
        b"",
    )
    .unwrap();
    let report = vendored("domainaware__parsedmarc/rfc8460.json");
    let import = ["import", "--data-dir", data, report.to_str().unwrap()];
    let up = [
        "up",
        "--data-dir",
        data,
        "--http-listen",
        "127.0.0.1:0",
        "--smtp-listen",
        "off",
        "--query-listen",
        "127.0.0.1:0",
        "--flight-listen",
        "127.0.0.1:0",
    ];
    for args in [&import[..], &up[..]] {
        let output = tlsrpt(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("no embedded log"), "{args:?}: {stderr}");
        assert!(!dir.path().join("bus").exists(), "{args:?} created a log");
    }
}
