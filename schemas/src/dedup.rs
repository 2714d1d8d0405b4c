//! The dedup key and the `report_uid` derived from it.
//!
//! A report delivered twice (sender retries, several `rua` addresses, mail and HTTPS both)
//! must count once. The key is (who sent it, `report-id`, start, end). "Who" is taken from
//! the report body only, never from the transport: an HTTPS POST carries no
//! `TLS-Report-Submitter` header, so a key built from the header would differ between the
//! mail copy and the HTTPS copy of one report. It is the domain of an email `contact-info`,
//! or else the organisation name, lower-cased.

use sha2::{Digest, Sha256};

use crate::model::{Report, format_datetime};

/// Field separator inside the key: a control character no field can hold after JSON decoding
/// without being visible, so that `("a|b", "c")` and `("a", "b|c")` never collide.
const SEPARATOR: char = '\u{1f}';

impl Report {
    /// The sender part of the dedup key: contact-info domain, else organisation, lower-cased.
    pub fn dedup_sender(&self) -> String {
        self.contact_domain()
            .unwrap_or_else(|| self.organization_name.trim().to_lowercase())
    }

    /// The dedup key, also the bus message key (so a duplicate lands on the same partition
    /// as its first copy): `sender US report-id US start US end`, datetimes in UTC RFC 3339.
    pub fn dedup_key(&self) -> String {
        format!(
            "{}{SEPARATOR}{}{SEPARATOR}{}{SEPARATOR}{}",
            self.dedup_sender(),
            self.report_id,
            format_datetime(&self.date_range.start_datetime),
            format_datetime(&self.date_range.end_datetime),
        )
    }

    /// A stable identifier for the report: the first 16 bytes of SHA-256 of the dedup key,
    /// as 32 lower-case hex digits. Stable across versions and machines.
    pub fn report_uid(&self) -> String {
        report_uid_of_key(&self.dedup_key())
    }
}

/// `report_uid` for a dedup key (see [`Report::report_uid`]).
pub fn report_uid_of_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut hex = String::with_capacity(32);
    for byte in &digest[..16] {
        use std::fmt::Write;
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}
