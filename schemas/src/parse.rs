//! From report JSON to a validated, normalised [`Report`].
//!
//! Two layers. The *wire* types below mirror RFC 8460 JSON loosely: every field optional,
//! strings borrowed from the input where they hold no escapes, scalars accepted in text
//! fields, `mx-host` as a string or a list. They decide only what can be read at all. Then
//! [`normalise`] decides what is refused (what would make the data wrong: no report-id, no
//! date range, counts that are not non-negative integers) and repairs the rest, recording a
//! [`Warning`] for each repair.
//!
//! Speed: the fast path deserialises once with plain `serde_json`. Only when that fails is the
//! input deserialised a second time through `serde_path_to_error`, to name the JSON path of
//! the problem; both runs use the same `Deserialize` impls, so they fail on the same input.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Timelike, Utc};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::error::{DecodeError, excerpt};
use crate::model::{
    DateRange, FailureDetails, Policy, PolicyResult, PolicyType, Report, ResultType, Summary,
};
use crate::warning::{Warning, WarningCode};

/// Parses and normalises report JSON. `json` must already be decompressed.
/// The report borrows every string that had no escape from `json`.
pub fn parse_report(json: &str) -> Result<Report<'_>, DecodeError> {
    match serde_json::from_str::<WireReport<'_>>(json) {
        Ok(wire) => normalise(wire),
        Err(first) => Err(explain_failure(json, first)),
    }
}

/// Turns a failed fast-path parse into an error that names the JSON path (or the byte
/// offset of a syntax error).
fn explain_failure(json: &str, first: serde_json::Error) -> DecodeError {
    if first.is_syntax() || first.is_eof() {
        return DecodeError::syntax(json, &first);
    }
    let mut de = serde_json::Deserializer::from_str(json);
    match serde_path_to_error::deserialize::<_, WireReport<'_>>(&mut de) {
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            let path = if path == "." { String::new() } else { path };
            if path.is_empty() && inner.is_data() {
                // The top level is not an object: this is not a report at all.
                return DecodeError::NotAReport {
                    reason: format!("the JSON {}", describe_serde_message(&inner)),
                };
            }
            DecodeError::Invalid {
                path,
                message: describe_serde_message(&inner),
                offset: Some(DecodeError::offset_of(json, &inner)),
            }
        }
        // Cannot happen (same impls, same input); keep the first error rather than panic.
        Ok(_) => DecodeError::Invalid {
            path: String::new(),
            message: describe_serde_message(&first),
            offset: Some(DecodeError::offset_of(json, &first)),
        },
    }
}

/// serde_json's message without its " at line L column C" suffix, rephrased from serde's
/// "invalid type: X, expected Y" to this crate's "expected Y, found X", and with the found
/// value cut short: a refused report must never echo much of its input back.
fn describe_serde_message(err: &serde_json::Error) -> String {
    let full = err.to_string();
    let message = match full.rfind(" at line ") {
        Some(at) => &full[..at],
        None => &full[..],
    };
    if let Some(rest) = message.strip_prefix("invalid type: ")
        && let Some((found, expected)) = rest.split_once(", expected ")
    {
        return format!("expected {expected}, found {}", excerpt(found));
    }
    // Our own messages already quote at most an excerpt of the value; cap the whole anyway.
    message.chars().take(200).collect()
}

// ---------------------------------------------------------------------------------------
// Wire types
// ---------------------------------------------------------------------------------------

/// A JSON member that may be absent, `null`, or present. RFC 8460 senders differ on the first
/// two (contact-info `null` versus missing), and the difference is recorded.
#[derive(Debug, Default)]
enum Field<T> {
    #[default]
    Missing,
    Null,
    Present(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(d)? {
            None => Field::Null,
            Some(v) => Field::Present(v),
        })
    }
}

impl<T> Field<T> {
    fn into_option(self) -> Option<T> {
        match self {
            Field::Present(v) => Some(v),
            Field::Missing | Field::Null => None,
        }
    }
}

/// A text field: borrowed when the JSON string had no escapes. Numbers and booleans are
/// accepted and kept as their JSON text (`coerced`), since that loses nothing.
#[derive(Debug)]
struct Text<'a> {
    value: Cow<'a, str>,
    coerced: bool,
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text {
                    value: Cow::Borrowed(v),
                    coerced: false,
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text {
                    value: Cow::Owned(v.to_owned()),
                    coerced: false,
                })
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text {
                    value: Cow::Owned(v),
                    coerced: false,
                })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Text {
                    value: Cow::Owned(v.to_string()),
                    coerced: true,
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Text {
                    value: Cow::Owned(v.to_string()),
                    coerced: true,
                })
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Text {
                    value: Cow::Owned(v.to_string()),
                    coerced: true,
                })
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Text {
                    value: Cow::Owned(v.to_string()),
                    coerced: true,
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
                Err(de::Error::custom("expected a string, found an array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
                Err(de::Error::custom("expected a string, found an object"))
            }
        }
        d.deserialize_any(TextVisitor)
    }
}

/// A session count: a non-negative integer. `3.0` is read as 3 (recorded); anything else
/// (`-1`, `2.5`, `"twenty"`) is refused, because a wrong count makes every rate wrong.
#[derive(Debug, Clone, Copy)]
struct Count {
    value: u64,
    was_float: bool,
}

/// The largest count accepted: counts are stored as Int64 (SQL tools handle signed
/// integers best), and no sender has 2^63 sessions.
const MAX_COUNT: u64 = i64::MAX as u64;

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct CountVisitor;
        fn refuse<E: de::Error>(found: impl fmt::Display) -> E {
            E::custom(format_args!(
                "expected a non-negative integer, found {found}"
            ))
        }
        impl<'de> Visitor<'de> for CountVisitor {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
                if v > MAX_COUNT {
                    return Err(refuse(v));
                }
                Ok(Count {
                    value: v,
                    was_float: false,
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(refuse(v)),
                }
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Count, E> {
                if v.fract() == 0.0 && (0.0..9.2e18).contains(&v) {
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    return Ok(Count {
                        value: v as u64,
                        was_float: true,
                    });
                }
                Err(refuse(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Count, E> {
                Err(refuse(format_args!("\"{}\"", excerpt(v))))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Count, E> {
                Err(refuse(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Count, A::Error> {
                Err(refuse("an array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Count, A::Error> {
                Err(refuse("an object"))
            }
        }
        d.deserialize_any(CountVisitor)
    }
}

/// A JSON array and nothing else (`policies`, `failure-details`).
#[derive(Debug)]
struct Array<T>(Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Array<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ArrayVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ArrayVisitor<T> {
            type Value = Array<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
                Err(de::Error::custom("expected an array, found an object"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Err(E::custom(format_args!(
                    "expected an array, found \"{}\"",
                    excerpt(v)
                )))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Err(E::custom(format_args!("expected an array, found {v}")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Err(E::custom(format_args!("expected an array, found {v}")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Err(E::custom(format_args!("expected an array, found {v}")))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Err(E::custom(format_args!("expected an array, found {v}")))
            }
        }
        d.deserialize_any(ArrayVisitor(std::marker::PhantomData))
    }
}

/// `mx-host` and `policy-string`: a list of strings, or (a quirk) one string.
#[derive(Debug)]
enum TextList<'a> {
    One(Text<'a>),
    /// The items as text (numbers kept as written, like [`Text`]), collected straight into
    /// the model's type: a `Vec<Text>` turned into a `Vec<Cow>` afterwards was reallocated.
    Many(Vec<Cow<'a, str>>),
}

impl<'de: 'a, 'a> Deserialize<'de> for TextList<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = TextList<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of strings")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(TextList::One(Text {
                    value: Cow::Borrowed(v),
                    coerced: false,
                }))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(TextList::One(Text {
                    value: Cow::Owned(v.to_owned()),
                    coerced: false,
                }))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(TextList::One(Text {
                    value: Cow::Owned(v),
                    coerced: false,
                }))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(item) = seq.next_element::<Text<'de>>()? {
                    items.push(item.value);
                }
                Ok(TextList::Many(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
                Err(de::Error::custom(
                    "expected an array of strings, found an object",
                ))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Err(E::custom(format_args!(
                    "expected an array of strings, found {v}"
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Err(E::custom(format_args!(
                    "expected an array of strings, found {v}"
                )))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Err(E::custom(format_args!(
                    "expected an array of strings, found {v}"
                )))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Err(E::custom(format_args!(
                    "expected an array of strings, found {v}"
                )))
            }
        }
        d.deserialize_any(ListVisitor)
    }
}

/// The top level. Unknown members are skipped, as RFC 8460 §4.4 asks of receivers.
#[derive(Debug, Deserialize)]
#[serde(expecting = "an object")]
struct WireReport<'a> {
    #[serde(rename = "organization-name", default, borrow)]
    organization_name: Field<Text<'a>>,
    #[serde(rename = "date-range", default, borrow)]
    date_range: Field<WireDateRange<'a>>,
    #[serde(rename = "contact-info", default, borrow)]
    contact_info: Field<Text<'a>>,
    #[serde(rename = "report-id", default, borrow)]
    report_id: Field<Text<'a>>,
    #[serde(default, borrow)]
    policies: Field<Array<WirePolicyResult<'a>>>,
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "an object")]
struct WireDateRange<'a> {
    #[serde(rename = "start-datetime", default, borrow)]
    start_datetime: Field<Text<'a>>,
    #[serde(rename = "end-datetime", default, borrow)]
    end_datetime: Field<Text<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "an object")]
struct WirePolicyResult<'a> {
    #[serde(default, borrow)]
    policy: Field<WirePolicy<'a>>,
    #[serde(default)]
    summary: Field<WireSummary>,
    #[serde(rename = "failure-details", default, borrow)]
    failure_details: Field<Array<WireFailure<'a>>>,
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "an object")]
struct WirePolicy<'a> {
    #[serde(rename = "policy-type", default, borrow)]
    policy_type: Field<Text<'a>>,
    #[serde(rename = "policy-string", default, borrow)]
    policy_string: Field<TextList<'a>>,
    #[serde(rename = "policy-domain", default, borrow)]
    policy_domain: Field<Text<'a>>,
    #[serde(rename = "mx-host", default, borrow)]
    mx_host: Field<TextList<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "an object")]
struct WireSummary {
    #[serde(rename = "total-successful-session-count", default)]
    total_successful_session_count: Field<Count>,
    #[serde(rename = "total-failure-session-count", default)]
    total_failure_session_count: Field<Count>,
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "an object")]
struct WireFailure<'a> {
    #[serde(rename = "result-type", default, borrow)]
    result_type: Field<Text<'a>>,
    #[serde(rename = "sending-mta-ip", default, borrow)]
    sending_mta_ip: Field<Text<'a>>,
    #[serde(rename = "receiving-mx-hostname", default, borrow)]
    receiving_mx_hostname: Field<Text<'a>>,
    #[serde(rename = "receiving-mx-helo", default, borrow)]
    receiving_mx_helo: Field<Text<'a>>,
    #[serde(rename = "receiving-ip", default, borrow)]
    receiving_ip: Field<Text<'a>>,
    #[serde(rename = "failed-session-count", default)]
    failed_session_count: Field<Count>,
    #[serde(rename = "additional-information", default, borrow)]
    additional_information: Field<Text<'a>>,
    #[serde(rename = "failure-reason-code", default, borrow)]
    failure_reason_code: Field<Text<'a>>,
}

// ---------------------------------------------------------------------------------------
// Normalisation
// ---------------------------------------------------------------------------------------

/// Collects warnings; paths are only formatted when a warning is actually raised.
struct Notes {
    warnings: Vec<Warning>,
}

impl Notes {
    fn add(&mut self, code: WarningCode, path: impl fmt::Display) {
        self.warnings.push(Warning::new(code, path.to_string()));
    }
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> DecodeError {
    DecodeError::Invalid {
        path: path.into(),
        message: message.into(),
        offset: None,
    }
}

fn required_text<'a>(
    field: Field<Text<'a>>,
    path: &str,
    notes: &mut Notes,
) -> Result<Cow<'a, str>, DecodeError> {
    match field {
        Field::Present(text) => {
            if text.coerced {
                notes.add(WarningCode::TextFieldNotString, path);
            }
            Ok(text.value)
        }
        Field::Null => Err(invalid(path, "required, found null")),
        Field::Missing => Err(invalid(path, "required field is missing")),
    }
}

fn optional_text<'a>(
    field: Field<Text<'a>>,
    notes: &mut Notes,
    path: impl FnOnce() -> String,
) -> Option<Cow<'a, str>> {
    let text = field.into_option()?;
    if text.coerced {
        notes.add(WarningCode::TextFieldNotString, path());
    }
    Some(text.value)
}

fn optional_count(
    field: Field<Count>,
    missing: WarningCode,
    notes: &mut Notes,
    path: impl Fn() -> String,
) -> Option<u64> {
    match field {
        Field::Present(count) => {
            if count.was_float {
                notes.add(WarningCode::CountAsFloat, path());
            }
            Some(count.value)
        }
        Field::Missing | Field::Null => {
            notes.add(missing, path());
            None
        }
    }
}

fn normalise(wire: WireReport<'_>) -> Result<Report<'_>, DecodeError> {
    let known = !matches!(wire.organization_name, Field::Missing)
        || !matches!(wire.date_range, Field::Missing)
        || !matches!(wire.report_id, Field::Missing)
        || !matches!(wire.policies, Field::Missing);
    if !known {
        return Err(DecodeError::NotAReport {
            reason: "the JSON object has none of the members of a TLS-RPT report \
                     (organization-name, date-range, report-id, policies)"
                .into(),
        });
    }
    let mut notes = Notes {
        warnings: Vec::new(),
    };

    let organization_name = required_text(wire.organization_name, "organization-name", &mut notes)?;
    let report_id = required_text(wire.report_id, "report-id", &mut notes)?;
    let date_range = match wire.date_range {
        Field::Present(range) => normalise_date_range(range, &mut notes)?,
        Field::Null => return Err(invalid("date-range", "required, found null")),
        Field::Missing => return Err(invalid("date-range", "required field is missing")),
    };
    let contact_info = match wire.contact_info {
        Field::Present(text) => {
            if text.coerced {
                notes.add(WarningCode::TextFieldNotString, "contact-info");
            }
            Some(text.value)
        }
        Field::Null => {
            notes.add(WarningCode::ContactInfoNull, "contact-info");
            None
        }
        Field::Missing => {
            notes.add(WarningCode::ContactInfoMissing, "contact-info");
            None
        }
    };
    let wire_policies = match wire.policies {
        Field::Present(Array(policies)) => policies,
        Field::Null => return Err(invalid("policies", "expected an array, found null")),
        Field::Missing => return Err(invalid("policies", "required field is missing")),
    };
    if wire_policies.is_empty() {
        notes.add(WarningCode::PoliciesEmpty, "policies");
    }
    let mut policies = Vec::with_capacity(wire_policies.len());
    for (index, wire_policy) in wire_policies.into_iter().enumerate() {
        policies.push(normalise_policy_result(index, wire_policy, &mut notes));
    }

    Ok(Report {
        organization_name,
        date_range,
        contact_info,
        report_id,
        policies,
        warnings: notes.warnings,
    })
}

fn normalise_date_range(
    range: WireDateRange<'_>,
    notes: &mut Notes,
) -> Result<DateRange, DecodeError> {
    let start = required_datetime(range.start_datetime, "date-range.start-datetime", notes)?;
    let end = required_datetime(range.end_datetime, "date-range.end-datetime", notes)?;
    if end < start {
        notes.add(WarningCode::DateRangeReversed, "date-range");
    } else if end.time().num_seconds_from_midnight() == 0
        && end.timestamp_subsec_micros() == 0
        && end.date_naive() == start.date_naive().succ_opt().unwrap_or(start.date_naive())
        && start.time().num_seconds_from_midnight() == 0
    {
        notes.add(
            WarningCode::EndDatetimeNextDayMidnight,
            "date-range.end-datetime",
        );
    }
    Ok(DateRange {
        start_datetime: start,
        end_datetime: end,
    })
}

fn required_datetime(
    field: Field<Text<'_>>,
    path: &str,
    notes: &mut Notes,
) -> Result<DateTime<Utc>, DecodeError> {
    let text = match field {
        Field::Present(text) if !text.coerced => text,
        Field::Present(text) => {
            return Err(invalid(
                path,
                format!(
                    "expected an RFC 3339 date-time string, found {}",
                    excerpt(&text.value)
                ),
            ));
        }
        Field::Null => return Err(invalid(path, "required, found null")),
        Field::Missing => return Err(invalid(path, "required field is missing")),
    };
    let (datetime, had_zone) = parse_datetime(&text.value).ok_or_else(|| {
        invalid(
            path,
            format!(
                "expected an RFC 3339 date-time such as \"2024-02-22T00:00:00Z\", found \"{}\"",
                excerpt(&text.value)
            ),
        )
    })?;
    if !(1900..=9999).contains(&datetime.year()) {
        return Err(invalid(
            path,
            format!("the year {} is outside 1900 to 9999", datetime.year()),
        ));
    }
    if !had_zone {
        notes.add(WarningCode::DatetimeWithoutZone, path);
    }
    Ok(datetime)
}

/// Reads an RFC 3339 date-time, truncated to microseconds (the tables' precision). A
/// date-time without a zone, or a bare date, is read as UTC and reported as such
/// (`had_zone == false`).
pub(crate) fn parse_datetime(text: &str) -> Option<(DateTime<Utc>, bool)> {
    let text = text.trim();
    let parsed = if let Some(fast) = parse_common_utc(text) {
        (fast, true)
    } else if let Ok(with_zone) = DateTime::parse_from_rfc3339(text) {
        (with_zone.with_timezone(&Utc), true)
    } else if let Ok(naive) = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f") {
        (naive.and_utc(), false)
    } else if let Ok(naive) = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f") {
        (naive.and_utc(), false)
    } else if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        (date.and_hms_opt(0, 0, 0)?.and_utc(), false)
    } else {
        return None;
    };
    let (datetime, had_zone) = parsed;
    let micros = datetime.timestamp_micros();
    Some((DateTime::from_timestamp_micros(micros)?, had_zone))
}

/// The form nearly every sender uses, `YYYY-MM-DDTHH:MM:SSZ`, without chrono's general parser.
fn parse_common_utc(text: &str) -> Option<DateTime<Utc>> {
    let b = text.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let mut value = 0u32;
        for &c in &b[range] {
            if !c.is_ascii_digit() {
                return None;
            }
            value = value * 10 + u32::from(c - b'0');
        }
        Some(value)
    };
    let date = NaiveDate::from_ymd_opt(i32::try_from(num(0..4)?).ok()?, num(5..7)?, num(8..10)?)?;
    Some(
        date.and_hms_opt(num(11..13)?, num(14..16)?, num(17..19)?)?
            .and_utc(),
    )
}

fn normalise_policy_result<'a>(
    index: usize,
    wire: WirePolicyResult<'a>,
    notes: &mut Notes,
) -> PolicyResult<'a> {
    let policy = match wire.policy {
        Field::Present(policy) => normalise_policy(index, policy, notes),
        Field::Missing | Field::Null => {
            notes.add(
                WarningCode::PolicyMissing,
                format_args!("policies[{index}].policy"),
            );
            Policy {
                policy_type: None,
                policy_string: Vec::new(),
                policy_domain: None,
                mx_host: Vec::new(),
            }
        }
    };
    let summary = match wire.summary {
        Field::Present(summary) => Summary {
            total_successful_session_count: optional_count(
                summary.total_successful_session_count,
                WarningCode::SummaryCountMissing,
                notes,
                || format!("policies[{index}].summary.total-successful-session-count"),
            ),
            total_failure_session_count: optional_count(
                summary.total_failure_session_count,
                WarningCode::SummaryCountMissing,
                notes,
                || format!("policies[{index}].summary.total-failure-session-count"),
            ),
        },
        Field::Missing | Field::Null => {
            notes.add(
                WarningCode::SummaryMissing,
                format_args!("policies[{index}].summary"),
            );
            Summary {
                total_successful_session_count: None,
                total_failure_session_count: None,
            }
        }
    };
    let wire_failures = match wire.failure_details {
        Field::Present(Array(failures)) => failures,
        Field::Missing | Field::Null => Vec::new(),
    };
    let mut failure_details = Vec::with_capacity(wire_failures.len());
    for (f, failure) in wire_failures.into_iter().enumerate() {
        failure_details.push(normalise_failure(index, f, failure, notes));
    }

    // Rates come from the summary, breakdowns from the details; say when they disagree.
    if let Some(total) = summary.total_failure_session_count {
        if failure_details.is_empty() {
            if total > 0 {
                notes.add(
                    WarningCode::FailureDetailsMissing,
                    format_args!("policies[{index}].failure-details"),
                );
            }
        } else {
            let sum = failure_details
                .iter()
                .map(|d| d.failed_session_count.unwrap_or(0))
                .fold(0u64, u64::saturating_add);
            if sum != total {
                notes.add(
                    WarningCode::FailureSumMismatch,
                    format_args!("policies[{index}].failure-details"),
                );
            }
        }
    }

    PolicyResult {
        policy,
        summary,
        failure_details,
    }
}

fn normalise_policy<'a>(index: usize, wire: WirePolicy<'a>, notes: &mut Notes) -> Policy<'a> {
    let policy_type = match wire.policy_type {
        Field::Present(text) => {
            let policy_type = PolicyType::parse(&text.value);
            if !policy_type.is_registered() {
                notes.add(
                    WarningCode::UnknownPolicyType,
                    format_args!("policies[{index}].policy.policy-type"),
                );
            }
            Some(policy_type)
        }
        Field::Missing | Field::Null => {
            notes.add(
                WarningCode::PolicyTypeMissing,
                format_args!("policies[{index}].policy.policy-type"),
            );
            None
        }
    };
    let policy_domain = optional_text(wire.policy_domain, notes, || {
        format!("policies[{index}].policy.policy-domain")
    });
    if policy_domain.is_none() {
        notes.add(
            WarningCode::PolicyDomainMissing,
            format_args!("policies[{index}].policy.policy-domain"),
        );
    }

    let mut policy_string = match wire.policy_string.into_option() {
        None => {
            if matches!(policy_type, Some(PolicyType::Sts | PolicyType::Tlsa)) {
                notes.add(
                    WarningCode::PolicyStringMissing,
                    format_args!("policies[{index}].policy.policy-string"),
                );
            }
            Vec::new()
        }
        Some(TextList::One(text)) => {
            notes.add(
                WarningCode::PolicyStringNotArray,
                format_args!("policies[{index}].policy.policy-string"),
            );
            vec![text.value]
        }
        Some(TextList::Many(items)) => items,
    };
    // Microsoft sends TLSA records as one string holding a JSON array of strings.
    if policy_type == Some(PolicyType::Tlsa)
        && let Some(records) = unpack_json_encoded(&policy_string)
    {
        notes.add(
            WarningCode::TlsaPolicyStringJsonEncoded,
            format_args!("policies[{index}].policy.policy-string"),
        );
        policy_string = records;
    }

    let mx_host = match wire.mx_host.into_option() {
        None => Vec::new(),
        Some(TextList::One(text)) => {
            notes.add(
                WarningCode::MxHostString,
                format_args!("policies[{index}].policy.mx-host"),
            );
            vec![text.value]
        }
        Some(TextList::Many(items)) => items,
    };
    let mx_host = mx_host
        .into_iter()
        .enumerate()
        .map(|(m, host)| {
            // Still borrowed from the JSON when `host` was.
            let stripped = match &host {
                Cow::Borrowed(text) => strip_mx_prefix(text).map(Cow::Borrowed),
                Cow::Owned(text) => strip_mx_prefix(text).map(|s| Cow::Owned(s.to_owned())),
            };
            match stripped {
                Some(stripped) => {
                    notes.add(
                        WarningCode::MxHostPrefixed,
                        format_args!("policies[{index}].policy.mx-host[{m}]"),
                    );
                    stripped
                }
                None => host,
            }
        })
        .collect();

    Policy {
        policy_type,
        policy_string,
        policy_domain,
        mx_host,
    }
}

/// `["[\"3 1 1 AB..\",\"3 1 1 CD..\"]"]` → the records inside. Records that would
/// themselves look encoded are left alone, so that normalising twice changes nothing.
fn unpack_json_encoded<'a>(strings: &[Cow<'a, str>]) -> Option<Vec<Cow<'a, str>>> {
    let [only] = strings else { return None };
    if !only.trim_start().starts_with('[') {
        return None;
    }
    let records: Vec<String> = serde_json::from_str(only).ok()?;
    let nested = records.iter().any(|r| r.trim_start().starts_with('['));
    (!nested).then(|| records.into_iter().map(Cow::Owned).collect())
}

/// `"mx: mx.example.com"` → `Some("mx.example.com")`: a policy-string line copied into
/// mx-host. Repeated prefixes are all removed, so that normalising twice changes nothing.
fn strip_mx_prefix(host: &str) -> Option<&str> {
    let mut rest = host;
    while let Some(head) = rest.get(..3) {
        if !head.eq_ignore_ascii_case("mx:") {
            break;
        }
        rest = rest[3..].trim();
    }
    (rest.len() != host.len()).then_some(rest)
}

/// Whether `text` is an IPv4 or IPv6 address as the standard library reads them. Dotted
/// quads, most of what reports hold, are checked here without the general parser, which
/// took a tenth of the parse time; everything else goes to it.
fn is_ip_address(text: &str) -> bool {
    if let Some(quad) = dotted_quad(text.as_bytes()) {
        return quad;
    }
    text.parse::<IpAddr>().is_ok()
}

/// `Some(true)` for a canonical dotted quad (four decimal octets, each 0-255 without a
/// leading zero); `None` when the text is not of that simple shape and needs the full parser.
fn dotted_quad(text: &[u8]) -> Option<bool> {
    let mut octets = 0;
    for part in text.split(|&b| b == b'.') {
        octets += 1;
        if octets > 4
            || part.is_empty()
            || part.len() > 3
            || !part.iter().all(u8::is_ascii_digit)
            || (part.len() > 1 && part[0] == b'0')
        {
            return None;
        }
        let value = part.iter().fold(0u32, |v, &d| v * 10 + u32::from(d - b'0'));
        if value > 255 {
            return None;
        }
    }
    (octets == 4).then_some(true)
}

fn normalise_failure<'a>(
    p: usize,
    f: usize,
    wire: WireFailure<'a>,
    notes: &mut Notes,
) -> FailureDetails<'a> {
    let at = |member: &str| format!("policies[{p}].failure-details[{f}].{member}");
    let result_type = match wire.result_type.into_option() {
        Some(text) => {
            let result_type = ResultType::parse(&text.value);
            if !result_type.is_registered() {
                notes.add(WarningCode::UnknownResultType, at("result-type"));
            }
            result_type
        }
        None => {
            notes.add(WarningCode::ResultTypeMissing, at("result-type"));
            ResultType::Other(String::new())
        }
    };
    let sending_mta_ip = optional_text(wire.sending_mta_ip, notes, || at("sending-mta-ip"));
    if sending_mta_ip
        .as_deref()
        .is_some_and(|ip| !is_ip_address(ip))
    {
        notes.add(WarningCode::SendingMtaIpInvalid, at("sending-mta-ip"));
    }
    let receiving_ip = optional_text(wire.receiving_ip, notes, || at("receiving-ip"));
    if receiving_ip.as_deref().is_some_and(|ip| !is_ip_address(ip)) {
        notes.add(WarningCode::ReceivingIpInvalid, at("receiving-ip"));
    }
    FailureDetails {
        result_type,
        sending_mta_ip,
        receiving_mx_hostname: optional_text(wire.receiving_mx_hostname, notes, || {
            at("receiving-mx-hostname")
        }),
        receiving_mx_helo: optional_text(wire.receiving_mx_helo, notes, || at("receiving-mx-helo")),
        receiving_ip,
        failed_session_count: optional_count(
            wire.failed_session_count,
            WarningCode::FailedSessionCountMissing,
            notes,
            || at("failed-session-count"),
        ),
        additional_information: optional_text(wire.additional_information, notes, || {
            at("additional-information")
        }),
        failure_reason_code: optional_text(wire.failure_reason_code, notes, || {
            at("failure-reason-code")
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Text without escapes is borrowed from the JSON (the point of the `Cow` model); text
    /// with escapes, and what normalisation rewrites, is owned; both read the same.
    #[test]
    fn text_is_borrowed_from_the_json_unless_it_had_to_change() {
        let json = r#"{"organization-name":"Example Inc.","date-range":{"start-datetime":"2026-01-01T00:00:00Z","end-datetime":"2026-01-01T23:59:59Z"},"contact-info":"tls\u002drpt@example.com","report-id":"r1","policies":[{"policy":{"policy-type":"sts","policy-string":["version: STSv1","mode: enforce"],"policy-domain":"example.com","mx-host":["mx: mx1.example.com","*.example.net"]},"summary":{"total-successful-session-count":1,"total-failure-session-count":2},"failure-details":[{"result-type":"certificate-expired","sending-mta-ip":"192.0.2.1","receiving-mx-hostname":"mx1.example.com","failed-session-count":2}]}]}"#;
        let report = parse_report(json).unwrap();
        let borrowed = |text: &Cow<'_, str>| matches!(text, Cow::Borrowed(_));
        assert!(borrowed(&report.organization_name));
        assert!(borrowed(&report.report_id));
        let contact = report.contact_info.as_ref().unwrap();
        assert_eq!(contact, "tls-rpt@example.com");
        assert!(!borrowed(contact), "an escaped string cannot be borrowed");
        let policy = &report.policies[0].policy;
        assert!(policy.policy_string.iter().all(borrowed));
        assert!(borrowed(policy.policy_domain.as_ref().unwrap()));
        // The `mx:` prefix is cut off the borrowed text, not copied.
        assert_eq!(policy.mx_host, ["mx1.example.com", "*.example.net"]);
        assert!(policy.mx_host.iter().all(borrowed));
        let failure = &report.policies[0].failure_details[0];
        assert!(borrowed(failure.sending_mta_ip.as_ref().unwrap()));
        assert!(borrowed(failure.receiving_mx_hostname.as_ref().unwrap()));

        let owned: Report<'static> = report.clone().into_owned();
        assert_eq!(owned, report);
        assert!(!borrowed(&owned.organization_name));
    }

    #[test]
    fn the_ip_fast_path_agrees_with_the_standard_parser() {
        let listed = [
            "192.0.2.1",
            "0.0.0.0",
            "255.255.255.255",
            "256.1.1.1",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "1.2.3.04",
            "1..3.4",
            "x.x.x.x",
            "",
            "1.2.3.4 ",
            "2001:db8::1",
            "::ffff:192.0.2.1",
            "2001:db8:abcd:0012::1",
            "fe80::1%eth0",
            "mx.example.com",
            "1.2.3.-4",
            "+1.2.3.4",
            "1.2.3.4/24",
            "999.999.999.999",
            "00.1.2.3",
        ];
        // And a few hundred thousand strings over the alphabet that matters, from a fixed
        // linear congruential sequence so that a failure reproduces.
        let mut state: u64 = 8460;
        let generated = (0..300_000).map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (state >> 60) as usize + 1;
            (0..len)
                .map(|i| b"0123456789.25"[((state >> (i * 4)) & 0xf) as usize % 13] as char)
                .collect::<String>()
        });
        for text in listed.iter().map(|s| s.to_string()).chain(generated) {
            assert_eq!(
                is_ip_address(&text),
                text.parse::<IpAddr>().is_ok(),
                "{text:?}"
            );
        }
    }
}
