//! `tlsrpt up --kafka`: the receivers, a transformer of the consumer group and the SQL
//! service in one process on a real Kafka-protocol broker (tansu, one per test; see
//! `tlsrpt_bus::test_broker`) instead of the embedded log. What it acknowledges is what SQL
//! answers, once each, also across a restart.

use std::time::Duration;

use lettre::SmtpTransport;
use tlsrpt_bus::test_broker::{TestBroker, read_topic};

use crate::kafka_support::{DLQ_TOPIC, TOPIC, mail_corpus, post_json_corpus, wait_for_reports};
use crate::support::{Up, fixtures, report};

fn start(data: &std::path::Path, brokers: &str) -> Up {
    Up::start(data, &["--kafka", brokers], &[])
}

#[test]
fn up_on_kafka_answers_sql_with_exactly_what_it_acknowledged() {
    let broker = TestBroker::start();
    broker.create_topic(TOPIC, 6);
    broker.create_topic(DLQ_TOPIC, 1);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let up = start(&data, &broker.address());
    assert!(
        up.headline.contains("on Kafka") && up.headline.contains(&broker.address()),
        "{}",
        up.headline
    );

    // The corpus, over HTTP (gzip) and by mail.
    let json_files = fixtures("json");
    let mut acknowledged = post_json_corpus(|body, kind| up.post(body, kind));
    let transport = SmtpTransport::builder_dangerous(up.smtp.ip().to_string())
        .port(up.smtp.port())
        .timeout(Some(Duration::from_secs(30)))
        .build();
    acknowledged.extend(mail_corpus(&transport));
    // A report sent twice is on the topic twice and in the tables once.
    let again = std::fs::read(&json_files[0]).unwrap();
    assert_eq!(up.post(again, "application/json").0, 200);
    let sent = json_files.len() + fixtures("eml").len() + 1;
    acknowledged.sort();
    acknowledged.dedup();
    assert!(acknowledged.len() >= 15, "{}", acknowledged.len());

    wait_for_reports(|sql| up.sql(sql), &acknowledged);
    // The receivers published to the topic (the embedded log is not even created, and nor
    // is the local append socket).
    assert_eq!(read_topic(&broker.address(), TOPIC, 6, sent).len(), sent);
    assert!(!data.join("bus").exists(), "the embedded log was opened");
    let names: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n == "bus.sock"),
        "a local socket in {names:?}"
    );
    up.stop();

    // Restarted on the same directory and group: it resumes where its files end, so nothing
    // is written twice, and what it acknowledges now is added.
    let up = start(&data, &broker.address());
    let (status, answer) = up.post(report(1, "kafka.test").into_bytes(), "application/json");
    assert_eq!(status, 200, "{answer}");
    acknowledged.push(answer["report_uid"].as_str().unwrap().to_owned());
    acknowledged.sort();
    wait_for_reports(|sql| up.sql(sql), &acknowledged);
    up.stop();
}

#[test]
fn up_on_kafka_refuses_a_data_directory_with_an_embedded_log() {
    // No broker is needed: the refusal comes before any connection. The address is one
    // nobody listens on.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("bus")).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tlsrpt"))
        .args(["up", "--kafka", "127.0.0.1:9", "--data-dir"])
        .arg(&data)
        .args(["--http-listen", "127.0.0.1:0", "--smtp-listen", "off"])
        .args([
            "--query-listen",
            "127.0.0.1:0",
            "--flight-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("embedded log"), "{stderr}");
}
