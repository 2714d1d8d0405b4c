//! The daily rollup tables: the raw tables summed per day and the keys the common questions
//! group by, so that a trend over a whole provider reads thousands of rows, not millions.
//!
//! The transformer writes them beside the raw tables, from the same batch and in the same
//! commit (so exactly once, like the rows they sum); compaction merges their rows again.
//! Every measure is additive: the rows of several files (or flushes) for one key add up to
//! what one pass over all the raw rows would give, which is what lets the views sum them.
//!
//! ## `policies_daily`: per date, policy domain, reporter, policy type and STS mode
//! | column | type | meaning |
//! |---|---|---|
//! | date, policy_domain, organization_name, policy_type, sts_mode | | the key, as in `policies` (nulls as there) |
//! | policies | Int64 | `policies` rows |
//! | reports | Int64 | reports covering the policy domain, each counted once per domain (on the row of its first policy for that domain) |
//! | successful_sessions, failed_sessions | Int64 | sums of the summaries' counts; null when every count was left out |
//!
//! ## `failures_daily`: per date, policy domain, receiving MX and result type
//! | column | type | meaning |
//! |---|---|---|
//! | date, policy_domain, receiving_mx_hostname, result_type | | the key, as in `failures` |
//! | failure_rows | Int64 | `failures` rows (failure-details entries) |
//! | failed_sessions | Int64 | sum of `failed_session_count`; null when every count was left out |
//!
//! ## `reports_daily`: per date, reporter and the report's domain
//! | column | type | meaning |
//! |---|---|---|
//! | date, organization_name | | as in `reports` |
//! | policy_domain | Utf8 | the one policy domain of the reports counted; null for reports with no policy domain or several |
//! | reports | Int64 | reports |
//! | last_received_at | Timestamp(µs, UTC) | the latest `received_at` |

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, DictionaryArray, Int32Array, Int64Array, PrimitiveArray,
    RecordBatch, StringArray, StringDictionaryBuilder, TimestampMicrosecondArray,
};
use arrow::datatypes::{
    DataType, Date32Type, Field, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit,
    TimestampMicrosecondType,
};
use arrow::error::ArrowError;

use crate::tables::Tables;

/// The rollup tables' names, in the order they are written.
pub const ROLLUPS: [&str; 3] = ["policies_daily", "failures_daily", "reports_daily"];

fn dict() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

static POLICIES_DAILY: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("date", DataType::Date32, false),
        Field::new("policy_domain", DataType::Utf8, true),
        Field::new("organization_name", dict(), false),
        Field::new("policy_type", dict(), true),
        Field::new("sts_mode", dict(), true),
        Field::new("policies", DataType::Int64, false),
        Field::new("reports", DataType::Int64, false),
        Field::new("successful_sessions", DataType::Int64, true),
        Field::new("failed_sessions", DataType::Int64, true),
    ]))
});

static FAILURES_DAILY: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("date", DataType::Date32, false),
        Field::new("policy_domain", DataType::Utf8, true),
        Field::new("receiving_mx_hostname", DataType::Utf8, true),
        Field::new("result_type", dict(), false),
        Field::new("failure_rows", DataType::Int64, false),
        Field::new("failed_sessions", DataType::Int64, true),
    ]))
});

static REPORTS_DAILY: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("date", DataType::Date32, false),
        Field::new("organization_name", dict(), false),
        Field::new("policy_domain", DataType::Utf8, true),
        Field::new("reports", DataType::Int64, false),
        Field::new(
            "last_received_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]))
});

pub fn policies_daily_schema() -> SchemaRef {
    POLICIES_DAILY.clone()
}

pub fn failures_daily_schema() -> SchemaRef {
    FAILURES_DAILY.clone()
}

pub fn reports_daily_schema() -> SchemaRef {
    REPORTS_DAILY.clone()
}

/// The schema of a rollup table by name.
pub fn schema_of(name: &str) -> Option<SchemaRef> {
    match name {
        "policies_daily" => Some(policies_daily_schema()),
        "failures_daily" => Some(failures_daily_schema()),
        "reports_daily" => Some(reports_daily_schema()),
        _ => None,
    }
}

/// The three rollups of a set of rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollups {
    pub policies_daily: RecordBatch,
    pub failures_daily: RecordBatch,
    pub reports_daily: RecordBatch,
}

/// A sum that stays null while every value added is null, as SQL's `sum`; summing such
/// sums again gives the sum of all the values.
#[derive(Debug, Default, Clone, Copy)]
struct NullableSum(Option<i64>);

impl NullableSum {
    fn add(&mut self, value: Option<i64>) {
        if let Some(v) = value {
            self.0 = Some(self.0.unwrap_or(0).saturating_add(v));
        }
    }
}

/// Text at row `i` of a Utf8 or Dictionary(Int32, Utf8) column.
fn text(column: &dyn Array, i: usize) -> Result<Option<&str>, ArrowError> {
    if column.is_null(i) {
        return Ok(None);
    }
    match column.data_type() {
        DataType::Utf8 => Ok(Some(column.as_string::<i32>().value(i))),
        DataType::Dictionary(_, _) => {
            let dictionary = column.as_dictionary::<Int32Type>();
            let key = dictionary.keys().value(i);
            let values = dictionary.values().as_string::<i32>();
            Ok(Some(values.value(key as usize)))
        }
        other => Err(ArrowError::InvalidArgumentError(format!(
            "a text column was expected, found {other}"
        ))),
    }
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, ArrowError> {
    batch
        .column_by_name(name)
        .ok_or_else(|| ArrowError::InvalidArgumentError(format!("no column {name}")))
}

/// The text of every row of a Utf8 or Dictionary(Int32, Utf8) column, the column's type
/// matched once rather than per row.
fn texts<'a>(batch: &'a RecordBatch, name: &str) -> Result<Vec<Option<&'a str>>, ArrowError> {
    let column = column(batch, name)?;
    if let Some(strings) = column.as_string_opt::<i32>() {
        return Ok(strings.iter().collect());
    }
    if let Some(dictionary) = column.as_dictionary_opt::<Int32Type>()
        && let Some(values) = dictionary.values().as_string_opt::<i32>()
    {
        return Ok(dictionary
            .keys()
            .iter()
            .map(|key| key.map(|key| values.value(key as usize)))
            .collect());
    }
    Err(ArrowError::InvalidArgumentError(format!(
        "{name}: a text column was expected, found {}",
        column.data_type()
    )))
}

/// Groups in the order their keys first appear. Hashed with foldhash, as the flattener's
/// dictionaries are (SipHash and a B-tree's string comparisons were most of the rollups'
/// cost), with a fixed seed so that the same rows give the same order. Not sorted: a flush
/// sorts each file's rows in its table's order anyway.
struct Groups<K, V> {
    index: HashMap<K, usize, foldhash::fast::FixedState>,
    groups: Vec<(K, V)>,
}

impl<K: Hash + Eq + Copy, V> Groups<K, V> {
    fn with_capacity(capacity: usize) -> Self {
        Self {
            index: HashMap::with_capacity_and_hasher(capacity, Default::default()),
            groups: Vec::with_capacity(capacity),
        }
    }

    fn entry(&mut self, key: K, new: impl FnOnce() -> V) -> &mut V {
        let next = self.groups.len();
        let at = *self.index.entry(key).or_insert(next);
        if at == next {
            self.groups.push((key, new()));
        }
        &mut self.groups[at].1
    }

    fn keys(&self) -> impl Iterator<Item = &K> {
        self.groups.iter().map(|(key, _)| key)
    }

    fn values(&self) -> impl Iterator<Item = &V> {
        self.groups.iter().map(|(_, value)| value)
    }
}

fn keyed_set<K: Hash + Eq>(capacity: usize) -> HashSet<K, foldhash::fast::FixedState> {
    HashSet::with_capacity_and_hasher(capacity, Default::default())
}

fn dates(batch: &RecordBatch) -> Result<&[i32], ArrowError> {
    Ok(column(batch, "date")?
        .as_primitive_opt::<Date32Type>()
        .ok_or_else(|| ArrowError::InvalidArgumentError("date is not Date32".into()))?
        .values())
}

fn counts(batch: &RecordBatch, name: &str) -> Result<Vec<Option<i64>>, ArrowError> {
    let column = column(batch, name)?
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| ArrowError::InvalidArgumentError(format!("{name} is not Int64")))?;
    Ok(column.iter().collect())
}

fn dictionary<S: AsRef<str>>(values: impl IntoIterator<Item = Option<S>>) -> ArrayRef {
    let mut builder = StringDictionaryBuilder::<Int32Type>::new();
    for value in values {
        builder.append_option(value);
    }
    Arc::new(builder.finish())
}

impl Rollups {
    /// The rollups of the rows of `tables` (a flush's batch: every report whole, each
    /// once).
    pub fn of(tables: &Tables) -> Result<Self, ArrowError> {
        let policies = PolicyRuns::of(&tables.policies)?;
        Ok(Self {
            policies_daily: policies_daily(&tables.policies, &policies)?,
            failures_daily: failures_daily(&tables.failures)?,
            reports_daily: reports_daily(&tables.reports, &policies)?,
        })
    }

    /// The rollup table by name.
    pub fn table(&self, name: &str) -> Option<&RecordBatch> {
        match name {
            "policies_daily" => Some(&self.policies_daily),
            "failures_daily" => Some(&self.failures_daily),
            "reports_daily" => Some(&self.reports_daily),
            _ => None,
        }
    }
}

/// A dictionary column read as its keys: rows are grouped by integer codes, and the rollup's
/// column is those codes over the same dictionary values.
struct Codes<'a> {
    keys: &'a PrimitiveArray<Int32Type>,
    values: &'a StringArray,
}

impl<'a> Codes<'a> {
    fn of(batch: &'a RecordBatch, name: &str) -> Result<Self, ArrowError> {
        let column = column(batch, name)?;
        column
            .as_dictionary_opt::<Int32Type>()
            .and_then(|dictionary| {
                Some(Self {
                    keys: dictionary.keys(),
                    values: dictionary.values().as_string_opt::<i32>()?,
                })
            })
            .ok_or_else(|| {
                ArrowError::InvalidArgumentError(format!(
                    "{name}: a Dictionary(Int32, Utf8) column was expected, found {}",
                    column.data_type()
                ))
            })
    }

    /// The row's code; -1 for null.
    fn code(&self, row: usize) -> i32 {
        if self.keys.is_null(row) {
            -1
        } else {
            self.keys.value(row)
        }
    }

    /// A rollup's column of these codes, one per group: a dictionary over this column's
    /// own values, so no text is hashed again (building it value by value was 1.4% of the
    /// transformer's instructions). A null code is null.
    fn column(&self, codes: impl Iterator<Item = i32>) -> ArrayRef {
        let keys: Int32Array = codes.map(|code| (code >= 0).then_some(code)).collect();
        Arc::new(DictionaryArray::new(keys, Arc::new(self.values.clone())))
    }
}

/// The runs of equal `report_uid` in a table's rows, as the flattener writes them (the rows
/// of a report together, reports one after the other): (uid, first row, end row).
fn uid_runs<'a>(uids: &[Option<&'a str>]) -> Vec<(Option<&'a str>, usize, usize)> {
    let mut runs: Vec<(Option<&'a str>, usize, usize)> = Vec::new();
    for (row, &uid) in uids.iter().enumerate() {
        match runs.last_mut() {
            Some((last, _, end)) if *last == uid => *end = row + 1,
            _ => runs.push((uid, row, row + 1)),
        }
    }
    runs
}

/// Whether every report's rows are one run, as [`Rollups::of`] requires of its batch.
fn runs_are_reports(runs: &[(Option<&str>, usize, usize)]) -> bool {
    let mut seen = keyed_set::<Option<&str>>(runs.len());
    runs.iter().all(|&(uid, _, _)| seen.insert(uid))
}

/// The `policies` rows' report and domain, and the runs of each report's rows: read once
/// for both rollups that need them.
struct PolicyRuns<'a> {
    domain: Vec<Option<&'a str>>,
    runs: Vec<(Option<&'a str>, usize, usize)>,
}

impl<'a> PolicyRuns<'a> {
    fn of(policies: &'a RecordBatch) -> Result<Self, ArrowError> {
        let runs = uid_runs(&texts(policies, "report_uid")?);
        debug_assert!(
            runs_are_reports(&runs),
            "the rows of a report are not together"
        );
        Ok(Self {
            domain: texts(policies, "policy_domain")?,
            runs,
        })
    }
}

/// (date, policy_domain, organization_name, policy_type, sts_mode), the last three as codes.
type PolicyKey<'a> = (i32, Option<&'a str>, i32, i32, i32);

#[derive(Default)]
struct PolicyMeasures {
    policies: i64,
    reports: i64,
    successful: NullableSum,
    failed: NullableSum,
}

fn policies_daily(
    policies: &RecordBatch,
    PolicyRuns { domain, runs }: &PolicyRuns<'_>,
) -> Result<RecordBatch, ArrowError> {
    let date = dates(policies)?;
    let org = Codes::of(policies, "organization_name")?;
    let policy_type = Codes::of(policies, "policy_type")?;
    let mode = Codes::of(policies, "sts_mode")?;
    let successful = counts(policies, "total_successful_session_count")?;
    let failed = counts(policies, "total_failure_session_count")?;
    let mut groups: Groups<PolicyKey<'_>, PolicyMeasures> = Groups::with_capacity(64);
    for &(_, first, end) in runs {
        for i in first..end {
            let key = (
                date[i],
                domain[i],
                org.code(i),
                policy_type.code(i),
                mode.code(i),
            );
            let group = groups.entry(key, PolicyMeasures::default);
            group.policies += 1;
            // A report counts once per domain, on the row of its first policy for it.
            if !domain[first..i].contains(&domain[i]) {
                group.reports += 1;
            }
            group.successful.add(successful[i]);
            group.failed.add(failed[i]);
        }
    }
    let keys = || groups.keys();
    let values = || groups.values();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Date32Array::from_iter_values(keys().map(|k| k.0))),
        Arc::new(StringArray::from_iter(keys().map(|k| k.1))),
        org.column(keys().map(|k| k.2)),
        policy_type.column(keys().map(|k| k.3)),
        mode.column(keys().map(|k| k.4)),
        Arc::new(Int64Array::from_iter_values(values().map(|m| m.policies))),
        Arc::new(Int64Array::from_iter_values(values().map(|m| m.reports))),
        Arc::new(Int64Array::from_iter(values().map(|m| m.successful.0))),
        Arc::new(Int64Array::from_iter(values().map(|m| m.failed.0))),
    ];
    RecordBatch::try_new(policies_daily_schema(), columns)
}

/// (date, policy_domain, receiving_mx_hostname, result_type), the last as a code.
type FailureKey<'a> = (i32, Option<&'a str>, Option<&'a str>, i32);

fn failures_daily(failures: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let date = dates(failures)?;
    let domain = texts(failures, "policy_domain")?;
    let mx = texts(failures, "receiving_mx_hostname")?;
    let result = Codes::of(failures, "result_type")?;
    let failed = counts(failures, "failed_session_count")?;
    let mut groups: Groups<FailureKey<'_>, (i64, NullableSum)> = Groups::with_capacity(64);
    for i in 0..failures.num_rows() {
        let key = (date[i], domain[i], mx[i], result.code(i));
        let group = groups.entry(key, Default::default);
        group.0 += 1;
        group.1.add(failed[i]);
    }
    let keys = || groups.keys();
    let values = || groups.values();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Date32Array::from_iter_values(keys().map(|k| k.0))),
        Arc::new(StringArray::from_iter(keys().map(|k| k.1))),
        Arc::new(StringArray::from_iter(keys().map(|k| k.2))),
        result.column(keys().map(|k| k.3)),
        Arc::new(Int64Array::from_iter_values(values().map(|m| m.0))),
        Arc::new(Int64Array::from_iter(values().map(|m| m.1.0))),
    ];
    RecordBatch::try_new(failures_daily_schema(), columns)
}

/// The one policy domain of a report's policy rows; `None` when they have none or several.
fn one_domain<'a>(domains: &[Option<&'a str>]) -> Option<&'a str> {
    let first = (*domains.first()?)?;
    domains
        .iter()
        .all(|domain| *domain == Some(first))
        .then_some(first)
}

fn reports_daily(
    reports: &RecordBatch,
    PolicyRuns {
        domain: policy_domain,
        runs,
    }: &PolicyRuns<'_>,
) -> Result<RecordBatch, ArrowError> {
    let date = dates(reports)?;
    let uid = texts(reports, "report_uid")?;
    let org = Codes::of(reports, "organization_name")?;
    let received = column(reports, "received_at")?
        .as_primitive_opt::<TimestampMicrosecondType>()
        .ok_or_else(|| ArrowError::InvalidArgumentError("received_at type".into()))?;
    // The reports' rows and their policies' runs come in the same order (the flattener
    // writes a report's row and its policies together), so they are walked side by side; a
    // report without policies has no run.
    let mut next_run = runs.iter().peekable();
    let mut domain_of_row = Vec::with_capacity(uid.len());
    for &report in &uid {
        let domain = match next_run.peek() {
            Some(&&(run_uid, first, end)) if run_uid == report && report.is_some() => {
                next_run.next();
                one_domain(&policy_domain[first..end])
            }
            _ => None,
        };
        domain_of_row.push(domain);
    }
    if next_run.next().is_some() {
        return Err(ArrowError::InvalidArgumentError(
            "policies rows without their report, or in another order than the reports".into(),
        ));
    }
    let mut groups: Groups<(i32, i32, Option<&str>), (i64, i64)> = Groups::with_capacity(64);
    for i in 0..reports.num_rows() {
        let group = groups.entry((date[i], org.code(i), domain_of_row[i]), || (0, i64::MIN));
        group.0 += 1;
        group.1 = group.1.max(received.value(i));
    }
    let keys = || groups.keys();
    let values = || groups.values();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Date32Array::from_iter_values(keys().map(|k| k.0))),
        org.column(keys().map(|k| k.1)),
        Arc::new(StringArray::from_iter(keys().map(|k| k.2))),
        Arc::new(Int64Array::from_iter_values(values().map(|m| m.0))),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(values().map(|m| m.1)).with_timezone("UTC"),
        ),
    ];
    RecordBatch::try_new(reports_daily_schema(), columns)
}

/// Rows of one rollup table (batches with its schema) summed again per key: what a
/// compaction writes in place of several files' rows. The key is every text and date
/// column; `Int64` columns are summed (null only when every value was), timestamps take
/// the latest. Rows come out ordered by key.
pub fn merge(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<RecordBatch, ArrowError> {
    enum Role {
        Date,
        Text,
        Sum,
        Latest,
    }
    let roles: Vec<Role> = schema
        .fields()
        .iter()
        .map(|field| match field.data_type() {
            DataType::Date32 => Ok(Role::Date),
            DataType::Utf8 | DataType::Dictionary(_, _) => Ok(Role::Text),
            DataType::Int64 => Ok(Role::Sum),
            DataType::Timestamp(TimeUnit::Microsecond, _) => Ok(Role::Latest),
            other => Err(ArrowError::InvalidArgumentError(format!(
                "{}: a rollup column of type {other}",
                field.name()
            ))),
        })
        .collect::<Result<_, _>>()?;
    /// One key column's value: a date or a text.
    #[derive(PartialEq, Eq, PartialOrd, Ord, Hash)]
    enum KeyPart<'a> {
        Date(i32),
        Text(Option<&'a str>),
    }
    let mut groups: BTreeMap<Vec<KeyPart<'_>>, Vec<Option<i64>>> = BTreeMap::new();
    for batch in batches {
        if batch.schema().fields() != schema.fields() {
            return Err(ArrowError::InvalidArgumentError(
                "batches of another table were given to merge".into(),
            ));
        }
        for row in 0..batch.num_rows() {
            let mut key = Vec::new();
            let mut measures = Vec::new();
            for (column, role) in batch.columns().iter().zip(&roles) {
                match role {
                    Role::Date => key.push(KeyPart::Date(
                        column.as_primitive::<Date32Type>().value(row),
                    )),
                    Role::Text => key.push(KeyPart::Text(text(column.as_ref(), row)?)),
                    Role::Sum => {
                        let values = column.as_primitive::<Int64Type>();
                        measures.push((!values.is_null(row)).then(|| values.value(row)));
                    }
                    Role::Latest => {
                        let values = column.as_primitive::<TimestampMicrosecondType>();
                        measures.push((!values.is_null(row)).then(|| values.value(row)));
                    }
                }
            }
            match groups.get_mut(&key) {
                None => {
                    groups.insert(key, measures);
                }
                Some(totals) => {
                    let mut m = 0;
                    for role in &roles {
                        let combine: fn(i64, i64) -> i64 = match role {
                            Role::Sum => i64::saturating_add,
                            Role::Latest => i64::max,
                            Role::Date | Role::Text => continue,
                        };
                        totals[m] = match (totals[m], measures[m]) {
                            (Some(a), Some(b)) => Some(combine(a, b)),
                            (a, b) => a.or(b),
                        };
                        m += 1;
                    }
                }
            }
        }
    }
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(roles.len());
    let (mut k, mut m) = (0, 0);
    for (field, role) in schema.fields().iter().zip(&roles) {
        let column: ArrayRef = match role {
            Role::Date | Role::Text => {
                let part = |key: &Vec<KeyPart<'_>>| match &key[k] {
                    KeyPart::Text(text) => text.map(str::to_owned),
                    KeyPart::Date(_) => None,
                };
                let column: ArrayRef = match (role, field.data_type()) {
                    (Role::Date, _) => Arc::new(Date32Array::from_iter_values(groups.keys().map(
                        |key| match key[k] {
                            KeyPart::Date(day) => day,
                            KeyPart::Text(_) => 0,
                        },
                    ))),
                    (_, DataType::Dictionary(_, _)) => dictionary(groups.keys().map(part)),
                    _ => Arc::new(StringArray::from_iter(groups.keys().map(part))),
                };
                k += 1;
                column
            }
            Role::Sum => {
                let index = m;
                m += 1;
                Arc::new(Int64Array::from_iter(groups.values().map(|v| v[index])))
            }
            Role::Latest => {
                let index = m;
                m += 1;
                let DataType::Timestamp(_, zone) = field.data_type() else {
                    unreachable!("a Latest column is a timestamp");
                };
                Arc::new(
                    TimestampMicrosecondArray::from_iter(groups.values().map(|v| v[index]))
                        .with_timezone_opt(zone.clone()),
                )
            }
        };
        columns.push(column);
    }
    RecordBatch::try_new(Arc::clone(schema), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::flatten;

    fn reports() -> Vec<crate::ReceivedReport<'static>> {
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus");
        let mut out = Vec::new();
        for (n, name) in [
            "domainaware__parsedmarc/rfc8460.json",
            "domainaware__parsedmarc/mail.ru.json",
            "cry-inc__dmarc-report-viewer/google.json",
        ]
        .iter()
        .enumerate()
        {
            let json = std::fs::read_to_string(corpus.join(name)).unwrap();
            let mut report = crate::parse_report(&json).unwrap().into_owned();
            // Two policies for one domain in one report: counted once in `reports`.
            if n == 0 {
                let twin = report.policies[0].clone();
                report.policies.push(twin);
            }
            out.push(crate::ReceivedReport {
                report,
                envelope: crate::Envelope {
                    transport: crate::Transport::Https,
                    received_at: chrono::DateTime::from_timestamp(1_700_000_000 + n as i64, 0)
                        .unwrap(),
                    submitter_header: None,
                    dkim: None,
                },
                raw_json: json.into(),
            });
        }
        out
    }

    fn column_sum(batch: &RecordBatch, name: &str) -> i64 {
        batch
            .column_by_name(name)
            .unwrap()
            .as_primitive::<Int64Type>()
            .iter()
            .flatten()
            .sum()
    }

    #[test]
    fn policies_in_another_order_than_their_reports_are_refused_not_miscounted() {
        let tables = flatten(&reports()).unwrap();
        let backwards: Vec<u32> = (0..tables.policies.num_rows() as u32).rev().collect();
        let backwards = arrow::compute::take_record_batch(
            &tables.policies,
            &arrow::array::UInt32Array::from(backwards),
        )
        .unwrap();
        let runs = PolicyRuns::of(&backwards).unwrap();
        let error = reports_daily(&tables.reports, &runs).unwrap_err();
        assert!(error.to_string().contains("another order"), "{error}");
        // In their order, every report finds its policies.
        let runs = PolicyRuns::of(&tables.policies).unwrap();
        let daily = reports_daily(&tables.reports, &runs).unwrap();
        assert_eq!(column_sum(&daily, "reports"), 3);
        assert_eq!(
            daily.column_by_name("policy_domain").unwrap().null_count(),
            0
        );
    }

    #[test]
    fn rollups_add_up_to_their_rows_and_merging_sums_them_again() {
        let reports = reports();
        let whole = Rollups::of(&flatten(&reports).unwrap()).unwrap();
        let tables = flatten(&reports).unwrap();
        assert_eq!(
            column_sum(&whole.policies_daily, "policies") as usize,
            tables.policies.num_rows()
        );
        // One report has two policies for one domain: three reports, three domain-reports.
        assert_eq!(column_sum(&whole.policies_daily, "reports"), 3);
        assert_eq!(column_sum(&whole.reports_daily, "reports"), 3);
        assert_eq!(
            column_sum(&whole.failures_daily, "failure_rows") as usize,
            tables.failures.num_rows()
        );
        // Each report alone, then merged: the same as all at once.
        let parts: Vec<Rollups> = reports
            .chunks(1)
            .map(|one| Rollups::of(&flatten(one).unwrap()).unwrap())
            .collect();
        for name in ROLLUPS {
            let schema = schema_of(name).unwrap();
            let pieces: Vec<RecordBatch> = parts
                .iter()
                .map(|p| p.table(name).unwrap().clone())
                .collect();
            let merged = merge(&schema, &pieces).unwrap();
            let again = merge(&schema, std::slice::from_ref(whole.table(name).unwrap())).unwrap();
            assert_eq!(merged, again, "{name}");
            assert_eq!(
                merged.num_rows(),
                whole.table(name).unwrap().num_rows(),
                "{name}"
            );
        }
    }
}
