//! Reports through the real pipeline into the tables: decoded as a receiver decodes them,
//! appended to an embedded log, and written to Parquet by a transformer, as `tlsrpt import`
//! does. For data sets whose arrival times matter (the alert scoring): each report's
//! envelope says it was received at the time given, not now.
//!
//! It streams: the transformer reads the log while the reports are still being appended
//! (batches of [`TransformOptions::default`], as `tlsrpt up` writes them), and only a few
//! thousand reports are in memory at once, so a history of millions of reports goes
//! through in constant memory. The log stays in `DATA_DIR/bus`, as `tlsrpt import` leaves
//! it.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use tlsrpt_bus::Message;
use tlsrpt_bus::dead_letter::DeadLetters;
use tlsrpt_bus::embedded::{EmbeddedLog, EmbeddedOptions};
use tlsrpt_schemas::message::to_parts;
use tlsrpt_schemas::{Decoder, Envelope, ReceivedReport, Transport};
use tlsrpt_transform::{TransformOptions, Transformer};

use crate::history::HistoryReport;

/// Reports appended to the log in one transaction.
const SEND_BATCH: usize = 4096;
/// Appends in flight at once: the next batch is decoded while the log writes the last.
const SENDS_IN_FLIGHT: usize = 4;
/// Progress goes to standard error every this many reports.
const PROGRESS_EVERY: u64 = 1_000_000;

/// One report as a receiver got it: the JSON, when it arrived, and the
/// `TLS-Report-Submitter` it came with.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub json: String,
    pub received_at: DateTime<Utc>,
    pub submitter: String,
}

impl From<HistoryReport> for Arrival {
    fn from(report: HistoryReport) -> Self {
        Self {
            json: report.json,
            received_at: report.received_at,
            submitter: report.submitter,
        }
    }
}

/// Puts `reports` through the pipeline into `data_dir/tables` (the log in `data_dir/bus`,
/// anything the transformer refuses in `data_dir/rejected`), each received over HTTPS at
/// its `received_at` with its submitter as the `TLS-Report-Submitter`. Returns the reports
/// written (a duplicate of one already in the tables is skipped, not counted).
///
/// Runs its own Tokio runtime: call it from outside one.
pub fn write_tables<R: Into<Arrival>>(
    data_dir: &Path,
    reports: impl Iterator<Item = R>,
) -> anyhow::Result<u64> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let log = EmbeddedLog::open(&data_dir.join("bus"), EmbeddedOptions::with_partitions(1))
        .with_context(|| format!("cannot open the log in {}", data_dir.display()))?;
    let written = runtime.block_on(write(data_dir, &log, reports));
    log.shutdown();
    written
}

async fn write<R: Into<Arrival>>(
    data_dir: &Path,
    log: &EmbeddedLog,
    reports: impl Iterator<Item = R>,
) -> anyhow::Result<u64> {
    let transformer = {
        let log = log.clone();
        let tables = data_dir.join("tables");
        let dead_letters = Arc::new(DeadLetters::open(&data_dir.join("rejected"))?);
        tokio::task::spawn_blocking(move || {
            Transformer::open(log, tables, dead_letters, TransformOptions::default())
        })
        .await?
        .context("cannot open the tables")?
    };
    let stats = transformer.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(transformer.run(async move {
        let _ = stopped.await;
    }));

    let mut decoder = Decoder::default();
    let mut batch = Vec::with_capacity(SEND_BATCH);
    let mut in_flight = VecDeque::new();
    let mut sent = 0u64;
    for report in reports {
        let Arrival {
            json,
            received_at,
            submitter,
        } = report.into();
        let decoded = decoder
            .decode(json.as_bytes())
            .context("a generated report does not decode")?;
        let received = ReceivedReport {
            report: decoded.report,
            envelope: Envelope {
                transport: Transport::Https,
                received_at,
                submitter_header: Some(submitter),
                dkim: None,
            },
            raw_json: decoded.raw_json.into(),
        };
        let parts = to_parts(&received, None, None);
        batch.push(Message {
            key: parts.key,
            value: parts.value,
            headers: parts.headers,
        });
        sent += 1;
        if sent.is_multiple_of(PROGRESS_EVERY) {
            eprintln!(
                "{sent} reports on the log, {} in the tables",
                stats.reports_written()
            );
        }
        if batch.len() == SEND_BATCH {
            if in_flight.len() == SENDS_IN_FLIGHT {
                let oldest: tokio::task::JoinHandle<_> = in_flight.pop_front().expect("not empty");
                oldest.await??;
            }
            let log = log.clone();
            let messages = std::mem::replace(&mut batch, Vec::with_capacity(SEND_BATCH));
            in_flight.push_back(tokio::spawn(async move { log.send_all(messages).await }));
        }
        // A transformer that failed would otherwise leave the log growing unread.
        if running.is_finished() {
            break;
        }
    }
    if !batch.is_empty() {
        log.send_all(batch).await?;
    }
    for send in in_flight {
        send.await??;
    }

    // Reads what is left on the log, writes it, commits.
    let _ = stop.send(());
    running
        .await
        .context("the transformer panicked")?
        .context("cannot write the Parquet files")?;
    let consumed = stats.reports_written() + stats.duplicates_skipped() + stats.dead_lettered();
    anyhow::ensure!(
        stats.dead_lettered() == 0,
        "{} reports could not become rows (see {})",
        stats.dead_lettered(),
        data_dir.join("rejected").display()
    );
    anyhow::ensure!(
        consumed >= sent,
        "the transformer stopped after {consumed} of {sent} reports"
    );
    Ok(stats.reports_written())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use arrow::array::{AsArray, RecordBatch};
    use arrow::datatypes::{DataType, Int64Type};
    use tlsrpt_query::{QueryEngine, QueryOptions};

    use super::*;
    use crate::history::{History, HistoryConfig};

    #[test]
    fn every_report_reaches_the_tables_with_its_arrival_time_and_submitter() {
        let history = History::new(
            HistoryConfig {
                domains: 5,
                days: 3,
                incidents: 0,
                ..HistoryConfig::default()
            },
            2,
        );
        let dir = tempfile::tempdir().unwrap();
        let expected: BTreeSet<(String, i64, String, String)> = history
            .reports()
            .map(|r| {
                (
                    r.report.report_id.to_string(),
                    r.received_at.timestamp_micros(),
                    r.submitter,
                    "https".to_owned(),
                )
            })
            .collect();
        let written = write_tables(dir.path(), history.reports()).unwrap();
        assert_eq!(written, expected.len() as u64);
        // Again: every report is there already, none is written twice.
        assert_eq!(write_tables(dir.path(), history.reports()).unwrap(), 0);

        let engine = QueryEngine::new(dir.path().join("tables"), QueryOptions::default()).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let result = runtime
            .block_on(engine.sql(
                "SELECT report_id, CAST(received_at AS BIGINT), submitter, \
                 CAST(transport AS VARCHAR) FROM reports",
            ))
            .unwrap();
        let mut stored = BTreeSet::new();
        for batch in result.batches() {
            let batch: &RecordBatch = batch;
            // Text columns may come as views or dictionaries.
            let utf8 = |i: usize| arrow::compute::cast(batch.column(i), &DataType::Utf8).unwrap();
            let (ids, submitters, transports) = (utf8(0), utf8(2), utf8(3));
            let received = batch.column(1).as_primitive::<Int64Type>();
            for row in 0..batch.num_rows() {
                stored.insert((
                    ids.as_string::<i32>().value(row).to_owned(),
                    received.value(row),
                    submitters.as_string::<i32>().value(row).to_owned(),
                    transports.as_string::<i32>().value(row).to_owned(),
                ));
            }
        }
        assert_eq!(stored, expected);
    }
}
