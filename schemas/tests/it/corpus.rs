//! Every real report in the corpus is accepted, with the warnings its quirks call for.

use std::path::Path;

use tlsrpt_schemas::{Decoder, Report, WarningCode};

use crate::support::{report_files, shared_corpus_checked, vendored_corpus};

fn decode_file(path: &Path) -> Result<Report<'static>, String> {
    let bytes = std::fs::read(path).unwrap();
    let mut decoder = Decoder::default();
    let result = if path.extension().is_some_and(|e| e == "eml") {
        decoder.decode_email(&bytes).map(|e| e.decoded)
    } else {
        decoder.decode(&bytes)
    };
    result
        .map(|d| d.report)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn codes(report: &Report<'_>) -> Vec<&'static str> {
    report.warnings.iter().map(|w| w.code.as_str()).collect()
}

#[test]
fn every_vendored_fixture_is_accepted() {
    let files = report_files(&vendored_corpus());
    assert_eq!(files.len(), 19, "vendored fixtures: {files:?}");
    let failures: Vec<String> = files.iter().filter_map(|f| decode_file(f).err()).collect();
    assert!(failures.is_empty(), "refused: {failures:#?}");
}

/// The files that cannot be vendored (licences) are read from `../shared/corpus`. In CI it
/// must be there; on a developer's machine without it the test says so and checks nothing
/// else.
#[test]
fn every_shared_corpus_file_is_accepted() {
    let Some(dir) = shared_corpus_checked() else {
        return;
    };
    let files = report_files(&dir);
    assert!(
        files.len() >= 29,
        "expected the 29 corpus files and _decoded/, found {}",
        files.len()
    );
    let failures: Vec<String> = files.iter().filter_map(|f| decode_file(f).err()).collect();
    assert!(failures.is_empty(), "refused: {failures:#?}");
}

fn vendored(name: &str) -> Report<'static> {
    decode_file(&vendored_corpus().join(name)).unwrap()
}

#[test]
fn microsoft_tlsa_policy_string_is_unpacked() {
    let report = vendored("cry-inc__dmarc-report-viewer/microsoft.json");
    let tlsa = &report.policies[1].policy;
    assert_eq!(tlsa.policy_string.len(), 2);
    assert!(tlsa.policy_string[0].starts_with("3 1 1 6007EEE5"));
    assert_eq!(codes(&report), ["tlsa_policy_string_json_encoded"]);
}

#[test]
fn mox_microsoft_zoneless_dates_are_utc() {
    let report = vendored("mjl-__mox/microsoft.eml");
    assert_eq!(
        report.date_range.start_datetime.to_rfc3339(),
        "2023-01-10T00:00:00+00:00"
    );
    assert_eq!(
        codes(&report),
        ["datetime_without_zone", "datetime_without_zone"]
    );
}

#[test]
fn no_contact_report_records_its_quirks() {
    let report = vendored("cry-inc__dmarc-report-viewer/no-contact.json");
    assert_eq!(report.contact_info, None);
    assert_eq!(report.policies[0].policy.mx_host, ["mx.server.com"]);
    assert!(report.policies[0].failure_details.is_empty());
    let codes = codes(&report);
    for expected in [
        "contact_info_null",
        "mx_host_prefixed",
        "end_datetime_next_day_midnight",
    ] {
        assert!(
            codes.contains(&expected),
            "{expected} missing from {codes:?}"
        );
    }
}

#[test]
fn mail_ru_sum_mismatch_keeps_both_numbers() {
    let report = vendored("domainaware__parsedmarc/mail.ru.json");
    let policy = &report.policies[0];
    assert_eq!(policy.summary.total_failure_session_count, Some(1));
    let sum: u64 = policy
        .failure_details
        .iter()
        .filter_map(|d| d.failed_session_count)
        .sum();
    assert_eq!(sum, 2);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.code == WarningCode::FailureSumMismatch)
    );
    assert_eq!(
        policy.failure_details[0].failure_reason_code.as_deref(),
        Some("bad https response code: 404")
    );
}

#[test]
fn rfc_example_mx_host_string_becomes_a_list() {
    let report = vendored("domainaware__parsedmarc/rfc8460.json");
    assert_eq!(
        report.policies[0].policy.mx_host,
        ["*.mail.company-y.example"]
    );
    assert_eq!(codes(&report), ["mx_host_string"]);
}

#[test]
fn unknown_policy_type_and_missing_fields_are_kept() {
    let report = vendored("stalwartlabs__mail-auth/rpt03.json");
    assert_eq!(
        report.policies[1]
            .policy
            .policy_type
            .as_ref()
            .unwrap()
            .as_str(),
        "invalid-policy-type"
    );
    assert_eq!(report.policies[0].summary.total_failure_session_count, None);
    assert_eq!(report.policies[0].policy.policy_domain, None);
    let codes = codes(&report);
    assert!(codes.contains(&"unknown_policy_type"));
    assert!(codes.contains(&"summary_count_missing"));
    assert!(codes.contains(&"policy_domain_missing"));
}

/// The edited Neztore fixture: unknown result type, an address that is not an IP, an
/// unknown key. Accepted, kept as written, recorded.
#[test]
fn neztore_edited_report_is_kept_as_written() {
    let Some(dir) = shared_corpus_checked() else {
        return;
    };
    let report = decode_file(&dir.join("Neztore__tls-rpt-monitor/microsoft-report.json")).unwrap();
    let failure = &report.policies[0].failure_details[0];
    assert_eq!(failure.result_type.as_str(), "Testing");
    assert_eq!(failure.sending_mta_ip.as_deref(), Some("x.x.x.x"));
    let codes = codes(&report);
    assert!(codes.contains(&"unknown_result_type"));
    assert!(codes.contains(&"sending_mta_ip_invalid"));
}

/// The mail and the JSON of one report decode to the same model, whatever the container.
#[test]
fn containers_do_not_change_the_report() {
    let Some(dir) = shared_corpus_checked() else {
        return;
    };
    let eml = decode_file(&dir.join("marcbradshaw__mail-tls-rpt/email.eml")).unwrap();
    let json = decode_file(&dir.join("marcbradshaw__mail-tls-rpt/report.json")).unwrap();
    let b64 = decode_file(&dir.join("marcbradshaw__mail-tls-rpt/report.json.gz.b64")).unwrap();
    assert_eq!(eml.policies, json.policies);
    assert_eq!(b64.policies, json.policies);
    assert_eq!(eml.dedup_key(), json.dedup_key());
}
