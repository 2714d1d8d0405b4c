//! `tlsrpt up` end to end, as its users meet it: a real process on real sockets, reports
//! posted with a real HTTP client and mailed with a real SMTP client, answers from SQL, and
//! the process killed and restarted on the same data directory.

mod bad_input;
mod crash;
mod pipeline;
mod support;
mod tls;
