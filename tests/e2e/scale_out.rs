//! The Kafka deployment end to end: `tlsrpt ingest` into a real Kafka-protocol broker
//! (tansu; see `tlsrpt_bus::test_broker`), `tlsrpt transform` instances in one consumer
//! group over a 6-partition topic writing one shared store, and `tlsrpt query` answering SQL
//! over it. Transformers come, go, are killed at each step of a flush; a poison message goes
//! to the dead-letter topic. Every acknowledged report ends in the tables exactly once.
//!
//! The store is a local directory shared by the transformers, or an S3 bucket on a local
//! S3-compatible server (moto, see `tlsrpt_query::test_store`): the transformers then write
//! through `object_store`'s S3 client with conditional PUTs for their claims, and
//! `tlsrpt query` reads the same bucket.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use tlsrpt_bus::kafka::{KafkaProducer, KafkaProducerOptions, dead_letter_header};
use tlsrpt_bus::test_broker::{TestBroker, read_topic};
use tlsrpt_bus::{Message, Producer};
use tlsrpt_query::test_store::S3Server;

use crate::kafka_support::{
    DLQ_TOPIC, Ingest, Query, TOPIC, Transform, mail_corpus, post_json_corpus, wait_for_reports,
};
use crate::support::{Posters, assert_exactly_once, fixtures, report, wait_until};

fn broker() -> TestBroker {
    let broker = TestBroker::start();
    broker.create_topic(TOPIC, 6);
    broker.create_topic(DLQ_TOPIC, 1);
    broker
}

#[test]
fn transformers_in_a_group_write_what_ingest_acknowledged_through_rebalances() {
    let broker = broker();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("tables");
    let ingest = Ingest::start(&dir.path().join("ingest"), &broker.address());
    let first = Transform::start(&store, &broker.address(), "transform-1", &[]);
    let second = Transform::start(&store, &broker.address(), "transform-2", &[]);
    let query = Query::start(&store);
    wait_until(
        "the group to share the partitions",
        Duration::from_secs(60),
        || {
            let owned = |t: &Transform| t.counter("tlsrpt_transform_partitions_owned");
            owned(&first) == 3 && owned(&second) == 3
        },
    );

    // The corpus, over HTTP (gzip) and by mail.
    let mut acknowledged = post_json_corpus(|body, kind| ingest.post(body, kind));
    acknowledged.extend(mail_corpus(&ingest.smtp()));
    // A report sent twice is one report.
    let again = std::fs::read(&fixtures("json")[0]).unwrap();
    assert_eq!(ingest.post(again, "application/json").0, 200);
    acknowledged.sort();
    acknowledged.dedup();
    wait_for_reports(|sql| query.sql(sql), &acknowledged);
    let corpus = acknowledged.len() as u64;
    assert!(corpus >= 15, "{corpus}");
    // Both members wrote: the group shared the partitions.
    let written = |t: &Transform| t.counter("tlsrpt_transform_reports_written_total");
    assert!(written(&first) > 0 && written(&second) > 0);
    assert_eq!(written(&first) + written(&second), corpus);

    // While clients post, a third member joins, then the first leaves: the partitions move
    // twice, and every report acknowledged meanwhile is written once.
    let posters = Posters::start(ingest.reports_url(), 4, Duration::from_millis(2));
    wait_until("300 reports posted", Duration::from_secs(60), || {
        posters.acknowledged_so_far() >= 300
    });
    let third = Transform::start(&store, &broker.address(), "transform-3", &[]);
    wait_until("600 reports posted", Duration::from_secs(60), || {
        posters.acknowledged_so_far() >= 600
    });
    assert!(
        first.service.stop().success(),
        "transform exits 0 on SIGTERM"
    );
    wait_until("900 reports posted", Duration::from_secs(60), || {
        posters.acknowledged_so_far() >= 900
    });
    let posted = posters.finish();
    assert_exactly_once(|sql| query.sql(sql), &posted);
    let rows = query.sql("SELECT count(*) AS n, count(DISTINCT report_uid) AS u FROM reports");
    let expected = corpus + posted.len() as u64;
    assert_eq!(rows[0]["n"], expected, "{rows:?}");
    assert_eq!(rows[0]["u"], expected, "{rows:?}");

    for transform in [second, third] {
        assert!(transform.service.stop().success());
    }
    assert!(ingest.stop().success());
    assert!(query.service.stop().success());
}

#[test]
fn a_poison_message_goes_to_the_dead_letter_topic_and_its_partition_moves_on() {
    let broker = broker();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("tables");
    let transform = Transform::start(&store, &broker.address(), "transform", &[]);
    let query = Query::start(&store);

    // Produced straight onto the topic, past the receivers' checks: a message that is not a
    // report, followed on its partition by a report that is.
    let producer = KafkaProducer::new(&KafkaProducerOptions::new(broker.address())).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let key = b"poison.test\x1fpoison".to_vec();
    let poison = runtime
        .block_on(producer.send(Message {
            key: key.clone(),
            value: b"{\"this is\": \"not a report\"}".to_vec(),
            headers: vec![("transport".into(), "https".into())],
        }))
        .unwrap();
    let ingest = Ingest::start(&dir.path().join("ingest"), &broker.address());
    let mut acknowledged = Vec::new();
    for n in 0..30 {
        let (status, answer) =
            ingest.post(report(n, "poison.test").into_bytes(), "application/json");
        assert_eq!(status, 200, "{answer}");
        acknowledged.push(answer["report_uid"].as_str().unwrap().to_owned());
    }
    acknowledged.sort();
    let on_topic = read_topic(&broker.address(), TOPIC, 6, 31);
    assert!(
        on_topic
            .iter()
            .any(|r| r.partition == poison.partition && r.offset > poison.offset),
        "a report follows the poison on its partition"
    );

    // Every report is written, those behind the poison included...
    wait_for_reports(|sql| query.sql(sql), &acknowledged);
    // ...and the poison is on the dead-letter topic, as it was, with the reason.
    let letters = read_topic(&broker.address(), DLQ_TOPIC, 1, 1);
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0].message;
    assert_eq!(letter.key, key);
    assert_eq!(letter.value, b"{\"this is\": \"not a report\"}");
    assert_eq!(letter.header("transport"), Some("https"));
    assert_eq!(
        letter.header(dead_letter_header::SOURCE),
        Some(format!("{TOPIC}/{}/{}", poison.partition, poison.offset).as_str())
    );
    assert_eq!(
        letter.header(dead_letter_header::CODE),
        Some("undecodable_message")
    );
    let reason = letter
        .header(dead_letter_header::REASON)
        .unwrap_or_default();
    assert!(
        reason.contains("organization-name") || reason.contains("missing"),
        "{reason}"
    );
    assert_eq!(transform.counter("tlsrpt_transform_dead_lettered_total"), 1);
}

/// Where a test's transformers write: a directory, or a bucket on a local S3 server.
enum Store {
    Local(std::path::PathBuf),
    S3(S3Server),
}

impl Store {
    fn s3() -> Store {
        Store::S3(S3Server::start())
    }

    fn url(&self) -> String {
        match self {
            Store::Local(path) => path.to_str().unwrap().to_owned(),
            Store::S3(_) => "s3://tlsrpt/tables".to_owned(),
        }
    }

    /// The environment a process needs for the store (and `extra`).
    fn env(&self, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        let mut env = match self {
            Store::Local(_) => Vec::new(),
            Store::S3(server) => server.env(),
        };
        env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        env
    }

    fn transform(
        &self,
        logs: &Path,
        brokers: &str,
        name: &str,
        extra: &[(&'static str, &str)],
    ) -> Transform {
        let env = self.env(extra);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Transform::start_at(
            &self.url(),
            &logs.join(format!("{name}.log")),
            brokers,
            &env,
        )
    }

    fn query(&self, logs: &Path) -> Query {
        let env = self.env(&[]);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Query::start_at(&self.url(), &logs.join("query.log"), &env)
    }
}

/// A transformer aborted at `point` of its first flush (as if killed there), with clients
/// posting; another member of the group takes its partitions over once its session times
/// out. Every acknowledged report is in the tables once.
fn abort_at(point: &str) {
    let dir = tempfile::tempdir().unwrap();
    abort_at_in(point, &Store::Local(dir.path().join("tables")), dir.path());
}

fn abort_at_in(point: &str, store: &Store, logs: &Path) {
    let broker = broker();
    let ingest = Ingest::start(&logs.join("ingest"), &broker.address());
    let posters = Posters::start(ingest.reports_url(), 2, Duration::from_millis(5));
    let mut crashing = store.transform(
        logs,
        &broker.address(),
        "crashing",
        &[("TLSRPT_TEST_CRASH_AT", point)],
    );
    let status = crashing.service.wait(Duration::from_secs(60));
    assert!(
        !status.success(),
        "the transformer aborted at {point}: {status}"
    );
    let survivor = store.transform(logs, &broker.address(), "survivor", &[]);
    wait_until("200 reports posted", Duration::from_secs(60), || {
        posters.acknowledged_so_far() >= 200
    });
    let posted: BTreeSet<String> = posters.finish();
    let query = store.query(logs);
    assert_exactly_once(|sql| query.sql(sql), &posted);
    let rows = query.sql("SELECT count(*) AS n FROM reports");
    assert_eq!(rows[0]["n"], posted.len() as u64, "{rows:?}");
    assert!(survivor.service.stop().success());
}

#[test]
fn transformers_writing_to_s3_keep_exactly_once_through_a_rebalance() {
    let broker = broker();
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path();
    let store = Store::s3();
    let ingest = Ingest::start(&logs.join("ingest"), &broker.address());
    let first = store.transform(logs, &broker.address(), "transform-1", &[]);
    let second = store.transform(logs, &broker.address(), "transform-2", &[]);
    let query = store.query(logs);

    let mut corpus = post_json_corpus(|body, kind| ingest.post(body, kind));
    corpus.sort();
    corpus.dedup();
    wait_for_reports(|sql| query.sql(sql), &corpus);

    // While clients post, the first member leaves: its partitions move to the second.
    let posters = Posters::start(ingest.reports_url(), 4, Duration::from_millis(2));
    wait_until("300 reports posted", Duration::from_secs(60), || {
        posters.acknowledged_so_far() >= 300
    });
    assert!(
        first.service.stop().success(),
        "transform exits 0 on SIGTERM"
    );
    wait_until("600 reports posted", Duration::from_secs(60), || {
        posters.acknowledged_so_far() >= 600
    });
    let posted = posters.finish();
    assert_exactly_once(|sql| query.sql(sql), &posted);
    let rows = query.sql("SELECT count(*) AS n, count(DISTINCT report_uid) AS u FROM reports");
    let expected = (corpus.len() + posted.len()) as u64;
    assert_eq!(rows[0]["n"], expected, "{rows:?}");
    assert_eq!(rows[0]["u"], expected, "{rows:?}");
    let failures = query.sql("SELECT count(*) AS n FROM failures");
    assert!(failures[0]["n"].as_u64().unwrap() > 0, "{failures:?}");
    assert!(second.service.stop().success());
    assert!(ingest.stop().success());
}

#[test]
fn a_transformer_killed_while_copying_into_an_s3_store_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    abort_at_in("flush-moving", &Store::s3(), dir.path());
}

#[test]
fn a_transformer_killed_after_staging_before_the_claim_loses_nothing() {
    abort_at("flush-staged");
}

#[test]
fn a_transformer_killed_while_moving_files_into_place_loses_nothing() {
    abort_at("flush-moving");
}

#[test]
fn a_transformer_killed_after_its_files_before_its_commit_writes_nothing_twice() {
    abort_at("flush-published");
}

#[test]
fn a_transformer_killed_mid_batch_loses_nothing() {
    let broker = broker();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("tables");
    let ingest = Ingest::start(&dir.path().join("ingest"), &broker.address());
    let victim = Transform::start(&store, &broker.address(), "victim", &[]);
    let survivor = Transform::start(&store, &broker.address(), "survivor", &[]);
    let posters = Posters::start(ingest.reports_url(), 4, Duration::ZERO);
    wait_until("300 reports posted", Duration::from_secs(60), || {
        posters.acknowledged_so_far() >= 300
    });
    victim.service.kill();
    wait_until("600 reports posted", Duration::from_secs(60), || {
        posters.acknowledged_so_far() >= 600
    });
    let posted = posters.finish();
    let query = Query::start(&store);
    assert_exactly_once(|sql| query.sql(sql), &posted);
    let rows = query.sql("SELECT count(*) AS n FROM reports");
    assert_eq!(rows[0]["n"], posted.len() as u64, "{rows:?}");
    assert!(survivor.service.stop().success());
}
