//! The data directory: where each part of the embedded deployment keeps its files, and how
//! a command gets write access to the bus (owning it, or through the process that does; or,
//! with `--kafka`, a Kafka topic instead).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tlsrpt_bus::dead_letter::DeadLetters;
use tlsrpt_bus::embedded::{EmbeddedLog, EmbeddedOptions};
use tlsrpt_bus::kafka::KafkaProducer;
use tlsrpt_bus::{BusError, Delivered, Message, Producer};
use tlsrpt_ingest::local::{LocalProducer, SOCKET_NAME};

/// The default, relative to the working directory.
pub(crate) const DEFAULT: &str = "tlsrpt-data";

#[derive(Debug, Clone)]
pub(crate) struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub(crate) fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// The data directory for a command that reads one: an error saying how to make one
    /// when there is none.
    pub(crate) fn existing(root: &Path) -> anyhow::Result<Self> {
        if !root.is_dir() {
            anyhow::bail!(
                "there is no data directory at {}; start `tlsrpt up` or run `tlsrpt import` \
                 first, or give --data-dir",
                root.display()
            );
        }
        Ok(Self::new(root))
    }

    /// The embedded log (redb).
    pub(crate) fn bus(&self) -> PathBuf {
        self.root.join("bus")
    }

    /// The Parquet tables.
    pub(crate) fn tables(&self) -> PathBuf {
        self.root.join("tables")
    }

    /// Refused inputs.
    pub(crate) fn rejected(&self) -> PathBuf {
        self.root.join("rejected")
    }

    /// The owner's append socket.
    pub(crate) fn socket(&self) -> PathBuf {
        self.root.join(SOCKET_NAME)
    }

    pub(crate) fn dead_letters(&self) -> anyhow::Result<Arc<DeadLetters>> {
        let dir = self.rejected();
        Ok(Arc::new(DeadLetters::open(&dir).with_context(|| {
            format!("cannot open the dead-letter area {}", dir.display())
        })?))
    }

    /// Opens the bus for this process alone; fails with [`BusError::Locked`] when another
    /// process owns it.
    pub(crate) fn own_bus(&self, partitions: Option<u32>) -> Result<EmbeddedLog, BusError> {
        EmbeddedLog::open(
            &self.bus(),
            EmbeddedOptions {
                partitions,
                ..EmbeddedOptions::default()
            },
        )
    }

    /// Refuses to start an embedded log beside tables written without one (by `tlsrpt up
    /// --kafka`, or a `tlsrpt transform --store` pointed here): file names record bus
    /// offsets, not which bus, so the transformer would resume the new log at the tables'
    /// offsets and skip its first reports.
    pub(crate) fn check_tables_match_embedded_log(&self) -> anyhow::Result<()> {
        let reports = self.tables().join(tlsrpt_schemas::layout::TABLES[0]);
        let has_tables = std::fs::read_dir(&reports).is_ok_and(|mut dates| dates.next().is_some());
        if has_tables && !self.bus().exists() {
            anyhow::bail!(
                "{} holds tables written from another bus (Kafka?) and no embedded log: a new                  log would reuse their offsets and its reports would be skipped. Use --kafka                  with that deployment, or another --data-dir",
                self.root.display()
            );
        }
        Ok(())
    }

    /// Write access to the bus: this process's own when free, else through the socket of
    /// the `tlsrpt up` that owns it.
    pub(crate) async fn bus_writer(&self) -> anyhow::Result<BusWriter> {
        std::fs::create_dir_all(&self.root)
            .with_context(|| format!("cannot create {}", self.root.display()))?;
        self.check_tables_match_embedded_log()?;
        match self.own_bus(None) {
            Ok(log) => Ok(BusWriter::Owned(log)),
            Err(BusError::Locked { .. }) => {
                let socket = self.socket();
                // An `up` holds the log a moment before its socket answers: wait for it
                // (a CI run caught an import in that window).
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                let mut connected = LocalProducer::connect(&socket).await;
                while connected.is_err() && std::time::Instant::now() < deadline {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    connected = LocalProducer::connect(&socket).await;
                }
                let producer = connected.with_context(|| {
                    format!(
                        "the bus in {} is held by another process, and its socket {} does not answer; \
                         is a `tlsrpt up` still starting, or stuck?",
                        self.root.display(),
                        socket.display()
                    )
                })?;
                Ok(BusWriter::Shared(producer))
            }
            Err(err) => Err(err).with_context(|| format!("cannot open {}", self.bus().display())),
        }
    }
}

/// Where a command's messages go.
#[derive(Debug, Clone)]
pub(crate) enum BusWriter {
    /// This process owns the log (no `tlsrpt up` is running on the directory).
    Owned(EmbeddedLog),
    /// A running `tlsrpt up` owns it; messages go through its socket.
    Shared(LocalProducer),
    /// A Kafka topic (`--kafka`): the data directory's log is not used at all, and the
    /// deployment's transformers write the tables.
    Kafka(KafkaProducer),
}

impl BusWriter {
    /// Sends `messages` and resolves once all are durable: in one transaction when this
    /// process owns the log, each in flight at once through `up`'s socket or to Kafka
    /// otherwise (the Kafka producer batches what is in flight into few requests).
    pub(crate) async fn send_all(
        &self,
        messages: Vec<Message>,
    ) -> Result<Vec<Delivered>, BusError> {
        match self {
            BusWriter::Owned(log) => log.send_all(messages).await,
            BusWriter::Shared(producer) => {
                futures::future::try_join_all(messages.into_iter().map(|m| producer.send(m))).await
            }
            BusWriter::Kafka(producer) => {
                futures::future::try_join_all(messages.into_iter().map(|m| producer.send(m))).await
            }
        }
    }
}

impl Producer for BusWriter {
    async fn send(&self, message: Message) -> Result<Delivered, BusError> {
        match self {
            BusWriter::Owned(log) => log.send(message).await,
            BusWriter::Shared(producer) => producer.send(message).await,
            BusWriter::Kafka(producer) => producer.send(message).await,
        }
    }
}
