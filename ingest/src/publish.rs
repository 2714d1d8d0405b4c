//! An accepted report as a bus message, through the codec the transformer reads back
//! ([`tlsrpt_schemas::message`]): key = dedup key, value = the decoded JSON, one header
//! `envelope` = the envelope and the warnings.

use std::net::SocketAddr;

use std::cell::RefCell;

use sha2::{Digest, Sha256};
use tlsrpt_bus::Message;
use tlsrpt_schemas::message::to_parts;
use tlsrpt_schemas::{
    DecodeError, DecodeOptions, DecodedInput, DecodedRef, Decoder, EmailHeaders, ReceivedReport,
};

thread_local! {
    /// One decoder per thread: building one per report halved throughput (DESIGN.md).
    static DECODER: RefCell<Option<Decoder>> = const { RefCell::new(None) };
}

/// Decodes what a receiver got (JSON, gzip, zip, base64 or a whole mail) with this thread's
/// decoder.
pub fn decode(options: DecodeOptions, bytes: &[u8]) -> Result<DecodedInput, DecodeError> {
    with_decoder(options, |decoder| decoder.decode_any(bytes))
}

/// [`decode`] handing the report to `use_report` with its text borrowed from the decoded
/// JSON, and the mail's headers when it came in a mail: for a receiver that only turns the
/// report into a bus message, copying its strings out would be most of its allocations.
pub fn decode_with<R>(
    options: DecodeOptions,
    bytes: &[u8],
    use_report: impl FnOnce(DecodedRef<'_>, Option<EmailHeaders>) -> R,
) -> Result<R, DecodeError> {
    with_decoder(options, |decoder| {
        decoder.decode_any_with(bytes, use_report)
    })
}

/// Runs `f` with this thread's decoder for `options`. `f` must not decode again.
fn with_decoder<R>(options: DecodeOptions, f: impl FnOnce(&mut Decoder) -> R) -> R {
    DECODER.with(|cell| {
        let mut slot = cell.borrow_mut();
        let decoder = match slot.as_mut() {
            Some(decoder) if decoder.options() == options => decoder,
            _ => slot.insert(Decoder::new(options)),
        };
        f(decoder)
    })
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(64);
    for byte in Sha256::digest(bytes) {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    hex
}

/// The bus message for an accepted report, and the report's `report_uid` (computed for the
/// message; receivers also quote it to the sender). `content_sha256` is of the bytes as
/// received.
pub fn message_for(
    received: &ReceivedReport<'_>,
    remote: Option<SocketAddr>,
    content_sha256: &str,
) -> (Message, String) {
    let remote = remote.map(|r| r.to_string());
    let parts = to_parts(received, remote.as_deref(), Some(content_sha256));
    let message = Message {
        key: parts.key,
        value: parts.value,
        headers: parts.headers,
    };
    (message, parts.report_uid)
}
