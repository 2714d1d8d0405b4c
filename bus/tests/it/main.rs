//! Integration tests of `tlsrpt-bus`: the embedded log on real files in a temporary directory.

mod embedded;
