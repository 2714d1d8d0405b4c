//! `tlsrpt up` end to end, as its users meet it: a real process on real sockets, reports
//! posted with a real HTTP client and mailed with a real SMTP client, answers from SQL, and
//! the process killed and restarted on the same data directory; and `tlsrpt ingest` into a
//! real Kafka-protocol broker, with `tlsrpt transform` and `tlsrpt query` around it, and
//! `tlsrpt up --kafka` on one.

mod alerts;
mod bad_input;
mod crash;
mod ingest_kafka;
mod kafka_support;
mod pipeline;
mod scale_out;
mod support;
mod tls;
mod up_kafka;
