//! What is refused, and that the message names the problem.

use tlsrpt_schemas::{DecodeError, StatusClass, decode, parse_report};

use crate::support::RFC_EXAMPLE;

fn refuse(json: &str) -> DecodeError {
    parse_report(json).expect_err("should be refused")
}

#[test]
fn a_count_that_is_text_names_its_path() {
    let json = RFC_EXAMPLE.replacen(
        "\"failed-session-count\": 200",
        "\"failed-session-count\": \"twenty\"",
        1,
    );
    let err = refuse(&json);
    assert_eq!(
        err.path(),
        Some("policies[0].failure-details[1].failed-session-count")
    );
    assert_eq!(
        err.to_string().split(" (at byte").next().unwrap(),
        "policies[0].failure-details[1].failed-session-count: expected a non-negative integer, found \"twenty\""
    );
    assert_eq!(err.status_class(), StatusClass::Malformed);
}

#[test]
fn negative_and_fractional_counts_are_refused() {
    for (bad, found) in [
        ("-5", "-5"),
        ("2.5", "2.5"),
        ("true", "true"),
        ("[]", "an array"),
    ] {
        let json = RFC_EXAMPLE.replacen(
            "\"total-successful-session-count\": 5326",
            &format!("\"total-successful-session-count\": {bad}"),
            1,
        );
        let err = refuse(&json);
        assert_eq!(
            err.path(),
            Some("policies[0].summary.total-successful-session-count"),
            "{bad}"
        );
        assert!(
            err.to_string()
                .contains(&format!("expected a non-negative integer, found {found}")),
            "{err}"
        );
    }
}

#[test]
fn an_integral_float_count_is_accepted_and_recorded() {
    let json = RFC_EXAMPLE.replacen(
        "\"failed-session-count\": 100",
        "\"failed-session-count\": 100.0",
        1,
    );
    let report = parse_report(&json).unwrap();
    assert_eq!(
        report.policies[0].failure_details[0].failed_session_count,
        Some(100)
    );
    assert_eq!(report.warnings[0].code.as_str(), "count_as_float");
}

#[test]
fn missing_required_members_are_refused() {
    let value: serde_json::Value = serde_json::from_str(RFC_EXAMPLE).unwrap();
    for member in ["organization-name", "date-range", "report-id", "policies"] {
        let mut v = value.clone();
        v.as_object_mut().unwrap().remove(member);
        let err = refuse(&v.to_string());
        assert_eq!(err.path(), Some(member), "{err}");
        assert!(
            err.to_string().contains("required field is missing"),
            "{err}"
        );
    }
    let mut v = value.clone();
    v["date-range"]
        .as_object_mut()
        .unwrap()
        .remove("end-datetime");
    assert_eq!(
        refuse(&v.to_string()).path(),
        Some("date-range.end-datetime")
    );
}

#[test]
fn policies_must_be_an_array() {
    let mut v: serde_json::Value = serde_json::from_str(RFC_EXAMPLE).unwrap();
    v["policies"] = serde_json::json!({"policy": {}});
    let err = refuse(&v.to_string());
    assert_eq!(err.path(), Some("policies"));
    assert!(
        err.to_string()
            .contains("expected an array, found an object"),
        "{err}"
    );
}

#[test]
fn a_policy_that_is_not_an_object_names_its_index() {
    let mut v: serde_json::Value = serde_json::from_str(RFC_EXAMPLE).unwrap();
    v["policies"] = serde_json::json!([{"policy": {"policy-type": "sts"}}, "oops"]);
    let err = refuse(&v.to_string());
    assert_eq!(err.path(), Some("policies[1]"));
    assert!(
        err.to_string()
            .contains("expected an object, found string \"oops\""),
        "{err}"
    );
}

#[test]
fn an_unparseable_date_is_refused() {
    let json = RFC_EXAMPLE.replacen("2016-04-01T00:00:00Z", "yesterday", 1);
    let err = refuse(&json);
    assert_eq!(err.path(), Some("date-range.start-datetime"));
    assert!(err.to_string().contains("found \"yesterday\""), "{err}");
}

#[test]
fn broken_json_gives_the_byte_offset() {
    let json = r#"{"organization-name": "x", "report-id": oops}"#;
    match refuse(json) {
        DecodeError::Syntax { offset, near, .. } => {
            assert_eq!(offset, json.find("oops").unwrap());
            assert!(near.contains("oops"), "{near}");
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
    match refuse(&RFC_EXAMPLE[..200]) {
        DecodeError::Syntax {
            offset, message, ..
        } => {
            assert_eq!(offset, 200);
            assert!(message.contains("EOF"), "{message}");
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn messages_never_echo_long_input() {
    let long = "A".repeat(100_000);
    let json = RFC_EXAMPLE.replacen("5326", &format!("\"{long}\""), 1);
    let err = refuse(&json).to_string();
    assert!(err.len() < 300, "message of {} bytes", err.len());
    let mut v: serde_json::Value = serde_json::from_str(RFC_EXAMPLE).unwrap();
    v["policies"] = serde_json::json!([long]);
    let err = refuse(&v.to_string()).to_string();
    assert!(err.len() < 300, "message of {} bytes: {err}", err.len());
    let not_json = format!("<html>{long}</html>");
    let err = decode(not_json.as_bytes()).unwrap_err().to_string();
    assert!(err.len() < 300, "message of {} bytes: {err}", err.len());
}

#[test]
fn what_is_not_a_report_is_classified_so() {
    for input in [
        &b"<!DOCTYPE html><html></html>"[..],
        b"%PDF-1.4",
        b"",
        b"[1,2,3]",
        b"{\"hello\": 1}",
        b"\x00\x01\x02",
    ] {
        let err = decode(input).unwrap_err();
        assert_eq!(
            err.status_class(),
            StatusClass::NotAReport,
            "{input:?}: {err}"
        );
    }
}

#[test]
fn unknown_keys_are_ignored() {
    let json = RFC_EXAMPLE.replacen(
        "\"report-id\"",
        "\"x-vendor-extension\": {\"a\": [1,2]}, \"report-id\"",
        1,
    );
    let report = parse_report(&json).unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
}
