//! The dedup key and the `report_uid` derived from it.
//!
//! A report delivered twice (sender retries, several `rua` addresses, mail and HTTPS both)
//! must count once. The key is (who sent it, `report-id`, start, end). "Who" is taken from
//! the report body only, never from the transport: an HTTPS POST carries no
//! `TLS-Report-Submitter` header, so a key built from the header would differ between the
//! mail copy and the HTTPS copy of one report. It is the domain of an email `contact-info`,
//! or else the organisation name, lower-cased.

use std::borrow::Cow;

use chrono::{DateTime, Datelike, Timelike, Utc};
use sha2::{Digest, Sha256};

use crate::model::{Report, format_datetime};

/// Field separator inside the key: a control character no field can hold after JSON decoding
/// without being visible, so that `("a|b", "c")` and `("a", "b|c")` never collide.
const SEPARATOR: char = '\u{1f}';

impl Report<'_> {
    /// The sender part of the dedup key: contact-info domain, else organisation, lower-cased.
    pub fn dedup_sender(&self) -> String {
        self.dedup_sender_text().into_owned()
    }

    /// [`Self::dedup_sender`] without a copy when the contact domain is already lower case.
    fn dedup_sender_text(&self) -> Cow<'_, str> {
        self.contact_domain()
            .unwrap_or_else(|| Cow::Owned(self.organization_name.trim().to_lowercase()))
    }

    /// The dedup key, also the bus message key (so a duplicate lands on the same partition
    /// as its first copy): `sender US report-id US start US end`, datetimes in UTC RFC 3339.
    pub fn dedup_key(&self) -> String {
        let sender = self.dedup_sender_text();
        // Sized once: the sender alone would be grown (copied) to fit the rest.
        let mut key = String::with_capacity(sender.len() + self.report_id.len() + 64);
        key.push_str(&sender);
        key.push(SEPARATOR);
        key.push_str(&self.report_id);
        key.push(SEPARATOR);
        push_datetime(&mut key, &self.date_range.start_datetime);
        key.push(SEPARATOR);
        push_datetime(&mut key, &self.date_range.end_datetime);
        key
    }

    /// A stable identifier for the report: the first 16 bytes of SHA-256 of the dedup key,
    /// as 32 lower-case hex digits. Stable across versions and machines.
    pub fn report_uid(&self) -> String {
        report_uid_of_key(&self.dedup_key())
    }

    /// The 16 bytes `report_uid` spells in hex, as one number (the first digest byte most
    /// significant): what a transformer keeps in its dedup set, without formatting hex for
    /// every duplicate. [`report_uid_hex`] gives the text.
    pub fn report_uid_value(&self) -> u128 {
        report_uid_value_of_key(&self.dedup_key())
    }
}

/// `report_uid` for a dedup key (see [`Report::report_uid`]).
pub fn report_uid_of_key(key: &str) -> String {
    report_uid_hex(report_uid_value_of_key(key))
}

/// [`Report::report_uid_value`] for a dedup key.
pub fn report_uid_value_of_key(key: &str) -> u128 {
    let digest = Sha256::digest(key.as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

/// The 32 lower-case hex digits of a `report_uid` value.
pub fn report_uid_hex(value: u128) -> String {
    ReportUidHex::of(value).as_str().to_owned()
}

/// The 32 hex digits of a `report_uid` value, on the stack: the transformer writes one per
/// report into three tables and needs no `String` for it (building one digit by digit was
/// 1% of its profile).
#[derive(Debug, Clone, Copy)]
pub struct ReportUidHex([u8; 32]);

impl ReportUidHex {
    pub fn of(value: u128) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut digits = [0u8; 32];
        for (pair, byte) in digits.chunks_exact_mut(2).zip(value.to_be_bytes()) {
            pair[0] = HEX[usize::from(byte >> 4)];
            pair[1] = HEX[usize::from(byte & 0xf)];
        }
        Self(digits)
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

/// The value of a `report_uid` written as 32 hex digits ([`report_uid_hex`] backwards);
/// `None` for anything else.
pub fn report_uid_value_of_hex(text: &str) -> Option<u128> {
    let bytes: &[u8; 32] = text.as_bytes().try_into().ok()?;
    // A table and no branches: readers parse millions of these.
    let mut value = 0u128;
    let mut invalid = 0u8;
    for &byte in bytes {
        let digit = HEX_DIGITS[usize::from(byte)];
        invalid |= digit;
        value = value << 4 | u128::from(digit & 0x0f);
    }
    (invalid & 0x80 == 0).then_some(value)
}

/// The value of each byte as a hex digit; 0x80 for bytes that are not one.
static HEX_DIGITS: [u8; 256] = {
    let mut table = [0x80u8; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// Appends what [`format_datetime`] writes, without the formatting machinery: the key is
/// built for every report on the hot path. The tests hold the two to the same output.
fn push_datetime(out: &mut String, at: &DateTime<Utc>) {
    let (date, time) = (at.date_naive(), at.time());
    let year = date.year();
    if !(0..=9999).contains(&year) {
        // Outside what validation accepts; keep the general formatter's output.
        use std::fmt::Write;
        let _ = write!(out, "{}", format_datetime(at));
        return;
    }
    let digits = |out: &mut String, value: u32, width: u32| {
        for position in (0..width).rev() {
            out.push(char::from(b'0' + (value / 10u32.pow(position) % 10) as u8));
        }
    };
    digits(out, year as u32, 4);
    out.push('-');
    digits(out, date.month(), 2);
    out.push('-');
    digits(out, date.day(), 2);
    out.push('T');
    digits(out, time.hour(), 2);
    out.push(':');
    digits(out, time.minute(), 2);
    out.push(':');
    digits(out, time.second(), 2);
    let micros = at.timestamp_subsec_micros();
    if micros != 0 {
        out.push('.');
        digits(out, micros, 6);
    }
    out.push('Z');
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn the_fast_datetime_writer_matches_format_datetime() {
        let instants = [
            Utc.with_ymd_and_hms(2016, 4, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(1900, 1, 1, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 7, 8, 9).unwrap(),
            Utc.timestamp_micros(1_700_000_000_123_456).unwrap(),
            Utc.timestamp_micros(1_700_000_000_000_001).unwrap(),
        ];
        for at in instants {
            let mut fast = String::new();
            push_datetime(&mut fast, &at);
            assert_eq!(fast, format_datetime(&at).to_string());
        }
    }

    #[test]
    fn the_uid_value_spells_the_uid() {
        // The SHA-256 of "abc" starts ba7816bf 8f01cfea 414140de 5dae2223.
        let value = report_uid_value_of_key("abc");
        assert_eq!(report_uid_hex(value), "ba7816bf8f01cfea414140de5dae2223");
        assert_eq!(report_uid_of_key("abc"), report_uid_hex(value));
        assert_eq!(value >> 120, 0xba);
        assert_eq!(report_uid_hex(15), "0000000000000000000000000000000f");
    }

    #[test]
    fn the_hex_reads_back_as_the_value() {
        let value = report_uid_value_of_key("abc");
        assert_eq!(report_uid_value_of_hex(&report_uid_hex(value)), Some(value));
        assert_eq!(
            report_uid_value_of_hex("0000000000000000000000000000000f"),
            Some(15)
        );
        assert_eq!(report_uid_value_of_hex("f"), None);
        assert_eq!(
            report_uid_value_of_hex("g000000000000000000000000000000f"),
            None
        );
        assert_eq!(
            report_uid_value_of_hex("+000000000000000000000000000000f"),
            None
        );
    }
}
