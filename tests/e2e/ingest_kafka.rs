//! `tlsrpt ingest` publishing to a real Kafka-protocol broker (tansu, one per test; see
//! `tlsrpt_bus::test_broker`): what the receivers accept is on the topic, acknowledged only
//! once the broker has it; while the broker is gone senders hear 503 and 451 in bounded time,
//! and acceptance comes back by itself with the broker.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use lettre::Transport as _;
use tlsrpt_bus::test_broker::{TestBroker, read_topic};
use tlsrpt_schemas::message::WireEnvelope;

use crate::kafka_support::{Ingest, TOPIC, envelope, mail_corpus, post_json_corpus};
use crate::support::{gzip, report};

/// The topic's messages, from the start, until `expected` are read (30 s at most), as
/// (`report_uid`, `transport`) headers.
fn topic_by_report(brokers: &str, partitions: u32, expected: usize) -> Vec<(String, String)> {
    read_topic(brokers, TOPIC, partitions, expected)
        .iter()
        .map(|r| {
            let envelope = WireEnvelope::of(&r.message.headers).unwrap();
            let field = |value: Option<Cow<'_, str>>| value.unwrap_or_default().into_owned();
            (field(envelope.report_uid), field(envelope.transport))
        })
        .collect()
}

#[test]
fn what_ingest_acknowledges_is_on_the_topic() {
    let broker = TestBroker::start();
    broker.create_topic(TOPIC, 6);
    let dir = tempfile::tempdir().unwrap();
    let ingest = Ingest::start(&dir.path().join("data"), &broker.address());

    let mut acknowledged: Vec<(String, String)> =
        post_json_corpus(|body, kind| ingest.post(body, kind))
            .into_iter()
            .map(|uid| (uid, "https".to_owned()))
            .collect();
    let mailed = mail_corpus(&ingest.smtp());
    assert!(mailed.len() >= 5);
    acknowledged.extend(mailed.into_iter().map(|uid| (uid, "smtp".to_owned())));

    // Refused input is answered and kept locally, and never reaches the topic.
    let (status, answer) = ingest.post(b"<html>not a report</html>".to_vec(), "text/html");
    assert_eq!(status, 415, "{answer}");
    let rejected = dir.path().join("data/rejected");
    assert!(
        std::fs::read_dir(&rejected).is_ok_and(|mut d| d.next().is_some()),
        "the refused body is kept in {}",
        rejected.display()
    );

    // A report larger than the broker takes (Kafka's 1 MB message.max.bytes by default) is
    // refused as too large, not answered "try again" for ever, and kept.
    let details: Vec<serde_json::Value> = (0..9000)
        .map(|i| {
            serde_json::json!({
                "result-type": "certificate-expired",
                "sending-mta-ip": format!("192.0.2.{}", i % 250),
                "receiving-mx-hostname": format!("mx{i}.big.example"),
                "failed-session-count": 1
            })
        })
        .collect();
    let mut big: serde_json::Value = serde_json::from_str(&report(9, "big.example")).unwrap();
    big["policies"][0]["failure-details"] = details.into();
    big["policies"][0]["summary"]["total-failure-session-count"] = 9000.into();
    let big = big.to_string();
    assert!(big.len() > 1_100_000, "{}", big.len());
    let kept_before = std::fs::read_dir(&rejected).unwrap().count();
    let (status, answer) = ingest.post(gzip(big.as_bytes()), "application/tlsrpt+gzip");
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["code"], "too_large_for_bus", "{answer}");
    assert!(std::fs::read_dir(&rejected).unwrap().count() > kept_before);

    let mut on_topic = topic_by_report(&broker.address(), 6, acknowledged.len() + 1);
    on_topic.sort();
    acknowledged.sort();
    assert_eq!(on_topic, acknowledged, "exactly the acknowledged reports");
    assert!(ingest.stop().success(), "ingest exits 0 on SIGTERM");
}

/// The outage is a broker that stops answering (SIGSTOP, as in a network partition or a
/// stalled broker) for longer than the delivery timeout, then comes back. Not a broker killed
/// and restarted, because tansu 0.6 cannot serve that case for a producer that outlives it:
/// with `memory://` storage the restarted broker has lost the producer's id and answers every
/// produce `UnknownProducerId` (librdkafka retries until the delivery timeout, for ever); with
/// `sqlite://` storage the data survives, but produces of the earlier producer fail with
/// "Unknown broker error" while a new producer works. Apache Kafka keeps producer state
/// across restarts, so this is the test broker's limit, not the product's.
#[test]
fn a_broker_outage_is_answered_503_and_451_then_heals() {
    let broker = TestBroker::start();
    broker.create_topic(TOPIC, 1);
    let dir = tempfile::tempdir().unwrap();
    let ingest = Ingest::start(&dir.path().join("data"), &broker.address());
    let (status, answer) = ingest.post(report(1, "example.net").into_bytes(), "application/json");
    assert_eq!(status, 200, "{answer}");
    let first_uid = answer["report_uid"].as_str().unwrap().to_owned();

    broker.pause();
    // HTTP: 503 with Retry-After within the delivery timeout (3 s) plus slack, not a hang.
    let started = Instant::now();
    let response = reqwest::blocking::Client::new()
        .post(ingest.reports_url())
        .header("content-type", "application/json")
        .body(report(2, "example.net"))
        .timeout(Duration::from_secs(30))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    // SMTP: 451, a temporary failure the sending MTA retries.
    let message = format!(
        "From: tlsrpt@sender.test\r\nTo: tlsrpt@example.net\r\nSubject: Report\r\n\
         MIME-Version: 1.0\r\nContent-Type: application/tlsrpt+json\r\n\r\n{}\r\n",
        report(3, "example.net")
    );
    let err = ingest
        .smtp()
        .send_raw(&envelope(), message.as_bytes())
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("451"), "{err}");

    // The broker answers again: acceptance resumes without restarting ingest (after the
    // stall the broker fences the old producer id; the producer replaces itself).
    broker.resume();
    let deadline = Instant::now() + Duration::from_secs(60);
    let uid = loop {
        let (status, answer) =
            ingest.post(report(4, "example.net").into_bytes(), "application/json");
        if status == 200 {
            break answer["report_uid"].as_str().unwrap().to_owned();
        }
        assert_eq!(status, 503, "{answer}");
        assert!(Instant::now() < deadline, "still 503 after 60 s: {answer}");
        std::thread::sleep(Duration::from_millis(500));
    };
    // Reports 1 and 4 were acknowledged; 2 and 3 were refused with "try again" (they may
    // still have landed: a sender's retry is then a duplicate, which the transformer drops).
    let on_topic = topic_by_report(&broker.address(), 1, 4);
    for acknowledged in [&first_uid, &uid] {
        assert!(
            on_topic.iter().any(|(u, _)| u == acknowledged),
            "{acknowledged} not in {on_topic:?}"
        );
    }
    assert!(ingest.stop().success());
}
