//! # tlsrpt-serve: serving HTTP for every listener of tlsrpt
//!
//! Serving an axum router on a listener: plain HTTP or TLS (rustls), a cap on open
//! connections, a deadline for request headers, and a graceful stop. The report receiver
//! (`tlsrpt-ingest`) and the SQL API (`tlsrpt-query`) both serve HTTP this way, and neither
//! may depend on the other, hence a crate of its own.
//!
//! `axum::serve` has neither TLS nor a header deadline, and a receiver on the open internet
//! needs both: a client that opens a connection and sends nothing must not hold a slot
//! forever. So connections are accepted here and handed to hyper one by one.
//!
//! [`metrics`] holds what the services' `GET /metrics` pages write alike (a histogram of
//! durations in the Prometheus text format).

use std::future::Future;
use std::io::BufReader;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
pub use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tower::ServiceExt;

pub mod metrics;

/// How connections are served.
#[derive(Clone)]
pub struct ServeOptions {
    /// TLS, when a certificate and key were given; plain HTTP otherwise (behind a proxy).
    pub tls: Option<TlsAcceptor>,
    /// The most connections open at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers (and the TLS handshake).
    pub header_timeout: Duration,
    /// How long to wait for requests in flight at shutdown.
    pub drain_timeout: Duration,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("tls", &self.tls.is_some())
            .field("max_connections", &self.max_connections)
            .field("header_timeout", &self.header_timeout)
            .field("drain_timeout", &self.drain_timeout)
            .finish()
    }
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            tls: None,
            max_connections: 4096,
            header_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// Reads a PEM certificate chain and private key into a TLS acceptor (HTTP/1.1 over TLS).
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let open = |path: &Path| {
        std::fs::File::open(path)
            .map(BufReader::new)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let certs: Vec<_> = rustls_pemfile::certs(&mut open(cert)?)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a PEM certificate chain: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate found", cert.display()));
    }
    let key = rustls_pemfile::private_key(&mut open(key)?)
        .map_err(|e| format!("{}: not a PEM private key: {e}", key.display()))?
        .ok_or_else(|| format!("{}: no private key found", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the certificate and key do not fit together: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `router` until `shutdown` resolves, then lets requests in flight finish (for at
/// most `drain_timeout`). Handlers can read the peer address with `ConnectInfo<SocketAddr>`.
pub async fn serve(
    router: Router,
    listener: TcpListener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Wait for a free slot first, so a flood of connections queues in the kernel
        // rather than in our memory.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("never closed"),
            () = &mut shutdown => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!("accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = router.clone().map_request(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(ConnectInfo::<SocketAddr>(remote));
                request
            },
        );
        let service = TowerToHyperService::new(service);
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(options.header_timeout)
            .keep_alive(true);
        match &options.tls {
            None => {
                let connection = http.serve_connection(TokioIo::new(stream), service);
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    let _ = connection.await;
                    drop(slot);
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                let header_timeout = options.header_timeout;
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(header_timeout, acceptor.accept(stream)).await;
                    if let Ok(Ok(stream)) = handshake {
                        let connection = http.serve_connection(TokioIo::new(stream), service);
                        let _ = watcher.watch(connection).await;
                    }
                    drop(slot);
                });
            }
        }
    }
    drop(listener);
    // Stop reading new requests on kept-alive connections; finish those in flight.
    let _ = tokio::time::timeout(options.drain_timeout, graceful.shutdown()).await;
    Ok(())
}
