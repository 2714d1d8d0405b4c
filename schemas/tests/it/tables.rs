//! The Arrow tables: column contract, field fidelity, and model → Arrow → model round trips.

use std::borrow::Cow;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use tlsrpt_schemas::envelope::DkimOutcome;
use tlsrpt_schemas::tables::{
    TablesBuilder, failures_schema, flatten, policies_schema, reports_schema, unflatten,
};
use tlsrpt_schemas::{
    DateRange, Envelope, FailureDetails, Policy, PolicyResult, PolicyType, ReceivedReport, Report,
    ResultType, Summary, Transport, Warning, WarningCode, decode,
};

use crate::support::RFC_EXAMPLE;

fn names(schema: &arrow::datatypes::Schema) -> Vec<&str> {
    schema.fields().iter().map(|f| f.name().as_str()).collect()
}

/// The analysts' contract (DESIGN.md, "The tables"): names and order.
#[test]
fn columns_are_the_contract() {
    assert_eq!(
        names(&reports_schema()),
        [
            "report_uid",
            "organization_name",
            "contact_info",
            "report_id",
            "start_datetime",
            "end_datetime",
            "date",
            "received_at",
            "transport",
            "submitter",
            "dkim",
            "policy_count",
            "total_successful_session_count",
            "total_failure_session_count",
            "warnings",
            "raw_json",
        ]
    );
    assert_eq!(
        names(&policies_schema()),
        [
            "report_uid",
            "policy_index",
            "date",
            "start_datetime",
            "organization_name",
            "policy_type",
            "policy_domain",
            "policy_string",
            "mx_host",
            "sts_mode",
            "sts_max_age",
            "total_successful_session_count",
            "total_failure_session_count",
        ]
    );
    assert_eq!(
        names(&failures_schema()),
        [
            "report_uid",
            "policy_index",
            "date",
            "start_datetime",
            "organization_name",
            "policy_type",
            "policy_domain",
            "result_type",
            "sending_mta_ip",
            "receiving_mx_hostname",
            "receiving_mx_helo",
            "receiving_ip",
            "failed_session_count",
            "additional_information",
            "failure_reason_code",
        ]
    );
}

fn received(report: Report<'static>, raw_json: String) -> ReceivedReport<'static> {
    ReceivedReport {
        report,
        envelope: Envelope {
            transport: Transport::Https,
            received_at: Utc.with_ymd_and_hms(2016, 4, 2, 8, 0, 0).unwrap(),
            submitter_header: None,
            dkim: None,
        },
        raw_json: raw_json.into(),
    }
}

fn text(batch: &RecordBatch, column: &str, row: usize) -> Option<String> {
    let array = arrow::compute::cast(
        batch.column_by_name(column).unwrap(),
        &arrow::datatypes::DataType::Utf8,
    )
    .unwrap();
    let strings = array.as_string::<i32>();
    (!strings.is_null(row)).then(|| strings.value(row).to_owned())
}

/// `additional-information`, `mx-host`, `receiving-mx-helo` and `failure-reason-code` reach
/// the rows (a popular parser reads other keys and silently loses two of them).
#[test]
fn every_field_survives_into_the_rows() {
    let json = RFC_EXAMPLE.replacen(
        "\"receiving-ip\": \"203.0.113.58\",",
        "\"receiving-ip\": \"203.0.113.58\", \"receiving-mx-helo\": \"helo.company-y.example\",",
        1,
    );
    let decoded = decode(json.as_bytes()).unwrap();
    let tables = flatten(&[received(decoded.report, decoded.raw_json.clone())]).unwrap();
    assert_eq!(tables.reports.num_rows(), 1);
    assert_eq!(tables.policies.num_rows(), 1);
    assert_eq!(tables.failures.num_rows(), 3);

    let f = &tables.failures;
    assert_eq!(
        text(f, "additional_information", 1).as_deref(),
        Some("https://reports.company-x.example/report_info?id=5065427c-23d3#StarttlsNotSupported")
    );
    assert_eq!(
        text(f, "receiving_mx_helo", 2).as_deref(),
        Some("helo.company-y.example")
    );
    assert_eq!(
        text(f, "failure_reason_code", 2).as_deref(),
        Some("X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED")
    );
    assert_eq!(
        text(f, "policy_domain", 0).as_deref(),
        Some("company-y.example")
    );
    assert_eq!(
        text(f, "organization_name", 0).as_deref(),
        Some("Company-X")
    );
    assert_eq!(text(f, "date", 0).as_deref(), Some("2016-04-01"));
    let counts = f
        .column_by_name("failed_session_count")
        .unwrap()
        .as_primitive::<Int64Type>();
    assert_eq!(counts.values().to_vec(), [100, 200, 3]);

    let p = &tables.policies;
    let mx = p
        .column_by_name("mx_host")
        .unwrap()
        .as_list::<i32>()
        .value(0);
    assert_eq!(mx.as_string::<i32>().value(0), "*.mail.company-y.example");
    assert_eq!(text(p, "sts_mode", 0).as_deref(), Some("testing"));
    assert_eq!(text(&tables.reports, "raw_json", 0), Some(decoded.raw_json));
}

#[test]
fn warnings_are_stored_once_each() {
    let decoded = decode(include_bytes!(
        "../fixtures/corpus/stalwartlabs__mail-auth/rpt03.json"
    ))
    .unwrap();
    let tables = flatten(&[received(decoded.report, decoded.raw_json)]).unwrap();
    let list = tables
        .reports
        .column_by_name("warnings")
        .unwrap()
        .as_list::<i32>()
        .value(0);
    let codes: Vec<&str> = list.as_string::<i32>().iter().map(Option::unwrap).collect();
    assert_eq!(
        codes,
        [
            "policy_domain_missing",
            "summary_count_missing",
            "unknown_policy_type"
        ]
    );
}

// ---- model → Arrow → model ----------------------------------------------------------

fn any_text() -> impl Strategy<Value = Cow<'static, str>> {
    prop_oneof!["[a-z0-9.-]{0,12}", "\\PC{0,8}", Just(String::new())].prop_map(Cow::Owned)
}

fn any_instant() -> impl Strategy<Value = DateTime<Utc>> {
    // 1990-01-01 to 2100-01-01, microsecond precision (the tables' precision).
    (631_152_000_000_000i64..4_102_444_800_000_000)
        .prop_map(|us| DateTime::from_timestamp_micros(us).unwrap())
}

fn any_count() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..10, 0u64..1_000_000_000_000]
}

fn any_result_type() -> impl Strategy<Value = ResultType> {
    prop_oneof![
        proptest::sample::select(ResultType::REGISTERED.to_vec()),
        "[A-Za-z-]{0,10}".prop_map(|t| ResultType::parse(&t)),
    ]
}

fn any_policy_type() -> impl Strategy<Value = Option<PolicyType>> {
    prop_oneof![
        proptest::sample::select(PolicyType::REGISTERED.to_vec()).prop_map(Some),
        "[a-z-]{1,10}".prop_map(|t| Some(PolicyType::parse(&t))),
        Just(None),
    ]
}

fn any_failure() -> impl Strategy<Value = FailureDetails<'static>> {
    (
        any_result_type(),
        proptest::option::of(any_text()),
        proptest::option::of(any_text()),
        proptest::option::of(any_text()),
        proptest::option::of(any_text()),
        proptest::option::of(any_count()),
        proptest::option::of(any_text()),
        proptest::option::of(any_text()),
    )
        .prop_map(
            |(result_type, ip, mx, helo, rip, count, info, reason)| FailureDetails {
                result_type,
                sending_mta_ip: ip,
                receiving_mx_hostname: mx,
                receiving_mx_helo: helo,
                receiving_ip: rip,
                failed_session_count: count,
                additional_information: info,
                failure_reason_code: reason,
            },
        )
}

fn any_policy() -> impl Strategy<Value = PolicyResult<'static>> {
    (
        any_policy_type(),
        proptest::collection::vec(any_text(), 0..4),
        proptest::option::of(any_text()),
        proptest::collection::vec(any_text(), 0..3),
        proptest::option::of(any_count()),
        proptest::option::of(any_count()),
        proptest::collection::vec(any_failure(), 0..6),
    )
        .prop_map(
            |(policy_type, policy_string, policy_domain, mx_host, ok, failed, failure_details)| {
                PolicyResult {
                    policy: Policy {
                        policy_type,
                        policy_string,
                        policy_domain,
                        mx_host,
                    },
                    summary: Summary {
                        total_successful_session_count: ok,
                        total_failure_session_count: failed,
                    },
                    failure_details,
                }
            },
        )
}

fn any_received() -> impl Strategy<Value = ReceivedReport<'static>> {
    (
        any_text(),
        any_instant(),
        any_instant(),
        proptest::option::of(any_text()),
        any_text(),
        proptest::collection::vec(any_policy(), 0..3),
        proptest::sample::subsequence(WarningCode::ALL.to_vec(), 0..4),
        any_instant(),
        proptest::option::of("[a-z.]{1,12}"),
        any_text(),
        proptest::option::of(prop_oneof![
            Just(DkimOutcome::Pass),
            Just(DkimOutcome::Fail),
            Just(DkimOutcome::None),
        ]),
    )
        .prop_map(
            |(org, start, end, contact, id, policies, codes, at, submitter, raw, dkim)| {
                ReceivedReport {
                    report: Report {
                        organization_name: org,
                        date_range: DateRange {
                            start_datetime: start,
                            end_datetime: end,
                        },
                        contact_info: contact,
                        report_id: id,
                        policies,
                        warnings: codes.into_iter().map(|c| Warning::new(c, "")).collect(),
                    },
                    envelope: Envelope {
                        transport: Transport::Smtp,
                        received_at: at,
                        submitter_header: submitter,
                        dkim,
                    },
                    raw_json: raw,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn reports_survive_arrow_and_back(batch in proptest::collection::vec(any_received(), 1..5)) {
        // One report per uid: a batch holds each report once (duplicates are removed upstream).
        let mut unique: Vec<ReceivedReport<'static>> = Vec::new();
        for r in batch {
            if !unique.iter().any(|u| u.report.report_uid() == r.report.report_uid()) {
                unique.push(r);
            }
        }
        let back = unflatten(&flatten(&unique).unwrap()).unwrap();
        prop_assert_eq!(back.len(), unique.len());
        for (original, back) in unique.iter().zip(&back) {
            prop_assert_eq!(&back.report, &original.report);
            prop_assert_eq!(back.envelope.transport, original.envelope.transport);
            prop_assert_eq!(back.envelope.received_at, original.envelope.received_at);
            let submitter = original.submitter();
            prop_assert_eq!(back.envelope.submitter_header.as_deref(), submitter.as_deref());
            prop_assert_eq!(&back.raw_json, &original.raw_json);
        }
    }

    /// A builder given back its last tables fills the next batch correctly.
    #[test]
    fn a_recycled_builder_builds_the_next_batch_right(
        first in proptest::collection::vec(any_received(), 1..5),
        second in proptest::collection::vec(any_received(), 1..5),
    ) {
        let mut builder = TablesBuilder::new();
        for r in &first {
            builder.append(r).unwrap();
        }
        let tables = builder.finish().unwrap();
        builder.recycle(tables);
        let mut unique: Vec<ReceivedReport<'static>> = Vec::new();
        for r in second {
            if !unique.iter().any(|u| u.report.report_uid() == r.report.report_uid()) {
                unique.push(r);
            }
        }
        for r in &unique {
            builder.append(r).unwrap();
        }
        let back = unflatten(&builder.finish().unwrap()).unwrap();
        prop_assert_eq!(back.len(), unique.len());
        for (original, back) in unique.iter().zip(&back) {
            prop_assert_eq!(&back.report, &original.report);
            prop_assert_eq!(&back.raw_json, &original.raw_json);
        }
    }
}

/// The point of recycling: the next batch's `raw_json` is written into the memory of the
/// last one, not into a fresh allocation.
#[test]
fn recycled_tables_give_their_memory_to_the_next_batch() {
    let decoded = decode(RFC_EXAMPLE.as_bytes()).unwrap();
    let report = received(decoded.report, decoded.raw_json.clone());
    let raw_json_values = |tables: &tlsrpt_schemas::tables::Tables| {
        tables
            .reports
            .column_by_name("raw_json")
            .unwrap()
            .as_string::<i32>()
            .values()
            .as_ptr()
    };
    let mut builder = TablesBuilder::new();
    builder.append(&report).unwrap();
    let first = builder.finish().unwrap();
    let memory = raw_json_values(&first);
    builder.recycle(first);
    builder.append(&report).unwrap();
    let second = builder.finish().unwrap();
    assert_eq!(raw_json_values(&second), memory);
    assert_eq!(
        text(&second.reports, "raw_json", 0).as_deref(),
        Some(decoded.raw_json.as_str())
    );

    // Tables still held elsewhere are not taken.
    let held = second.clone();
    builder.recycle(second);
    builder.append(&report).unwrap();
    let third = builder.finish().unwrap();
    assert_ne!(raw_json_values(&third), raw_json_values(&held));
    assert_eq!(
        text(&third.reports, "raw_json", 0).as_deref(),
        Some(decoded.raw_json.as_str())
    );
}
