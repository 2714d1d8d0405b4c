//! SQL over HTTP: `POST /v1/sql`.
//!
//! The body is the SQL text, or JSON `{"sql": "..."}` (when the content type is
//! `application/json` or the body starts with `{`). The answer's format follows `Accept`
//! ([`OutputFormat::from_accept`]): `application/json` (default, also for `*/*`), `text/csv`,
//! `application/vnd.apache.arrow.stream`, or `text/plain` for a table.
//!
//! The answer is sent as it is encoded (chunked), so a client reads the first rows of a large
//! answer while the rest is encoded and the service does not hold a second copy of it. An
//! error found before the first bytes (the usual case) is a status code as below; one after
//! them ends the body without its last chunk, which HTTP clients report as an incomplete
//! answer, and is logged.
//!
//! `GET /v1/tables` lists the tables and views with their columns:
//! `{"tables": [{"name", "type": "TABLE"|"VIEW", "columns": [{"name", "type", "nullable"}]}]}`,
//! types as Arrow names them (`Utf8`, `Int64`, `Date32`, `Timestamp(µs, "UTC")`,
//! `List(Utf8)`, dictionaries as their value type, as results carry them in JSON and CSV).
//! `SHOW TABLES`, `SHOW COLUMNS FROM failures` and `information_schema` answer the same in SQL.
//!
//! When the service has tokens ([`Access`]), `/v1/*` requires `Authorization: Bearer <token>`
//! and answers 401 (`unauthenticated`, with `WWW-Authenticate: Bearer`) without a known one;
//! a token limited to domains sees only their rows. `GET /healthz` stays open, for load
//! balancers, and so does `GET /metrics` (Prometheus text: statements by outcome and time,
//! turns, the view cache, warming), for scrapers: it counts, and shows no row of any table.
//!
//! Errors have a JSON body `{"error", "code"}` (the code is [`QueryError::code`]):
//! - 400: not a statement (`invalid`: bad syntax, unknown table or column, wrong types),
//!   refused (`read_only`: DDL, DML, `COPY`, `SET`, ...), or failed on the data
//!   (`execution`: a failing cast, a division by zero); also a body that is not UTF-8 text or
//!   well-formed JSON;
//! - 406: `Accept` offers none of the formats;
//! - 413: a body over 1 MiB;
//! - 422: more rows than the limit (`too_many_rows`); the statement is fine, the answer too
//!   large: aggregate, filter or add a `LIMIT`;
//! - 503: over the time limit (`timeout`, waiting for a turn included) or the memory limit
//!   (`resources_exhausted`). 408 would say the client was too slow to send its request,
//!   which it was not;
//! - 500: the tables could not be read (`storage`) or a bug (`internal`).

use std::sync::Arc;

use arrow::datatypes::DataType;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Extension, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use tracing::warn;

use crate::access::{Access, Grant};
use crate::engine::QueryEngine;
use crate::error::QueryError;
use crate::output::{OutputFormat, write_result};

/// The largest statement accepted, in bytes.
pub const MAX_SQL_BYTES: usize = 1 << 20;

/// The JSON form of a request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
    sql: String,
}

impl QueryEngine {
    /// The routes: `POST /v1/sql`, `GET /v1/tables` (for the clients `access` lets in),
    /// `GET /healthz`, `GET /metrics`.
    pub fn router(self: Arc<Self>, access: Arc<Access>) -> Router {
        Router::new()
            .route("/v1/sql", post(post_sql))
            .route("/v1/tables", get(get_tables))
            .route_layer(middleware::from_fn_with_state(access, authorize))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/metrics", get(get_metrics))
            // The body cap is ours (answered in JSON).
            .layer(DefaultBodyLimit::disable())
            .with_state(self)
    }
}

/// Lets a request in with its [`Grant`], or answers 401.
async fn authorize(
    State(access): State<Arc<Access>>,
    mut request: Request,
    next: Next,
) -> Response {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| value.as_bytes());
    match access.authorize(header) {
        Ok(grant) => {
            request.extensions_mut().insert(grant);
            next.run(request).await
        }
        Err(denied) => {
            let mut response = error_body(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                &denied.to_string(),
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"tlsrpt\""),
            );
            response
        }
    }
}

fn error_body(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": message, "code": code })),
    )
        .into_response()
}

fn error_response(error: &QueryError) -> Response {
    let status = match error {
        QueryError::Invalid { .. } | QueryError::ReadOnly { .. } | QueryError::Execution { .. } => {
            StatusCode::BAD_REQUEST
        }
        QueryError::TooManyRows { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        QueryError::Timeout { .. } | QueryError::ResourcesExhausted { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        QueryError::Storage { .. }
        | QueryError::Internal { .. }
        | QueryError::Output { .. }
        | QueryError::Io(_) => {
            warn!(%error, "Query failed on the service's side.");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    error_body(status, error.code(), &error.to_string())
}

/// The statement of a request body.
fn statement(headers: &HeaderMap, body: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8 text".to_owned())?;
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        });
    if json_type || text.trim_start().starts_with('{') {
        serde_json::from_str::<SqlRequest>(text)
            .map(|request| request.sql)
            .map_err(|e| format!("the body is not JSON of the form {{\"sql\": \"...\"}}: {e}"))
    } else {
        Ok(text.to_owned())
    }
}

async fn get_metrics(State(engine): State<Arc<QueryEngine>>) -> Response {
    let mut text = String::with_capacity(4096);
    engine.render_metrics(&mut text);
    (
        [(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

async fn get_tables(State(engine): State<Arc<QueryEngine>>) -> Response {
    let tables = match engine.tables().await {
        Ok(tables) => tables,
        Err(error) => return error_response(&error),
    };
    let tables: Vec<_> = tables
        .iter()
        .map(|table| {
            let columns: Vec<_> = table
                .columns
                .fields()
                .iter()
                .map(|field| {
                    let data_type = match field.data_type() {
                        DataType::Dictionary(_, values) => values.as_ref(),
                        other => other,
                    };
                    json!({
                        "name": field.name(),
                        "type": data_type.to_string(),
                        "nullable": field.is_nullable(),
                    })
                })
                .collect();
            json!({ "name": table.name, "type": table.kind.as_str(), "columns": columns })
        })
        .collect();
    axum::Json(json!({ "tables": tables })).into_response()
}

async fn post_sql(
    State(engine): State<Arc<QueryEngine>>,
    Extension(grant): Extension<Grant>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let Some(format) = OutputFormat::from_accept(Some(&accept)) else {
        return error_body(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            "Accept offers none of application/json, text/csv, \
             application/vnd.apache.arrow.stream, text/plain",
        );
    };
    let body = match axum::body::to_bytes(body, MAX_SQL_BYTES).await {
        Ok(body) => body,
        // Mostly over the cap; a connection that broke mid-body gets no answer anyway.
        Err(_) => {
            return error_body(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                &format!(
                    "the body could not be read whole; a statement is at most {MAX_SQL_BYTES} bytes"
                ),
            );
        }
    };
    let sql = match statement(&headers, &body) {
        Ok(sql) => sql,
        Err(message) => return error_body(StatusCode::BAD_REQUEST, "bad_request", &message),
    };
    let result = match engine.sql_in(&grant.scope, &sql, Vec::new()).await {
        Ok(result) => result,
        Err(error) => return error_response(&error),
    };
    streamed(format.content_type(), move |out| {
        write_result(&result, format, out)
    })
    .await
}

/// A 200 answer of type `content_type` whose body `encode` writes, sent as it is written; an
/// error `encode` returns before its first bytes is an error answer instead.
///
/// Encoding a million rows takes a while: off the async workers, and sent as it is encoded,
/// so the client reads while the rest is encoded and the answer is never held twice in memory
/// (all time of `failure_trend_by_mx` is 660 MB of Arrow).
async fn streamed(
    content_type: &'static str,
    encode: impl FnOnce(&mut PieceWriter) -> Result<(), QueryError> + Send + 'static,
) -> Response {
    let (sender, mut pieces) = mpsc::channel::<Piece>(PIECES_IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let mut out = PieceWriter {
            buffer: Vec::with_capacity(PIECE_BYTES),
            sender,
        };
        let last = match encode(&mut out) {
            Ok(()) => out.send().map(|()| Piece::End),
            Err(error) => Ok(Piece::Failed(error)),
        };
        if let Ok(last) = last {
            // Fails only when the client went away.
            let _ = out.sender.blocking_send(last);
        }
    });
    // An error before the first bytes (the usual case: the first batch fails) is still an
    // error response; the encoder stopping later ends the body without its last chunk, which
    // clients report as an incomplete answer.
    let first = match pieces.recv().await {
        Some(Piece::Chunk(bytes)) => Some(bytes),
        Some(Piece::End) => None,
        Some(Piece::Failed(error)) => return error_response(&error),
        None => {
            return error_response(&QueryError::Internal {
                message: "encoding the result stopped".to_owned(),
            });
        }
    };
    let rest = futures::stream::unfold(Some(pieces), |pieces| async move {
        let mut pieces = pieces?;
        match pieces.recv().await {
            Some(Piece::Chunk(bytes)) => Some((Ok(bytes), Some(pieces))),
            Some(Piece::End) => None,
            Some(Piece::Failed(error)) => {
                warn!(%error, "Encoding an answer failed after its first bytes were sent.");
                Some((Err(std::io::Error::other(error.to_string())), None))
            }
            None => Some((
                Err(std::io::Error::other("encoding the result stopped")),
                None,
            )),
        }
    });
    let body = futures::stream::iter(first.map(Ok)).chain(rest);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(body),
    )
        .into_response()
}

/// How many bytes of an answer are sent at a time.
const PIECE_BYTES: usize = 1 << 20;

/// How many pieces the encoder may be ahead of the client.
const PIECES_IN_FLIGHT: usize = 4;

/// What the encoder of an answer hands the response body.
enum Piece {
    Chunk(Bytes),
    /// Everything was sent.
    End,
    Failed(QueryError),
}

/// The answer's bytes, handed to the response body [`PIECE_BYTES`] at a time.
struct PieceWriter {
    buffer: Vec<u8>,
    sender: mpsc::Sender<Piece>,
}

impl PieceWriter {
    /// Hands over what is buffered; fails when the client went away.
    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(PIECE_BYTES));
        self.sender
            .blocking_send(Piece::Chunk(Bytes::from(chunk)))
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::BrokenPipe,
                    "the client closed the connection",
                )
            })
    }
}

impl std::io::Write for PieceWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= PIECE_BYTES {
            self.send()?;
        }
        Ok(data.len())
    }

    /// Nothing: the writers flush after every batch, and a piece is sent when full.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use axum::Router;
    use axum::routing::post;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::{PIECE_BYTES, streamed};
    use crate::error::QueryError;

    /// What a client reads from a route whose answer `encode` writes: the whole exchange, up
    /// to the service closing the connection.
    async fn exchange(
        encode: impl FnOnce(&mut super::PieceWriter) -> Result<(), QueryError>
        + Clone
        + Send
        + Sync
        + 'static,
    ) -> Vec<u8> {
        let route = post(move || streamed("text/csv", encode.clone()));
        let app = Router::new().route("/", route);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
        client
            .write_all(
                b"POST / HTTP/1.1\r\nHost: tlsrpt\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await
            .unwrap();
        // Up to the end of the connection, however the service ends it.
        let mut answer = Vec::new();
        let read = async {
            let mut buffer = vec![0; 1 << 16];
            while let Ok(n @ 1..) = client.read(&mut buffer).await {
                answer.extend_from_slice(&buffer[..n]);
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(30), read)
            .await
            .expect("the service ends the answer");
        answer
    }

    fn head(answer: &[u8]) -> String {
        let end = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("an answer head");
        String::from_utf8_lossy(&answer[..end]).to_lowercase()
    }

    /// Three pieces' worth of rows, each line numbered.
    fn rows(out: &mut super::PieceWriter) -> Result<(), QueryError> {
        for i in 0..3 * PIECE_BYTES / 16 {
            writeln!(out, "{i:015}")?;
        }
        Ok(())
    }

    #[tokio::test]
    async fn an_answer_is_sent_in_chunks_and_ends_with_the_last_one() {
        let answer = exchange(rows).await;
        let head = head(&answer);
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        assert!(answer.ends_with(b"\r\n0\r\n\r\n"), "the closing chunk");
        assert!(answer.len() > 3 * PIECE_BYTES);
    }

    #[tokio::test]
    async fn an_error_before_the_first_bytes_is_an_error_answer() {
        let answer = exchange(|_| {
            Err(QueryError::Execution {
                message: "a failing cast".to_owned(),
            })
        })
        .await;
        let head = head(&answer);
        assert!(head.starts_with("http/1.1 400"), "{head}");
        assert!(
            String::from_utf8_lossy(&answer).contains(r#""code":"execution""#),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }

    /// A client must not take a cut answer for a whole one: after the first pieces were sent
    /// (status 200), an error ends the connection without the closing chunk.
    #[tokio::test]
    async fn an_error_after_the_first_bytes_ends_the_answer_without_its_last_chunk() {
        let answer = exchange(|out| {
            rows(out)?;
            Err(QueryError::Execution {
                message: "a failing cast in a later batch".to_owned(),
            })
        })
        .await;
        let head = head(&answer);
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(
            answer.len() > 2 * PIECE_BYTES,
            "the first pieces were sent: {} bytes",
            answer.len()
        );
        assert!(
            !answer.ends_with(b"0\r\n\r\n"),
            "no closing chunk after an error"
        );
    }
}
