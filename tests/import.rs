//! `tlsrpt import` and `tlsrpt rejected list|replay` as a user runs them: the real binary,
//! real folders (plain files, gzip, mail, a Maildir, an mbox), real Parquet read back with
//! `tlsrpt sql`, and a real `tlsrpt up` owning the data directory for the shared case; and
//! `tlsrpt import --kafka` into a real Kafka-protocol broker (tansu, see
//! `tlsrpt_bus::test_broker`).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schemas/tests/fixtures/corpus")
        .join(name)
}

fn tlsrpt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tlsrpt"))
        .args(args)
        .env_remove("TLSRPT_DATA_DIR")
        .output()
        .expect("cannot run the tlsrpt binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The whole story of a run, for assertion messages.
fn shown(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status.code(),
        text(&output.stdout),
        text(&output.stderr)
    )
}

/// A fresh directory, removed on drop.
struct TempDir(tempfile::TempDir);

impl TempDir {
    fn new(name: &str) -> Self {
        Self(
            tempfile::Builder::new()
                .prefix(&format!("tlsrpt-import-{name}-"))
                .tempdir()
                .unwrap(),
        )
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// An mbox of the given mails (mboxrd: body lines starting with `From ` quoted).
fn mbox(mails: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for mail in mails {
        out.extend_from_slice(b"From reports@example.net Sat Jan  3 01:05:34 2024\n");
        for line in text(mail).split_inclusive('\n') {
            if line.trim_start_matches('>').starts_with("From ") {
                out.push(b'>');
            }
            out.extend_from_slice(line.as_bytes());
        }
        if !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        out.push(b'\n');
    }
    out
}

/// The counts of the summary's first line:
/// `imported I inputs from F files in S s (R/s): A accepted, D duplicates, X refused`.
#[derive(Debug, PartialEq, Eq)]
struct Counts {
    inputs: u64,
    files: u64,
    accepted: u64,
    duplicates: u64,
    refused: u64,
}

fn counts(output: &Output) -> Counts {
    let stdout = text(&output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("imported "))
        .unwrap_or_else(|| panic!("no summary line\n{}", shown(output)));
    let words: Vec<&str> = line.split_whitespace().collect();
    let number = |before: &str| -> u64 {
        let at = words
            .iter()
            .position(|w| w.trim_end_matches(',') == before)
            .unwrap_or_else(|| panic!("no `{before}` in {line:?}"));
        words[at - 1].parse().unwrap()
    };
    Counts {
        inputs: number("inputs"),
        files: number("files"),
        accepted: number("accepted"),
        duplicates: number("duplicates"),
        refused: number("refused"),
    }
}

/// One number from `tlsrpt sql`.
fn sql_number(data: &Path, sql: &str) -> u64 {
    let output = tlsrpt(&[
        "sql",
        "--data-dir",
        data.to_str().unwrap(),
        "--format",
        "json",
        sql,
    ]);
    assert!(output.status.success(), "{}", shown(&output));
    let rows: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    rows[0]["n"]
        .as_u64()
        .unwrap_or_else(|| panic!("no n in {rows}"))
}

fn rejected_list(data: &Path) -> Vec<serde_json::Value> {
    let output = tlsrpt(&[
        "rejected",
        "list",
        "--data-dir",
        data.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert!(output.status.success(), "{}", shown(&output));
    serde_json::from_slice::<Vec<serde_json::Value>>(&output.stdout).unwrap()
}

/// A folder with every form import reads: 12 inputs in 11 files (the hidden file is
/// skipped): 10 distinct reports, one copy of one of them, and one file that is no report.
fn backfill_folder(root: &Path) {
    let copy = |from: &str, to: &str| write(&root.join(to), &std::fs::read(fixture(from)).unwrap());
    copy(
        "cry-inc__dmarc-report-viewer/google.json",
        "json/google.json",
    );
    copy(
        "cry-inc__dmarc-report-viewer/google.json",
        "json/google-again.json",
    );
    copy(
        "cry-inc__dmarc-report-viewer/microsoft.json",
        "json/microsoft.json",
    );
    copy(
        "cry-inc__dmarc-report-viewer/rfc-example.json",
        "json/deeper/rfc.json",
    );
    copy("domainaware__parsedmarc/mail.ru.json", "mail.ru.json");
    write(
        &root.join("gz/rpt02.json.gz"),
        &gzip(&std::fs::read(fixture("stalwartlabs__mail-auth/rpt02.json")).unwrap()),
    );
    copy(
        "domainaware__parsedmarc/google.com_smtp_tls_report.eml",
        "mail/google.eml",
    );
    copy(
        "isseis__tlsrpt-digest/tlsrpt_failure.eml",
        "Maildir/cur/1700000000.M1P1.host:2,S",
    );
    copy(
        "mjl-__mox/microsoft.eml",
        "Maildir/new/1700000001.M2P1.host",
    );
    // A delivery in progress is not a message yet.
    write(
        &root.join("Maildir/tmp/1700000002.M3P1.host"),
        b"half a mess",
    );
    let mails = [
        std::fs::read(fixture("isseis__tlsrpt-digest/tlsrpt_success_google_1.eml")).unwrap(),
        std::fs::read(fixture(
            "isseis__tlsrpt-digest/tlsrpt_success_microsoft.eml",
        ))
        .unwrap(),
    ];
    write(
        &root.join("archive.mbox"),
        &mbox(&[mails[0].as_slice(), mails[1].as_slice()]),
    );
    write(
        &root.join("notes/garbage.txt"),
        b"these are not the reports you are looking for\n",
    );
    write(&root.join("json/.hidden.json"), b"{ not even JSON");
}

#[test]
fn a_folder_is_imported_once_and_refusals_are_kept() {
    let dir = TempDir::new("folder");
    let input = dir.path("input");
    backfill_folder(&input);
    let data = dir.path("data");
    let data_arg = data.to_str().unwrap();

    let output = tlsrpt(&[
        "import",
        "--quiet",
        "--data-dir",
        data_arg,
        input.to_str().unwrap(),
    ]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "something was refused\n{}",
        shown(&output)
    );
    assert_eq!(
        counts(&output),
        Counts {
            inputs: 12,
            files: 11,
            accepted: 10,
            duplicates: 1,
            refused: 1
        },
        "{}",
        shown(&output)
    );
    let stdout = text(&output.stdout);
    assert!(stdout.contains("not_a_report"), "{stdout}");
    assert!(stdout.contains("wrote 10 reports to Parquet"), "{stdout}");

    assert_eq!(sql_number(&data, "SELECT count(*) AS n FROM reports"), 10);
    assert_eq!(
        sql_number(
            &data,
            "SELECT count(*) AS n FROM reports WHERE transport <> 'import'"
        ),
        0
    );
    let failures = sql_number(&data, "SELECT count(*) AS n FROM failures");
    assert!(failures > 0);
    let rejected = rejected_list(&data);
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0]["code"], "not_a_report");
    assert_eq!(rejected[0]["transport"], "import");
    assert!(
        rejected[0]["message"]
            .as_str()
            .unwrap()
            .contains("garbage.txt"),
        "{rejected:?}"
    );

    // The same folder again: every report is a duplicate, nothing new is written, and the
    // refused file is not kept a second time.
    let again = tlsrpt(&[
        "import",
        "--quiet",
        "--data-dir",
        data_arg,
        input.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(1), "{}", shown(&again));
    assert_eq!(
        counts(&again),
        Counts {
            inputs: 12,
            files: 11,
            accepted: 0,
            duplicates: 11,
            refused: 1
        },
        "{}",
        shown(&again)
    );
    assert_eq!(sql_number(&data, "SELECT count(*) AS n FROM reports"), 10);
    assert_eq!(
        sql_number(&data, "SELECT count(*) AS n FROM failures"),
        failures
    );
    assert_eq!(rejected_list(&data).len(), 1);
}

#[test]
fn nothing_refused_exits_zero_and_a_missing_path_is_an_error() {
    let dir = TempDir::new("clean");
    let data = dir.path("data");
    let report = fixture("domainaware__parsedmarc/rfc8460.json");
    let output = tlsrpt(&[
        "import",
        "--data-dir",
        data.to_str().unwrap(),
        report.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", shown(&output));
    assert_eq!(counts(&output).accepted, 1);

    let missing = dir.path("no-such-folder");
    let output = tlsrpt(&[
        "import",
        "--data-dir",
        data.to_str().unwrap(),
        missing.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", shown(&output));
    assert!(
        text(&output.stderr).contains("no-such-folder"),
        "{}",
        shown(&output)
    );
}

/// A `tlsrpt up` on `data`, stopped with SIGTERM by [`Up::stop`] (or killed on drop).
struct Up {
    child: Child,
}

impl Up {
    fn start(data: &Path, log: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tlsrpt"))
            .args([
                "up",
                "--data-dir",
                data.to_str().unwrap(),
                "--http-listen",
                "127.0.0.1:0",
                "--smtp-listen",
                "127.0.0.1:0",
                "--query-listen",
                "127.0.0.1:0",
                "--flight-listen",
                "127.0.0.1:0",
            ])
            .env_remove("TLSRPT_CONFIG")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("cannot start tlsrpt up");
        let stdout = child.stdout.take().unwrap();
        let (banner, seen) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("tlsrpt up:") {
                    let _ = banner.send(line);
                }
            }
        });
        let mut up = Self { child };
        if seen.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = up.child.kill();
            panic!(
                "tlsrpt up printed no banner within 60 s; its log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        up
    }

    fn stop(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.child.wait().unwrap()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn import_goes_through_a_running_up() {
    let dir = TempDir::new("shared");
    let data = dir.path("data");
    let input = dir.path("input");
    for name in [
        "cry-inc__dmarc-report-viewer/google.json",
        "cry-inc__dmarc-report-viewer/microsoft.json",
        "stalwartlabs__mail-auth/rpt01.eml",
    ] {
        let file = fixture(name);
        write(
            &input.join(file.file_name().unwrap()),
            &std::fs::read(&file).unwrap(),
        );
    }
    let up = Up::start(&data, &dir.path("up.log"));

    let output = tlsrpt(&[
        "import",
        "--quiet",
        "--data-dir",
        data.to_str().unwrap(),
        input.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", shown(&output));
    assert_eq!(counts(&output).accepted, 3, "{}", shown(&output));
    assert!(
        text(&output.stdout).contains("a running `tlsrpt up`"),
        "{}",
        shown(&output)
    );

    // up's transformer writes them within its flush interval (1 s by default).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = sql_number(&data, "SELECT count(*) AS n FROM reports");
        if n == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 30 s the tables hold {n} reports, not 3; up's log:\n{}",
            std::fs::read_to_string(dir.path("up.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = up.stop();
    assert!(
        status.success(),
        "up exited with {status}; its log:\n{}",
        std::fs::read_to_string(dir.path("up.log")).unwrap_or_default()
    );
}

#[test]
fn replay_keeps_what_is_still_refused() {
    let dir = TempDir::new("still-bad");
    let data = dir.path("data");
    let data_arg = data.to_str().unwrap();
    let garbage = dir.path("garbage.json");
    write(&garbage, br#"{"organization-name": "half a report"}"#);
    let output = tlsrpt(&[
        "import",
        "--quiet",
        "--data-dir",
        data_arg,
        garbage.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", shown(&output));
    let listed = rejected_list(&data);
    assert_eq!(listed.len(), 1, "{listed:?}");
    let id = listed[0]["id"].as_str().unwrap().to_owned();

    let replay = tlsrpt(&["rejected", "replay", "--data-dir", data_arg, &id]);
    assert_eq!(replay.status.code(), Some(1), "{}", shown(&replay));
    let stdout = text(&replay.stdout);
    assert!(stdout.contains(&format!("{id}: still refused")), "{stdout}");
    assert_eq!(rejected_list(&data).len(), 1);
    assert!(
        !data
            .join("rejected/replayed")
            .join(format!("{id}.bin"))
            .exists()
    );

    // An ID that is not in the listing is an error, not a path.
    let replay = tlsrpt(&[
        "rejected",
        "replay",
        "--data-dir",
        data_arg,
        "../../etc/passwd",
    ]);
    assert_eq!(replay.status.code(), Some(2), "{}", shown(&replay));
}

/// Writes a rejection by hand, as a receiver does (`ID.bin` and `ID.json`).
fn keep_by_hand(data: &Path, id: &str, bytes: &[u8], rejection: serde_json::Value) {
    let dir = data.join("rejected");
    write(&dir.join(format!("{id}.bin")), bytes);
    write(
        &dir.join(format!("{id}.json")),
        &serde_json::to_vec_pretty(&rejection).unwrap(),
    );
}

#[test]
fn replay_publishes_a_report_refused_for_a_passing_reason() {
    let dir = TempDir::new("replay");
    let data = dir.path("data");
    let data_arg = data.to_str().unwrap();
    // As the HTTP receiver would have kept a report it could not take (say, a bug since
    // fixed, or a full disk): valid bytes, with the reason of the day.
    let report = std::fs::read(fixture("cry-inc__dmarc-report-viewer/rfc-example.json")).unwrap();
    let id = "20240102T030405.000000Z-000000-0123456789ab";
    keep_by_hand(
        &data,
        id,
        &report,
        serde_json::json!({
            "received_at": "2024-01-02T03:04:05Z",
            "transport": "https",
            "remote_addr": "192.0.2.7:4321",
            "code": "internal",
            "message": "the bus cannot store the message",
            "path": null,
            "bytes": report.len(),
            "complete": true,
            "sha256": "0123456789abcdef",
        }),
    );
    // And one of which nothing was kept (over the size cap): it cannot be replayed.
    let partial = "20240102T030406.000000Z-000001-abcdef012345";
    keep_by_hand(
        &data,
        partial,
        b"",
        serde_json::json!({
            "received_at": "2024-01-02T03:04:06Z",
            "transport": "https",
            "remote_addr": "192.0.2.8:4321",
            "code": "too_large",
            "message": "the body is larger than 10485760 bytes",
            "path": null,
            "bytes": 99_999_999,
            "complete": false,
            "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        }),
    );
    let text_list = tlsrpt(&["rejected", "list", "--data-dir", data_arg]);
    assert!(text_list.status.success(), "{}", shown(&text_list));
    assert!(
        text(&text_list.stdout).contains(id),
        "{}",
        shown(&text_list)
    );

    let replay = tlsrpt(&["rejected", "replay", "--data-dir", data_arg, id]);
    assert!(replay.status.success(), "{}", shown(&replay));
    assert!(
        text(&replay.stdout).contains(&format!("{id}: replayed")),
        "{}",
        shown(&replay)
    );
    assert_eq!(
        sql_number(
            &data,
            "SELECT count(*) AS n FROM reports WHERE transport = 'https' \
             AND received_at = TIMESTAMP '2024-01-02T03:04:05Z'"
        ),
        1
    );
    let replayed = data.join("rejected/replayed");
    assert!(replayed.join(format!("{id}.bin")).is_file());
    assert!(replayed.join(format!("{id}.json")).is_file());
    let listed = rejected_list(&data);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], partial);

    let replay = tlsrpt(&["rejected", "replay", "--data-dir", data_arg, "--all"]);
    assert_eq!(replay.status.code(), Some(1), "{}", shown(&replay));
    assert!(
        text(&replay.stdout).contains(&format!("{partial}: cannot replay")),
        "{}",
        shown(&replay)
    );
    assert_eq!(rejected_list(&data).len(), 1);
    assert_eq!(sql_number(&data, "SELECT count(*) AS n FROM reports"), 1);
}

/// Every vendored corpus file with the given extension.
fn corpus(extension: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let root = fixture("");
    for source in std::fs::read_dir(&root).unwrap() {
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

#[test]
fn import_with_kafka_publishes_each_report_once_and_writes_no_tables() {
    use tlsrpt_bus::test_broker::{TestBroker, read_topic};
    use tlsrpt_schemas::message::WireEnvelope;

    let broker = TestBroker::start();
    broker.create_topic("tlsrpt.reports", 6);
    let dir = TempDir::new("kafka");
    let data = dir.path("data");
    let input = dir.path("input");
    // The corpus (reports and mails), one report twice, and a file that is no report.
    let mut uids = Vec::new();
    let files = [corpus("json"), corpus("eml")].concat();
    assert!(files.len() >= 15, "the vendored corpus went missing");
    for (n, file) in files.iter().enumerate() {
        let bytes = std::fs::read(file).unwrap();
        let decoded = tlsrpt_schemas::Decoder::default()
            .decode_any(&bytes)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        uids.push(decoded.decoded.report.report_uid());
        let name = format!("{n:02}-{}", file.file_name().unwrap().to_string_lossy());
        write(&input.join(name), &bytes);
    }
    write(
        &input.join("again/copy.json"),
        &std::fs::read(&files[0]).unwrap(),
    );
    write(&input.join("garbage.txt"), b"not a report\n");
    let inputs = files.len() as u64 + 2;
    uids.sort();
    uids.dedup();

    let output = tlsrpt(&[
        "import",
        "--quiet",
        "--kafka",
        &broker.address(),
        "--data-dir",
        data.to_str().unwrap(),
        input.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", shown(&output));
    let accepted = uids.len() as u64;
    assert_eq!(
        counts(&output),
        Counts {
            inputs,
            files: inputs,
            accepted,
            duplicates: inputs - 1 - accepted,
            refused: 1
        },
        "{}",
        shown(&output)
    );
    assert!(
        text(&output.stdout).contains("published to Kafka"),
        "{}",
        shown(&output)
    );

    // Exactly the accepted reports are on the topic, once each (one more is waited for, in
    // vain, so that an extra one would be seen).
    let mut on_topic: Vec<String> =
        read_topic(&broker.address(), "tlsrpt.reports", 6, uids.len() + 1)
            .iter()
            .map(|r| {
                let envelope = WireEnvelope::of(&r.message.headers).unwrap();
                assert_eq!(envelope.transport.as_deref(), Some("import"));
                envelope.report_uid.unwrap_or_default().into_owned()
            })
            .collect();
    on_topic.sort();
    assert_eq!(on_topic, uids);

    // The refusal is kept here; no log is opened and no table written.
    let rejected = rejected_list(&data);
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0]["code"], "not_a_report");
    assert!(!data.join("bus").exists());
    assert!(!data.join("tables").exists());

    // --topic alone is a mistake, not a silent import into the local log.
    let output = tlsrpt(&[
        "import",
        "--topic",
        "other",
        "--data-dir",
        data.to_str().unwrap(),
        input.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", shown(&output));
    assert!(
        text(&output.stderr).contains("--kafka"),
        "{}",
        shown(&output)
    );
}
