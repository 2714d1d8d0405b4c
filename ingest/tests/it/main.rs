//! Integration tests of `tlsrpt-ingest`: receivers on real sockets (port 0), real HTTP
//! clients, the embedded bus on real files.

mod http;
mod smtp;
