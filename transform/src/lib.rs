//! # tlsrpt-transform: from the bus to Parquet, exactly once
//!
//! Owns consuming the report topic, batching reports into the Arrow tables defined in
//! `tlsrpt-schemas`, writing Parquet files whose names record the partition and offset range
//! they hold, committing offsets only after a file is durable, and compacting small files.
//!
//! It must not serve HTTP. Nothing is implemented yet; see the project's issues.
