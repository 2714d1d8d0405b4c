//! The report model of RFC 8460 §4, after normalisation.
//!
//! These types hold a report as the rest of the system sees it: quirks already repaired (an
//! `mx-host` string turned into a list, a JSON-encoded TLSA `policy-string` unpacked, a
//! zone-less datetime read as UTC) and each repair recorded in [`Report::warnings`]. They
//! are built by [`crate::parse_report`], never deserialised directly, so that every report
//! in the system has gone through validation; they serialise back to RFC 8460 JSON.
//!
//! Text is `Cow<'a, str>`: a report parsed from JSON borrows every string that had no
//! escape from the JSON text instead of copying it. The transformer parses each report only
//! to flatten it and then drops it, and every string a report holds (a dozen to several
//! dozen) was an allocation, a copy and a free on that path. Code that keeps a report beyond
//! its JSON takes [`Report::into_owned`] (`Report<'static>`); the receivers' [`crate::Decoder`]
//! still hands out owned reports.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};

use crate::warning::Warning;

/// One TLS-RPT report (RFC 8460 §4.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Report<'a> {
    /// The name of the organisation that sent the report (`organization-name`).
    pub organization_name: Cow<'a, str>,
    /// The period the report covers, in UTC.
    pub date_range: DateRange,
    /// Where to reach the sender about the report: an email address or a URI. `None` when
    /// the sender wrote `null` or left it out (both recorded as warnings).
    #[serde(serialize_with = "serialize_contact_info")]
    pub contact_info: Option<Cow<'a, str>>,
    /// The sender's identifier for this report (`report-id`).
    pub report_id: Cow<'a, str>,
    /// One entry per policy the sender evaluated.
    pub policies: Vec<PolicyResult<'a>>,
    /// What normalisation repaired or noticed, in the order seen. Not part of RFC 8460.
    #[serde(skip)]
    pub warnings: Vec<Warning>,
}

fn serialize_contact_info<S: Serializer>(
    v: &Option<Cow<'_, str>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    // RFC 8460 makes contact-info required; a missing one is written as null so the output
    // stays a well-formed report.
    match v {
        Some(v) => s.serialize_str(v),
        None => s.serialize_none(),
    }
}

/// `date-range`: the period covered, as UTC instants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DateRange {
    #[serde(serialize_with = "serialize_datetime")]
    pub start_datetime: DateTime<Utc>,
    #[serde(serialize_with = "serialize_datetime")]
    pub end_datetime: DateTime<Utc>,
}

/// RFC 3339 with a `Z` and fractional seconds only when there are any, the form senders use.
fn serialize_datetime<S: Serializer>(v: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_datetime(v))
}

/// Formats an instant the way RFC 8460 examples do: `2016-04-01T00:00:00Z`.
pub fn format_datetime(v: &DateTime<Utc>) -> impl fmt::Display + '_ {
    v.format(if v.timestamp_subsec_micros() == 0 {
        "%Y-%m-%dT%H:%M:%SZ"
    } else {
        "%Y-%m-%dT%H:%M:%S%.6fZ"
    })
}

/// One element of `policies`: a policy, its session counts, and the failures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PolicyResult<'a> {
    pub policy: Policy<'a>,
    pub summary: Summary,
    /// Absent and `[]` both become an empty list; serialised only when non-empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failure_details: Vec<FailureDetails<'a>>,
}

/// `policy`: what the sender applied when delivering to the policy domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Policy<'a> {
    /// `None` only when the sender left `policy-type` out (recorded as a warning).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_type: Option<PolicyType>,
    /// The policy as the sender saw it: MTA-STS policy lines, or TLSA records in
    /// presentation form. Empty when absent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policy_string: Vec<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_domain: Option<Cow<'a, str>>,
    /// The MX patterns of an MTA-STS policy, always a list here (the RFC example and some
    /// senders write one string).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mx_host: Vec<Cow<'a, str>>,
}

impl Policy<'_> {
    /// `mode` of an MTA-STS policy string (`enforce`, `testing`, `none`), if present.
    pub fn sts_mode(&self) -> Option<&str> {
        self.sts_mode_and_max_age().0
    }

    pub fn sts_max_age(&self) -> Option<u64> {
        self.sts_mode_and_max_age().1
    }

    /// `mode` and `max_age` of an STS policy string, in one pass over its lines (the
    /// transformer needs both for every policy). The first line of each name counts.
    pub fn sts_mode_and_max_age(&self) -> (Option<&str>, Option<u64>) {
        if self.policy_type != Some(PolicyType::Sts) {
            return (None, None);
        }
        let (mut mode, mut max_age): (Option<&str>, Option<&str>) = (None, None);
        for line in &self.policy_string {
            // A byte search: `:` is ASCII, so its position is a character boundary.
            let Some(colon) = line.bytes().position(|b| b == b':') else {
                continue;
            };
            let (key, value) = (trim(&line[..colon]), &line[colon + 1..]);
            if mode.is_none() && key.eq_ignore_ascii_case("mode") {
                mode = Some(trim(value));
            } else if max_age.is_none() && key.eq_ignore_ascii_case("max_age") {
                max_age = Some(trim(value));
            }
            if mode.is_some() && max_age.is_some() {
                break;
            }
        }
        (mode, max_age.and_then(|v| v.parse().ok()))
    }
}

/// What `str::trim` gives, through the ASCII-only trim when that is enough: the transformer
/// reads the lines of every STS policy it flattens, and the general trim (a character
/// decoder at each end) and `split_once` were 1.6% of its instructions.
fn trim(text: &str) -> &str {
    let trimmed = text.trim_ascii();
    // `trim_ascii` leaves what `trim` would still remove: a vertical tab (ASCII, but not
    // in `u8::is_ascii_whitespace`) or non-ASCII white space at either end.
    let unusual = |byte: Option<&u8>| byte.is_some_and(|&b| b == 0x0b || !b.is_ascii());
    let bytes = trimmed.as_bytes();
    if unusual(bytes.first()) || unusual(bytes.last()) {
        trimmed.trim()
    } else {
        trimmed
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Summary {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_successful_session_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_failure_session_count: Option<u64>,
}

/// One element of `failure-details`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct FailureDetails<'a> {
    pub result_type: ResultType,
    /// Kept as written, even when it is not an IP address (recorded as a warning).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sending_mta_ip: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receiving_mx_hostname: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receiving_mx_helo: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receiving_ip: Option<Cow<'a, str>>,
    /// `None` when the sender left it out (recorded as a warning).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_session_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub additional_information: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason_code: Option<Cow<'a, str>>,
}

macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )* }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A value outside the registry, kept exactly as the sender wrote it.
            Other(String),
        }

        impl $name {
            /// Every registered value, in registry order.
            pub const REGISTERED: &'static [$name] = &[$($name::$variant),*];

            /// Reads a value as written; unregistered values become `Other`.
            pub fn parse(text: &str) -> Self {
                match text {
                    $( $text => $name::$variant, )*
                    other => $name::Other(other.to_owned()),
                }
            }

            /// The value as it appears in reports.
            pub fn as_str(&self) -> &str {
                match self {
                    $( $name::$variant => $text, )*
                    $name::Other(text) => text,
                }
            }

            /// Whether the value is in the registry.
            pub fn is_registered(&self) -> bool {
                !matches!(self, $name::Other(_))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

string_enum! {
    /// `policy-type` (RFC 8460 §4.3).
    PolicyType {
        /// MTA-STS (RFC 8461).
        Sts = "sts",
        /// DANE (RFC 7672).
        Tlsa = "tlsa",
        /// Neither policy was found for the domain.
        NoPolicyFound = "no-policy-found",
    }
}

string_enum! {
    /// `result-type` (RFC 8460 §4.3 and the IANA "STARTTLS Validation Result Types" registry).
    ResultType {
        StarttlsNotSupported = "starttls-not-supported",
        CertificateHostMismatch = "certificate-host-mismatch",
        CertificateExpired = "certificate-expired",
        CertificateNotTrusted = "certificate-not-trusted",
        ValidationFailure = "validation-failure",
        TlsaInvalid = "tlsa-invalid",
        DnssecInvalid = "dnssec-invalid",
        DaneRequired = "dane-required",
        StsPolicyFetchError = "sts-policy-fetch-error",
        StsPolicyInvalid = "sts-policy-invalid",
        StsWebpkiInvalid = "sts-webpki-invalid",
    }
}

impl Report<'_> {
    /// Sessions that succeeded across all policies, counting a missing count as zero.
    pub fn total_successful_session_count(&self) -> u64 {
        self.policies
            .iter()
            .map(|p| p.summary.total_successful_session_count.unwrap_or(0))
            .sum()
    }

    /// Sessions that failed across all policies, from the summaries (not the details: some
    /// senders' details do not add up to their summary, and rates come from the summary).
    pub fn total_failure_session_count(&self) -> u64 {
        self.policies
            .iter()
            .map(|p| p.summary.total_failure_session_count.unwrap_or(0))
            .sum()
    }

    /// The report as RFC 8460 JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report always serialises")
    }

    /// The report with every string its own, free of the JSON it was parsed from.
    pub fn into_owned(self) -> Report<'static> {
        Report {
            organization_name: owned(self.organization_name),
            date_range: self.date_range,
            contact_info: self.contact_info.map(owned),
            report_id: owned(self.report_id),
            policies: self
                .policies
                .into_iter()
                .map(PolicyResult::into_owned)
                .collect(),
            warnings: self.warnings,
        }
    }
}

impl PolicyResult<'_> {
    pub fn into_owned(self) -> PolicyResult<'static> {
        PolicyResult {
            policy: self.policy.into_owned(),
            summary: self.summary,
            failure_details: self
                .failure_details
                .into_iter()
                .map(FailureDetails::into_owned)
                .collect(),
        }
    }
}

impl Policy<'_> {
    pub fn into_owned(self) -> Policy<'static> {
        Policy {
            policy_type: self.policy_type,
            policy_string: self.policy_string.into_iter().map(owned).collect(),
            policy_domain: self.policy_domain.map(owned),
            mx_host: self.mx_host.into_iter().map(owned).collect(),
        }
    }
}

impl FailureDetails<'_> {
    pub fn into_owned(self) -> FailureDetails<'static> {
        FailureDetails {
            result_type: self.result_type,
            sending_mta_ip: self.sending_mta_ip.map(owned),
            receiving_mx_hostname: self.receiving_mx_hostname.map(owned),
            receiving_mx_helo: self.receiving_mx_helo.map(owned),
            receiving_ip: self.receiving_ip.map(owned),
            failed_session_count: self.failed_session_count,
            additional_information: self.additional_information.map(owned),
            failure_reason_code: self.failure_reason_code.map(owned),
        }
    }
}

/// A text of the model, copied out of the JSON it borrows from (if it does).
fn owned(text: Cow<'_, str>) -> Cow<'static, str> {
    Cow::Owned(text.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_trim_trims_what_str_trim_trims() {
        let texts = [
            "",
            " ",
            "mode",
            "  mode\t",
            "\u{b}mode\u{b}",
            "\u{a0}mode\u{2003}",
            " \u{a0} max_age \u{a0} ",
            "\r\nenforce\r\n",
            "é",
            " é ",
            "\u{85}x",
            "x\u{3000}",
        ];
        for text in texts {
            assert_eq!(trim(text), text.trim(), "{text:?}");
        }
    }

    #[test]
    fn sts_mode_and_max_age_read_the_first_line_of_each_name() {
        let policy = |lines: &[&str]| Policy {
            policy_type: Some(PolicyType::Sts),
            policy_string: lines.iter().map(|l| Cow::Owned(l.to_string())).collect(),
            policy_domain: Some("example.com".into()),
            mx_host: Vec::new(),
        };
        let usual = policy(&[
            "version: STSv1",
            "mode: enforce",
            "mx: mx1.example.com",
            "max_age: 604800",
        ]);
        assert_eq!(
            usual.sts_mode_and_max_age(),
            (Some("enforce"), Some(604800))
        );
        let odd = policy(&[
            "x:mode: none",
            " MODE :\u{a0}testing ",
            "mode: enforce",
            "\u{a0}Max_Age:86400",
            "nothing here",
        ]);
        assert_eq!(odd.sts_mode_and_max_age(), (Some("testing"), Some(86400)));
        let mut tlsa = policy(&["mode: enforce"]);
        tlsa.policy_type = Some(PolicyType::Tlsa);
        assert_eq!(tlsa.sts_mode_and_max_age(), (None, None));
        assert_eq!(policy(&["max_age: soon"]).sts_max_age(), None);
    }
}
