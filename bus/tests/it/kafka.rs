//! The Kafka producer against a real Kafka-protocol broker: tansu, started by each test on a
//! free loopback port ([`tlsrpt_bus::test_broker`]). Without tansu these tests fail and say
//! how to get it: they never pass without a broker.

use std::time::{Duration, Instant};

use tlsrpt_bus::kafka::{KafkaProducer, KafkaProducerOptions};
use tlsrpt_bus::test_broker::{TestBroker, free_port, read_topic};
use tlsrpt_bus::{BusError, Message, Producer};

fn options(broker: &str, topic: &str) -> KafkaProducerOptions {
    let mut options = KafkaProducerOptions::new(broker);
    options.topic = topic.to_owned();
    options
}

fn message(i: usize) -> Message {
    Message {
        key: format!("example.com\u{1f}report-{i}").into_bytes(),
        value: format!("{{\"n\":{i}}}").into_bytes(),
        headers: vec![
            ("transport".into(), "https".into()),
            ("received_at".into(), "2026-11-24T00:00:00.000000Z".into()),
        ],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_message_is_where_the_broker_said() {
    let broker = TestBroker::start();
    let topic = "tlsrpt.reports";
    broker.create_topic(topic, 6);
    let producer = KafkaProducer::new(&options(&broker.address(), topic)).unwrap();

    let sends = (0..300).map(|i| {
        let producer = producer.clone();
        async move { producer.send(message(i)).await }
    });
    let delivered = futures::future::join_all(sends).await;
    let delivered: Vec<_> = delivered
        .into_iter()
        .map(|d| d.expect("the broker acknowledges"))
        .collect();
    // The same key again goes where its first copy went: duplicates meet in one partition.
    let again = producer.send(message(7)).await.unwrap();
    assert_eq!(again.partition, delivered[7].partition);
    let used: std::collections::BTreeSet<u32> = delivered.iter().map(|d| d.partition).collect();
    assert!(
        used.len() > 1,
        "300 keys spread over 6 partitions: {used:?}"
    );

    let read = read_topic(&broker.address(), topic, 6, 301);
    assert_eq!(
        read.len(),
        301,
        "every acknowledged message is on the topic"
    );
    for (i, at) in delivered.iter().enumerate() {
        let sent = message(i);
        let found = read
            .iter()
            .find(|r| r.partition == at.partition && r.offset == at.offset)
            .unwrap_or_else(|| panic!("message {i} is not at {at:?}"));
        assert_eq!(found.message, sent);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_broker_sends_fail_in_time_and_recover_when_it_comes() {
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let mut options = options(&address, "tlsrpt.reports");
    options.delivery_timeout = Duration::from_secs(2);
    let producer = KafkaProducer::new(&options).unwrap();

    // Nothing listens: the send fails within its delivery timeout (with some slack for a
    // loaded machine), as a transient error the receivers answer with 503 / 451.
    let started = Instant::now();
    let err = producer.send(message(1)).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, BusError::Storage(_)), "{err:?}");
    assert!(err.is_transient());
    assert!(err.to_string().contains("did not acknowledge"), "{err}");

    // The broker comes up on that address: the same producer delivers without a restart.
    let broker = TestBroker::start_on(port);
    broker.create_topic("tlsrpt.reports", 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    let delivered = loop {
        match producer.send(message(2)).await {
            Ok(delivered) => break delivered,
            Err(err) => assert!(Instant::now() < deadline, "still failing: {err}"),
        }
    };
    let read = read_topic(&address, "tlsrpt.reports", 1, 1);
    assert!(
        read.iter()
            .any(|r| r.offset == delivered.offset && r.message == message(2)),
        "{read:?}"
    );
}
