//! An accepted report as a bus message.
//!
//! Key: the dedup key, so that every copy of a report lands on one partition and the
//! transformer can count it once. Value: the decoded report JSON as received (what
//! `reports.raw_json` keeps). Headers: the envelope, which the JSON does not carry.

use std::net::SocketAddr;

use sha2::{Digest, Sha256};
use tlsrpt_bus::Message;
use tlsrpt_schemas::ReceivedReport;

/// Header names, shared with the transformer.
pub mod header {
    pub const TRANSPORT: &str = "transport";
    pub const RECEIVED_AT: &str = "received_at";
    pub const SUBMITTER: &str = "submitter";
    pub const REMOTE_ADDR: &str = "remote_addr";
    /// SHA-256 of the bytes as they arrived (before decompression), hex.
    pub const CONTENT_SHA256: &str = "content_sha256";
    pub const REPORT_UID: &str = "report_uid";
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The bus message for an accepted report. `content_sha256` is of the bytes as received.
pub fn message_for(
    received: &ReceivedReport,
    remote: Option<SocketAddr>,
    content_sha256: String,
) -> Message {
    let envelope = &received.envelope;
    let mut headers = vec![
        (
            header::TRANSPORT.to_owned(),
            envelope.transport.as_str().to_owned(),
        ),
        (
            header::RECEIVED_AT.to_owned(),
            envelope
                .received_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        ),
        (header::CONTENT_SHA256.to_owned(), content_sha256),
        (header::REPORT_UID.to_owned(), received.report.report_uid()),
    ];
    if let Some(submitter) = &envelope.submitter_header {
        headers.push((header::SUBMITTER.to_owned(), submitter.clone()));
    }
    if let Some(remote) = remote {
        headers.push((header::REMOTE_ADDR.to_owned(), remote.to_string()));
    }
    Message {
        key: received.report.dedup_key().into_bytes(),
        value: received.raw_json.clone().into_bytes(),
        headers,
    }
}
