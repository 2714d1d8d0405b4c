//! What is known about a report besides its JSON: how and when it arrived, and from whom.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::Report;

/// The way a report reached us; stored in `reports.transport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// `POST` to the HTTPS reporting endpoint (RFC 8460 §5.3.2).
    Https,
    /// Mail to the `mailto:` reporting address (RFC 8460 §5.3.1).
    Smtp,
    /// A backfill with `tlsrpt import`.
    Import,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Https => "https",
            Transport::Smtp => "smtp",
            Transport::Import => "import",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "https" => Some(Transport::Https),
            "smtp" => Some(Transport::Smtp),
            "import" => Some(Transport::Import),
            _ => None,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What DKIM verification said of a mailed report; stored in `reports.dkim`.
///
/// RFC 8460 §5.3.1 asks mailed reports to be DKIM-signed and lets a receiver drop unsigned
/// ones. Real senders' keys and canonicalisation vary, so by default the outcome is recorded
/// and the report kept; a strict receiver refuses anything but `Pass`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DkimOutcome {
    /// A signature verified (for any signing domain).
    Pass,
    /// Signatures were present and none verified (bad signature, key not found, body changed).
    Fail,
    /// The message carried no DKIM signature.
    None,
}

impl DkimOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            DkimOutcome::Pass => "pass",
            DkimOutcome::Fail => "fail",
            DkimOutcome::None => "none",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pass" => Some(DkimOutcome::Pass),
            "fail" => Some(DkimOutcome::Fail),
            "none" => Some(DkimOutcome::None),
            _ => None,
        }
    }
}

/// The envelope of one received report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub transport: Transport,
    /// When the receiver accepted the report, UTC.
    pub received_at: DateTime<Utc>,
    /// The `TLS-Report-Submitter` mail header, when the report came by mail with one.
    pub submitter_header: Option<String>,
    /// DKIM outcome, for reports that came by SMTP; `None` for other transports (and for
    /// imported mail, whose signing keys may have rotated since).
    pub dkim: Option<DkimOutcome>,
}

impl Envelope {
    /// An envelope for a report received now by `transport`, with no mail headers.
    pub fn now(transport: Transport) -> Self {
        Self {
            transport,
            received_at: Utc::now(),
            submitter_header: None,
            dkim: None,
        }
    }
}

/// A validated report with its envelope and the JSON exactly as decoded, which is kept so
/// that nothing is lost and any report can be reprocessed. The report may borrow from the
/// JSON, and the JSON from a bus message (the transformer's path); `ReceivedReport<'static>`
/// owns both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedReport<'a> {
    pub report: Report<'a>,
    pub envelope: Envelope,
    pub raw_json: Cow<'a, str>,
}

impl ReceivedReport<'_> {
    /// The received report free of the buffers it borrows from.
    pub fn into_owned(self) -> ReceivedReport<'static> {
        ReceivedReport {
            report: self.report.into_owned(),
            envelope: self.envelope,
            raw_json: Cow::Owned(self.raw_json.into_owned()),
        }
    }

    /// The `submitter` column: the `TLS-Report-Submitter` header, or else the domain of an
    /// email `contact-info`, or else `None`.
    pub fn submitter(&self) -> Option<Cow<'_, str>> {
        match &self.envelope.submitter_header {
            Some(header) => Some(ascii_lowercase(header.trim())),
            None => self.report.contact_domain(),
        }
    }
}

impl Report<'_> {
    /// The domain part of an email `contact-info` (after `mailto:` if present), lower-cased.
    pub fn contact_domain(&self) -> Option<Cow<'_, str>> {
        let contact = self.contact_info.as_deref()?.trim();
        let contact = contact.strip_prefix("mailto:").unwrap_or(contact);
        let (_, domain) = contact.rsplit_once('@')?;
        let domain = domain.trim().trim_end_matches('>');
        (!domain.is_empty()).then(|| ascii_lowercase(domain))
    }
}

/// `text` in ASCII lower case, copied only when it has upper-case letters (these are
/// computed for every report the transformer flattens, and are nearly always lower case
/// already).
fn ascii_lowercase(text: &str) -> Cow<'_, str> {
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(text.to_ascii_lowercase())
    } else {
        Cow::Borrowed(text)
    }
}
