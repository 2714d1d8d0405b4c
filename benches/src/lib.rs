//! # tlsrpt-benches (being written)
