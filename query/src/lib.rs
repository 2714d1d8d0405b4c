//! # tlsrpt-query: SQL over the report tables
//!
//! Owns the DataFusion catalog over the Hive-partitioned Parquet layout
//! (`<root>/{reports,policies,failures}/date=YYYY-MM-DD/`), SQL over HTTP and Arrow Flight
//! SQL, the built-in views and the alert jobs.
//!
//! It reads the tables and must never write them. Nothing is implemented yet; see the
//! project's issues.
