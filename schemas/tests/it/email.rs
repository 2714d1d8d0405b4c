//! Finding the report in mail, and the TLS-RPT headers.

use tlsrpt_schemas::{DecodeError, Decoder, WarningCode};

use crate::support::{RFC_EXAMPLE, gzip, vendored_corpus};

fn message(content_type: &str, encoding: &str, body: &str) -> Vec<u8> {
    format!(
        "From: tlsrpt@sender.example\r\nTo: rua@example.net\r\nSubject: Report Domain: example.net\r\n\
         TLS-Report-Domain: example.net\r\nTLS-Report-Submitter: sender.example\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=tlsrpt; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/html\r\n\r\n<p>This is a TLS report</p>\r\n\
         --b\r\nContent-Type: {content_type}\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n{body}\r\n--b--\r\n"
    )
    .into_bytes()
}

fn base64_lines(bytes: &[u8]) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    encoded
        .as_bytes()
        .chunks(76)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect::<Vec<_>>()
        .join("\r\n")
}

#[test]
fn the_rfc_example_mail_is_read_with_its_headers() {
    let raw = std::fs::read(vendored_corpus().join("stalwartlabs__mail-auth/rpt01.eml")).unwrap();
    let email = Decoder::default().decode_email(&raw).unwrap();
    assert_eq!(email.headers.report_domain.as_deref(), Some("example.net"));
    assert_eq!(
        email.headers.report_submitter.as_deref(),
        Some("mail.sender.example.com")
    );
    assert_eq!(email.decoded.report.organization_name, "Company-X");
}

#[test]
fn attachment_types_real_senders_use_are_found() {
    let gz = base64_lines(&gzip(RFC_EXAMPLE.as_bytes()));
    let plain = base64_lines(RFC_EXAMPLE.as_bytes());
    for (ctype, body) in [
        ("application/tlsrpt+gzip", &gz),
        ("application/gzip", &gz),
        ("application/octet-stream; name=\"report.json.gz\"", &gz),
        ("application/tlsrpt+json", &plain),
        ("application/json", &plain),
    ] {
        let email = Decoder::default()
            .decode_email(&message(ctype, "base64", body))
            .unwrap_or_else(|e| panic!("{ctype}: {e}"));
        assert_eq!(email.decoded.raw_json, RFC_EXAMPLE, "{ctype}");
    }
}

#[test]
fn a_gzip_part_holding_plain_json_is_read_and_recorded() {
    let body = base64_lines(RFC_EXAMPLE.as_bytes());
    let email = Decoder::default()
        .decode_email(&message("application/tlsrpt+gzip", "base64", &body))
        .unwrap();
    assert_eq!(
        email.decoded.report.warnings[0].code,
        WarningCode::DeclaredGzipWasJson
    );
}

#[test]
fn a_single_part_message_is_read() {
    let raw = format!(
        "From: a@b.example\r\nTLS-Report-Submitter: b.example\r\nContent-Type: application/tlsrpt+json\r\n\r\n{RFC_EXAMPLE}"
    );
    let email = Decoder::default().decode_email(raw.as_bytes()).unwrap();
    assert_eq!(
        email.decoded.report.report_id,
        "5065427c-23d3-47ca-b6e0-946ea0e8c4be"
    );
}

#[test]
fn a_message_without_a_report_says_what_it_saw() {
    let raw = "From: a@b.example\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nhello\r\n--x\r\nContent-Type: text/html\r\n\r\n<p>hello</p>\r\n--x--\r\n";
    let err = Decoder::default().decode_email(raw.as_bytes()).unwrap_err();
    assert!(
        matches!(err, DecodeError::NoReportInMessage { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("text/plain, text/html"), "{err}");
}

#[test]
fn a_mailed_report_decoded_in_place_equals_the_owned_one_with_its_headers() {
    let body = base64_lines(RFC_EXAMPLE.as_bytes());
    let raw = message("application/tlsrpt+gzip", "base64", &body);
    let mut decoder = Decoder::default();
    let owned = decoder.decode_any(&raw).unwrap();
    let (report, raw_json, headers) = decoder
        .decode_any_with(&raw, |decoded, headers| {
            (
                decoded.report.into_owned(),
                decoded.raw_json.to_owned(),
                headers,
            )
        })
        .unwrap();
    assert_eq!(report, owned.decoded.report);
    assert_eq!(raw_json, RFC_EXAMPLE);
    assert_eq!(report.warnings[0].code, WarningCode::DeclaredGzipWasJson);
    let headers = headers.expect("the mail's headers");
    assert_eq!(headers.report_domain.as_deref(), Some("example.net"));
    assert_eq!(Some(headers), owned.email);
}
