//! A Kafka-protocol broker of one's own on a loopback port, for the tests and benches: tansu
//! (crates.io, Apache-2.0), since Apache Kafka's distribution cannot be fetched on the
//! machines this project is built on. In-memory storage: a broker is started per test, so
//! tests never see each other's topics.
//!
//! `scripts/kafka-broker.sh install` puts tansu in `~/.cargo/bin` (the test command does it
//! on a fresh machine). When it cannot be found, [`TestBroker::start`] panics and says how to
//! get it: a test that needs a broker must fail without one, never pass.
//!
//! Where tansu 0.6.0 differs from Kafka, seen here: a fetch from an offset *inside* a record
//! batch returns the batches after it, not the one holding the offset (100 messages produced
//! in one batch, offset 50 committed: a new member reads nothing; from 0 it reads all 100;
//! the bus test `tansu_skips_the_rest_of_a_record_batch_fetched_from_its_middle`).
//! A consumer resuming mid-batch, as a member given a partition in a rebalance does (it
//! starts at the last flush's end), loses the rest of that batch. Tests that resume at a
//! committed offset produce one message per batch (each send awaited before the next), so
//! every offset starts a batch; the transform bench lets its group settle before it fills
//! the topic. The Kafka consumer logs such a gap (`kafka::consumer`) instead of skipping it
//! silently.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message as _};
use rdkafka::{Offset, TopicPartitionList};

use crate::{Message, Record};

/// A tansu broker, killed when dropped.
#[derive(Debug)]
pub struct TestBroker {
    child: Option<Child>,
    port: u16,
}

/// The tansu binary: `TLSRPT_TANSU`, else `tansu` on the `PATH`, else `~/.cargo/bin/tansu`.
/// Panics with what to do when there is none.
pub fn tansu_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TLSRPT_TANSU") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "TLSRPT_TANSU={} is not a file",
            path.display()
        );
        return path;
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("tansu"))
        .find(|p| p.is_file());
    let in_cargo = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/tansu"));
    on_path
        .or(in_cargo.filter(|p| p.is_file()))
        .unwrap_or_else(|| {
            panic!(
                "the Kafka tests need the tansu broker (a Kafka-protocol broker) and found none: \
                 run `scripts/kafka-broker.sh install` (about 20 minutes to compile) or set \
                 TLSRPT_TANSU to its path"
            )
        })
}

/// A loopback port nobody listens on (at the time of asking).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl TestBroker {
    /// Starts a broker on a free port.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts a broker on `port` and waits until it listens (at most 30 s).
    pub fn start_on(port: u16) -> Self {
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu_binary())
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu starts");
        let broker = Self {
            child: Some(child),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {port} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        broker
    }

    /// `127.0.0.1:PORT`, as `bootstrap.servers` wants it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates `name` with `partitions` partitions.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let status = Command::new(tansu_binary())
            .args(["topic", "create", "--broker"])
            .arg(format!("tcp://127.0.0.1:{}", self.port))
            .args(["--partitions", &partitions.to_string(), name])
            .stdout(Stdio::null())
            .status()
            .expect("tansu topic create runs");
        assert!(status.success(), "tansu topic create {name}: {status}");
    }

    /// Stops the broker's process without killing it (SIGSTOP): its connections stay open and
    /// go silent, as in a network partition or a stalled broker. [`resume`](Self::resume)
    /// lets it go on with everything it held.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused broker go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status()
                .expect("kill runs");
            assert!(status.success(), "kill {signal} the broker: {status}");
        }
    }

    /// Kills the broker now (an outage); everything it held is gone with it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads `topic`'s partitions `0..partitions` from the start until `expected` messages are
/// read or 30 s have passed, as the bus's own [`Record`]s (headers as UTF-8 text).
pub fn read_topic(brokers: &str, topic: &str, partitions: u32, expected: usize) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "tlsrpt-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a Kafka consumer");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition as i32, Offset::Beginning)
            .expect("a partition to read");
    }
    consumer.assign(&assignment).expect("the assignment");
    let mut read = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while read.len() < expected && Instant::now() < deadline {
        let Some(next) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = next.expect("a readable message");
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        let value = String::from_utf8_lossy(h.value.unwrap_or_default());
                        (h.key.to_owned(), value.into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        read.push(Record {
            partition: m.partition() as u32,
            offset: m.offset() as u64,
            message: Message {
                key: m.key().unwrap_or_default().to_vec(),
                value: m.payload().unwrap_or_default().to_vec(),
                headers,
            },
        });
    }
    read
}
