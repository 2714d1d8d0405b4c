//! Integration tests of `tlsrpt-schemas`: one test binary (see STYLE.md).

#[allow(unsafe_code)] // a counting global allocator, for memory assertions
mod alloc_meter;
mod containers;
mod corpus;
mod email;
mod fuzz_regressions;
mod golden;
mod refusals;
mod support;
mod tables;

#[global_allocator]
static METER: alloc_meter::Meter = alloc_meter::Meter;
