//! Reads the observations of a window of days from the tables, through the query engine
//! (the same SQL any client can run): `policies` joined to `reports` for the arrival time,
//! and `failures` summed per (report, domain, MX, result type).

use foldhash::HashMap;
use foldhash::HashMapExt;

use arrow::array::{Array, AsArray, RecordBatch, StringArray, StringViewArray};
use arrow::datatypes::{
    DataType, Date32Type, Int32Type, Int64Type, TimestampMicrosecondType, UInt64Type,
};
use chrono::{DateTime, NaiveDate, Utc};
use tlsrpt_query::QueryEngine;
use tlsrpt_schemas::dedup::report_uid_value_of_hex;

use crate::alert::quote;
use crate::observations::{Names, Observations, Sym, day_of};
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
    // One row per policy; the parts (report, policy domain) are summed here. A sender that
    // evaluates MTA-STS and DANE for one domain counts the same sessions under both, so a
    // part's sessions are the larger of its STS policies' sum (several on the day a policy
    // changes, the sessions split between the old and the new) and any other policy's.
    let parts_sql = format!(
        "SELECT p.report_uid, r.received_at, p.date, p.organization_name, p.policy_domain, \
           p.policy_type, p.sts_mode, \
           coalesce(p.total_successful_session_count, 0) + coalesce(p.total_failure_session_count, 0) AS sessions, \
           coalesce(p.total_failure_session_count, 0) AS failed \
         FROM policies p JOIN reports r ON p.report_uid = r.report_uid AND p.date = r.date \
         WHERE p.{window} AND r.{window} AND p.policy_domain IS NOT NULL \
           AND r.received_at <= TIMESTAMP {until}"
    );
    let failures_sql = format!(
        "SELECT report_uid, policy_domain, receiving_mx_hostname, result_type, \
           sum(coalesce(failed_session_count, 0)) AS failed \
         FROM failures WHERE {window} AND policy_domain IS NOT NULL \
         GROUP BY 1, 2, 3, 4"
    );
    let started = std::time::Instant::now();
    // Both at once: each leaves a core idle part of the time.
    let (parts, failures) = tokio::join!(engine.sql(&parts_sql), engine.sql(&failures_sql));
    let parts = parts.map_err(Error::query("the reports"))?;
    let failures = failures.map_err(Error::query("the failures"))?;

    let queried = started.elapsed();
    let mut observations = Observations::default();
    let rows = parts.num_rows();
    // (report, domain) -> part index, to attach the failures.
    let mut index: HashMap<(u128, Sym), usize> = HashMap::with_capacity(rows);
    // Per part: (STS sessions, STS failed, largest other sessions, its failed).
    let mut counts: Vec<[u64; 4]> = Vec::with_capacity(rows);
    observations.reserve(rows, failures.num_rows());
    let sts = observations.names.intern("sts");
    for batch in parts.batches() {
        let names = &mut observations.names;
        let uid = strings(batch, 0);
        let received = batch.column(1).as_primitive::<TimestampMicrosecondType>();
        let date = batch.column(2).as_primitive::<Date32Type>();
        let reporter = syms(batch, 3, names);
        let domain = syms(batch, 4, names);
        let policy_type = syms(batch, 5, names);
        let mode = syms(batch, 6, names);
        let sessions = integers(batch, 7);
        let failed = integers(batch, 8);
        for row in 0..batch.num_rows() {
            let Some(uid) = uid.get(row).and_then(report_uid_value_of_hex) else {
                continue;
            };
            if domain[row].is_none() {
                continue;
            }
            let part = *index.entry((uid, domain[row])).or_insert_with(|| {
                let date = date.value_as_date(row).expect("a valid date");
                counts.push([0; 4]);
                observations.add_part_syms(
                    received.value(row),
                    day_of(date),
                    reporter[row],
                    domain[row],
                )
            });
            let count = &mut counts[part];
            if policy_type[row] == sts {
                count[0] += sessions[row];
                count[1] += failed[row];
                if !mode[row].is_none() {
                    observations.add_mode_sym(part, mode[row], sessions[row]);
                }
            } else if sessions[row] > count[2] {
                count[2] = sessions[row];
                count[3] = failed[row];
            }
        }
    }
    for (part, count) in counts.iter().enumerate() {
        let (sessions, failed) = if count[0] >= count[2] {
            (count[0], count[1])
        } else {
            (count[2], count[3])
        };
        observations.set_counts(part, sessions, failed);
    }
    let parts_built = started.elapsed();
    for batch in failures.batches() {
        let names = &mut observations.names;
        let uid = strings(batch, 0);
        let domain = syms(batch, 1, names);
        let mx = syms(batch, 2, names);
        let result_type = syms(batch, 3, names);
        let failed = integers(batch, 4);
        for (row, &failed) in failed.iter().enumerate() {
            let Some(uid) = uid.get(row).and_then(report_uid_value_of_hex) else {
                continue;
            };
            if domain[row].is_none() || result_type[row].is_none() {
                continue;
            }
            // A report received after `until` has no part: its failures are not known yet.
            if let Some(&part) = index.get(&(uid, domain[row])) {
                observations.add_failure_syms(part, mx[row], result_type[row], failed);
            }
        }
    }
    let failures_attached = started.elapsed();
    observations.finish();
    tracing::debug!(
        reports = observations.len(),
        ?queried,
        ?parts_built,
        ?failures_attached,
        finished = ?started.elapsed(),
        "Alert observations loaded (times since the start of the load)."
    );
    Ok(observations)
}

/// A text column as interned names, one per row ([`Sym::NONE`] for nulls). A dictionary's
/// values are interned once per batch, not once per row.
fn syms(batch: &RecordBatch, column: usize, names: &mut Names) -> Vec<Sym> {
    let array = batch.column(column);
    if let DataType::Dictionary(key, _) = array.data_type()
        && **key == DataType::Int32
    {
        let dictionary = array.as_dictionary::<Int32Type>();
        let values = arrow::compute::cast(dictionary.values(), &DataType::Utf8)
            .expect("dictionary values cast to Utf8");
        let values = values.as_string::<i32>();
        let value_syms: Vec<Sym> = (0..values.len())
            .map(|i| names.intern_opt(values.is_valid(i).then(|| values.value(i))))
            .collect();
        return dictionary
            .keys()
            .iter()
            .map(|key| key.map_or(Sym::NONE, |k| value_syms[k as usize]))
            .collect();
    }
    // Rows come in runs of one name (the tables are sorted by domain): a run interns once.
    let text = strings(batch, column);
    let mut previous: Option<(&str, Sym)> = None;
    (0..array.len())
        .map(|row| {
            let name = text.get(row);
            match (name, previous) {
                (Some(name), Some((last, sym))) if name == last => sym,
                (Some(name), _) => {
                    let sym = names.intern(name);
                    previous = Some((name, sym));
                    sym
                }
                (None, _) => Sym::NONE,
            }
        })
        .collect()
}

/// A text column: plain and view arrays are read in place, others (dictionaries) cast.
fn strings(batch: &RecordBatch, column: usize) -> Text {
    let array = batch.column(column);
    match array.data_type() {
        DataType::Utf8 => Text::Plain(array.as_string::<i32>().clone()),
        DataType::Utf8View => Text::View(array.as_string_view().clone()),
        _ => {
            let cast = arrow::compute::cast(array, &DataType::Utf8).expect("text casts to Utf8");
            Text::Plain(cast.as_string::<i32>().clone())
        }
    }
}

enum Text {
    Plain(StringArray),
    View(StringViewArray),
}

impl Text {
    fn get(&self, row: usize) -> Option<&str> {
        match self {
            Self::Plain(a) => a.is_valid(row).then(|| a.value(row)),
            Self::View(a) => a.is_valid(row).then(|| a.value(row)),
        }
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
