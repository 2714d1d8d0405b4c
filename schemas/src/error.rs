//! Why a report was refused.
//!
//! Every variant says what a sender's operator needs to fix, and none carries more than a
//! short excerpt of the input (a receiver must never echo unbounded input back). The kind
//! maps to the receivers' answers: [`DecodeError::status_class`].

use std::fmt;

use thiserror::Error;

/// The most characters of input quoted in any message.
pub const EXCERPT_CHARS: usize = 40;

/// A refused input.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The decompressed report would be larger than the configured cap. Decompression
    /// stopped as soon as the cap was passed.
    #[error("the report is larger than the limit of {limit_bytes} bytes once decompressed")]
    TooLarge { limit_bytes: usize },

    /// The bytes are not a TLS-RPT report in any form we read (not JSON, gzip, zip, base64,
    /// or JSON that is not a report object).
    #[error("not a TLS-RPT report: {reason}")]
    NotAReport { reason: String },

    /// The compressed container is damaged (bad gzip header, corrupt deflate data, checksum
    /// mismatch, truncated data, unreadable zip).
    #[error("damaged {container} data: {reason}")]
    Compression {
        container: &'static str,
        reason: String,
    },

    /// The JSON text is not well-formed.
    #[error(
        "broken JSON at byte {offset} (line {line}, column {column}): {message}; near `{near}`"
    )]
    Syntax {
        /// Byte offset into the decompressed JSON, 0-based.
        offset: usize,
        line: usize,
        column: usize,
        message: String,
        /// A short excerpt of the input around the offset.
        near: String,
    },

    /// Well-formed JSON that breaks a rule that keeps the data right, at a JSON path such as
    /// `policies[0].failure-details[1].failed-session-count`.
    #[error("{}{message}{}", path_prefix(.path), offset_suffix(.offset))]
    Invalid {
        path: String,
        message: String,
        /// Byte offset in the JSON, when known.
        offset: Option<usize>,
    },

    /// A mail message in which no part holds a report.
    #[error("no TLS-RPT report in the message: {reason}")]
    NoReportInMessage { reason: String },
}

fn path_prefix(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    }
}

fn offset_suffix(offset: &Option<usize>) -> String {
    match offset {
        Some(offset) => format!(" (at byte {offset})"),
        None => String::new(),
    }
}

/// How a receiver should classify a refusal: HTTP 400/413/415, SMTP 550.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// 400: a report, but malformed.
    Malformed,
    /// 413: over a size cap.
    TooLarge,
    /// 415: not a report at all.
    NotAReport,
}

impl DecodeError {
    /// The class of answer a receiver gives for this error.
    pub fn status_class(&self) -> StatusClass {
        match self {
            DecodeError::TooLarge { .. } => StatusClass::TooLarge,
            DecodeError::NotAReport { .. } | DecodeError::NoReportInMessage { .. } => {
                StatusClass::NotAReport
            }
            DecodeError::Compression { .. }
            | DecodeError::Syntax { .. }
            | DecodeError::Invalid { .. } => StatusClass::Malformed,
        }
    }

    /// The JSON path of the problem, when there is one.
    pub fn path(&self) -> Option<&str> {
        match self {
            DecodeError::Invalid { path, .. } if !path.is_empty() => Some(path),
            _ => None,
        }
    }

    /// A stable short code for metrics and dead-letter listings.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::NotAReport { .. } => "not_a_report",
            DecodeError::Compression { .. } => "compression",
            DecodeError::Syntax { .. } => "json_syntax",
            DecodeError::Invalid { .. } => "invalid",
            DecodeError::NoReportInMessage { .. } => "no_report_in_message",
        }
    }

    pub(crate) fn syntax(json: &str, err: &serde_json::Error) -> Self {
        let offset = Self::offset_of(json, err);
        let full = err.to_string();
        let message = match full.rfind(" at line ") {
            Some(at) => full[..at].to_owned(),
            None => full,
        };
        let near_start = floor_char_boundary(json, offset.saturating_sub(EXCERPT_CHARS / 2));
        let near = excerpt(&json[near_start..]).to_string();
        DecodeError::Syntax {
            offset,
            line: err.line(),
            column: err.column(),
            message,
            near,
        }
    }

    /// The byte offset serde_json's line and column point at. serde_json counts columns in
    /// bytes, 1-based; for an error at end of input it may point one past the end.
    pub(crate) fn offset_of(json: &str, err: &serde_json::Error) -> usize {
        if err.is_eof() {
            return json.len();
        }
        let line_start = if err.line() <= 1 {
            0
        } else {
            json.bytes()
                .enumerate()
                .filter(|&(_, b)| b == b'\n')
                .nth(err.line() - 2)
                .map_or(json.len(), |(i, _)| i + 1)
        };
        (line_start + err.column().saturating_sub(1)).min(json.len())
    }
}

fn floor_char_boundary(s: &str, mut index: usize) -> usize {
    while index > 0 && !s.is_char_boundary(index) {
        index -= 1;
    }
    index
}

/// At most [`EXCERPT_CHARS`] characters of `text`, control characters escaped, with `…`
/// when cut: how any input is quoted in a message.
pub fn excerpt(text: &str) -> impl fmt::Display + '_ {
    Excerpt(text)
}

struct Excerpt<'a>(&'a str);

impl fmt::Display for Excerpt<'_> {
    /// Control characters are escaped, and an escape counts its full length against the
    /// budget, so that binary input cannot make an excerpt six times longer.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut budget = EXCERPT_CHARS;
        for c in self.0.chars() {
            let escaped;
            let text: &dyn fmt::Display = if c.is_control() {
                escaped = c.escape_default();
                &escaped
            } else {
                &c
            };
            let cost = if c.is_control() {
                c.escape_default().count()
            } else {
                1
            };
            if cost > budget {
                return f.write_str("…");
            }
            budget -= cost;
            write!(f, "{text}")?;
        }
        Ok(())
    }
}
