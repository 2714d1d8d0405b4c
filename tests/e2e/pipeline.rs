//! The whole pipeline as a sender and an analyst see it: reports posted over HTTP (both
//! media types) and mailed over SMTP with a real client, answered by SQL.

use std::collections::{BTreeMap, BTreeSet};

use lettre::address::Envelope;
use lettre::{SmtpTransport, Transport as _};
use tlsrpt_schemas::Decoder;

use crate::support::{Up, fixtures, gzip, report};

/// What the corpus should add up to, computed from the reports themselves.
#[derive(Default)]
struct Expected {
    uids: BTreeSet<String>,
    failed_by_domain_and_type: BTreeMap<(String, String), i64>,
    additional_information: usize,
}

impl Expected {
    fn add(&mut self, report: &tlsrpt_schemas::Report<'_>) {
        if !self.uids.insert(report.report_uid()) {
            return;
        }
        for policy in &report.policies {
            let domain = policy.policy.policy_domain.as_deref().unwrap_or_default();
            for failure in &policy.failure_details {
                *self
                    .failed_by_domain_and_type
                    .entry((domain.to_owned(), failure.result_type.as_str().to_owned()))
                    .or_default() += failure.failed_session_count.unwrap_or(0) as i64;
                self.additional_information +=
                    usize::from(failure.additional_information.is_some());
            }
        }
    }
}

fn mail(from: &str, to: &str, json: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: Report Domain: example.net\r\n\
         TLS-Report-Domain: example.net\r\nTLS-Report-Submitter: sender.test\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=tlsrpt; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nThis is a TLS report.\r\n\
         --b\r\nContent-Type: application/tlsrpt+json\r\nContent-Disposition: attachment; filename=\"r.json\"\r\n\r\n\
         {json}\r\n--b--\r\n"
    )
    .into_bytes()
}

fn smtp(up: &Up) -> SmtpTransport {
    SmtpTransport::builder_dangerous(up.smtp.ip().to_string())
        .port(up.smtp.port())
        .build()
}

fn envelope() -> Envelope {
    Envelope::new(
        Some("tlsrpt@sender.test".parse().unwrap()),
        vec!["tlsrpt@example.net".parse().unwrap()],
    )
    .unwrap()
}

#[test]
fn corpus_over_http_and_smtp_answers_sql() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(&dir.path().join("data"), &[], &[]);
    let mut expected = Expected::default();
    let mut decoder = Decoder::default();

    // Every JSON fixture, as JSON and again gzipped: the second copy is a duplicate.
    let json_files = fixtures("json");
    assert!(json_files.len() >= 10, "the vendored corpus went missing");
    for path in &json_files {
        let bytes = std::fs::read(path).unwrap();
        expected.add(&decoder.decode(&bytes).unwrap().report);
        let (status, answer) = up.post(bytes.clone(), "application/tlsrpt+json");
        assert_eq!(status, 200, "{}: {answer}", path.display());
        let (status, answer) = up.post(gzip(&bytes), "application/tlsrpt+gzip");
        assert_eq!(status, 200, "{} gzipped: {answer}", path.display());
    }

    // Every mail fixture, through a real SMTP client.
    let transport = smtp(&up);
    let eml_files = fixtures("eml");
    assert!(eml_files.len() >= 5);
    for path in &eml_files {
        let bytes = std::fs::read(path).unwrap();
        expected.add(&decoder.decode_any(&bytes).unwrap().decoded.report);
        transport
            .send_raw(&envelope(), &bytes)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    // One report by HTTP twice and by mail once: it counts once.
    let json = report(1, "example.net");
    expected.add(&tlsrpt_schemas::parse_report(&json).unwrap());
    for _ in 0..2 {
        assert_eq!(
            up.post(json.clone().into_bytes(), "application/tlsrpt+json")
                .0,
            200
        );
    }
    transport
        .send_raw(
            &envelope(),
            &mail("tlsrpt@sender.test", "tlsrpt@example.net", &json),
        )
        .unwrap();

    let reports = expected.uids.len() as i64;
    up.wait_for_count("SELECT count(*) AS n FROM reports", reports);
    assert_eq!(
        up.count("SELECT count(DISTINCT report_uid) AS n FROM reports"),
        reports
    );

    // Failed sessions per domain and result type, as the reports say.
    let rows = up.sql(
        "SELECT coalesce(policy_domain, '') AS domain, result_type, \
         sum(failed_session_count) AS failed FROM failures GROUP BY 1, 2",
    );
    let got: BTreeMap<(String, String), i64> = rows
        .iter()
        .map(|row| {
            (
                (
                    row["domain"].as_str().unwrap().to_owned(),
                    row["result_type"].as_str().unwrap().to_owned(),
                ),
                row["failed"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(got, expected.failed_by_domain_and_type);
    assert!(expected.additional_information > 0);
    assert_eq!(
        up.count("SELECT count(additional_information) AS n FROM failures") as usize,
        expected.additional_information
    );

    // Microsoft's TLSA policy-string arrives as one JSON-encoded string; it is unpacked.
    let tlsa = up.sql(
        "SELECT policy_string FROM policies WHERE policy_type = 'tlsa' AND organization_name LIKE 'Microsoft%'",
    );
    assert!(!tlsa.is_empty(), "no Microsoft TLSA policy row");
    for row in &tlsa {
        let strings = row["policy_string"].as_array().unwrap();
        assert!(strings.len() > 1, "{row}");
        assert!(
            strings
                .iter()
                .all(|s| !s.as_str().unwrap().starts_with('['))
        );
    }

    // Transports and the DKIM outcome are recorded; an unsigned mail is `none`.
    let transports: BTreeSet<String> = up
        .sql("SELECT DISTINCT transport FROM reports")
        .iter()
        .map(|row| row["transport"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(transports, BTreeSet::from(["https".into(), "smtp".into()]));
    assert_eq!(
        up.count(
            "SELECT count(*) AS n FROM reports WHERE transport = 'https' AND dkim IS NOT NULL"
        ),
        0
    );
    assert_eq!(
        up.count("SELECT count(*) AS n FROM reports WHERE transport = 'smtp' AND dkim IS NULL"),
        0
    );

    // The counters saw it all.
    let metrics = up.metrics();
    let posted = 2 * json_files.len() + 2;
    assert!(
        metrics.contains(&format!(
            "tlsrpt_accepted_total{{transport=\"https\"}} {posted}"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "tlsrpt_accepted_total{{transport=\"smtp\"}} {}",
            eml_files.len() + 1
        )),
        "{metrics}"
    );
    up.stop();
}

/// A mailed report signed by nobody records `dkim = none`, and its submitter header.
#[test]
fn an_unsigned_mail_is_recorded_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(&dir.path().join("data"), &[], &[]);
    let json = report(7, "example.org");
    smtp(&up)
        .send_raw(
            &envelope(),
            &mail("tlsrpt@sender.test", "tlsrpt@example.org", &json),
        )
        .unwrap();
    up.wait_for_count("SELECT count(*) AS n FROM reports", 1);
    let rows = up.sql("SELECT transport, dkim, submitter FROM reports");
    assert_eq!(
        rows[0],
        serde_json::json!({"transport": "smtp", "dkim": "none", "submitter": "sender.test"})
    );
    let received = tlsrpt_schemas::parse_report(&json).unwrap();
    assert_eq!(
        up.sql("SELECT report_uid FROM reports")[0]["report_uid"],
        serde_json::json!(received.report_uid())
    );
    up.stop();
}
