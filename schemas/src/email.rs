//! Finding the report in a mail message (RFC 8460 §5.3.1).
//!
//! MIME parsing is done by `mail-parser` (Stalwart), which handles the transfer encodings,
//! folded headers and broken boundaries real mail has. This module only chooses which part
//! holds the report, in order of how sure we are:
//! 1. parts declared `application/tlsrpt+gzip` or `application/tlsrpt+json`;
//! 2. parts declared as the containers real senders use (`application/gzip`, `x-gzip`,
//!    `zip`, `json`, `octet-stream`) or with a file name ending `.json`, `.gz` or `.zip`;
//! 3. the body of a single-part message.
//!
//! The bytes of each candidate are then sniffed by the [`Decoder`], so a `+gzip` part that
//! holds plain JSON is still read (and recorded).

use mail_parser::{Message, MessageParser, MessagePart, MimeHeaders, PartType};

use crate::decode::{Decoded, DecodedRef, Decoder, parse_in_container};
use crate::error::DecodeError;
use crate::warning::{Warning, WarningCode};

/// A report found in a message, with the TLS-RPT mail headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedEmail {
    pub decoded: Decoded,
    pub headers: EmailHeaders,
}

/// How sure we are that a part holds the report; lower is surer.
fn candidate_rank(part: &MessagePart<'_>) -> Option<u8> {
    if matches!(part.body, PartType::Multipart(_) | PartType::Message(_)) {
        return None;
    }
    let (ctype, subtype) = part
        .content_type()
        .map(|ct| {
            (
                ct.ctype().to_ascii_lowercase(),
                ct.subtype().unwrap_or("").to_ascii_lowercase(),
            )
        })
        .unwrap_or_default();
    let name = part.attachment_name().unwrap_or("").to_ascii_lowercase();
    if ctype == "application" && (subtype == "tlsrpt+gzip" || subtype == "tlsrpt+json") {
        return Some(0);
    }
    let container_type = ctype == "application"
        && matches!(
            subtype.as_str(),
            "gzip" | "x-gzip" | "zip" | "x-zip" | "x-zip-compressed" | "json" | "octet-stream"
        );
    let report_name = name.ends_with(".json") || name.ends_with(".gz") || name.ends_with(".zip");
    if container_type || report_name {
        return Some(1);
    }
    None
}

impl Decoder {
    /// Finds and decodes the report in a raw RFC 5322 message.
    pub fn decode_email(&mut self, raw: &[u8]) -> Result<DecodedEmail, DecodeError> {
        self.decode_email_with(raw, |decoded, headers| DecodedEmail {
            decoded: decoded.into_owned(),
            headers,
        })
    }

    /// Finds and decodes the report in a raw RFC 5322 message and hands it to `use_report`
    /// with the mail's headers, its text borrowed from the JSON (see [`DecodedRef`]).
    pub fn decode_email_with<R>(
        &mut self,
        raw: &[u8],
        use_report: impl FnOnce(DecodedRef<'_>, EmailHeaders) -> R,
    ) -> Result<R, DecodeError> {
        let message =
            MessageParser::default()
                .parse(raw)
                .ok_or_else(|| DecodeError::NotAReport {
                    reason: "the input is not a mail message".into(),
                })?;
        let header = |name: &str| {
            message
                .header_raw(name)
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
                .filter(|v| !v.is_empty())
        };
        let headers = EmailHeaders {
            report_domain: header("TLS-Report-Domain"),
            report_submitter: header("TLS-Report-Submitter"),
            subject: message.subject().map(str::to_owned),
            message_id: message.message_id().map(str::to_owned),
        };
        self.decode_message_report(&message, |decoded| use_report(decoded, headers))
    }

    /// Decodes the first candidate part that holds a report.
    fn decode_message_report<R>(
        &mut self,
        message: &Message<'_>,
        use_report: impl FnOnce(DecodedRef<'_>) -> R,
    ) -> Result<R, DecodeError> {
        let mut candidates: Vec<(u8, usize)> = message
            .parts
            .iter()
            .enumerate()
            .filter_map(|(index, part)| candidate_rank(part).map(|rank| (rank, index)))
            .collect();
        candidates.sort_unstable();
        if candidates.is_empty() && message.parts.len() == 1 {
            // A single-part message: the body itself may be the report.
            candidates.push((2, 0));
        }
        let mut first_error = None;
        for &(_, index) in &candidates {
            let part = &message.parts[index];
            let (raw_json, container_warnings) = match self.report_json(part.contents()) {
                Ok(found) => found,
                Err(err) => {
                    first_error.get_or_insert(err);
                    continue;
                }
            };
            match parse_in_container(&raw_json, container_warnings) {
                Ok(mut report) => {
                    let declared_gzip = part
                        .content_type()
                        .and_then(|ct| ct.subtype())
                        .is_some_and(|s| s.eq_ignore_ascii_case("tlsrpt+gzip"));
                    if declared_gzip && !part.contents().starts_with(&[0x1f, 0x8b]) {
                        report
                            .warnings
                            .insert(0, Warning::new(WarningCode::DeclaredGzipWasJson, ""));
                    }
                    return Ok(use_report(DecodedRef {
                        report,
                        raw_json: &raw_json,
                    }));
                }
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        if let Some(err) = first_error {
            return Err(err);
        }
        let seen: Vec<String> = message
            .parts
            .iter()
            .filter(|p| !matches!(p.body, PartType::Multipart(_)))
            .filter_map(|p| p.content_type())
            // Header values come from the sender: quote a few, short, in printable ASCII
            // (a MIME type is ASCII; anything else is shown as `?`).
            .map(|ct| {
                format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""))
                    .chars()
                    .take(40)
                    .map(|c| if c.is_ascii_graphic() { c } else { '?' })
                    .collect::<String>()
            })
            .take(6)
            .collect();
        Err(DecodeError::NoReportInMessage {
            reason: if seen.is_empty() {
                "the message has no parts".into()
            } else {
                format!(
                    "no part is a report (expected application/tlsrpt+gzip or +json; parts seen: {})",
                    seen.join(", ")
                )
            },
        })
    }
}

/// Whether bytes look like a mail message: they begin with an RFC 5322 header field
/// (`Name: value`) and are not JSON, gzip or zip.
pub fn looks_like_email(input: &[u8]) -> bool {
    let head = &input[..input.len().min(1000)];
    let Some(colon) = head.iter().position(|&b| b == b':') else {
        return false;
    };
    colon > 0
        && head[..colon]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A report decoded from bytes of any accepted form, mail included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedInput {
    pub decoded: Decoded,
    /// The mail headers, when the input was a mail message.
    pub email: Option<EmailHeaders>,
}

/// The headers of a mail that carried a report.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EmailHeaders {
    /// `TLS-Report-Domain`: the policy domain the report is about.
    pub report_domain: Option<String>,
    /// `TLS-Report-Submitter`: the domain of the reporting organisation.
    pub report_submitter: Option<String>,
    /// `Subject`, for listings.
    pub subject: Option<String>,
    /// `Message-ID`, for listings.
    pub message_id: Option<String>,
}

impl Decoder {
    /// Decodes a report from a file's bytes, which may be JSON, gzip, zip, base64 or a whole
    /// mail message (`.eml`): mail is recognised by its header lines.
    pub fn decode_any(&mut self, input: &[u8]) -> Result<DecodedInput, DecodeError> {
        self.decode_any_with(input, |decoded, email| DecodedInput {
            decoded: decoded.into_owned(),
            email,
        })
    }

    /// [`Decoder::decode_any`] handing the report to `use_report` with its text borrowed
    /// from the JSON (see [`DecodedRef`]), and the mail's headers when it came in a mail.
    pub fn decode_any_with<R>(
        &mut self,
        input: &[u8],
        use_report: impl FnOnce(DecodedRef<'_>, Option<EmailHeaders>) -> R,
    ) -> Result<R, DecodeError> {
        if looks_like_email(input) {
            return self
                .decode_email_with(input, |decoded, headers| use_report(decoded, Some(headers)));
        }
        self.decode_with(input, |decoded| use_report(decoded, None))
    }
}
