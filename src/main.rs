//! The `tlsrpt` command line (being written).

fn main() {}
