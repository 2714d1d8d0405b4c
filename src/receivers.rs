//! The HTTP and SMTP receivers as `tlsrpt up` and `tlsrpt ingest` start them, over whichever
//! bus the command runs on (the embedded log, or Kafka).
//!
//! Binding is separate from serving so that a command binds every listener before it
//! accepts anything: a port in use is an error at once rather than half a service.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use tlsrpt_bus::Producer;
use tlsrpt_bus::dead_letter::DeadLetters;
use tlsrpt_ingest::dkim::DkimVerifier;
use tlsrpt_ingest::http::{HttpOptions, HttpReceiver};
use tlsrpt_ingest::metrics::Metrics;
use tlsrpt_ingest::smtp::{DkimPolicy, SmtpOptions, SmtpReceiver};
use tlsrpt_schemas::DecodeOptions;
use tlsrpt_serve::{ServeOptions, tls_acceptor};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::settings::{DkimMode, ReceiversResolved};

/// Binds `address`, naming the flag that chooses another when it is in use.
pub(crate) async fn bind(
    address: SocketAddr,
    what: &str,
    flag: &str,
) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address).await.with_context(|| {
        format!("cannot listen on {address} for {what}; is it in use? (choose another with {flag})")
    })
}

/// A future that resolves once `stop` turns true.
pub(crate) async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// The receivers' listeners, bound and not yet serving.
#[derive(Debug)]
pub(crate) struct Listeners {
    http: TcpListener,
    smtp: Option<TcpListener>,
}

/// Where the receivers listen (port 0 resolved).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Addresses {
    pub(crate) http: SocketAddr,
    pub(crate) smtp: Option<SocketAddr>,
}

/// Binds the HTTP listener and, unless it is off, the SMTP one.
pub(crate) async fn bind_all(settings: &ReceiversResolved) -> anyhow::Result<Listeners> {
    let http = bind(settings.http_listen, "reports over HTTP", "--http-listen").await?;
    let smtp = match settings.smtp_listen {
        Some(address) => Some(bind(address, "reports by mail", "--smtp-listen").await?),
        None => None,
    };
    Ok(Listeners { http, smtp })
}

/// Starts the receivers on `listeners` into `tasks`; each publishes to `producer`, keeps what
/// it refuses in `dead_letters`, and stops accepting once `stop` turns true (finishing the
/// requests in flight).
pub(crate) fn spawn<P: Producer + Clone>(
    producer: &P,
    dead_letters: &Arc<DeadLetters>,
    metrics: &Arc<Metrics>,
    settings: &ReceiversResolved,
    listeners: Listeners,
    stop: &watch::Receiver<bool>,
    tasks: &mut JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<Addresses> {
    let tls = match &settings.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key).map_err(|e| anyhow!(e))?),
        None => None,
    };
    let decode = DecodeOptions {
        max_decompressed_bytes: settings.max_decompressed_bytes,
    };
    let http = HttpReceiver::new(
        producer.clone(),
        Arc::clone(dead_letters),
        Arc::clone(metrics),
        HttpOptions {
            max_body_bytes: settings.max_body_bytes,
            decode,
            max_concurrent_requests: settings.max_concurrent_requests,
            body_timeout: settings.client_timeout,
            ..HttpOptions::default()
        },
    );
    let serve_options = ServeOptions {
        tls,
        header_timeout: settings.client_timeout,
        ..ServeOptions::default()
    };
    let addresses = Addresses {
        http: listeners.http.local_addr()?,
        smtp: match &listeners.smtp {
            Some(listener) => Some(listener.local_addr()?),
            None => None,
        },
    };
    {
        let stop = stopped(stop.clone());
        let listener = listeners.http;
        tasks.spawn(async move {
            http.serve(listener, serve_options, stop)
                .await
                .context("the HTTP receiver failed")
        });
    }
    if let Some(listener) = listeners.smtp {
        let smtp = SmtpReceiver::new(
            producer.clone(),
            Arc::clone(dead_letters),
            Arc::clone(metrics),
            DkimVerifier::system(Duration::from_secs(10)),
            SmtpOptions {
                hostname: settings.smtp_hostname.clone(),
                max_message_bytes: settings.max_message_bytes,
                recipients: settings.smtp_recipients.clone(),
                dkim: match settings.dkim {
                    DkimMode::Record => DkimPolicy::Record,
                    DkimMode::Enforce => DkimPolicy::Enforce,
                },
                command_timeout: settings.client_timeout.max(Duration::from_secs(30)),
                decode,
                ..SmtpOptions::default()
            },
        );
        let stop = stopped(stop.clone());
        tasks.spawn(async move {
            smtp.serve(listener, stop)
                .await
                .context("the SMTP receiver failed")
        });
    }
    Ok(addresses)
}
