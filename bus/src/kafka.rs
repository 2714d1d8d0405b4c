//! The bus on Kafka: the receivers' [`Producer`] over librdkafka, and the transformer's
//! [`Consumer`](crate::Consumer), a consumer-group member ([`KafkaConsumer`]).
//!
//! What "acknowledged" means here is what it means on the embedded log: a message counts as
//! delivered only once every in-sync replica has it (`acks=all`), and the producer is
//! idempotent, so its own retries after a lost acknowledgement never write a message twice.
//! The key is the report's dedup key and chooses the partition with Kafka's usual hash
//! (murmur2, as Java clients use), so every copy of a report lands beside the first and
//! the transformer of that partition can drop it.
//!
//! While the broker is unreachable librdkafka keeps retrying; a message that is not
//! acknowledged within [`KafkaProducerOptions::delivery_timeout`] fails with
//! [`BusError::Storage`], which the receivers answer with 503 / 451 so that the sender
//! retries later. The producer reconnects by itself when the broker is back. One case needs
//! more: an idempotent producer whose in-flight messages timed out must bump its epoch, and
//! if the broker then fences it (`ProducerFenced`, seen here after a broker stalled for
//! longer than the delivery timeout) every later message of that instance fails the same way,
//! as after a librdkafka "fatal error". A send failing with either therefore replaces the
//! instance with a new one (new producer id), so that the receivers heal without a restart.
//!
//! librdkafka is built from the source rdkafka bundles (2.12): Debian's 2.0 fails the
//! ApiVersions handshake with the broker the tests use (tansu).

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

mod consumer;

pub use consumer::{KafkaConsumer, KafkaConsumerOptions};

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};

use crate::{BusError, Delivered, Message, Producer};

/// The topic reports go to unless configured otherwise.
pub const DEFAULT_TOPIC: &str = "tlsrpt.reports";

/// How the producer talks to the brokers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaProducerOptions {
    /// Bootstrap brokers, `host:port[,host:port...]`.
    pub brokers: String,
    pub topic: String,
    /// How long a message may wait for the brokers' acknowledgement, retries included,
    /// before the sender is told to try again later. Senders wait on the answer: keep it
    /// well under their HTTP and SMTP timeouts.
    pub delivery_timeout: Duration,
    /// How long the producer waits to fill a batch: a few ms of latency buys batches that
    /// make the broker's work per report small.
    pub linger: Duration,
    /// `lz4` or `zstd` (or any codec librdkafka knows).
    pub compression: String,
    /// Further librdkafka properties, applied last (for TLS and SASL settings, say).
    pub extra: Vec<(String, String)>,
}

impl KafkaProducerOptions {
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic: DEFAULT_TOPIC.to_owned(),
            delivery_timeout: Duration::from_secs(10),
            linger: Duration::from_millis(5),
            compression: "lz4".to_owned(),
            extra: Vec::new(),
        }
    }
}

/// A [`Producer`] that publishes to a Kafka topic. Cheap to clone: clones share one
/// librdkafka producer and its connections.
#[derive(Clone)]
pub struct KafkaProducer {
    /// Replaced after a fatal error (see the module documentation).
    producer: Arc<RwLock<FutureProducer>>,
    config: ClientConfig,
    topic: String,
    delivery_timeout: Duration,
}

impl std::fmt::Debug for KafkaProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaProducer")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaProducer {
    /// Creates the producer. Connecting happens in the background: an unreachable broker is
    /// not an error here but a [`BusError::Storage`] on the first sends.
    pub fn new(options: &KafkaProducerOptions) -> Result<Self, BusError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &options.brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("compression.type", &options.compression)
            .set("partitioner", "murmur2_random")
            .set("linger.ms", options.linger.as_millis().to_string())
            .set(
                "message.timeout.ms",
                options.delivery_timeout.as_millis().max(1).to_string(),
            )
            // Many reports per request: a batch of up to 10,000 messages or 4 MiB.
            .set("batch.num.messages", "10000")
            .set("batch.size", (4 << 20).to_string());
        for (key, value) in &options.extra {
            config.set(key, value);
        }
        let producer = create(&config)?;
        Ok(Self {
            producer: Arc::new(RwLock::new(producer)),
            config,
            topic: options.topic.clone(),
            delivery_timeout: options.delivery_timeout,
        })
    }

    fn current(&self) -> FutureProducer {
        self.producer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// After a failed send: if `failed` (the instance that sent) is in a fatal state, or the
    /// brokers no longer accept its producer id and epoch, and it is still the current one,
    /// put a new instance in its place.
    fn replace_if_broken(&self, failed: &FutureProducer, error: &KafkaError) {
        let out_of_step = matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
                    | RDKafkaErrorCode::UnknownProducerId
                    | RDKafkaErrorCode::OutOfOrderSequenceNumber
                    | RDKafkaErrorCode::InvalidProducerIdMapping
            )
        );
        let fatal = failed.client().fatal_error();
        if fatal.is_none() && !out_of_step {
            return;
        }
        let (code, reason) = fatal.unwrap_or_else(|| {
            let code = error
                .rdkafka_error_code()
                .unwrap_or(RDKafkaErrorCode::Unknown);
            (code, error.to_string())
        });
        let mut current = self.producer.write().unwrap_or_else(|e| e.into_inner());
        if !std::ptr::eq(current.client().native_ptr(), failed.client().native_ptr()) {
            return; // another send replaced it already
        }
        match create(&self.config) {
            Ok(fresh) => {
                tracing::warn!(%code, reason, "The Kafka producer failed for good; replaced it with a new one.");
                *current = fresh;
            }
            Err(err) => {
                tracing::error!(%err, "The Kafka producer failed for good and cannot be replaced.")
            }
        }
    }

    /// Waits until every message handed over is acknowledged or has failed, at most
    /// `timeout`. For an orderly shutdown.
    pub fn flush(&self, timeout: Duration) -> Result<(), BusError> {
        self.current()
            .flush(timeout)
            .map_err(|e| BusError::Storage(format!("the Kafka producer could not flush: {e}")))
    }

    async fn publish(&self, message: Message) -> Result<Delivered, BusError> {
        let mut headers = OwnedHeaders::new_with_capacity(message.headers.len());
        for (name, value) in &message.headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_bytes()),
            });
        }
        let record = FutureRecord::to(&self.topic)
            .key(&message.key)
            .payload(&message.value)
            .headers(headers);
        // A full local queue is answered at once ("try again"), not waited out: the sender's
        // retry is cheaper than a request held open.
        let producer = self.current();
        match producer.send(record, Duration::ZERO).await {
            Ok(delivery) => Ok(Delivered {
                partition: u32::try_from(delivery.partition).unwrap_or(0),
                offset: u64::try_from(delivery.offset).unwrap_or(0),
            }),
            Err((error, _message)) => {
                self.replace_if_broken(&producer, &error);
                Err(self.describe(&error, message.value.len()))
            }
        }
    }

    fn describe(&self, error: &KafkaError, bytes: usize) -> BusError {
        let code = error.rdkafka_error_code();
        if matches!(
            code,
            Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize)
        ) {
            return BusError::TooLarge {
                bytes,
                limit: "the Kafka message.max.bytes of the producer or the brokers".to_owned(),
            };
        }
        let message = match code {
            Some(RDKafkaErrorCode::MessageTimedOut) => format!(
                "the Kafka brokers did not acknowledge the report within {} s",
                self.delivery_timeout.as_secs_f64()
            ),
            Some(RDKafkaErrorCode::QueueFull) => {
                "the Kafka producer's queue is full (the brokers are slower than the receivers)"
                    .to_owned()
            }
            _ => format!("Kafka: {error}"),
        };
        BusError::Storage(message)
    }
}

fn create(config: &ClientConfig) -> Result<FutureProducer, BusError> {
    config
        .create()
        .map_err(|e| BusError::Storage(format!("cannot create the Kafka producer: {e}")))
}

impl Producer for KafkaProducer {
    fn send(&self, message: Message) -> impl Future<Output = Result<Delivered, BusError>> + Send {
        self.publish(message)
    }
}

/// The topic undecodable messages go to unless configured otherwise.
pub const DEFAULT_DEAD_LETTER_TOPIC: &str = "tlsrpt.reports.dlq";

/// Header names a dead-lettered message carries besides its own headers.
pub mod dead_letter_header {
    /// Why it could not be read, in words (`tlsrpt-dlq-reason`).
    pub const REASON: &str = "tlsrpt-dlq-reason";
    /// A stable code: `undecodable_message`, `unflattenable_report`.
    pub const CODE: &str = "tlsrpt-dlq-code";
    /// The JSON path of the problem, when there is one.
    pub const PATH: &str = "tlsrpt-dlq-path";
    /// Where it was read: `topic/partition/offset`.
    pub const SOURCE: &str = "tlsrpt-dlq-source";
}

/// The transformer's dead-letter sink on Kafka: a message that cannot become rows is
/// produced to the dead-letter topic as it was (key, value, headers) plus the reason in
/// headers ([`dead_letter_header`]), and its partition moves on.
#[derive(Debug)]
pub struct DeadLetterTopic {
    producer: KafkaProducer,
    source_topic: String,
    runtime: tokio::runtime::Handle,
}

/// How long a dead letter is retried while the brokers cannot take it, before the
/// transformer stops with an error (its partition cannot move until the letter is kept).
const DEAD_LETTER_PATIENCE: Duration = Duration::from_secs(300);

impl DeadLetterTopic {
    /// A sink producing to `options.topic`, for messages read from `source_topic`. The
    /// producer's futures run on `runtime`.
    pub fn new(
        options: &KafkaProducerOptions,
        source_topic: &str,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, BusError> {
        Ok(Self {
            producer: KafkaProducer::new(options)?,
            source_topic: source_topic.to_owned(),
            runtime,
        })
    }
}

impl crate::dead_letter::DeadLetterSink for DeadLetterTopic {
    fn keep_record(
        &self,
        record: &crate::Record,
        rejection: &crate::dead_letter::Rejection,
    ) -> Result<String, String> {
        let mut headers = record.message.headers.clone();
        headers.push((dead_letter_header::REASON.into(), rejection.message.clone()));
        headers.push((dead_letter_header::CODE.into(), rejection.code.clone()));
        if let Some(path) = &rejection.path {
            headers.push((dead_letter_header::PATH.into(), path.clone()));
        }
        headers.push((
            dead_letter_header::SOURCE.into(),
            format!(
                "{}/{}/{}",
                self.source_topic, record.partition, record.offset
            ),
        ));
        let letter = Message {
            key: record.message.key.clone(),
            value: record.message.value.clone(),
            headers,
        };
        let started = std::time::Instant::now();
        loop {
            match self.runtime.block_on(self.producer.send(letter.clone())) {
                Ok(at) => {
                    return Ok(format!(
                        "topic {} partition {} offset {}",
                        self.producer.topic, at.partition, at.offset
                    ));
                }
                Err(error) if error.is_transient() && started.elapsed() < DEAD_LETTER_PATIENCE => {
                    tracing::warn!(%error, "The dead-letter topic cannot take a message yet; retrying.");
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(error) => {
                    return Err(format!(
                        "cannot produce it to the dead-letter topic {}: {error}",
                        self.producer.topic
                    ));
                }
            }
        }
    }
}
