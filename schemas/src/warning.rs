//! Warning codes: what normalisation repaired or noticed in an accepted report.
//!
//! Real senders bend RFC 8460 in known ways. Such a report is accepted, the repair is made,
//! and a code says so, so that analysts can count quirks per sender and nothing changes
//! silently. The codes are stable strings: they are stored in the `reports.warnings` column.

use std::fmt;

use serde::Serialize;

macro_rules! warning_codes {
    ($( $(#[doc = $doc:literal])* $variant:ident = $code:literal, )*) => {
        /// A kind of quirk. See each variant for what was repaired.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum WarningCode {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl WarningCode {
            /// Every code, for documentation and tests.
            pub const ALL: &'static [WarningCode] = &[$(WarningCode::$variant),*];

            /// The stable code stored in the tables.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( WarningCode::$variant => $code, )*
                }
            }

            /// What the code means, in one or two sentences (the variant's documentation, so
            /// the code and its explanation cannot drift apart). `tlsrpt explain` prints it.
            pub fn description(self) -> &'static str {
                match self {
                    $( WarningCode::$variant => concat!($($doc),*), )*
                }
                .trim()
            }

            /// Reads a stored code back.
            pub fn from_code(code: &str) -> Option<Self> {
                match code {
                    $( $code => Some(WarningCode::$variant), )*
                    _ => None,
                }
            }
        }
    };
}

warning_codes! {
    /// `contact-info` was `null`.
    ContactInfoNull = "contact_info_null",
    /// `contact-info` was absent.
    ContactInfoMissing = "contact_info_missing",
    /// A `date-range` datetime had no time zone; it was read as UTC (Microsoft, 2023).
    DatetimeWithoutZone = "datetime_without_zone",
    /// `end-datetime` is the next day's `00:00:00Z` rather than `23:59:59Z`; kept as written.
    EndDatetimeNextDayMidnight = "end_datetime_next_day_midnight",
    /// `end-datetime` is before `start-datetime`; kept as written.
    DateRangeReversed = "date_range_reversed",
    /// `policies` was an empty list.
    PoliciesEmpty = "policies_empty",
    /// A policy entry had no `policy` object.
    PolicyMissing = "policy_missing",
    /// A policy had no `policy-type`.
    PolicyTypeMissing = "policy_type_missing",
    /// `policy-type` is not `sts`, `tlsa` or `no-policy-found`; kept as written.
    UnknownPolicyType = "unknown_policy_type",
    /// A policy had no `policy-domain`.
    PolicyDomainMissing = "policy_domain_missing",
    /// An `sts` or `tlsa` policy had no `policy-string`.
    PolicyStringMissing = "policy_string_missing",
    /// `policy-string` was one string rather than a list; it became a one-element list.
    PolicyStringNotArray = "policy_string_not_array",
    /// A TLSA `policy-string` was one string holding a JSON-encoded array (Microsoft); it was
    /// unpacked into its records.
    TlsaPolicyStringJsonEncoded = "tlsa_policy_string_json_encoded",
    /// `mx-host` was one string rather than a list (the RFC's own example).
    MxHostString = "mx_host_string",
    /// An `mx-host` value began with `mx:`; the prefix was removed.
    MxHostPrefixed = "mx_host_prefixed",
    /// A policy had no `summary`.
    SummaryMissing = "summary_missing",
    /// A `summary` lacked one of its two counts; the count is stored as null, not zero.
    SummaryCountMissing = "summary_count_missing",
    /// The `failed-session-count`s of a policy do not add up to its
    /// `total-failure-session-count` (Mail.ru). Rates use the summary.
    FailureSumMismatch = "failure_sum_mismatch",
    /// A policy reports failed sessions but no `failure-details`.
    FailureDetailsMissing = "failure_details_missing",
    /// A `result-type` outside the IANA registry; kept as written.
    UnknownResultType = "unknown_result_type",
    /// A failure entry had no `result-type`; stored as the empty string.
    ResultTypeMissing = "result_type_missing",
    /// A failure entry had no `failed-session-count`; stored as null.
    FailedSessionCountMissing = "failed_session_count_missing",
    /// `sending-mta-ip` is not an IP address; kept as written.
    SendingMtaIpInvalid = "sending_mta_ip_invalid",
    /// `receiving-ip` is not an IP address; kept as written.
    ReceivingIpInvalid = "receiving_ip_invalid",
    /// A count was written as a float with no fractional part (`3.0`); read as an integer.
    CountAsFloat = "count_as_float",
    /// A text field held a number or boolean; kept as its JSON text.
    TextFieldNotString = "text_field_not_string",
    /// A gzip member was followed by bytes that are not another member; they were ignored.
    TrailingBytesAfterGzip = "trailing_bytes_after_gzip",
    /// The report came from a zip archive.
    ZipArchive = "zip_archive",
    /// The input was base64 text around the report.
    Base64Wrapped = "base64_wrapped",
    /// The report began with a UTF-8 byte order mark, which was skipped.
    ByteOrderMark = "byte_order_mark",
    /// The mail part was declared `+gzip` but held plain JSON.
    DeclaredGzipWasJson = "declared_gzip_was_json",
}

impl fmt::Display for WarningCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for WarningCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One quirk seen in one report: its code and where (a JSON path such as
/// `policies[1].policy.mx-host[0]`, empty for the whole input).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Warning {
    pub code: WarningCode,
    pub path: String,
}

impl Warning {
    pub fn new(code: WarningCode, path: impl Into<String>) -> Self {
        Self {
            code,
            path: path.into(),
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(self.code.as_str())
        } else {
            write!(f, "{} at {}", self.code, self.path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_and_explains_itself() {
        for code in WarningCode::ALL {
            assert_eq!(WarningCode::from_code(code.as_str()), Some(*code));
            let text = code.description();
            assert!(text.len() > 10 && text.ends_with('.'), "{code}: {text:?}");
            assert!(
                !text.starts_with(' ') && !text.contains("  "),
                "{code}: {text:?}"
            );
        }
    }
}
