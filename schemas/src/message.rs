//! A received report as the parts of a bus message, and back.
//!
//! The receivers put an accepted report on the bus; the transformer takes it off and
//! flattens it. Both sides use this one codec, so neither can drift from the other:
//! - key: the dedup key ([`crate::dedup`]), so every copy of a report lands on one partition;
//! - value: the decoded report JSON exactly as received (what `reports.raw_json` keeps);
//! - one header, `envelope`: what the JSON does not carry, as one compact JSON object
//!   ([`WireEnvelope`]): the envelope, and the warnings seen while decoding (some of which,
//!   such as `trailing_bytes_after_gzip`, are about the container and cannot be found again
//!   in the JSON).
//!
//! Messages written before the `envelope` header carried each field as a header of its own
//! (the names in [`header`]); they are still read. One header instead of seven is cheaper
//! on both sides of the broker: Kafka headers are parsed one by one, each an allocation in
//! librdkafka and two more (name and value) when copied out, and that showed in profiles of
//! the transformer (5% of its time) and of the receivers.
//!
//! The transformer parses the value again rather than trusting a serialised model: the JSON
//! is the record, and a newer tlsrpt reading an older message normalises it its own way.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

use crate::envelope::{DkimOutcome, Envelope, ReceivedReport, Transport};
use crate::error::DecodeError;
use crate::parse::parse_report;
use crate::warning::{Warning, WarningCode};

/// Header names. Stable: messages already on a log carry them.
pub mod header {
    /// The whole envelope as one JSON object ([`super::WireEnvelope`]); what this version
    /// writes.
    pub const ENVELOPE: &str = "envelope";
    // The headers of messages written before `envelope`, one field each (read, not written).
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
    /// The report's `report_uid` (also in the envelope), for a receiver's answer.
    pub report_uid: String,
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

/// The `envelope` header of a message, field by field, as the receiver wrote it: for the
/// transformer, and for operators and tools reading the log (`kcat -f '%h'` shows it as
/// it is). Fields are named as the old one-per-field headers were ([`header`]); a field
/// without a value is left out. Text is borrowed from the header where JSON allows.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEnvelope<'a> {
    /// `https`, `smtp` or `import`.
    #[serde(borrow, default, deserialize_with = "text")]
    pub transport: Option<Cow<'a, str>>,
    /// When the receiver accepted the report, RFC 3339 UTC with microseconds.
    #[serde(borrow, default, deserialize_with = "text")]
    pub received_at: Option<Cow<'a, str>>,
    /// The report's `report_uid`, for operators reading the log.
    #[serde(
        borrow,
        default,
        deserialize_with = "text",
        skip_serializing_if = "Option::is_none"
    )]
    pub report_uid: Option<Cow<'a, str>>,
    /// The `TLS-Report-Submitter` mail header, when there was one.
    #[serde(
        borrow,
        default,
        deserialize_with = "text",
        skip_serializing_if = "Option::is_none"
    )]
    pub submitter: Option<Cow<'a, str>>,
    /// `pass`, `fail` or `none`, for mailed reports.
    #[serde(
        borrow,
        default,
        deserialize_with = "text",
        skip_serializing_if = "Option::is_none"
    )]
    pub dkim: Option<Cow<'a, str>>,
    /// The sender's socket address, when known.
    #[serde(
        borrow,
        default,
        deserialize_with = "text",
        skip_serializing_if = "Option::is_none"
    )]
    pub remote_addr: Option<Cow<'a, str>>,
    /// SHA-256 of the bytes as they arrived (before decompression), hex.
    #[serde(
        borrow,
        default,
        deserialize_with = "text",
        skip_serializing_if = "Option::is_none"
    )]
    pub content_sha256: Option<Cow<'a, str>>,
    /// The warnings of the accepted report.
    #[serde(borrow, default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<WireWarning<'a>>,
}

/// One warning of [`WireEnvelope::warnings`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireWarning<'a> {
    #[serde(borrow, deserialize_with = "required_text")]
    pub code: Cow<'a, str>,
    #[serde(
        borrow,
        default,
        deserialize_with = "required_text",
        skip_serializing_if = "str::is_empty"
    )]
    pub path: Cow<'a, str>,
}

/// A JSON string borrowed from the input when it has no escapes (serde's own `Cow<str>`
/// always copies).
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    Ok(Option::<Text<'de>>::deserialize(deserializer)?.map(|t| t.0))
}

fn required_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Cow<'de, str>, D::Error> {
    Ok(Text::deserialize(deserializer)?.0)
}

impl<'a> WireEnvelope<'a> {
    /// The envelope of a message: its `envelope` header, or the one-per-field headers of a
    /// message written before it. Refuses an `envelope` header that is not the object above
    /// (a missing field is found later, by [`from_parts`], and named).
    pub fn of(headers: &'a [(String, String)]) -> Result<Self, MessageError> {
        if let Some(text) = find(headers, header::ENVELOPE) {
            if let Some(wire) = read_as_written(text) {
                return Ok(wire);
            }
            return serde_json::from_str(text).map_err(|_| MessageError::BadHeader {
                name: header::ENVELOPE,
                value: text.chars().take(200).collect(),
            });
        }
        let field = |name| find(headers, name).map(Cow::Borrowed);
        let warnings = match find(headers, header::WARNINGS) {
            None => Vec::new(),
            Some(text) => serde_json::from_str(text).map_err(|_| MessageError::BadHeader {
                name: header::WARNINGS,
                value: text.chars().take(200).collect(),
            })?,
        };
        Ok(Self {
            transport: field(header::TRANSPORT),
            received_at: field(header::RECEIVED_AT),
            report_uid: field(header::REPORT_UID),
            submitter: field(header::SUBMITTER),
            dkim: field(header::DKIM),
            remote_addr: field(header::REMOTE_ADDR),
            content_sha256: field(header::CONTENT_SHA256),
            warnings,
        })
    }

    /// The envelope as the `envelope` header's value.
    pub fn to_header_value(&self) -> String {
        serde_json::to_string(self).expect("an envelope serialises")
    }
}

/// The message for an accepted report. `remote_addr` and `content_sha256` are for operators.
pub fn to_parts(
    received: &ReceivedReport<'_>,
    remote_addr: Option<&str>,
    content_sha256: Option<&str>,
) -> MessageParts {
    let envelope = &received.envelope;
    let key = received.report.dedup_key();
    let received_at = envelope
        .received_at
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let report_uid = crate::dedup::report_uid_of_key(&key);
    let wire = WireEnvelope {
        transport: Some(Cow::Borrowed(envelope.transport.as_str())),
        received_at: Some(Cow::Borrowed(&received_at)),
        report_uid: Some(Cow::Borrowed(&report_uid)),
        submitter: envelope.submitter_header.as_deref().map(Cow::Borrowed),
        dkim: envelope.dkim.map(|d| Cow::Borrowed(d.as_str())),
        remote_addr: remote_addr.map(Cow::Borrowed),
        content_sha256: content_sha256.map(Cow::Borrowed),
        warnings: received
            .report
            .warnings
            .iter()
            .map(|w| WireWarning {
                code: Cow::Borrowed(w.code.as_str()),
                path: Cow::Borrowed(&w.path),
            })
            .collect(),
    };
    let headers = vec![(header::ENVELOPE.to_owned(), wire.to_header_value())];
    MessageParts {
        key: key.into_bytes(),
        value: received.raw_json.as_bytes().to_vec(),
        headers,
        report_uid,
    }
}

fn find<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The report a message holds, owning its text: [`from_message`] copied out of the value.
pub fn from_parts(
    value: Vec<u8>,
    headers: &[(String, String)],
) -> Result<ReceivedReport<'static>, MessageError> {
    from_message(&value, headers).map(ReceivedReport::into_owned)
}

/// The report a message holds: the value parsed again, the envelope and warnings from the
/// headers. The report and its `raw_json` borrow from `value`: a transformer flattens the
/// report and drops it, and copying its strings out first cost it 3% of its instructions
/// and a sixth of its allocations (BENCHMARKS.md, session 23).
pub fn from_message<'a>(
    value: &'a [u8],
    headers: &[(String, String)],
) -> Result<ReceivedReport<'a>, MessageError> {
    let wire = WireEnvelope::of(headers)?;
    let envelope = envelope_of(&wire)?;
    report_of(value, &wire.warnings, envelope)
}

/// The envelope of a message's header fields.
fn envelope_of(wire: &WireEnvelope<'_>) -> Result<Envelope, MessageError> {
    let transport_text = wire
        .transport
        .as_deref()
        .ok_or(MessageError::MissingHeader {
            name: header::TRANSPORT,
        })?;
    let transport = Transport::parse(transport_text).ok_or_else(|| MessageError::BadHeader {
        name: header::TRANSPORT,
        value: transport_text.to_owned(),
    })?;
    let received_text = wire
        .received_at
        .as_deref()
        .ok_or(MessageError::MissingHeader {
            name: header::RECEIVED_AT,
        })?;
    let received_at = match received_at_as_written(received_text) {
        Some(at) => at,
        None => DateTime::parse_from_rfc3339(received_text)
            .map(|at| at.with_timezone(&Utc))
            .map_err(|_| MessageError::BadHeader {
                name: header::RECEIVED_AT,
                value: received_text.to_owned(),
            })?,
    };
    let dkim = match wire.dkim.as_deref() {
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
        submitter_header: wire.submitter.as_deref().map(str::to_owned),
        dkim,
    })
}

/// The `envelope` header read as [`WireEnvelope::to_header_value`] writes it: compact JSON,
/// string values without escapes, known fields once each. `None` for anything else, which
/// serde_json then reads (and refuses with the header named). The transformer reads one
/// envelope per report, and serde's field matching, with chrono's general RFC 3339 parser
/// below, was 3.4% of its instructions (BENCHMARKS.md, session 24).
fn read_as_written(text: &str) -> Option<WireEnvelope<'_>> {
    let mut scan = Scanner { text, at: 0 };
    let mut wire = WireEnvelope::default();
    let mut warnings_read = false;
    scan.object(|scan, field| {
        let slot = match field {
            "transport" => &mut wire.transport,
            "received_at" => &mut wire.received_at,
            "report_uid" => &mut wire.report_uid,
            "submitter" => &mut wire.submitter,
            "dkim" => &mut wire.dkim,
            "remote_addr" => &mut wire.remote_addr,
            "content_sha256" => &mut wire.content_sha256,
            "warnings" if !warnings_read => {
                warnings_read = true;
                wire.warnings = scan.warnings()?;
                return Some(());
            }
            _ => return None,
        };
        scan.string_into(slot)
    })?;
    (scan.at == text.len()).then_some(wire)
}

/// A cursor over compact JSON for [`read_as_written`].
struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.text.as_bytes().get(self.at) == Some(&byte)).then(|| self.at += 1)
    }

    /// A string without escapes or control characters.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let rest = &self.text.as_bytes()[self.at..];
        // The values are hashes, instants and addresses of 15 to 64 bytes: memchr finds the
        // end many bytes at a time, and the check for control characters has no early exit
        // so that it is vectorised too (a byte at a time, this scan was most of the reader's
        // 1,800 instructions per envelope).
        let len = memchr::memchr2(b'"', b'\\', rest)?;
        let control = rest[..len].iter().fold(false, |seen, &b| seen | (b < 0x20));
        if rest[len] != b'"' || control {
            return None;
        }
        let text = &self.text[self.at..self.at + len];
        self.at += len + 1;
        Some(text)
    }

    /// A string into `slot`, which must be empty: a field given twice is left to
    /// serde_json, which names the problem.
    fn string_into<T: From<&'a str>>(&mut self, slot: &mut Option<T>) -> Option<()> {
        if slot.is_some() {
            return None;
        }
        *slot = Some(T::from(self.string()?));
        Some(())
    }

    /// `{"name":value,...}`, each value read by `field` given its name (`None` refuses it).
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            let name = self.string()?;
            self.eat(b':')?;
            field(self, name)?;
            if self.eat(b',').is_none() {
                break;
            }
        }
        self.eat(b'}')
    }

    /// `[{"code":"...","path":"..."},...]`, `path` left out when empty.
    fn warnings(&mut self) -> Option<Vec<WireWarning<'a>>> {
        self.eat(b'[')?;
        let mut warnings = Vec::new();
        if self.eat(b']').is_some() {
            return Some(warnings);
        }
        loop {
            let (mut code, mut path) = (None, None);
            self.object(|scan, field| match field {
                "code" => scan.string_into(&mut code),
                "path" => scan.string_into(&mut path),
                _ => None,
            })?;
            warnings.push(WireWarning {
                code: Cow::Borrowed(code?),
                path: Cow::Borrowed(path.unwrap_or_default()),
            });
            if self.eat(b',').is_none() {
                break;
            }
        }
        self.eat(b']')?;
        Some(warnings)
    }
}

/// `received_at` as the receivers write it, `YYYY-MM-DDTHH:MM:SS.ffffffZ`; `None` for any
/// other form (a leap second, an offset, other precision), which chrono then reads.
fn received_at_as_written(text: &str) -> Option<DateTime<Utc>> {
    let b = text.as_bytes();
    let separators = [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
    ];
    if b.len() != 27 || b[26] != b'Z' || separators.iter().any(|&(at, sep)| b[at] != sep) {
        return None;
    }
    let number = |from: usize, to: usize| {
        b[from..to].iter().try_fold(0u32, |n, &digit| {
            digit
                .is_ascii_digit()
                .then(|| n * 10 + u32::from(digit - b'0'))
        })
    };
    let date = chrono::NaiveDate::from_ymd_opt(
        i32::try_from(number(0, 4)?).ok()?,
        number(5, 7)?,
        number(8, 10)?,
    )?;
    let time = chrono::NaiveTime::from_hms_micro_opt(
        number(11, 13)?,
        number(14, 16)?,
        number(17, 19)?,
        number(20, 26)?,
    )?;
    Some(date.and_time(time).and_utc())
}

/// The value parsed, with the warnings of the envelope.
fn report_of<'a>(
    value: &'a [u8],
    warnings: &[WireWarning<'_>],
    envelope: Envelope,
) -> Result<ReceivedReport<'a>, MessageError> {
    let raw_json = std::str::from_utf8(value).map_err(|_| MessageError::NotUtf8)?;
    let mut report = parse_report(raw_json)?;
    // The envelope's list is the full list as the receiver saw it; codes this version does
    // not know (written by a newer receiver) are dropped rather than failing the report.
    // Without warnings in the envelope, the parse's own stand.
    if !warnings.is_empty() {
        report.warnings = warnings
            .iter()
            .filter_map(|w| WarningCode::from_code(&w.code).map(|c| Warning::new(c, &*w.path)))
            .collect();
    }
    Ok(ReceivedReport {
        report,
        envelope,
        raw_json: Cow::Borrowed(raw_json),
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
            raw_json: decoded.raw_json.into(),
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

    #[test]
    fn the_envelope_is_one_header_and_survives_any_text() {
        let received = ReceivedReport {
            report: parse_report(REPORT).unwrap(),
            envelope: Envelope {
                transport: Transport::Smtp,
                received_at: Utc::now(),
                // Quotes and a backslash: JSON escapes them, and they come back.
                submitter_header: Some("\"mx\" \\ example".into()),
                dkim: Some(DkimOutcome::Pass),
            },
            raw_json: REPORT.into(),
        };
        let parts = to_parts(&received, None, None);
        assert_eq!(parts.headers.len(), 1);
        assert_eq!(parts.headers[0].0, header::ENVELOPE);
        let back = from_parts(parts.value, &parts.headers).unwrap();
        assert_eq!(
            back.envelope.submitter_header,
            received.envelope.submitter_header
        );
        assert_eq!(back.envelope.dkim, Some(DkimOutcome::Pass));
        let wire = WireEnvelope::of(&parts.headers).unwrap();
        assert!(matches!(wire.transport, Some(Cow::Borrowed("smtp"))));
        assert!(wire.remote_addr.is_none() && wire.content_sha256.is_none());
    }

    #[test]
    fn messages_from_before_the_envelope_header_are_read() {
        let headers: Vec<(String, String)> = [
            ("transport", "https"),
            ("received_at", "2026-01-01T10:00:00.000001Z"),
            ("report_uid", "00"),
            ("remote_addr", "192.0.2.1:4000"),
            ("warnings", r#"[{"code":"trailing_bytes_after_gzip"}]"#),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
        let back = from_parts(REPORT.as_bytes().to_vec(), &headers).unwrap();
        assert_eq!(back.envelope.transport, Transport::Https);
        assert_eq!(back.envelope.received_at.timestamp_subsec_micros(), 1);
        assert_eq!(
            back.report.warnings,
            vec![Warning::new(WarningCode::TrailingBytesAfterGzip, "")]
        );
        let wire = WireEnvelope::of(&headers).unwrap();
        assert_eq!(wire.remote_addr.as_deref(), Some("192.0.2.1:4000"));
    }

    #[test]
    fn an_unreadable_envelope_header_is_refused_by_name() {
        let headers = vec![(header::ENVELOPE.to_owned(), "{\"transport\":".to_owned())];
        let err = from_parts(REPORT.as_bytes().to_vec(), &headers).unwrap_err();
        assert!(err.to_string().starts_with("header envelope"), "{err}");
        let headers = vec![(header::ENVELOPE.to_owned(), "{}".to_owned())];
        let err = from_parts(REPORT.as_bytes().to_vec(), &headers).unwrap_err();
        assert_eq!(err.to_string(), "header transport is missing");
    }
    /// What `read_as_written` takes must read as serde_json reads it; what it leaves is read
    /// by serde_json.
    fn read_like_serde(text: &str) -> Option<WireEnvelope<'_>> {
        let fast = read_as_written(text);
        if let Some(fast) = &fast {
            let slow: WireEnvelope<'_> = serde_json::from_str(text).unwrap();
            assert_eq!(fast, &slow, "{text}");
        }
        fast
    }

    #[test]
    fn envelopes_as_written_are_read_without_serde_and_alike() {
        let warning = |code: &'static str, path: &'static str| WireWarning {
            code: code.into(),
            path: path.into(),
        };
        let full = WireEnvelope {
            transport: Some("smtp".into()),
            received_at: Some("2026-12-06T23:59:59.000001Z".into()),
            report_uid: Some("0123456789abcdef0123456789abcdef".into()),
            submitter: Some("mx.example.net (Ünïcode)".into()),
            dkim: Some("pass".into()),
            remote_addr: Some("[2001:db8::1]:25".into()),
            content_sha256: Some("ab".repeat(32).into()),
            warnings: vec![
                warning("trailing_bytes_after_gzip", ""),
                warning("mx_host_prefixed", "policies[0].policy.mx-host[1]"),
            ],
        };
        let minimal = WireEnvelope {
            transport: Some("https".into()),
            received_at: Some("2026-12-06T00:00:00.000000Z".into()),
            ..WireEnvelope::default()
        };
        for wire in [&full, &minimal] {
            let text = wire.to_header_value();
            let read = read_like_serde(&text).unwrap_or_else(|| panic!("not read: {text}"));
            assert_eq!(&read, wire);
            assert!(read.transport.iter().all(|t| matches!(t, Cow::Borrowed(_))));
        }
        // Fields written as null (a receiver always has both) are left to serde_json.
        assert!(read_like_serde(&WireEnvelope::default().to_header_value()).is_none());
        // Text JSON must escape is left to serde_json, which unescapes it.
        let escaped = WireEnvelope {
            submitter: Some("\"mx\" \\ tab\t".into()),
            ..full.clone()
        };
        assert!(read_like_serde(&escaped.to_header_value()).is_none());
        // Other spellings of the same object, and what is not one.
        for text in [
            r#"{ "transport":"https"}"#,
            r#"{"transport":null}"#,
            r#"{"transport":"https","transport":"smtp"}"#,
            r#"{"transport":"https","later":"field"}"#,
            r#"{"warnings":[{"code":"x","code":"y"}]}"#,
            r#"{"warnings":[{"path":"p"}]}"#,
            r#"{"warnings":[],"warnings":[]}"#,
            r#"{"transport":"https"} "#,
            r#"{"transport":"https"}{}"#,
            r#"{"transport":"https","#,
            r#"{"transport":"ht"#,
            "{\"transport\":\"a\u{1}b\"}",
            "",
        ] {
            assert!(read_as_written(text).is_none(), "{text}");
        }
        assert_eq!(
            read_like_serde(r#"{"warnings":[{"path":"p","code":"c"}]}"#)
                .unwrap()
                .warnings,
            vec![warning("c", "p")]
        );
    }

    #[test]
    fn received_at_as_written_is_read_as_chrono_reads_it() {
        let mut at = DateTime::parse_from_rfc3339("1999-12-31T23:59:59.999999Z")
            .unwrap()
            .with_timezone(&Utc);
        // Instants over fifty years, at uneven steps through every field.
        for _ in 0..20_000 {
            let text = at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            assert_eq!(received_at_as_written(&text), Some(at), "{text}");
            at += chrono::Duration::microseconds(78_901_234_567);
        }
        for text in [
            "2026-12-06T10:00:00Z",
            "2026-12-06T10:00:00.000001+00:00",
            "2026-12-06T10:00:00.001Z",
            "2026-02-30T10:00:00.000000Z",
            "2016-12-31T23:59:60.000000Z",
            "2026-12-06 10:00:00.000000Z",
            "2026-12-06T1a:00:00.000000Z",
            "+026-12-06T10:00:00.000000Z",
        ] {
            assert_eq!(received_at_as_written(text), None, "{text}");
        }
        let leap = "2016-12-31T23:59:60.000000Z";
        assert!(
            from_parts(
                REPORT.as_bytes().to_vec(),
                &[
                    ("transport".to_owned(), "https".to_owned()),
                    ("received_at".to_owned(), leap.to_owned())
                ]
            )
            .is_ok(),
            "chrono reads what the fast path leaves"
        );
    }
}
