//! The HTTP receiver: `POST /v1/reports` (RFC 8460 §5.3).
//!
//! A sender gets 200 only once the report is durable on the bus. Everything else is an answer
//! a sender's operator can act on, with a JSON body `{"error", "code", "path"}`:
//! - 400: a report, but malformed (broken JSON, a count that is not a count, damaged gzip);
//! - 413: over the body cap (before decompression) or the decompressed cap (a gzip bomb stops
//!   at the cap);
//! - 415: not a report at all (HTML, a PDF, an empty body);
//! - 503 with `Retry-After`: the bus cannot take it now, or the refused bytes could not be
//!   kept; the sender retries, as RFC 8460 expects.
//!
//! The media type is not trusted: `application/tlsrpt+gzip`, `+json`, `application/gzip`,
//! `application/json` or none, the bytes decide. Refused bodies go to the dead-letter area
//! ([`tlsrpt_bus::dead_letter`]) before the answer is sent.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use serde_json::json;
use tlsrpt_bus::{BusError, Producer};
use tlsrpt_schemas::{DecodeOptions, Envelope, ReceivedReport, StatusClass, Transport};

use crate::metrics::Metrics;
use crate::publish::{decode_with, message_for, sha256_hex};
use tlsrpt_bus::dead_letter::{DeadLetters, Rejection};
use tlsrpt_serve::ServeOptions;

/// Limits of the HTTP receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpOptions {
    /// The largest body read, before decompression (default 10 MiB).
    pub max_body_bytes: usize,
    /// The decoder's limits (the decompressed cap, default 20 MiB).
    pub decode: DecodeOptions,
    /// What `Retry-After` says when the bus cannot take a report, in seconds.
    pub retry_after_seconds: u32,
    /// Reports handled at once; more are answered 503 with `Retry-After` rather than queued
    /// without bound (each holds up to `max_body_bytes` in memory).
    pub max_concurrent_requests: usize,
    /// How long a client may take to send the body; a slower one gets 408.
    pub body_timeout: std::time::Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            max_body_bytes: 10 << 20,
            decode: DecodeOptions::default(),
            retry_after_seconds: 60,
            max_concurrent_requests: 1024,
            body_timeout: std::time::Duration::from_secs(60),
        }
    }
}

/// What the handlers share.
#[derive(Debug)]
pub struct HttpReceiver<P> {
    producer: P,
    rejected: Arc<DeadLetters>,
    metrics: Arc<Metrics>,
    options: HttpOptions,
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl<P: Producer> HttpReceiver<P> {
    pub fn new(
        producer: P,
        rejected: Arc<DeadLetters>,
        metrics: Arc<Metrics>,
        options: HttpOptions,
    ) -> Arc<Self> {
        Arc::new(Self {
            producer,
            rejected,
            metrics,
            in_flight: Arc::new(tokio::sync::Semaphore::new(
                options.max_concurrent_requests.max(1),
            )),
            options,
        })
    }

    /// The routes: `POST /v1/reports`, `GET /healthz`.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v1/reports", post(post_report::<P>))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/metrics", get(metrics::<P>))
            // The body cap is ours (checked while reading, answered in JSON).
            .layer(DefaultBodyLimit::disable())
            .with_state(Arc::clone(self))
    }

    /// Serves on `listener` until `shutdown` resolves, then finishes the requests in flight.
    pub async fn serve(
        self: &Arc<Self>,
        listener: tokio::net::TcpListener,
        serve_options: ServeOptions,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        tlsrpt_serve::serve(self.router(), listener, serve_options, shutdown).await
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

fn error_body(status: StatusCode, code: &str, message: &str, path: Option<&str>) -> Response {
    let mut body = json!({ "error": message, "code": code });
    if let Some(path) = path {
        body["path"] = json!(path);
    }
    (status, axum::Json(body)).into_response()
}

fn try_again(options: &HttpOptions, message: &str) -> Response {
    let mut response = error_body(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        message,
        None,
    );
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(options.retry_after_seconds),
    );
    response
}

/// The answer to an accepted report. Fields in the order the JSON has always listed them
/// (alphabetical, as `serde_json`'s map wrote them); typed so that an answer is written
/// without building a map for each request.
#[derive(serde::Serialize)]
struct Accepted<'a> {
    offset: u64,
    partition: u32,
    report_uid: &'a str,
    status: &'static str,
    warnings: Vec<&'a str>,
}

/// An accepted report made ready for the bus, and what the answer will say of it.
struct Prepared {
    message: tlsrpt_bus::Message,
    report_uid: String,
    /// Distinct warning codes, in the order first seen.
    warnings: Vec<&'static str>,
    /// The decoded JSON's length, for the metrics.
    json_bytes: usize,
}

async fn post_report<P: Producer>(
    State(receiver): State<Arc<HttpReceiver<P>>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    body: Body,
) -> Response {
    let options = receiver.options;
    let received_at = Utc::now();
    let rejection =
        |code: &str, message: String, path: Option<&str>, bytes: &[u8], complete| Rejection {
            received_at,
            transport: Transport::Https.as_str().to_owned(),
            remote_addr: Some(remote.to_string()),
            code: code.to_owned(),
            message,
            path: path.map(str::to_owned),
            bytes: bytes.len(),
            complete,
            sha256: sha256_hex(bytes),
        };

    let Ok(_permit) = receiver.in_flight.try_acquire() else {
        receiver.metrics.refused(Transport::Https, "busy");
        let mut response = try_again(&options, "too many reports in flight; try again shortly");
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(1));
        return response;
    };
    let read = tokio::time::timeout(
        options.body_timeout,
        axum::body::to_bytes(body, options.max_body_bytes),
    );
    let body = match read.await {
        Err(_elapsed) => {
            receiver.metrics.refused(Transport::Https, "timeout");
            return error_body(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                &format!(
                    "the body did not arrive within {} s",
                    options.body_timeout.as_secs()
                ),
                None,
            );
        }
        Ok(Ok(body)) => body,
        Ok(Err(_)) => {
            receiver
                .metrics
                .received(Transport::Https, options.max_body_bytes);
            receiver.metrics.refused(Transport::Https, "too_large");
            // Over the cap (or the client went away): nothing complete to keep, but the
            // attempt is recorded.
            let message = format!(
                "the body is larger than {} bytes, the most this receiver reads",
                options.max_body_bytes
            );
            let record = rejection("too_large", message.clone(), None, &[], false);
            if keep(&receiver.rejected, Vec::new(), record).await.is_err() {
                return try_again(&options, "cannot record the refusal; try again later");
            }
            return error_body(StatusCode::PAYLOAD_TOO_LARGE, "too_large", &message, None);
        }
    };

    receiver.metrics.received(Transport::Https, body.len());
    let envelope = Envelope {
        transport: Transport::Https,
        received_at,
        submitter_header: None,
        dkim: None,
    };
    // The report is turned into its bus message while its text is still borrowed from the
    // decoded JSON; only what the answer needs outlives it.
    let prepared = decode_with(options.decode, &body, |decoded, _mail_headers| {
        let received = ReceivedReport {
            envelope,
            report: decoded.report,
            raw_json: decoded.raw_json.into(),
        };
        let (message, report_uid) = message_for(&received, Some(remote), &sha256_hex(&body));
        let mut warnings: Vec<&'static str> = Vec::new();
        for warning in &received.report.warnings {
            if !warnings.contains(&warning.code.as_str()) {
                warnings.push(warning.code.as_str());
            }
        }
        Prepared {
            message,
            report_uid,
            warnings,
            json_bytes: received.raw_json.len(),
        }
    });
    let prepared = match prepared {
        Ok(prepared) => prepared,
        Err(err) => {
            receiver.metrics.refused(Transport::Https, err.code());
            let status = match err.status_class() {
                StatusClass::Malformed => StatusCode::BAD_REQUEST,
                StatusClass::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                StatusClass::NotAReport => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            };
            let message = err.to_string();
            let record = rejection(err.code(), message.clone(), err.path(), &body, true);
            if keep(&receiver.rejected, body.to_vec(), record)
                .await
                .is_err()
            {
                // Refusing without keeping the bytes would lose them: let the sender retry.
                return try_again(&options, "cannot record the refusal; try again later");
            }
            return error_body(status, err.code(), &message, err.path());
        }
    };

    let sent_at = std::time::Instant::now();
    match receiver.producer.send(prepared.message).await {
        Ok(delivered) => {
            receiver
                .metrics
                .accepted(Transport::Https, prepared.json_bytes, sent_at.elapsed());
            let answer = Accepted {
                offset: delivered.offset,
                partition: delivered.partition,
                report_uid: &prepared.report_uid,
                status: "accepted",
                warnings: prepared.warnings,
            };
            (StatusCode::OK, axum::Json(answer)).into_response()
        }
        Err(err @ (BusError::Storage(_) | BusError::Closed | BusError::Locked { .. })) => {
            receiver
                .metrics
                .refused(Transport::Https, "bus_unavailable");
            try_again(&options, &format!("{err}; try again later"))
        }
        Err(err @ BusError::TooLarge { .. }) => {
            receiver.metrics.refused(Transport::Https, "too_large");
            let message = err.to_string();
            let record = rejection("too_large_for_bus", message.clone(), None, &body, true);
            if keep(&receiver.rejected, body.to_vec(), record)
                .await
                .is_err()
            {
                return try_again(&options, "cannot record the refusal; try again later");
            }
            error_body(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large_for_bus",
                &message,
                None,
            )
        }
        Err(err) => error_body(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &err.to_string(),
            None,
        ),
    }
}

async fn metrics<P: Producer>(State(receiver): State<Arc<HttpReceiver<P>>>) -> Response {
    let mut text = String::with_capacity(4096);
    receiver.metrics.render(&mut text);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

/// Keeps refused bytes off the async threads (it syncs to disk).
async fn keep(
    rejected: &Arc<DeadLetters>,
    bytes: Vec<u8>,
    record: Rejection,
) -> std::io::Result<String> {
    let rejected = Arc::clone(rejected);
    tokio::task::spawn_blocking(move || rejected.keep(&bytes, &record))
        .await
        .map_err(std::io::Error::other)?
}
