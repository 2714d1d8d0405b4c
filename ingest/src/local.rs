//! The local append socket: how a second process writes to a bus that `tlsrpt up` owns.
//!
//! The embedded log admits one process (two writers would corrupt it), yet an operator
//! must be able to run `tlsrpt import` or `tlsrpt rejected replay` while `up` is running.
//! So the owner listens on a Unix socket in the data directory (`bus.sock`, mode 0600: the
//! directory's owner only) and appends what arrives there; the second process becomes a
//! [`Producer`] like any other and hears "durable" only when the owner's log says so.
//!
//! The protocol is JSON lines, pipelined: each request line is one message
//! `{"key": "...", "value": "...", "headers": [["name", "value"], ...]}`; each answer line,
//! in request order, is `{"partition": P, "offset": O}` or `{"error": "...", "transient": B}`.
//! A client keeps many requests in flight on one connection, so the owner's group commit
//! covers them together.

use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::stream::{FuturesOrdered, StreamExt};
use serde::{Deserialize, Serialize};
use tlsrpt_bus::{BusError, Delivered, Message, Producer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// The socket's name inside the data directory.
pub const SOCKET_NAME: &str = "bus.sock";

/// Requests one connection may have in flight before the server stops reading more.
const PIPELINE: usize = 1024;

#[derive(Serialize, Deserialize)]
struct Request {
    key: String,
    value: String,
    headers: Vec<(String, String)>,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Answer {
    Delivered { partition: u32, offset: u64 },
    Refused { error: String, transient: bool },
}

fn request_line(message: Message) -> Result<String, BusError> {
    let text = |bytes: Vec<u8>, what: &str| {
        String::from_utf8(bytes).map_err(|_| BusError::Storage(format!("the {what} is not UTF-8")))
    };
    let request = Request {
        key: text(message.key, "key")?,
        value: text(message.value, "value")?,
        headers: message.headers,
    };
    let mut line = serde_json::to_string(&request).expect("a request serialises");
    line.push('\n');
    Ok(line)
}

/// Serves the socket at `path` for `producer` until `shutdown` resolves. A stale socket
/// file is replaced: the caller holds the bus, so no other server can be using it.
pub async fn serve<P: Producer>(
    path: &Path,
    producer: Arc<P>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    let mut shutdown = std::pin::pin!(shutdown);
    let mut connections = tokio::task::JoinSet::new();
    let (stopping, stop) = tokio::sync::watch::channel(false);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                connections.spawn(connection(stream, Arc::clone(&producer), stop.clone()));
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = std::fs::remove_file(path);
    // Requests already read are answered; then the connections close.
    let _ = stopping.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

async fn connection<P: Producer>(
    stream: UnixStream,
    producer: Arc<P>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut pending = FuturesOrdered::new();
    let mut reading = true;
    loop {
        tokio::select! {
            _ = stop.changed(), if reading => reading = false,
            line = lines.next_line(), if reading && pending.len() < PIPELINE => {
                match line {
                    Ok(Some(line)) => {
                        let producer = Arc::clone(&producer);
                        pending.push_back(async move { answer(&*producer, &line).await });
                    }
                    _ => reading = false,
                }
            }
            Some(answer) = pending.next(), if !pending.is_empty() => {
                let mut line = serde_json::to_string(&answer).expect("an answer serialises");
                line.push('\n');
                if write.write_all(line.as_bytes()).await.is_err() {
                    return;
                }
            }
            else => return,
        }
    }
}

async fn answer<P: Producer>(producer: &P, line: &str) -> Answer {
    let request: Request = match serde_json::from_str(line) {
        Ok(request) => request,
        Err(err) => {
            return Answer::Refused {
                error: format!("not a request: {err}"),
                transient: false,
            };
        }
    };
    let message = Message {
        key: request.key.into_bytes(),
        value: request.value.into_bytes(),
        headers: request.headers,
    };
    match producer.send(message).await {
        Ok(delivered) => Answer::Delivered {
            partition: delivered.partition,
            offset: delivered.offset,
        },
        Err(err) => Answer::Refused {
            transient: err.is_transient(),
            error: err.to_string(),
        },
    }
}

type Waiter = oneshot::Sender<Result<Delivered, BusError>>;

/// A [`Producer`] that appends through the socket of the process owning the bus. Requests
/// from any number of tasks share one pipelined connection.
#[derive(Debug, Clone)]
pub struct LocalProducer {
    requests: mpsc::Sender<(String, Waiter)>,
    path: PathBuf,
}

impl LocalProducer {
    /// Connects to the socket at `path`.
    pub async fn connect(path: &Path) -> std::io::Result<Self> {
        let stream = UnixStream::connect(path).await?;
        let (read, mut write) = stream.into_split();
        let (requests, mut incoming) = mpsc::channel::<(String, Waiter)>(PIPELINE);
        let waiting: Arc<Mutex<VecDeque<Waiter>>> = Arc::default();
        let waiting_reader = Arc::clone(&waiting);
        let closed = |waiting: &Mutex<VecDeque<Waiter>>| {
            for waiter in waiting.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
                let _ = waiter.send(Err(BusError::Closed));
            }
        };
        tokio::spawn(async move {
            while let Some((line, waiter)) = incoming.recv().await {
                // Queue the waiter before writing, so the answer always finds it.
                waiting
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_back(waiter);
                if write.write_all(line.as_bytes()).await.is_err() {
                    break;
                }
            }
            closed(&waiting);
        });
        tokio::spawn(async move {
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Some(waiter) = waiting_reader
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .pop_front()
                else {
                    break;
                };
                let result = match serde_json::from_str::<Answer>(&line) {
                    Ok(Answer::Delivered { partition, offset }) => {
                        Ok(Delivered { partition, offset })
                    }
                    Ok(Answer::Refused { error, transient }) => Err(if transient {
                        BusError::Storage(error)
                    } else {
                        BusError::Storage(format!("refused by the bus owner: {error}"))
                    }),
                    Err(err) => Err(BusError::Storage(format!("unreadable answer: {err}"))),
                };
                let _ = waiter.send(result);
            }
            closed(&waiting_reader);
        });
        Ok(Self {
            requests,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Producer for LocalProducer {
    fn send(&self, message: Message) -> impl Future<Output = Result<Delivered, BusError>> + Send {
        let requests = self.requests.clone();
        async move {
            let line = request_line(message)?;
            let (waiter, answer) = oneshot::channel();
            requests
                .send((line, waiter))
                .await
                .map_err(|_| BusError::Closed)?;
            answer.await.map_err(|_| BusError::Closed)?
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tlsrpt_bus::embedded::{EmbeddedLog, EmbeddedOptions};

    #[tokio::test]
    async fn a_second_process_appends_through_the_owner() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(&dir.path().join("bus"), EmbeddedOptions::default()).unwrap();
        let socket = dir.path().join(SOCKET_NAME);
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn({
            let socket = socket.clone();
            let log = Arc::new(log.clone());
            async move {
                serve(&socket, log, async {
                    let _ = stopped.await;
                })
                .await
            }
        });
        // The socket appears once the server is bound.
        let client = loop {
            match LocalProducer::connect(&socket).await {
                Ok(client) => break client,
                Err(_) => tokio::task::yield_now().await,
            }
        };
        let sends = (0..300u32).map(|i| {
            let client = client.clone();
            async move {
                client
                    .send(Message {
                        key: format!("key-{i}").into_bytes(),
                        value: format!("{{\"n\":{i}}}").into_bytes(),
                        headers: vec![("transport".into(), "import".into())],
                    })
                    .await
            }
        });
        let delivered: Vec<Delivered> = futures::future::try_join_all(sends).await.unwrap();
        assert_eq!(delivered.len(), 300);
        let total: u64 = log.end_offsets().iter().sum();
        assert_eq!(total, 300);
        // Every answer names where its own message is.
        for (i, at) in delivered.iter().enumerate() {
            let records = log.fetch(at.partition, at.offset, 1).unwrap();
            assert_eq!(records[0].message.key, format!("key-{i}").into_bytes());
        }
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
        assert!(!socket.exists());
        // With the owner gone, the client hears that the bus is closed.
        let err = client
            .send(Message {
                key: b"k".to_vec(),
                value: b"{}".to_vec(),
                headers: vec![],
            })
            .await
            .unwrap_err();
        assert_eq!(err, BusError::Closed);
    }
}
