//! # tlsrpt-benches: data for measuring tlsrpt, and the measurements
//!
//! Owns the seeded generator of realistic report streams ([`generator`], also the binary
//! `tlsrpt-gen`), the criterion benches (`benches/`), and the scripts that compare tlsrpt
//! with other tools side by side (`compare/`). Nothing here ships in the `tlsrpt` binary.
//! Later issues use the generator for load, query and alert tests; its incidents are the
//! ground truth alerting is scored against.

pub mod generator;
