//! Reads the observations of a window of days from the tables, through the query engine
//! (the same SQL any client can run): `policies` joined to `reports` for the arrival time,
//! and `failures` summed per (report, domain, MX, result type).

use std::collections::HashMap;

use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Date32Type, Int64Type, TimestampMicrosecondType, UInt64Type};
use chrono::{DateTime, NaiveDate, Utc};
use tlsrpt_query::QueryEngine;
use tlsrpt_schemas::dedup::report_uid_value_of_hex;

use crate::alert::quote;
use crate::observations::{Observations, Sym, day_of};
use crate::{Error, Result};

/// The reports of days `from..=to` received at or before `until`.
pub async fn observations(
    engine: &QueryEngine,
    from: NaiveDate,
    to: NaiveDate,
    until: DateTime<Utc>,
) -> Result<Observations> {
    let window = format!("date >= DATE '{from}' AND date <= DATE '{to}'");
    let until = quote(&until.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string());
    // One row per (report, policy domain): the largest of its policies' counts (a sender
    // that evaluates MTA-STS and DANE for one domain counts the same sessions twice) and
    // the STS mode it saw.
    let parts_sql = format!(
        "SELECT p.report_uid, r.received_at, p.date, p.organization_name, p.policy_domain, \
           max(coalesce(p.total_successful_session_count, 0) + coalesce(p.total_failure_session_count, 0)) AS sessions, \
           max(coalesce(p.total_failure_session_count, 0)) AS failed, \
           max(p.sts_mode) AS sts_mode \
         FROM policies p JOIN reports r ON p.report_uid = r.report_uid AND p.date = r.date \
         WHERE p.{window} AND r.{window} AND p.policy_domain IS NOT NULL \
           AND r.received_at <= TIMESTAMP {until} \
         GROUP BY p.report_uid, r.received_at, p.date, p.organization_name, p.policy_domain"
    );
    let failures_sql = format!(
        "SELECT report_uid, policy_domain, receiving_mx_hostname, CAST(result_type AS VARCHAR) AS result_type, \
           sum(coalesce(failed_session_count, 0)) AS failed \
         FROM failures WHERE {window} AND policy_domain IS NOT NULL \
         GROUP BY 1, 2, 3, 4"
    );
    let parts = engine
        .sql(&parts_sql)
        .await
        .map_err(Error::query("the reports"))?;
    let failures = engine
        .sql(&failures_sql)
        .await
        .map_err(Error::query("the failures"))?;

    let mut observations = Observations::default();
    // (report, domain) -> part index, to attach the failures.
    let mut index: HashMap<(u128, Sym), usize> = HashMap::new();
    for batch in parts.batches() {
        let uid = strings(batch, 0);
        let received = batch.column(1).as_primitive::<TimestampMicrosecondType>();
        let date = batch.column(2).as_primitive::<Date32Type>();
        let reporter = strings(batch, 3);
        let domain = strings(batch, 4);
        let sessions = integers(batch, 5);
        let failed = integers(batch, 6);
        let mode = strings(batch, 7);
        for row in 0..batch.num_rows() {
            let (Some(uid), Some(domain)) = (
                uid.get(row).and_then(report_uid_value_of_hex),
                domain.get(row),
            ) else {
                continue;
            };
            let date = date.value_as_date(row).expect("a valid date");
            let part = observations.add_part_micros(
                received.value(row),
                day_of(date),
                reporter.get(row).unwrap_or(""),
                domain,
                sessions[row],
                failed[row],
                mode.get(row),
            );
            let domain = observations.parts()[part].domain;
            index.insert((uid, domain), part);
        }
    }
    for batch in failures.batches() {
        let uid = strings(batch, 0);
        let domain = strings(batch, 1);
        let mx = strings(batch, 2);
        let result_type = strings(batch, 3);
        let failed = integers(batch, 4);
        for (row, &failed) in failed.iter().enumerate() {
            let (Some(uid), Some(domain), Some(result_type)) = (
                uid.get(row).and_then(report_uid_value_of_hex),
                domain.get(row).and_then(|d| observations.names.get(d)),
                result_type.get(row),
            ) else {
                continue;
            };
            // A report received after `until` has no part: its failures are not known yet.
            if let Some(&part) = index.get(&(uid, domain)) {
                observations.add_failure(part, mx.get(row), result_type, failed);
            }
        }
    }
    observations.finish();
    Ok(observations)
}

/// A text column (plain, view or dictionary-encoded) as one `StringArray`.
fn strings(batch: &RecordBatch, column: usize) -> Text {
    let array = batch.column(column);
    let array = match array.data_type() {
        DataType::Utf8 => array.clone(),
        _ => arrow::compute::cast(array, &DataType::Utf8).expect("text casts to Utf8"),
    };
    Text(array.as_string::<i32>().clone())
}

struct Text(StringArray);

impl Text {
    fn get(&self, row: usize) -> Option<&str> {
        self.0.is_valid(row).then(|| self.0.value(row))
    }
}

/// An integer column as u64 (nulls and negatives as 0).
fn integers(batch: &RecordBatch, column: usize) -> Vec<u64> {
    let array = batch.column(column);
    match array.data_type() {
        DataType::UInt64 => {
            let a = array.as_primitive::<UInt64Type>();
            (0..a.len())
                .map(|i| if a.is_valid(i) { a.value(i) } else { 0 })
                .collect()
        }
        _ => {
            let cast = arrow::compute::cast(array, &DataType::Int64).expect("integers cast");
            let a = cast.as_primitive::<Int64Type>();
            (0..a.len())
                .map(|i| {
                    if a.is_valid(i) {
                        a.value(i).max(0) as u64
                    } else {
                        0
                    }
                })
                .collect()
        }
    }
}
