//! # tlsrpt-benches: data for measuring tlsrpt, and the measurements
//!
//! Owns the seeded generator of realistic report streams ([`generator`], also the binary
//! `tlsrpt-gen`), the criterion benches (`benches/`), and the scripts that compare tlsrpt
//! with other tools side by side (`compare/`). Nothing here ships in the `tlsrpt` binary.
//! Later issues use the generator for load, query and alert tests; its incidents are the
//! ground truth alerting is scored against. [`history`] is the scoring data set for alerting:
//! a realistic 90-day provider history (weekends, late reports, background failures) with
//! injected incidents and, for each, when the first report showing it arrives;
//! [`pipeline`] writes such reports through the real bus and transformer into the tables,
//! with their simulated arrival times; [`scoring`] scores alerts against the ground truth
//! (the binary `tlsrpt-alerts-bench`, and the test `alert_quality`).

pub mod generator;
pub mod history;
pub mod lookalikes;
pub mod pipeline;
pub mod scoring;
