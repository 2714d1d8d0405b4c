//! Integration tests of `tlsrpt-schemas`: one test binary (see STYLE.md).

mod containers;
mod corpus;
mod email;
mod fuzz_regressions;
mod golden;
mod refusals;
mod support;
mod tables;
