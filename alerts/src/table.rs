//! Writes alerts to the `alerts` table ([`tlsrpt_schemas::alerts_table`]): one Parquet file
//! per date and pass, named by the range of event sequence numbers it holds, written to a
//! temporary name, synced and renamed, so a reader sees all of a file or none of it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Array, Float64Array, Int64Array, ListBuilder, RecordBatch, StringArray,
    StringBuilder, TimestampMicrosecondArray,
};
use chrono::NaiveDate;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use tlsrpt_schemas::alerts_table::{ALERTS, alerts_schema};
use tlsrpt_schemas::layout::{FileRange, date_dir};

use crate::alert::AlertEvent;
use crate::observations::day_of;
use crate::{Error, Result};

/// Alerts with their sequence numbers.
pub type Numbered<'a> = (u64, &'a AlertEvent);

/// Writes `events` under `tables` (the tables' root), one file per date of `at`.
pub fn write(tables: &Path, events: &[Numbered<'_>]) -> Result<()> {
    let mut by_date: BTreeMap<NaiveDate, Vec<Numbered<'_>>> = BTreeMap::new();
    for &(seq, event) in events {
        by_date
            .entry(event.at.date_naive())
            .or_default()
            .push((seq, event));
    }
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return Ok(());
    };
    // Every file of a pass carries the pass's whole range: the name says which pass wrote
    // it, and a repeated pass writes the same names.
    let range = FileRange {
        partition: 0,
        first: first.0,
        last: last.0,
    };
    for (date, events) in by_date {
        let dir = tables.join(date_dir(ALERTS, date));
        let io = |what: &str| {
            let what = format!("{what} {}", dir.display());
            move |source| Error::Io { what, source }
        };
        std::fs::create_dir_all(&dir).map_err(io("cannot create"))?;
        let batch = batch(&events);
        let path = dir.join(range.file_name());
        let temporary = dir.join(format!(".{}.tmp", range.file_name()));
        let file = std::fs::File::create(&temporary).map_err(io("cannot write in"))?;
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(3).expect("a valid level"),
            ))
            .build();
        let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(properties))
            .expect("the alerts schema is writable");
        // `into_inner` writes the footer and hands the file back, to be synced before the
        // rename makes it visible.
        let written = writer.write(&batch).and_then(|()| writer.into_inner());
        let file = written.map_err(|err| Error::Io {
            what: format!("cannot write alerts in {}", dir.display()),
            source: std::io::Error::other(err),
        })?;
        file.sync_all().map_err(io("cannot sync a file in"))?;
        std::fs::rename(&temporary, &path).map_err(io("cannot rename a file in"))?;
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io("cannot sync"))?;
    }
    Ok(())
}

fn batch(events: &[Numbered<'_>]) -> RecordBatch {
    let text = |f: &dyn Fn(&AlertEvent) -> Option<&str>| -> ArrayRef {
        Arc::new(StringArray::from_iter(events.iter().map(|(_, e)| f(e))))
    };
    let float = |f: &dyn Fn(&AlertEvent) -> Option<f64>| -> ArrayRef {
        Arc::new(Float64Array::from_iter(events.iter().map(|(_, e)| f(e))))
    };
    let int = |f: &dyn Fn(&AlertEvent) -> Option<i64>| -> ArrayRef {
        Arc::new(Int64Array::from_iter(events.iter().map(|(_, e)| f(e))))
    };
    let date = |f: &dyn Fn(&AlertEvent) -> NaiveDate| -> ArrayRef {
        Arc::new(Date32Array::from_iter_values(events.iter().map(
            |(_, e)| day_of(f(e)) - day_of(NaiveDate::from_ymd_opt(1970, 1, 1).expect("the epoch")),
        )))
    };
    let mut mxs = ListBuilder::new(StringBuilder::new());
    for (_, e) in events {
        for mx in &e.receiving_mx_hostnames {
            mxs.values().append_value(mx);
        }
        mxs.append(true);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(
            events.iter().map(|(seq, _)| *seq as i64),
        )),
        int(&|e| Some(e.incident_id as i64)),
        text(&|e| {
            Some(match e.state {
                crate::alert::AlertState::Firing => "firing",
                crate::alert::AlertState::Resolved => "resolved",
            })
        }),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                events.iter().map(|(_, e)| e.at.timestamp_micros()),
            )
            .with_timezone("UTC"),
        ),
        date(&|e| e.at.date_naive()),
        text(&|e| Some(e.detector.as_str())),
        text(&|e| Some(e.severity.as_str())),
        text(&|e| Some(&e.policy_domain)),
        date(&|e| e.day),
        date(&|e| e.since),
        text(&|e| e.result_type.as_deref()),
        Arc::new(mxs.finish()),
        text(&|e| e.reporter.as_deref()),
        float(&|e| e.rate),
        float(&|e| e.baseline_rate),
        float(&|e| e.threshold_rate),
        int(&|e| e.failed_sessions.map(|n| n as i64)),
        int(&|e| e.sessions.map(|n| n as i64)),
        text(&|e| e.old_mode.as_deref()),
        text(&|e| e.new_mode.as_deref()),
        text(&|e| Some(&e.title)),
        text(&|e| Some(&e.text)),
        text(&|e| Some(&e.sql)),
    ];
    RecordBatch::try_new(alerts_schema(), columns).expect("columns match the alerts schema")
}
