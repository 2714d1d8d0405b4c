//! # tlsrpt-ingest: receiving reports and putting them on the bus
//!
//! Owns the ways reports arrive (the HTTPS receiver of RFC 8460 §5.3, the SMTP receiver for
//! `mailto:` reporting addresses, the file importer for backfills) and publishing each
//! accepted report to the bus (Kafka, or the embedded durable log) with delivery
//! confirmation: a sender hears "accepted" only once the report is durable.
//!
//! It decodes and validates with `tlsrpt-schemas` and must not write Parquet or answer SQL.
//!
//! Planned layout: `http/`, `smtp/`, `import/`; the bus itself (Kafka or the embedded log)
//! is `tlsrpt-bus`, shared with the transformer. Nothing is implemented here yet; see the
//! project's issues.
