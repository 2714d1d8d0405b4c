//! Integration tests of `tlsrpt-transform`: a real embedded log in a temporary directory,
//! real Parquet files read back with parquet's Arrow reader, crashes simulated at each step
//! of a flush and a merge.

mod compaction;
mod crash;
mod flow;
mod object_store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::compute::concat_batches;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tlsrpt_bus::dead_letter::DeadLetters;
use tlsrpt_bus::embedded::{EmbeddedLog, EmbeddedOptions};
use tlsrpt_bus::{Delivered, Message};
use tlsrpt_schemas::layout::{self, FileRange};
use tlsrpt_schemas::message::to_parts;
use tlsrpt_schemas::{Envelope, ReceivedReport, Transport, parse_report};
use tlsrpt_transform::{TransformOptions, Transformer};

/// A data directory: the bus, the dead-letter area and the tables, removed on drop.
pub(crate) struct Env {
    _dir: tempfile::TempDir,
    pub(crate) log: EmbeddedLog,
    pub(crate) dead_letters: Arc<DeadLetters>,
    pub(crate) root: PathBuf,
}

impl Env {
    pub(crate) fn new(partitions: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(
            &dir.path().join("bus"),
            EmbeddedOptions::with_partitions(partitions),
        )
        .unwrap();
        let dead_letters = Arc::new(DeadLetters::open(&dir.path().join("rejected")).unwrap());
        let root = dir.path().join("tables");
        Self {
            _dir: dir,
            log,
            dead_letters,
            root,
        }
    }

    pub(crate) fn open(&self, options: TransformOptions) -> Transformer {
        Transformer::open(
            self.log.clone(),
            self.root.clone(),
            self.dead_letters.clone(),
            options,
        )
        .unwrap()
    }

    pub(crate) async fn send(&self, message: Message) -> Delivered {
        self.log.send(message).await.unwrap()
    }

    /// Sends the test reports `nth_report(n)` for every `n` in `range`, in order.
    pub(crate) async fn send_reports(&self, range: std::ops::Range<usize>) {
        for n in range {
            self.send(message(&nth_report(n))).await;
        }
    }

    /// Opens a transformer, lets it read everything on the bus, and stops it (which flushes
    /// and commits). Returns it stopped: its stats stay readable through the `Arc`.
    pub(crate) async fn drain(
        &self,
        options: TransformOptions,
    ) -> Arc<tlsrpt_transform::TransformStats> {
        let transformer = self.open(options);
        let stats = transformer.stats();
        // Shutdown already requested: the transformer reads what is on the bus, however
        // much, writes it and commits.
        transformer.run(std::future::ready(())).await.unwrap();
        assert_eq!(stats.committed_offsets(), self.log.end_offsets());
        stats
    }
}

/// The staging directories of interrupted or running flushes: `_staging/p<partition>/<flush>`.
pub(crate) fn staged(root: &Path) -> Vec<PathBuf> {
    let mut flushes = Vec::new();
    let Ok(partitions) = std::fs::read_dir(root.join("_staging")) else {
        return flushes;
    };
    for partition in partitions {
        for flush in std::fs::read_dir(partition.unwrap().path()).unwrap() {
            flushes.push(flush.unwrap().path());
        }
    }
    flushes
}

/// The claim of the flush starting at `first` in `partition`, if there is one.
pub(crate) fn claim(root: &Path, partition: u32, first: u64) -> Option<serde_json::Value> {
    let path = root.join(format!("_claims/p{partition:05}/{first:020}.json"));
    let text = std::fs::read(path).ok()?;
    Some(serde_json::from_slice(&text).unwrap())
}

/// Options for tests: small batches would only slow them; a short interval keeps the
/// running tests quick.
pub(crate) fn options() -> TransformOptions {
    TransformOptions {
        flush_interval: Duration::from_millis(20),
        ..TransformOptions::default()
    }
}

/// A report of `org` for one day with one STS policy for `domain` and a failure per MX.
pub(crate) fn report_json(
    org: &str,
    report_id: &str,
    day: &str,
    domain: &str,
    failures: &[(&str, u64)],
) -> String {
    let details: Vec<String> = failures
        .iter()
        .map(|(mx, n)| {
            format!(
                r#"{{"result-type":"certificate-expired","sending-mta-ip":"192.0.2.1","receiving-mx-hostname":"{mx}","failed-session-count":{n}}}"#
            )
        })
        .collect();
    let total: u64 = failures.iter().map(|(_, n)| n).sum();
    let contact = org.to_ascii_lowercase().replace(' ', "-");
    format!(
        r#"{{"organization-name":"{org}","date-range":{{"start-datetime":"{day}T00:00:00Z","end-datetime":"{day}T23:59:59Z"}},"contact-info":"tlsrpt@{contact}.example","report-id":"{report_id}","policies":[{{"policy":{{"policy-type":"sts","policy-string":["version: STSv1","mode: enforce","max_age: 86400"],"policy-domain":"{domain}","mx-host":["mx.{domain}"]}},"summary":{{"total-successful-session-count":10,"total-failure-session-count":{total}}},"failure-details":[{}]}}]}}"#,
        details.join(",")
    )
}

/// The bus message a receiver would have sent for `json`.
pub(crate) fn message(json: &str) -> Message {
    let received = ReceivedReport {
        report: parse_report(json).unwrap(),
        envelope: Envelope::now(Transport::Https),
        raw_json: json.into(),
    };
    let parts = to_parts(&received, Some("192.0.2.9:4000"), None);
    Message {
        key: parts.key,
        value: parts.value,
        headers: parts.headers,
    }
}

/// The `n`th test report: organisations, days and domains vary with `n`.
pub(crate) fn nth_report(n: usize) -> String {
    let orgs = ["Google", "Microsoft", "Mail.ru"];
    let day = format!("2026-01-{:02}", 1 + n % 3);
    let domain = format!("d{}.example", n % 5);
    let mx_a = format!("mx1.d{}.example", n % 5);
    report_json(
        orgs[n % orgs.len()],
        &format!("r{n}"),
        &day,
        &domain,
        &[(&mx_a, 1 + n as u64 % 4), ("mx2.shared.example", 2)],
    )
}

/// A data file of the tables, as its path describes it.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub(crate) table: String,
    pub(crate) date: String,
    pub(crate) range: FileRange,
    pub(crate) path: PathBuf,
}

/// Every data file under `root` (superseded ones too), with everything else there listed
/// separately (so tests notice stray files).
pub(crate) fn list(root: &Path) -> (Vec<Found>, Vec<PathBuf>) {
    let mut found = Vec::new();
    let mut other = Vec::new();
    for table in layout::TABLES
        .into_iter()
        .chain(tlsrpt_schemas::rollup::ROLLUPS)
    {
        let Ok(dates) = std::fs::read_dir(root.join(table)) else {
            continue;
        };
        for date in dates {
            let date = date.unwrap();
            let date_name = date.file_name().into_string().unwrap();
            assert!(layout::parse_date_dir(&date_name).is_some(), "{date_name}");
            for file in std::fs::read_dir(date.path()).unwrap() {
                let file = file.unwrap();
                let name = file.file_name().into_string().unwrap();
                match FileRange::parse(&name) {
                    Some(range) => found.push(Found {
                        table: table.to_owned(),
                        date: date_name.clone(),
                        range,
                        path: file.path(),
                    }),
                    None => other.push(file.path()),
                }
            }
        }
    }
    found.sort_by(|a, b| (&a.table, &a.date, a.range).cmp(&(&b.table, &b.date, b.range)));
    (found, other)
}

/// The files a query would read (`layout::visible` per table and date directory).
pub(crate) fn visible(root: &Path) -> Vec<Found> {
    let (found, _) = list(root);
    let mut by_dir: BTreeMap<(String, String), Vec<Found>> = BTreeMap::new();
    for file in found {
        by_dir
            .entry((file.table.clone(), file.date.clone()))
            .or_default()
            .push(file);
    }
    let mut out = Vec::new();
    for files in by_dir.values() {
        let ranges: Vec<FileRange> = files.iter().map(|f| f.range).collect();
        let shown = layout::visible(&ranges);
        out.extend(files.iter().filter(|f| shown.contains(&f.range)).cloned());
    }
    out
}

pub(crate) fn read_file(path: &Path) -> RecordBatch {
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    concat_batches(&batches[0].schema(), &batches).unwrap()
}

/// Every row a query of `table` would see.
pub(crate) fn read_table(root: &Path, table: &str) -> Vec<RecordBatch> {
    visible(root)
        .iter()
        .filter(|f| f.table == table)
        .map(|f| read_file(&f.path))
        .collect()
}

pub(crate) fn rows(root: &Path, table: &str) -> usize {
    read_table(root, table)
        .iter()
        .map(RecordBatch::num_rows)
        .sum()
}

/// The values of a text column (dictionary or not) over the batches.
pub(crate) fn texts(batches: &[RecordBatch], column: &str) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for batch in batches {
        let array = batch.column_by_name(column).unwrap();
        let array = arrow::compute::cast(array, &arrow::datatypes::DataType::Utf8).unwrap();
        let strings = array.as_string::<i32>();
        out.extend(strings.iter().map(|s| s.map(str::to_owned)));
    }
    out
}

/// The report_ids in the tables, sorted (each report once, or the test sees the repeat).
pub(crate) fn report_ids(root: &Path) -> Vec<String> {
    let mut ids: Vec<String> = texts(&read_table(root, "reports"), "report_id")
        .into_iter()
        .map(Option::unwrap)
        .collect();
    ids.sort();
    ids
}

/// `r0`, `r1`, ... for `range`, sorted as strings, as `report_ids` returns them.
pub(crate) fn ids(range: std::ops::Range<usize>) -> Vec<String> {
    let mut ids: Vec<String> = range.map(|n| format!("r{n}")).collect();
    ids.sort();
    ids
}

/// Every row of `batches` as text, sorted: compares tables regardless of file order and of
/// the row order inside files.
pub(crate) fn row_texts(batches: &[arrow::array::RecordBatch]) -> Vec<String> {
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let options = FormatOptions::default().with_null("∅");
    let mut out = Vec::new();
    for batch in batches {
        let formatters: Vec<ArrayFormatter<'_>> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect();
            out.push(cells.join(" | "));
        }
    }
    out.sort();
    out
}

/// The rollups add up to the raw tables under `root`, as a reader sees both: policy rows,
/// failure rows and reports counted in the rollups equal the rows of the raw tables, and so
/// do the failed sessions. Returns the number of reports.
pub(crate) fn assert_rollups_agree(root: &Path) -> usize {
    fn sum(root: &Path, table: &str, column: &str) -> i64 {
        read_table(root, table)
            .iter()
            .map(|batch| {
                let values = batch
                    .column_by_name(column)
                    .unwrap()
                    .as_primitive::<arrow::datatypes::Int64Type>();
                values.iter().flatten().sum::<i64>()
            })
            .sum()
    }
    let reports = rows(root, "reports");
    assert_eq!(sum(root, "reports_daily", "reports"), reports as i64);
    assert_eq!(
        sum(root, "policies_daily", "policies"),
        rows(root, "policies") as i64
    );
    assert_eq!(
        sum(root, "failures_daily", "failure_rows"),
        rows(root, "failures") as i64
    );
    assert_eq!(
        sum(root, "failures_daily", "failed_sessions"),
        sum(root, "failures", "failed_session_count")
    );
    reports
}
