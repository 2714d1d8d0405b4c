//! Tables on disk for the tests: reports from the vendored corpus, flattened by
//! `tlsrpt_schemas`, written with parquet's `ArrowWriter` where layout.rs says.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::{NaiveDate, TimeZone, Utc};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use tlsrpt_query::{QueryEngine, QueryError, QueryOptions};
use tlsrpt_schemas::layout::{FileRange, date_dir};
use tlsrpt_schemas::tables::flatten;
use tlsrpt_schemas::{Envelope, ReceivedReport, Transport, parse_report};

/// The RFC 8460 example: 2016-04-01, one STS policy for company-y.example, 5326 successful
/// and 303 failed sessions, three failure details (100 + 200 + 3).
pub(crate) const RFC: &str = "domainaware__parsedmarc/rfc8460.json";
/// Mail.ru: 2024-02-22, example.com, two sts-policy-fetch-error details of 1 each.
pub(crate) const MAIL_RU: &str = "domainaware__parsedmarc/mail.ru.json";
/// Google: 2025-05-22, foo-bar.io, one successful session, no failure details.
pub(crate) const GOOGLE: &str = "cry-inc__dmarc-report-viewer/google.json";

pub(crate) fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../schemas/tests/fixtures/corpus")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A report from the corpus, received over HTTPS; `report_id` replaces the sender's, so one
/// fixture can stand for several distinct reports.
pub(crate) fn report(name: &str, report_id: Option<&str>) -> ReceivedReport<'static> {
    let mut json: serde_json::Value = serde_json::from_str(&fixture(name)).unwrap();
    if let Some(id) = report_id {
        json["report-id"] = id.into();
    }
    let raw_json = json.to_string();
    ReceivedReport {
        report: parse_report(&raw_json).unwrap().into_owned(),
        envelope: Envelope {
            transport: Transport::Https,
            received_at: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
            submitter_header: None,
            dkim: None,
        },
        raw_json: raw_json.into(),
    }
}

pub(crate) fn range(partition: u32, first: u64, last: u64) -> FileRange {
    FileRange {
        partition,
        first,
        last,
    }
}

/// Writes the reports (all of one date) as the files `name` of the three tables and the
/// three rollups, as a transformer's flush of `range` would; tables without rows get no
/// file. Returns the date.
pub(crate) fn write_named(
    root: &Path,
    name: &str,
    reports: &[ReceivedReport<'static>],
) -> NaiveDate {
    let date = reports[0].report.date_range.start_datetime.date_naive();
    assert!(
        reports
            .iter()
            .all(|r| r.report.date_range.start_datetime.date_naive() == date),
        "one date per file"
    );
    let tables = flatten(reports).unwrap();
    let rollups = tlsrpt_schemas::rollup::Rollups::of(&tables).unwrap();
    for (table, batch) in [
        ("reports", &tables.reports),
        ("policies", &tables.policies),
        ("failures", &tables.failures),
        ("policies_daily", &rollups.policies_daily),
        ("failures_daily", &rollups.failures_daily),
        ("reports_daily", &rollups.reports_daily),
    ] {
        if batch.num_rows() > 0 {
            write_parquet(&root.join(date_dir(table, date)).join(name), batch);
        }
    }
    date
}

pub(crate) fn write(
    root: &Path,
    range: FileRange,
    reports: &[ReceivedReport<'static>],
) -> NaiveDate {
    write_named(root, &range.file_name(), reports)
}

/// Writes one batch as the transformer does: zstd, page statistics (for the page index), the
/// Arrow schema in the file's metadata.
pub(crate) fn write_parquet(path: &Path, batch: &RecordBatch) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap()))
        .set_statistics_enabled(EnabledStatistics::Page)
        .build();
    let mut writer = ArrowWriter::try_new(
        File::create(path).unwrap(),
        batch.schema(),
        Some(properties),
    )
    .unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
}

/// The root of a data directory's tables, in a fresh temporary directory.
pub(crate) struct Root {
    _dir: tempfile::TempDir,
    pub(crate) path: PathBuf,
}

impl Root {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tables");
        Self { _dir: dir, path }
    }

    /// The three corpus reports of three dates, in two bus partitions.
    pub(crate) fn with_corpus() -> Self {
        let root = Self::new();
        write(&root.path, range(0, 0, 0), &[report(RFC, None)]);
        write(&root.path, range(0, 1, 1), &[report(MAIL_RU, None)]);
        write(&root.path, range(1, 0, 0), &[report(GOOGLE, None)]);
        root
    }

    pub(crate) fn engine(&self) -> Arc<QueryEngine> {
        self.engine_with(QueryOptions::default())
    }

    pub(crate) fn engine_with(&self, options: QueryOptions) -> Arc<QueryEngine> {
        Arc::new(QueryEngine::new(&self.path, options).unwrap())
    }

    /// An engine whose views keep nothing between queries: the answers as the files are now.
    pub(crate) fn uncached_engine(&self) -> Arc<QueryEngine> {
        self.engine_with(QueryOptions {
            view_cache_bytes: None,
            ..QueryOptions::default()
        })
    }
}

/// The rows of a result, each as its values joined by `|` (null as an empty value).
pub(crate) async fn rows(engine: &QueryEngine, sql: &str) -> Vec<String> {
    rows_in(engine, &tlsrpt_query::Scope::All, sql).await
}

/// [`rows`] for a client that sees `scope`.
pub(crate) async fn rows_in(
    engine: &QueryEngine,
    scope: &tlsrpt_query::Scope,
    sql: &str,
) -> Vec<String> {
    match engine.sql_in(scope, sql, Vec::new()).await {
        Ok(result) => {
            let options = FormatOptions::default();
            let mut rows = Vec::new();
            for batch in result.batches() {
                let formatters: Vec<_> = batch
                    .columns()
                    .iter()
                    .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
                    .collect();
                for row in 0..batch.num_rows() {
                    let values: Vec<String> = formatters
                        .iter()
                        .map(|f| f.value(row).to_string())
                        .collect();
                    rows.push(values.join("|"));
                }
            }
            rows
        }
        Err(error) => panic!("{sql}: {error}"),
    }
}

/// The error a statement gets.
pub(crate) async fn refusal(engine: &QueryEngine, sql: &str) -> QueryError {
    match engine.sql(sql).await {
        Ok(result) => panic!("{sql}: answered with {} rows", result.num_rows()),
        Err(error) => error,
    }
}

/// The SQL services (HTTP and Flight SQL) of an engine, served as the binary serves them,
/// both on port 0.
pub(crate) struct Running {
    pub(crate) http: std::net::SocketAddr,
    pub(crate) flight: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    pub(crate) async fn start(service: tlsrpt_query::SqlService) -> Self {
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let flight = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (http_address, flight_address) =
            (http.local_addr().unwrap(), flight.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(service.serve(http, flight, async {
            let _ = stopped.await;
        }));
        Self {
            http: http_address,
            flight: flight_address,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// `engine` for every client, without TLS.
    pub(crate) async fn open(engine: Arc<QueryEngine>) -> Self {
        Self::start(tlsrpt_query::SqlService {
            engine,
            access: tlsrpt_query::Access::open(),
            tls: None,
        })
        .await
    }

    /// Stops accepting and waits for the services to end.
    pub(crate) async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}
