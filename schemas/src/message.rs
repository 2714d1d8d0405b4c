//! A received report as the parts of a bus message, and back.
//!
//! The receivers put an accepted report on the bus; the transformer takes it off and
//! flattens it. Both sides use this one codec, so neither can drift from the other:
//! - key: the dedup key ([`crate::dedup`]), so every copy of a report lands on one partition;
//! - value: the decoded report JSON exactly as received (what `reports.raw_json` keeps);
//! - headers: what the JSON does not carry: the envelope, and the warnings seen while
//!   decoding (some of which, such as `trailing_bytes_after_gzip`, are about the container
//!   and cannot be found again in the JSON).
//!
//! The transformer parses the value again rather than trusting a serialised model: the JSON
//! is the record, and a newer tlsrpt reading an older message normalises it its own way.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::envelope::{DkimOutcome, Envelope, ReceivedReport, Transport};
use crate::error::DecodeError;
use crate::parse::parse_report;
use crate::warning::{Warning, WarningCode};

/// Header names. Stable: messages already on a log carry them.
pub mod header {
    /// `https`, `smtp` or `import`.
    pub const TRANSPORT: &str = "transport";
    /// When the receiver accepted the report, RFC 3339 UTC with microseconds.
    pub const RECEIVED_AT: &str = "received_at";
    /// The `TLS-Report-Submitter` mail header, when there was one.
    pub const SUBMITTER: &str = "submitter";
    /// `pass`, `fail` or `none`, for mailed reports.
    pub const DKIM: &str = "dkim";
    /// The sender's socket address, when known. Kept on the log for operators only.
    pub const REMOTE_ADDR: &str = "remote_addr";
    /// SHA-256 of the bytes as they arrived (before decompression), hex.
    pub const CONTENT_SHA256: &str = "content_sha256";
    /// The report's `report_uid`, for operators reading the log.
    pub const REPORT_UID: &str = "report_uid";
    /// The warnings of the accepted report, as a JSON array of `{"code", "path"}`.
    pub const WARNINGS: &str = "warnings";
}

/// The parts of one bus message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageParts {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

/// Why a message read from the bus is not a report. The transformer sets such a message
/// aside (dead-letter) and moves on.
#[derive(Debug, Error)]
pub enum MessageError {
    #[error("header {name} is missing")]
    MissingHeader { name: &'static str },
    #[error("header {name} has an unreadable value {value:?}")]
    BadHeader { name: &'static str, value: String },
    #[error("the message value is not UTF-8")]
    NotUtf8,
    #[error("the message value is not a valid report: {0}")]
    Report(#[from] DecodeError),
}

#[derive(Serialize, Deserialize)]
struct WireWarning<'a> {
    code: &'a str,
    #[serde(default, skip_serializing_if = "str::is_empty")]
    path: &'a str,
}

/// The message for an accepted report. `remote_addr` and `content_sha256` are for operators.
pub fn to_parts(
    received: &ReceivedReport,
    remote_addr: Option<&str>,
    content_sha256: Option<&str>,
) -> MessageParts {
    let envelope = &received.envelope;
    let key = received.report.dedup_key();
    let mut headers = Vec::with_capacity(8);
    let mut push = |name: &str, value: String| headers.push((name.to_owned(), value));
    push(header::TRANSPORT, envelope.transport.as_str().to_owned());
    push(
        header::RECEIVED_AT,
        envelope
            .received_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    );
    push(header::REPORT_UID, crate::dedup::report_uid_of_key(&key));
    if let Some(submitter) = &envelope.submitter_header {
        push(header::SUBMITTER, submitter.clone());
    }
    if let Some(dkim) = envelope.dkim {
        push(header::DKIM, dkim.as_str().to_owned());
    }
    if let Some(remote) = remote_addr {
        push(header::REMOTE_ADDR, remote.to_owned());
    }
    if let Some(sha) = content_sha256 {
        push(header::CONTENT_SHA256, sha.to_owned());
    }
    if !received.report.warnings.is_empty() {
        let wire: Vec<WireWarning<'_>> = received
            .report
            .warnings
            .iter()
            .map(|w| WireWarning {
                code: w.code.as_str(),
                path: &w.path,
            })
            .collect();
        push(
            header::WARNINGS,
            serde_json::to_string(&wire).expect("warnings serialise"),
        );
    }
    MessageParts {
        key: key.into_bytes(),
        value: received.raw_json.clone().into_bytes(),
        headers,
    }
}

fn find<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The report a message holds: the value parsed again, the envelope and warnings from the
/// headers. Takes the value by ownership, as it becomes `raw_json`.
pub fn from_parts(
    value: Vec<u8>,
    headers: &[(String, String)],
) -> Result<ReceivedReport, MessageError> {
    from_parts_or_value(value, headers).map_err(|(error, _)| error)
}

/// [`from_parts`] for a caller that keeps an unreadable message's bytes (a transformer's
/// dead letters): the value comes back with the error, so the caller need not copy every
/// value beforehand for the rare message that is not a report.
pub fn from_parts_or_value(
    value: Vec<u8>,
    headers: &[(String, String)],
) -> Result<ReceivedReport, (MessageError, Vec<u8>)> {
    match envelope_of(headers) {
        Ok(envelope) => report_of(value, headers, envelope),
        Err(error) => Err((error, value)),
    }
}

/// The envelope in a message's headers.
fn envelope_of(headers: &[(String, String)]) -> Result<Envelope, MessageError> {
    let transport_text = find(headers, header::TRANSPORT).ok_or(MessageError::MissingHeader {
        name: header::TRANSPORT,
    })?;
    let transport = Transport::parse(transport_text).ok_or_else(|| MessageError::BadHeader {
        name: header::TRANSPORT,
        value: transport_text.to_owned(),
    })?;
    let received_text = find(headers, header::RECEIVED_AT).ok_or(MessageError::MissingHeader {
        name: header::RECEIVED_AT,
    })?;
    let received_at = DateTime::parse_from_rfc3339(received_text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| MessageError::BadHeader {
            name: header::RECEIVED_AT,
            value: received_text.to_owned(),
        })?;
    let dkim = match find(headers, header::DKIM) {
        None => None,
        Some(text) => Some(
            DkimOutcome::parse(text).ok_or_else(|| MessageError::BadHeader {
                name: header::DKIM,
                value: text.to_owned(),
            })?,
        ),
    };
    Ok(Envelope {
        transport,
        received_at,
        submitter_header: find(headers, header::SUBMITTER).map(str::to_owned),
        dkim,
    })
}

/// The value parsed, with the warnings of the headers; the value back on error.
fn report_of(
    value: Vec<u8>,
    headers: &[(String, String)],
    envelope: Envelope,
) -> Result<ReceivedReport, (MessageError, Vec<u8>)> {
    let raw_json = match String::from_utf8(value) {
        Ok(text) => text,
        Err(error) => return Err((MessageError::NotUtf8, error.into_bytes())),
    };
    let mut report = match parse_report(&raw_json) {
        Ok(report) => report,
        Err(error) => return Err((error.into(), raw_json.into_bytes())),
    };
    if let Some(text) = find(headers, header::WARNINGS) {
        let Ok(wire) = serde_json::from_str::<Vec<WireWarning<'_>>>(text) else {
            let error = MessageError::BadHeader {
                name: header::WARNINGS,
                value: text.chars().take(200).collect(),
            };
            return Err((error, raw_json.into_bytes()));
        };
        // The header is the full list as the receiver saw it; codes this version does not
        // know (written by a newer receiver) are dropped rather than failing the report.
        report.warnings = wire
            .iter()
            .filter_map(|w| WarningCode::from_code(w.code).map(|c| Warning::new(c, w.path)))
            .collect();
    }
    Ok(ReceivedReport {
        report,
        envelope,
        raw_json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Decoder;

    const REPORT: &str = r#"{"organization-name":"Example","date-range":{"start-datetime":"2026-01-01T00:00:00Z","end-datetime":"2026-01-01T23:59:59Z"},"contact-info":null,"report-id":"r1","policies":[{"policy":{"policy-type":"sts","policy-domain":"example.com","mx-host":"mx.example.com"},"summary":{"total-successful-session-count":1,"total-failure-session-count":0}}]}"#;

    #[test]
    fn a_report_survives_the_bus_with_its_container_warnings() {
        let mut gz = Vec::new();
        {
            use std::io::Write;
            let mut encoder = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::fast());
            encoder.write_all(REPORT.as_bytes()).unwrap();
            encoder.finish().unwrap();
        }
        gz.extend_from_slice(b"\r\n");
        let decoded = Decoder::default().decode(&gz).unwrap();
        assert!(
            decoded
                .report
                .warnings
                .iter()
                .any(|w| w.code == WarningCode::TrailingBytesAfterGzip)
        );
        let received = ReceivedReport {
            report: decoded.report,
            envelope: Envelope {
                transport: Transport::Smtp,
                received_at: Utc::now(),
                submitter_header: Some("mx.example.net".into()),
                dkim: Some(DkimOutcome::Fail),
            },
            raw_json: decoded.raw_json,
        };
        let parts = to_parts(&received, Some("192.0.2.1:25"), Some("ab"));
        assert_eq!(parts.key, received.report.dedup_key().into_bytes());
        let back = from_parts(parts.value, &parts.headers).unwrap();
        // received_at is kept to the microsecond.
        assert_eq!(
            back.envelope.received_at.timestamp_micros(),
            received.envelope.received_at.timestamp_micros()
        );
        let mut expected = received.clone();
        expected.envelope.received_at = back.envelope.received_at;
        assert_eq!(back, expected);
    }

    #[test]
    fn a_message_without_an_envelope_is_refused_by_name() {
        let err = from_parts(REPORT.as_bytes().to_vec(), &[]).unwrap_err();
        assert_eq!(err.to_string(), "header transport is missing");
        let headers = vec![
            ("transport".to_owned(), "pigeon".to_owned()),
            ("received_at".to_owned(), "2026-01-01T00:00:00Z".to_owned()),
        ];
        let err = from_parts(REPORT.as_bytes().to_vec(), &headers).unwrap_err();
        assert!(err.to_string().contains("pigeon"), "{err}");
    }
}
