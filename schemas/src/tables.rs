//! The three tables analysts query, as Arrow schemas, and flattening reports into them.
//!
//! The schemas are defined here once; the transformer writes them to Parquet and the query
//! service reads them. Column names are the RFC 8460 JSON names in snake_case; timestamps
//! are UTC microseconds; `date` is the UTC date of `start_datetime` and the partition key.
//! Every row repeats the keys an analyst groups by (organisation, policy domain and type), so
//! no question needs a join.
//!
//! Dictionary encoding is used only where cardinality is low (organisation, transport,
//! policy type, result type, STS mode): grouping a million MX names as dictionaries was 16
//! times slower than as plain strings (DESIGN.md).
//!
//! ## `reports`: one row per report
//! | column | type | meaning | null when |
//! |---|---|---|---|
//! | report_uid | Utf8 | stable id from the dedup key ([`crate::dedup`]) | never |
//! | organization_name | Dict(Utf8) | `organization-name` | never |
//! | contact_info | Utf8 | `contact-info` | sender wrote null or nothing |
//! | report_id | Utf8 | `report-id` | never |
//! | start_datetime, end_datetime | Timestamp(µs, UTC) | `date-range` | never |
//! | date | Date32 | UTC date of start_datetime; partition key | never |
//! | received_at | Timestamp(µs, UTC) | when the receiver accepted it | never |
//! | transport | Dict(Utf8) | `https`, `smtp` or `import` | never |
//! | submitter | Utf8 | `TLS-Report-Submitter` header, else the contact-info domain | neither known |
//! | dkim | Dict(Utf8) | DKIM outcome of a mailed report: `pass`, `fail` or `none` (unsigned) | not received by SMTP |
//! | policy_count | Int32 | number of policies | never |
//! | total_successful_session_count, total_failure_session_count | Int64 | sums over the policies' summaries (a missing count adds 0) | never |
//! | warnings | List(Utf8) | distinct quirk codes ([`crate::WarningCode`]), first-seen order | never (empty list) |
//! | raw_json | Utf8 | the decoded report as received | never |
//!
//! ## `policies`: one row per policy of a report
//! | column | type | meaning | null when |
//! |---|---|---|---|
//! | report_uid, date, start_datetime, organization_name | | as in `reports` | never |
//! | policy_index | Int32 | 0-based position in `policies` | never |
//! | policy_type | Dict(Utf8) | `sts`, `tlsa`, `no-policy-found`, or as written | sender gave none |
//! | policy_domain | Utf8 | `policy-domain` | sender gave none |
//! | policy_string | List(Utf8) | `policy-string` lines or TLSA records | never (empty list) |
//! | mx_host | List(Utf8) | `mx-host` patterns | never (empty list) |
//! | sts_mode | Dict(Utf8) | `mode` from an STS policy string | not STS, or no mode line |
//! | sts_max_age | Int64 | `max_age` from an STS policy string, seconds | not STS, or unreadable |
//! | total_successful_session_count, total_failure_session_count | Int64 | the summary as written | sender left the count out |
//!
//! ## `failures`: one row per `failure-details` entry
//! | column | type | meaning | null when |
//! |---|---|---|---|
//! | report_uid, policy_index, date, start_datetime, organization_name, policy_type, policy_domain | | as in `policies` | as there |
//! | result_type | Dict(Utf8) | `result-type` as written | never (empty when absent) |
//! | sending_mta_ip, receiving_mx_hostname, receiving_mx_helo, receiving_ip | Utf8 | as written, even when not an IP | sender gave none |
//! | failed_session_count | Int64 | `failed-session-count` | sender gave none |
//! | additional_information, failure_reason_code | Utf8 | as written | sender gave none |

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, AsArray, Date32Builder, DictionaryArray, Int32Builder,
    Int64Builder, ListBuilder, RecordBatch, StringArray, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{
    DataType, Date32Type, Field, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit,
    TimestampMicrosecondType,
};
use arrow::error::ArrowError;
use chrono::{DateTime, Utc};
use thiserror::Error;

use crate::envelope::{DkimOutcome, Envelope, ReceivedReport, Transport};
use crate::model::{FailureDetails, Policy, PolicyResult, PolicyType, Report, ResultType, Summary};
use crate::warning::{Warning, WarningCode};

/// Why reports could not be put into, or read back from, the tables.
#[derive(Debug, Error)]
pub enum TablesError {
    /// A count does not fit the Int64 column. Validation refuses such counts, so this means a
    /// `Report` was built by hand.
    #[error("{column}: {value} does not fit a 64-bit signed integer")]
    CountTooLarge { column: &'static str, value: u64 },
    /// Arrow refused to build a batch (a bug: the builders follow the schemas).
    #[error("building an Arrow batch: {0}")]
    Arrow(#[from] ArrowError),
    /// Batches given to [`unflatten`] do not have the shape of these tables.
    #[error("not a tlsrpt table: {0}")]
    Shape(String),
}

/// The three record batches of a set of reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Tables {
    pub reports: RecordBatch,
    pub policies: RecordBatch,
    pub failures: RecordBatch,
}

fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn dict() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

fn list_of_text() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

static REPORTS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("report_uid", DataType::Utf8, false),
        Field::new("organization_name", dict(), false),
        Field::new("contact_info", DataType::Utf8, true),
        Field::new("report_id", DataType::Utf8, false),
        Field::new("start_datetime", utc_micros(), false),
        Field::new("end_datetime", utc_micros(), false),
        Field::new("date", DataType::Date32, false),
        Field::new("received_at", utc_micros(), false),
        Field::new("transport", dict(), false),
        Field::new("submitter", DataType::Utf8, true),
        Field::new("dkim", dict(), true),
        Field::new("policy_count", DataType::Int32, false),
        Field::new("total_successful_session_count", DataType::Int64, false),
        Field::new("total_failure_session_count", DataType::Int64, false),
        Field::new("warnings", list_of_text(), false),
        Field::new("raw_json", DataType::Utf8, false),
    ]))
});

static POLICIES_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("report_uid", DataType::Utf8, false),
        Field::new("policy_index", DataType::Int32, false),
        Field::new("date", DataType::Date32, false),
        Field::new("start_datetime", utc_micros(), false),
        Field::new("organization_name", dict(), false),
        Field::new("policy_type", dict(), true),
        Field::new("policy_domain", DataType::Utf8, true),
        Field::new("policy_string", list_of_text(), false),
        Field::new("mx_host", list_of_text(), false),
        Field::new("sts_mode", dict(), true),
        Field::new("sts_max_age", DataType::Int64, true),
        Field::new("total_successful_session_count", DataType::Int64, true),
        Field::new("total_failure_session_count", DataType::Int64, true),
    ]))
});

static FAILURES_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("report_uid", DataType::Utf8, false),
        Field::new("policy_index", DataType::Int32, false),
        Field::new("date", DataType::Date32, false),
        Field::new("start_datetime", utc_micros(), false),
        Field::new("organization_name", dict(), false),
        Field::new("policy_type", dict(), true),
        Field::new("policy_domain", DataType::Utf8, true),
        Field::new("result_type", dict(), false),
        Field::new("sending_mta_ip", DataType::Utf8, true),
        Field::new("receiving_mx_hostname", DataType::Utf8, true),
        Field::new("receiving_mx_helo", DataType::Utf8, true),
        Field::new("receiving_ip", DataType::Utf8, true),
        Field::new("failed_session_count", DataType::Int64, true),
        Field::new("additional_information", DataType::Utf8, true),
        Field::new("failure_reason_code", DataType::Utf8, true),
    ]))
});

/// The schema of the `reports` table.
pub fn reports_schema() -> SchemaRef {
    REPORTS_SCHEMA.clone()
}

/// The schema of the `policies` table.
pub fn policies_schema() -> SchemaRef {
    POLICIES_SCHEMA.clone()
}

/// The schema of the `failures` table.
pub fn failures_schema() -> SchemaRef {
    FAILURES_SCHEMA.clone()
}

/// A text column that remembers how large its last batch was and starts the next one with
/// that capacity: a transformer cuts batches of similar size, and growing `raw_json` by
/// doubling copied every report several times.
struct TextColumn {
    builder: StringBuilder,
}

impl TextColumn {
    fn new() -> Self {
        Self {
            builder: StringBuilder::new(),
        }
    }

    fn append(&mut self, value: &str) {
        self.builder.append_value(value);
    }

    fn append_option(&mut self, value: Option<&str>) {
        self.builder.append_option(value);
    }

    fn finish(&mut self) -> ArrayRef {
        let rows = self.builder.len();
        let bytes = self.builder.values_slice().len();
        let array = self.builder.finish();
        self.builder = StringBuilder::with_capacity(rows, bytes);
        Arc::new(array)
    }

    /// Takes back the memory of `array`, an array this column finished and nothing else
    /// holds any more, for the next batch: memory already touched, where a fresh allocation
    /// costs the kernel zeroing every page on first write (a few percent of a transformer's
    /// time for `raw_json`). Does nothing if the builder has rows or the array is shared.
    fn recycle(&mut self, array: ArrayRef) {
        if !self.builder.is_empty() {
            return;
        }
        let data = array.to_data();
        drop(array);
        if data.data_type() != &DataType::Utf8 {
            return;
        }
        // No rows of it, same allocations: its builder is empty and appends from the
        // start of the old buffers (`into_builder` cuts the values at the last offset).
        let strings = StringArray::from(data);
        let empty = strings.slice(0, 0);
        drop(strings);
        if let Ok(builder) = empty.into_builder() {
            self.builder = builder;
        }
    }
}

/// A list-of-text column that, like [`TextColumn`], starts each batch with the capacity the
/// last one needed. `ListBuilder` names its item field "item", nullable, as the schemas do.
struct TextListColumn {
    builder: ListBuilder<StringBuilder>,
}

impl TextListColumn {
    fn new() -> Self {
        Self {
            builder: ListBuilder::new(StringBuilder::new()),
        }
    }

    /// Appends one list of `items`.
    fn append<'a>(&mut self, items: impl IntoIterator<Item = &'a str>) {
        for item in items {
            self.builder.values().append_value(item);
        }
        self.builder.append(true);
    }

    fn finish(&mut self) -> ArrayRef {
        let lists = self.builder.len();
        let items = self.builder.values_ref().len();
        let bytes = self.builder.values_ref().values_slice().len();
        let array = self.builder.finish();
        self.builder =
            ListBuilder::with_capacity(StringBuilder::with_capacity(items, bytes), lists);
        Arc::new(array)
    }
}

/// A dictionary-encoded text column whose keys the flattener looks up itself, so a value
/// repeated on many rows (a report's organisation on each of its failure rows) is hashed
/// once per report rather than once per row, as `StringDictionaryBuilder` would.
struct DictColumn {
    keys: Int32Builder,
    values: StringBuilder,
    /// foldhash rather than SipHash: the values come from reports, but a collision attack
    /// could only slow one batch's flattening, and SipHash was a visible share of it.
    index: HashMap<Box<str>, i32, foldhash::fast::RandomState>,
    /// The key looked up last: most of these columns repeat one value row after row (one
    /// transport, one result type per policy), and comparing against it spares the hash.
    last: Option<i32>,
}

impl DictColumn {
    fn new() -> Self {
        Self {
            keys: Int32Builder::new(),
            values: StringBuilder::new(),
            index: HashMap::default(),
            last: None,
        }
    }

    /// The key of `value` in this batch's dictionary, adding it if new.
    fn key(&mut self, value: &str) -> i32 {
        if let Some(last) = self.last {
            let offsets = self.values.offsets_slice();
            let (start, end) = (offsets[last as usize], offsets[last as usize + 1]);
            if &self.values.values_slice()[start as usize..end as usize] == value.as_bytes() {
                return last;
            }
        }
        let key = match self.index.get(value) {
            Some(&key) => key,
            None => {
                // A batch holds far fewer than 2^31 distinct values: fewer rows than that.
                let key = self.index.len() as i32;
                self.index.insert(value.into(), key);
                self.values.append_value(value);
                key
            }
        };
        self.last = Some(key);
        key
    }

    fn append_key(&mut self, key: Option<i32>) {
        self.keys.append_option(key);
    }

    fn append(&mut self, value: Option<&str>) {
        let key = value.map(|v| self.key(v));
        self.keys.append_option(key);
    }

    fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        self.index.clear();
        self.last = None;
        let keys = self.keys.finish();
        let values: ArrayRef = Arc::new(self.values.finish());
        Ok(Arc::new(DictionaryArray::<Int32Type>::try_new(
            keys, values,
        )?))
    }
}

fn timestamp_builder() -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::new().with_timezone("UTC")
}

fn count(column: &'static str, value: u64) -> Result<i64, TablesError> {
    i64::try_from(value).map_err(|_| TablesError::CountTooLarge { column, value })
}

fn opt_count(column: &'static str, value: Option<u64>) -> Result<Option<i64>, TablesError> {
    value.map(|v| count(column, v)).transpose()
}

/// Days since 1970-01-01 of an instant's UTC date.
fn date32(at: &DateTime<Utc>) -> i32 {
    Date32Type::from_naive_date(at.date_naive())
}

struct ReportColumns {
    report_uid: TextColumn,
    organization_name: DictColumn,
    contact_info: TextColumn,
    report_id: TextColumn,
    start_datetime: TimestampMicrosecondBuilder,
    end_datetime: TimestampMicrosecondBuilder,
    date: Date32Builder,
    received_at: TimestampMicrosecondBuilder,
    transport: DictColumn,
    submitter: TextColumn,
    dkim: DictColumn,
    policy_count: Int32Builder,
    total_successful_session_count: Int64Builder,
    total_failure_session_count: Int64Builder,
    warnings: TextListColumn,
    raw_json: TextColumn,
}

struct PolicyColumns {
    report_uid: TextColumn,
    policy_index: Int32Builder,
    date: Date32Builder,
    start_datetime: TimestampMicrosecondBuilder,
    organization_name: DictColumn,
    policy_type: DictColumn,
    policy_domain: TextColumn,
    policy_string: TextListColumn,
    mx_host: TextListColumn,
    sts_mode: DictColumn,
    sts_max_age: Int64Builder,
    total_successful_session_count: Int64Builder,
    total_failure_session_count: Int64Builder,
}

struct FailureColumns {
    report_uid: TextColumn,
    policy_index: Int32Builder,
    date: Date32Builder,
    start_datetime: TimestampMicrosecondBuilder,
    organization_name: DictColumn,
    policy_type: DictColumn,
    policy_domain: TextColumn,
    result_type: DictColumn,
    sending_mta_ip: TextColumn,
    receiving_mx_hostname: TextColumn,
    receiving_mx_helo: TextColumn,
    receiving_ip: TextColumn,
    failed_session_count: Int64Builder,
    additional_information: TextColumn,
    failure_reason_code: TextColumn,
}

impl ReportColumns {
    fn new() -> Self {
        Self {
            report_uid: TextColumn::new(),
            organization_name: DictColumn::new(),
            contact_info: TextColumn::new(),
            report_id: TextColumn::new(),
            start_datetime: timestamp_builder(),
            end_datetime: timestamp_builder(),
            date: Date32Builder::new(),
            received_at: timestamp_builder(),
            transport: DictColumn::new(),
            submitter: TextColumn::new(),
            dkim: DictColumn::new(),
            policy_count: Int32Builder::new(),
            total_successful_session_count: Int64Builder::new(),
            total_failure_session_count: Int64Builder::new(),
            warnings: TextListColumn::new(),
            raw_json: TextColumn::new(),
        }
    }

    fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            self.report_uid.finish(),
            self.organization_name.finish()?,
            self.contact_info.finish(),
            self.report_id.finish(),
            Arc::new(self.start_datetime.finish()),
            Arc::new(self.end_datetime.finish()),
            Arc::new(self.date.finish()),
            Arc::new(self.received_at.finish()),
            self.transport.finish()?,
            self.submitter.finish(),
            self.dkim.finish()?,
            Arc::new(self.policy_count.finish()),
            Arc::new(self.total_successful_session_count.finish()),
            Arc::new(self.total_failure_session_count.finish()),
            self.warnings.finish(),
            self.raw_json.finish(),
        ];
        RecordBatch::try_new(reports_schema(), columns)
    }
}

impl PolicyColumns {
    fn new() -> Self {
        Self {
            report_uid: TextColumn::new(),
            policy_index: Int32Builder::new(),
            date: Date32Builder::new(),
            start_datetime: timestamp_builder(),
            organization_name: DictColumn::new(),
            policy_type: DictColumn::new(),
            policy_domain: TextColumn::new(),
            policy_string: TextListColumn::new(),
            mx_host: TextListColumn::new(),
            sts_mode: DictColumn::new(),
            sts_max_age: Int64Builder::new(),
            total_successful_session_count: Int64Builder::new(),
            total_failure_session_count: Int64Builder::new(),
        }
    }

    fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            self.report_uid.finish(),
            Arc::new(self.policy_index.finish()),
            Arc::new(self.date.finish()),
            Arc::new(self.start_datetime.finish()),
            self.organization_name.finish()?,
            self.policy_type.finish()?,
            self.policy_domain.finish(),
            self.policy_string.finish(),
            self.mx_host.finish(),
            self.sts_mode.finish()?,
            Arc::new(self.sts_max_age.finish()),
            Arc::new(self.total_successful_session_count.finish()),
            Arc::new(self.total_failure_session_count.finish()),
        ];
        RecordBatch::try_new(policies_schema(), columns)
    }
}

impl FailureColumns {
    fn new() -> Self {
        Self {
            report_uid: TextColumn::new(),
            policy_index: Int32Builder::new(),
            date: Date32Builder::new(),
            start_datetime: timestamp_builder(),
            organization_name: DictColumn::new(),
            policy_type: DictColumn::new(),
            policy_domain: TextColumn::new(),
            result_type: DictColumn::new(),
            sending_mta_ip: TextColumn::new(),
            receiving_mx_hostname: TextColumn::new(),
            receiving_mx_helo: TextColumn::new(),
            receiving_ip: TextColumn::new(),
            failed_session_count: Int64Builder::new(),
            additional_information: TextColumn::new(),
            failure_reason_code: TextColumn::new(),
        }
    }

    fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            self.report_uid.finish(),
            Arc::new(self.policy_index.finish()),
            Arc::new(self.date.finish()),
            Arc::new(self.start_datetime.finish()),
            self.organization_name.finish()?,
            self.policy_type.finish()?,
            self.policy_domain.finish(),
            self.result_type.finish()?,
            self.sending_mta_ip.finish(),
            self.receiving_mx_hostname.finish(),
            self.receiving_mx_helo.finish(),
            self.receiving_ip.finish(),
            Arc::new(self.failed_session_count.finish()),
            self.additional_information.finish(),
            self.failure_reason_code.finish(),
        ];
        RecordBatch::try_new(failures_schema(), columns)
    }
}

/// Appends reports one at a time and cuts batches: what a transformer uses to batch by size.
pub struct TablesBuilder {
    reports: ReportColumns,
    policies: PolicyColumns,
    failures: FailureColumns,
    len: usize,
}

impl std::fmt::Debug for TablesBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TablesBuilder")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Default for TablesBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TablesBuilder {
    pub fn new() -> Self {
        Self {
            reports: ReportColumns::new(),
            policies: PolicyColumns::new(),
            failures: FailureColumns::new(),
            len: 0,
        }
    }

    /// Reports appended since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds one report's rows to all three tables. On error nothing is added.
    pub fn append(&mut self, received: &ReceivedReport<'_>) -> Result<(), TablesError> {
        self.append_with_uid(received, &received.report.report_uid())
    }

    /// [`Self::append`] for a caller that has the report's `report_uid` already (a
    /// transformer computes it to deduplicate): the key and its SHA-256 are not computed
    /// again.
    pub fn append_with_uid(
        &mut self,
        received: &ReceivedReport<'_>,
        uid: &str,
    ) -> Result<(), TablesError> {
        let report = &received.report;
        // Check every count first, so that an error leaves the columns aligned.
        let total_ok = count(
            "total_successful_session_count",
            report.total_successful_session_count(),
        )?;
        let total_failed = count(
            "total_failure_session_count",
            report.total_failure_session_count(),
        )?;
        for policy in &report.policies {
            opt_count(
                "total_successful_session_count",
                policy.summary.total_successful_session_count,
            )?;
            opt_count(
                "total_failure_session_count",
                policy.summary.total_failure_session_count,
            )?;
            for failure in &policy.failure_details {
                opt_count("failed_session_count", failure.failed_session_count)?;
            }
        }
        let policy_count = i32::try_from(report.policies.len())
            .map_err(|_| TablesError::Shape("more than 2^31 policies".into()))?;

        let start = report.date_range.start_datetime;
        let start_micros = start.timestamp_micros();
        let date = date32(&start);
        let organization: &str = &report.organization_name;

        // Looked up once per report, repeated on every policy and failure row.
        let policy_organization = self.policies.organization_name.key(organization);
        let failure_organization = self.failures.organization_name.key(organization);

        let r = &mut self.reports;
        r.report_uid.append(uid);
        r.organization_name.append(Some(organization));
        r.contact_info.append_option(report.contact_info.as_deref());
        r.report_id.append(&report.report_id);
        r.start_datetime.append_value(start_micros);
        r.end_datetime
            .append_value(report.date_range.end_datetime.timestamp_micros());
        r.date.append_value(date);
        r.received_at
            .append_value(received.envelope.received_at.timestamp_micros());
        r.transport
            .append(Some(received.envelope.transport.as_str()));
        r.submitter.append_option(received.submitter().as_deref());
        r.dkim
            .append(received.envelope.dkim.map(DkimOutcome::as_str));
        r.policy_count.append_value(policy_count);
        r.total_successful_session_count.append_value(total_ok);
        r.total_failure_session_count.append_value(total_failed);
        let mut codes: Vec<WarningCode> = Vec::new();
        for warning in &report.warnings {
            if !codes.contains(&warning.code) {
                codes.push(warning.code);
            }
        }
        r.warnings.append(codes.iter().map(|code| code.as_str()));
        r.raw_json.append(&received.raw_json);

        for (index, policy_result) in report.policies.iter().enumerate() {
            // Cannot fail: policy_count fitted an i32.
            let index = index as i32;
            let policy = &policy_result.policy;
            let policy_type = policy.policy_type.as_ref().map(PolicyType::as_str);
            let failure_policy_type = policy_type.map(|t| self.failures.policy_type.key(t));
            let p = &mut self.policies;
            p.report_uid.append(uid);
            p.policy_index.append_value(index);
            p.date.append_value(date);
            p.start_datetime.append_value(start_micros);
            p.organization_name.append_key(Some(policy_organization));
            p.policy_type.append(policy_type);
            p.policy_domain
                .append_option(policy.policy_domain.as_deref());
            p.policy_string
                .append(policy.policy_string.iter().map(|line| &**line));
            p.mx_host.append(policy.mx_host.iter().map(|host| &**host));
            let (sts_mode, sts_max_age) = policy.sts_mode_and_max_age();
            p.sts_mode.append(sts_mode);
            p.sts_max_age
                .append_option(sts_max_age.and_then(|v| i64::try_from(v).ok()));
            let summary = &policy_result.summary;
            p.total_successful_session_count
                .append_option(summary.total_successful_session_count.map(|v| v as i64));
            p.total_failure_session_count
                .append_option(summary.total_failure_session_count.map(|v| v as i64));

            for failure in &policy_result.failure_details {
                let f = &mut self.failures;
                f.report_uid.append(uid);
                f.policy_index.append_value(index);
                f.date.append_value(date);
                f.start_datetime.append_value(start_micros);
                f.organization_name.append_key(Some(failure_organization));
                f.policy_type.append_key(failure_policy_type);
                f.policy_domain
                    .append_option(policy.policy_domain.as_deref());
                f.result_type.append(Some(failure.result_type.as_str()));
                f.sending_mta_ip
                    .append_option(failure.sending_mta_ip.as_deref());
                f.receiving_mx_hostname
                    .append_option(failure.receiving_mx_hostname.as_deref());
                f.receiving_mx_helo
                    .append_option(failure.receiving_mx_helo.as_deref());
                f.receiving_ip
                    .append_option(failure.receiving_ip.as_deref());
                // Checked above to fit.
                f.failed_session_count
                    .append_option(failure.failed_session_count.map(|v| v as i64));
                f.additional_information
                    .append_option(failure.additional_information.as_deref());
                f.failure_reason_code
                    .append_option(failure.failure_reason_code.as_deref());
            }
        }
        self.len += 1;
        Ok(())
    }

    /// Gives back the tables of the last [`Self::finish`] once they are written and dropped
    /// everywhere else: the text columns (`raw_json` above all) reuse their memory for the
    /// next batch. Columns still shared, or a builder that has rows again, are left alone.
    pub fn recycle(&mut self, tables: Tables) {
        fn give_back(batch: RecordBatch, columns: &mut [(&str, &mut TextColumn)]) {
            let (schema, arrays, _) = batch.into_parts();
            for (array, field) in arrays.into_iter().zip(schema.fields()) {
                if let Some((_, column)) = columns.iter_mut().find(|(n, _)| *n == field.name()) {
                    column.recycle(array);
                }
            }
        }
        let r = &mut self.reports;
        give_back(
            tables.reports,
            &mut [
                ("report_uid", &mut r.report_uid),
                ("contact_info", &mut r.contact_info),
                ("report_id", &mut r.report_id),
                ("submitter", &mut r.submitter),
                ("raw_json", &mut r.raw_json),
            ],
        );
        let p = &mut self.policies;
        give_back(
            tables.policies,
            &mut [
                ("report_uid", &mut p.report_uid),
                ("policy_domain", &mut p.policy_domain),
            ],
        );
        let f = &mut self.failures;
        give_back(
            tables.failures,
            &mut [
                ("report_uid", &mut f.report_uid),
                ("policy_domain", &mut f.policy_domain),
                ("sending_mta_ip", &mut f.sending_mta_ip),
                ("receiving_mx_hostname", &mut f.receiving_mx_hostname),
                ("receiving_mx_helo", &mut f.receiving_mx_helo),
                ("receiving_ip", &mut f.receiving_ip),
                ("additional_information", &mut f.additional_information),
                ("failure_reason_code", &mut f.failure_reason_code),
            ],
        );
    }

    /// The batches of everything appended since the last call; the builder is empty after.
    pub fn finish(&mut self) -> Result<Tables, TablesError> {
        self.len = 0;
        Ok(Tables {
            reports: self.reports.finish()?,
            policies: self.policies.finish()?,
            failures: self.failures.finish()?,
        })
    }
}

/// Flattens reports into the three tables.
pub fn flatten(reports: &[ReceivedReport<'_>]) -> Result<Tables, TablesError> {
    let mut builder = TablesBuilder::new();
    for report in reports {
        builder.append(report)?;
    }
    builder.finish()
}

/// The tables as text, without `raw_json` (too wide to read): for golden files and for
/// looking at data in a terminal.
pub fn pretty(tables: &Tables) -> String {
    let mut out = String::new();
    for (name, batch) in [
        ("reports", &tables.reports),
        ("policies", &tables.policies),
        ("failures", &tables.failures),
    ] {
        let keep: Vec<usize> = (0..batch.num_columns())
            .filter(|&i| batch.schema().field(i).name() != "raw_json")
            .collect();
        let shown = batch
            .project(&keep)
            .expect("projection of existing columns");
        out.push_str(name);
        out.push_str(":\n");
        match arrow::util::pretty::pretty_format_batches(&[shown]) {
            Ok(table) => out.push_str(&table.to_string()),
            Err(err) => out.push_str(&format!("(cannot print: {err})")),
        }
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------------------
// Back from the tables
// ---------------------------------------------------------------------------------------

/// A column by name, downcast, with a clear error for batches of another shape.
fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, TablesError> {
    batch
        .column_by_name(name)
        .ok_or_else(|| TablesError::Shape(format!("no column {name}")))
}

fn texts(batch: &RecordBatch, name: &str) -> Result<Vec<Option<String>>, TablesError> {
    let array = column(batch, name)?;
    let array = arrow::compute::cast(array, &DataType::Utf8)?;
    let strings = array.as_string::<i32>();
    Ok((0..strings.len())
        .map(|i| (!strings.is_null(i)).then(|| strings.value(i).to_owned()))
        .collect())
}

fn text_lists(batch: &RecordBatch, name: &str) -> Result<Vec<Vec<String>>, TablesError> {
    let lists = column(batch, name)?
        .as_list_opt::<i32>()
        .ok_or_else(|| TablesError::Shape(format!("{name} is not a list")))?;
    let mut out = Vec::with_capacity(lists.len());
    for i in 0..lists.len() {
        let items = lists.value(i);
        let items = items.as_string::<i32>();
        out.push(
            (0..items.len())
                .map(|j| items.value(j).to_owned())
                .collect(),
        );
    }
    Ok(out)
}

fn ints64(batch: &RecordBatch, name: &str) -> Result<Vec<Option<i64>>, TablesError> {
    let array = column(batch, name)?
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| TablesError::Shape(format!("{name} is not Int64")))?;
    Ok((0..array.len())
        .map(|i| (!array.is_null(i)).then(|| array.value(i)))
        .collect())
}

fn ints32(batch: &RecordBatch, name: &str) -> Result<Vec<i32>, TablesError> {
    let array = column(batch, name)?
        .as_primitive_opt::<Int32Type>()
        .ok_or_else(|| TablesError::Shape(format!("{name} is not Int32")))?;
    Ok(array.values().to_vec())
}

fn instants(batch: &RecordBatch, name: &str) -> Result<Vec<DateTime<Utc>>, TablesError> {
    let array = column(batch, name)?
        .as_primitive_opt::<TimestampMicrosecondType>()
        .ok_or_else(|| TablesError::Shape(format!("{name} is not a timestamp")))?;
    array
        .values()
        .iter()
        .map(|&micros| {
            DateTime::from_timestamp_micros(micros)
                .ok_or_else(|| TablesError::Shape(format!("{name}: {micros} out of range")))
        })
        .collect()
}

fn to_count(value: Option<i64>) -> Option<u64> {
    value.and_then(|v| u64::try_from(v).ok())
}

/// Rebuilds reports from their rows (each `report_uid` once per batch), from the columns only (never from `raw_json`).
///
/// What comes back: the report model exactly (policies in order, failures in order), with
/// each warning's code but not its path (paths are not stored); the envelope's transport and
/// arrival time; `raw_json`; and the `submitter` column as `submitter_header` (the column
/// holds the header or the contact-info domain, which cannot be told apart).
pub fn unflatten(tables: &Tables) -> Result<Vec<ReceivedReport<'static>>, TablesError> {
    let r = &tables.reports;
    let uids = texts(r, "report_uid")?;
    let organizations = texts(r, "organization_name")?;
    let contacts = texts(r, "contact_info")?;
    let report_ids = texts(r, "report_id")?;
    let starts = instants(r, "start_datetime")?;
    let ends = instants(r, "end_datetime")?;
    let received = instants(r, "received_at")?;
    let transports = texts(r, "transport")?;
    let submitters = texts(r, "submitter")?;
    let dkims = texts(r, "dkim")?;
    let warnings = text_lists(r, "warnings")?;
    let raw = texts(r, "raw_json")?;

    let mut reports = Vec::with_capacity(r.num_rows());
    let mut by_uid: HashMap<String, usize> = HashMap::with_capacity(r.num_rows());
    for row in 0..r.num_rows() {
        let uid = uids[row].clone().unwrap_or_default();
        let transport = transports[row]
            .as_deref()
            .and_then(Transport::parse)
            .ok_or_else(|| {
                TablesError::Shape(format!("unknown transport {:?}", transports[row]))
            })?;
        by_uid.insert(uid, row);
        reports.push(ReceivedReport {
            report: Report {
                organization_name: organizations[row].clone().unwrap_or_default().into(),
                date_range: crate::model::DateRange {
                    start_datetime: starts[row],
                    end_datetime: ends[row],
                },
                contact_info: contacts[row].clone().map(Cow::Owned),
                report_id: report_ids[row].clone().unwrap_or_default().into(),
                policies: Vec::new(),
                warnings: warnings[row]
                    .iter()
                    .filter_map(|code| WarningCode::from_code(code))
                    .map(|code| Warning::new(code, ""))
                    .collect(),
            },
            envelope: Envelope {
                transport,
                received_at: received[row],
                submitter_header: submitters[row].clone(),
                dkim: dkims[row].as_deref().and_then(DkimOutcome::parse),
            },
            raw_json: raw[row].clone().unwrap_or_default().into(),
        });
    }

    let p = &tables.policies;
    let p_uids = texts(p, "report_uid")?;
    let p_index = ints32(p, "policy_index")?;
    let p_types = texts(p, "policy_type")?;
    let p_domains = texts(p, "policy_domain")?;
    let p_strings = text_lists(p, "policy_string")?;
    let p_mx = text_lists(p, "mx_host")?;
    let p_ok = ints64(p, "total_successful_session_count")?;
    let p_failed = ints64(p, "total_failure_session_count")?;
    let report_of = |uid: &Option<String>| -> Result<usize, TablesError> {
        by_uid
            .get(uid.as_deref().unwrap_or_default())
            .copied()
            .ok_or_else(|| TablesError::Shape(format!("row for unknown report {uid:?}")))
    };
    for row in 0..p.num_rows() {
        let report = &mut reports[report_of(&p_uids[row])?].report;
        if usize::try_from(p_index[row]).ok() != Some(report.policies.len()) {
            return Err(TablesError::Shape("policy rows out of order".into()));
        }
        report.policies.push(PolicyResult {
            policy: Policy {
                policy_type: p_types[row].as_deref().map(PolicyType::parse),
                policy_string: p_strings[row].iter().cloned().map(Cow::Owned).collect(),
                policy_domain: p_domains[row].clone().map(Cow::Owned),
                mx_host: p_mx[row].iter().cloned().map(Cow::Owned).collect(),
            },
            summary: Summary {
                total_successful_session_count: to_count(p_ok[row]),
                total_failure_session_count: to_count(p_failed[row]),
            },
            failure_details: Vec::new(),
        });
    }

    let f = &tables.failures;
    let f_uids = texts(f, "report_uid")?;
    let f_index = ints32(f, "policy_index")?;
    let f_types = texts(f, "result_type")?;
    let f_sending = texts(f, "sending_mta_ip")?;
    let f_mx = texts(f, "receiving_mx_hostname")?;
    let f_helo = texts(f, "receiving_mx_helo")?;
    let f_ip = texts(f, "receiving_ip")?;
    let f_count = ints64(f, "failed_session_count")?;
    let f_info = texts(f, "additional_information")?;
    let f_reason = texts(f, "failure_reason_code")?;
    for row in 0..f.num_rows() {
        let report = &mut reports[report_of(&f_uids[row])?].report;
        let policy = usize::try_from(f_index[row])
            .ok()
            .and_then(|i| report.policies.get_mut(i))
            .ok_or_else(|| TablesError::Shape("failure row for a missing policy".into()))?;
        policy.failure_details.push(FailureDetails {
            result_type: ResultType::parse(f_types[row].as_deref().unwrap_or_default()),
            sending_mta_ip: f_sending[row].clone().map(Cow::Owned),
            receiving_mx_hostname: f_mx[row].clone().map(Cow::Owned),
            receiving_mx_helo: f_helo[row].clone().map(Cow::Owned),
            receiving_ip: f_ip[row].clone().map(Cow::Owned),
            failed_session_count: to_count(f_count[row]),
            additional_information: f_info[row].clone().map(Cow::Owned),
            failure_reason_code: f_reason[row].clone().map(Cow::Owned),
        });
    }
    Ok(reports)
}
