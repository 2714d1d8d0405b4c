//! The Kafka clients as the commands build them from their settings, in one place:
//! `tlsrpt ingest`, `tlsrpt up --kafka` and `tlsrpt import --kafka` publish with
//! [`producer`]; `tlsrpt transform` and `tlsrpt up --kafka` consume with [`consumer`] and
//! keep what cannot become rows with [`dead_letter_topic`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tlsrpt_bus::kafka::{
    DeadLetterTopic, KafkaConsumer, KafkaConsumerOptions, KafkaProducer, KafkaProducerOptions,
};

/// How long a dead letter may wait for the brokers' acknowledgement: nobody waits on the
/// answer but the transformer's partition, and the sink retries transient failures besides.
const DEAD_LETTER_DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// A producer to `topic` on `brokers` (`acks=all`, idempotent): a report counts as delivered
/// once the brokers acknowledged it, or fails after `delivery_timeout`.
pub(crate) fn producer(
    brokers: &str,
    topic: &str,
    delivery_timeout: Duration,
) -> anyhow::Result<KafkaProducer> {
    Ok(KafkaProducer::new(&KafkaProducerOptions {
        topic: topic.to_owned(),
        delivery_timeout,
        ..KafkaProducerOptions::new(brokers)
    })?)
}

/// A member of consumer group `group` reading `topic` on `brokers`. Joining blocks on the
/// network, so it runs on a blocking thread.
pub(crate) async fn consumer(
    brokers: &str,
    topic: &str,
    group: &str,
    session_timeout: Duration,
) -> anyhow::Result<KafkaConsumer> {
    let mut options = KafkaConsumerOptions::new(brokers, group);
    options.topic = topic.to_owned();
    options.session_timeout = session_timeout;
    tokio::task::spawn_blocking(move || KafkaConsumer::new(&options))
        .await?
        .context("cannot join the consumer group")
}

/// The transformer's dead-letter sink: messages read from `source_topic` that cannot become
/// rows go to `dlq_topic` with the reason in headers. Call it inside the runtime: the sink
/// runs its producer's futures on the current one.
pub(crate) fn dead_letter_topic(
    brokers: &str,
    dlq_topic: &str,
    source_topic: &str,
) -> anyhow::Result<Arc<DeadLetterTopic>> {
    let mut options = KafkaProducerOptions::new(brokers);
    options.topic = dlq_topic.to_owned();
    options.delivery_timeout = DEAD_LETTER_DELIVERY_TIMEOUT;
    Ok(Arc::new(
        DeadLetterTopic::new(&options, source_topic, tokio::runtime::Handle::current())
            .context("cannot create the dead-letter producer")?,
    ))
}
