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
//! - [`engine`]: [`QueryEngine`], one DataFusion session with the tables and rollups, and its
//!   limits ([`QueryOptions`]: rows, time, concurrency, memory). Start reading here.
//! - `catalog`: the tables as DataFusion providers that list the files a reader must see
//!   (superseded and temporary files left out) at every scan, so new files are seen by the
//!   next query.
//! - [`location`]: where the tables are, a directory or an S3-compatible object store.
//! - `read_only`: which statements are answered.
//! - [`views`]: the common questions as views over the daily rollups, with their SQL.
//! - [`view_cache`]: the per-day views' answers kept by date between queries, checked
//!   against the files at every scan.
//! - [`warm`]: the views computed into that cache in the background, before anyone asks.
//! - `metrics`: statements, turns, the view cache and warming, for `GET /metrics`.
//! - [`output`]: a result as JSON, CSV, an Arrow IPC stream or a terminal table.
//! - [`access`]: bearer tokens and the domains each may see.
//! - [`http`]: the HTTP front end and its status codes.
//! - [`flight`]: the Arrow Flight SQL front end ([`FlightSqlServer`]), for ADBC and JDBC.
//! - [`error`]: [`QueryError`], why a statement got no answer.

pub mod access;
mod catalog;
pub mod engine;
pub mod error;
pub mod flight;
pub mod http;
pub mod location;
mod metrics;
pub mod output;
mod read_only;
#[doc(hidden)]
pub mod test_store;
pub mod view_cache;
pub mod views;
pub mod warm;

pub use access::{Access, Grant, Scope};

pub use engine::{QueryEngine, QueryOptions, QueryResult, StatementShape, TableEntry, TableKind};
pub use error::{QueryError, Result};
pub use flight::FlightSqlServer;
pub use location::TablesLocation;
pub use output::{OutputFormat, write_result};
pub use view_cache::ViewCacheStats;
pub use warm::{AllTime, WarmedViews};

/// The SQL services of one engine: who may use them and whether over TLS.
#[derive(Debug)]
pub struct SqlService {
    pub engine: std::sync::Arc<QueryEngine>,
    pub access: Access,
    pub tls: Option<SqlTls>,
}

/// A certificate chain and key for both listeners.
#[derive(Clone)]
pub struct SqlTls {
    http: tlsrpt_serve::TlsAcceptor,
    flight: tonic::transport::Identity,
}

impl std::fmt::Debug for SqlTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlTls").finish_non_exhaustive()
    }
}

impl SqlTls {
    /// Reads a PEM certificate chain and its private key; the error says which file is wrong
    /// and how.
    pub fn load(cert: &std::path::Path, key: &std::path::Path) -> Result<Self, String> {
        // Parsed here first, so a bad file is named at start rather than at the first client.
        let http = tlsrpt_serve::tls_acceptor(cert, key)?;
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let flight = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
        Ok(Self { http, flight })
    }
}

impl SqlService {
    /// Serves SQL over HTTP (`POST /v1/sql`) on `http` and Arrow Flight SQL on `flight` until
    /// `shutdown` resolves; then lets the queries in flight finish. Fails as soon as either
    /// service fails.
    pub async fn serve(
        self,
        http: tokio::net::TcpListener,
        flight: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        use anyhow::Context as _;
        use futures::FutureExt as _;
        let shutdown = shutdown.shared();
        let access = std::sync::Arc::new(self.access);
        let options = tlsrpt_serve::ServeOptions {
            tls: self.tls.as_ref().map(|tls| tls.http.clone()),
            // A query may run up to its timeout; let those in flight finish.
            drain_timeout: self.engine.options().timeout + std::time::Duration::from_secs(1),
            ..tlsrpt_serve::ServeOptions::default()
        };
        let limits = self.engine.options();
        // Stopped when the services stop: a `JoinSet` aborts its tasks when dropped, at the
        // end of this function.
        let mut warming = tokio::task::JoinSet::new();
        warming.spawn(
            std::sync::Arc::clone(&self.engine)
                .keep_views_warm(limits.view_warm_days, limits.view_warm_every),
        );
        let router = std::sync::Arc::clone(&self.engine).router(std::sync::Arc::clone(&access));
        let http = tlsrpt_serve::serve(router, http, options, shutdown.clone());
        let flight = FlightSqlServer::new(self.engine, access).serve(
            flight,
            self.tls.map(|tls| tls.flight),
            shutdown,
        );
        tokio::try_join!(
            async { http.await.context("the SQL service over HTTP failed") },
            async { flight.await.context("the Flight SQL service failed") },
        )?;
        Ok(())
    }
}
