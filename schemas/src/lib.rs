//! # tlsrpt-schemas: bytes in, typed reports and Arrow out
//!
//! Everything the rest of tlsrpt knows about a TLS-RPT report (RFC 8460) lives here, and it
//! performs no I/O: no files, no sockets, no tokio, no Kafka. It operates only on bytes and
//! values, so every receiver, the transformer and the tests share one definition.
//!
//! ## Layout
//! - [`decode`]: bytes to report: sniffing gzip, zip, base64 and JSON, decompression with a
//!   hard size cap. [`email`] finds the report in a mail message.
//! - `parse`: report JSON to a validated, normalised [`Report`], with JSON paths in errors.
//! - [`error`]: why an input was refused, classified for the receivers.
//! - [`model`]: the report as the system sees it after normalisation.
//! - [`warning`]: the codes recorded for each real-world quirk that was accepted.
//! - [`envelope`]: transport, arrival time and submitter of a received report.
//! - [`dedup`]: the dedup key and the stable `report_uid`.
//! - [`layout`]: where the tables live on disk (file names with bus offset ranges) and which
//!   files a reader sees.
//! - [`message`]: a received report as a bus message (key, value, headers) and back.
//! - [`rollup`]: the daily rollup tables (`policies_daily`, `failures_daily`, `reports_daily`)
//!   summed from a batch of the raw tables, for the views.
//! - [`tables`]: the Arrow schemas of the `reports`, `policies` and `failures` tables, and
//!   flattening reports into them (and back, for tests and reprocessing).
//! - [`catalogue`]: what each result type and policy type means for a domain owner, the
//!   likely causes and the fix.
//! - [`explain`]: one report in plain language (text, Markdown, JSON) for the domain owner.
//!
//! Start reading at [`model::Report`].

pub mod alerts_table;
pub mod catalogue;
pub mod decode;
pub mod dedup;
pub mod email;
pub mod envelope;
pub mod error;
pub mod explain;
pub mod layout;
pub mod message;
pub mod model;
mod parse;
pub mod rollup;
pub mod tables;
pub mod warning;

pub use decode::{DecodeOptions, Decoded, DecodedRef, Decoder, decode};
pub use email::{DecodedEmail, DecodedInput, EmailHeaders, looks_like_email};
pub use envelope::{DkimOutcome, Envelope, ReceivedReport, Transport};
pub use error::{DecodeError, StatusClass};
pub use model::{
    DateRange, FailureDetails, Policy, PolicyResult, PolicyType, Report, ResultType, Summary,
};
pub use parse::parse_report;
pub use warning::{Warning, WarningCode};
