//! The `alerts` table: every alert the anomaly jobs fired or resolved, one row each,
//! queryable like the report tables (`SELECT * FROM alerts WHERE state = 'firing'`).
//!
//! Written by `tlsrpt-alerts` under `<root>/alerts/date=YYYY-MM-DD/` (the UTC date of `at`)
//! with the layout's names ([`crate::layout`]): partition 0 and the range of event sequence
//! numbers the file holds, so a pass that is repeated after a crash writes the same name
//! again rather than a second copy.
//!
//! | column | type | meaning |
//! |---|---|---|
//! | event_seq | Int64 | the alert's sequence number, in the order alerts happened |
//! | incident_id | Int64 | the incident; its firing and its resolution share it |
//! | state | Utf8 | `firing` or `resolved` |
//! | at | Timestamp(µs, UTC) | when it was found (the evaluation time that first had the evidence) |
//! | date | Date32 | the UTC date of `at` (the partition) |
//! | detector | Utf8 | `new-result-type`, `failure-spike`, `reporter-spike`, `mode-change`, `reporter-quiet`, `rule` |
//! | severity | Utf8 | `info`, `warning`, `critical` |
//! | policy_domain | Utf8 | the domain |
//! | day, since | Date32 | the report day that showed it; the incident's first report day |
//! | result_type, reporter | Utf8 | when the alert is about one |
//! | receiving_mx_hostnames | List(Utf8) | the MX hosts concerned |
//! | rate, baseline_rate, threshold_rate | Float64 | failure rate seen, usual, alerting threshold (spikes) |
//! | failed_sessions, sessions | Int64 | the counts behind the rate |
//! | old_mode, new_mode | Utf8 | MTA-STS modes (mode changes) |
//! | title, text, sql | Utf8 | the alert's words and the query to look deeper |

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// The table's name.
pub const ALERTS: &str = "alerts";

static ALERTS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("event_seq", DataType::Int64, false),
        Field::new("incident_id", DataType::Int64, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("at", utc, false),
        Field::new("date", DataType::Date32, false),
        Field::new("detector", DataType::Utf8, false),
        Field::new("severity", DataType::Utf8, false),
        Field::new("policy_domain", DataType::Utf8, false),
        Field::new("day", DataType::Date32, false),
        Field::new("since", DataType::Date32, false),
        Field::new("result_type", DataType::Utf8, true),
        Field::new(
            "receiving_mx_hostnames",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        ),
        Field::new("reporter", DataType::Utf8, true),
        Field::new("rate", DataType::Float64, true),
        Field::new("baseline_rate", DataType::Float64, true),
        Field::new("threshold_rate", DataType::Float64, true),
        Field::new("failed_sessions", DataType::Int64, true),
        Field::new("sessions", DataType::Int64, true),
        Field::new("old_mode", DataType::Utf8, true),
        Field::new("new_mode", DataType::Utf8, true),
        Field::new("title", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
        Field::new("sql", DataType::Utf8, false),
    ]))
});

/// The schema of the `alerts` table.
pub fn alerts_schema() -> SchemaRef {
    ALERTS_SCHEMA.clone()
}
