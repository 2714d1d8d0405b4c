//! Integration tests of `tlsrpt-bus`: the embedded log on real files in a temporary directory,
//! and the Kafka producer against a real broker.

mod embedded;
mod kafka;
