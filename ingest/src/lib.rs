//! # tlsrpt-ingest: receiving reports and putting them on the bus
//!
//! Owns the ways reports arrive (the HTTPS receiver of RFC 8460 §5.3, the SMTP receiver for
//! `mailto:` reporting addresses, the file importer for backfills) and publishing each
//! accepted report to the bus (`tlsrpt-bus`: Kafka, or the embedded durable log) with delivery
//! confirmation: a sender hears "accepted" only once the report is durable.
//!
//! It decodes and validates with `tlsrpt-schemas` and must not write Parquet or answer SQL.
//!
//! ## Layout
//! - [`http`]: `POST /v1/reports`, with the status codes a sender's operator can act on.
//! - [`smtp`]: the SMTP receiver for `mailto:` reports, with [`dkim`] verification.
//! - [`local`]: the Unix socket through which a second process appends to a bus `up` owns.
//! - [`metrics`]: counters for `GET /metrics`.
//! - [`publish`]: an accepted report as a bus message (key, value, envelope headers).
//!
//! The importer itself is a command of the `tlsrpt` binary; it publishes through [`local`]
//! or the log directly, with [`publish`].

pub mod dkim;
pub mod http;
pub mod local;
pub mod metrics;
pub mod publish;
pub mod smtp;
