//! # tlsrpt-query: SQL over the report tables
//!
//! Owns the DataFusion catalog over the table layout
//! (`<root>/{reports,policies,failures}/date=YYYY-MM-DD/p…-….parquet`, see
//! [`tlsrpt_schemas::layout`]) and answers SQL over it: `POST /v1/sql` on the query port, Arrow
//! Flight SQL on the Flight port, and the engine behind `tlsrpt sql` in a terminal, with
//! built-in views for the common questions ([`views`]). The alert jobs belong here too, and
//! are later work.
//!
//! It reads the tables and must never write them: every statement but a query (DDL, DML,
//! `COPY`, `SET`, ...) is refused, and no query can read a file outside the tables.
//!
//! ## Layout
//! - [`engine`]: [`QueryEngine`], one DataFusion session with the three tables, and its
//!   limits ([`QueryOptions`]: rows, time, concurrency, memory). Start reading here.
//! - `catalog`: the tables as DataFusion providers that list the files a reader must see
//!   (superseded and temporary files left out) at every scan, so new files are seen by the
//!   next query.
//! - [`location`]: where the tables are, a directory or an S3-compatible object store.
//! - `read_only`: which statements are answered.
//! - [`views`]: the common questions as views, with their SQL.
//! - [`output`]: a result as JSON, CSV, an Arrow IPC stream or a terminal table.
//! - [`http`]: the HTTP front end and its status codes.
//! - [`flight`]: the Arrow Flight SQL front end ([`FlightSqlServer`]), for ADBC and JDBC.
//! - [`error`]: [`QueryError`], why a statement got no answer.

mod catalog;
pub mod engine;
pub mod error;
pub mod flight;
pub mod http;
pub mod location;
pub mod output;
mod read_only;
#[doc(hidden)]
pub mod test_store;
pub mod views;

pub use engine::{QueryEngine, QueryOptions, QueryResult, StatementShape, TableEntry, TableKind};
pub use error::{QueryError, Result};
pub use flight::FlightSqlServer;
pub use location::TablesLocation;
pub use output::{OutputFormat, write_result};

/// Serves `engine` over HTTP (`POST /v1/sql`) on `http` and Arrow Flight SQL on `flight`
/// until `shutdown` resolves; then lets the queries in flight finish. Fails as soon as
/// either service fails.
pub async fn serve(
    engine: std::sync::Arc<QueryEngine>,
    http: tokio::net::TcpListener,
    flight: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use futures::FutureExt as _;
    let shutdown = shutdown.shared();
    let http = std::sync::Arc::clone(&engine).serve(http, shutdown.clone());
    let flight = FlightSqlServer::new(engine).serve(flight, shutdown);
    tokio::try_join!(
        async { http.await.context("the SQL service over HTTP failed") },
        async { flight.await.context("the Flight SQL service failed") },
    )?;
    Ok(())
}
