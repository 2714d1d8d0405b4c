//! # tlsrpt-alerts: the anomaly jobs
//!
//! Watches the tables so that nobody has to: finds failure spikes, failure types a domain
//! never had, MTA-STS mode changes and reporters gone quiet, turns each into one alert in
//! plain words (what happened, since when, how big against normal, where, the likely cause
//! and the fix, the SQL to look deeper), sends it to webhooks, mailboxes and the log, and
//! sends one more when the incident ends.
//!
//! A crate of its own, beside `tlsrpt-query` (whose SQL runs the custom rules): alerting has
//! state of its own (open incidents, cool-downs, an outbox of alerts to deliver) and talks
//! to the outside world (webhooks, SMTP), neither of which the read-only query service
//! should hold. It never writes to the report tables.
//!
//! ## Layout
//! - [`observations`]: each report reduced to what it says per policy domain, as it arrived.
//! - [`load`]: reads them from the tables' files, in parallel.
//! - [`ledger`]: the daily series per domain, summed over what has arrived so far.
//! - [`detect`]: the detectors, pure functions from the ledger to findings.
//! - [`priors`]: how often each failure type shows up new anywhere in the fleet.
//! - [`evaluate`]: a pass: the reports replayed hour by hour, incidents opened, grouped,
//!   ended. Start reading here.
//! - [`state`]: what a pass leaves for the next one, in one durable file.
//! - [`alert`], `message`: the alert and its words.
//! - [`rules`]: custom rules in SQL.
//! - [`config`]: the TOML configuration.
//! - [`run`]: a whole pass: read, evaluate, store in the `alerts` table ([`table`]),
//!   deliver ([`notify`]).
//!
//! ## How reports arrive, and what that means here
//! Reports for day D arrive during D+1 and until D+2 (senders wait a random delay and retry
//! for a day); a reporter sends nothing on a day it sent no mail. So a day is judged on
//! rates, from its first reports on, and again as more arrive; days without reports are
//! left out of baselines rather than read as zero sessions; and silence is only judged on
//! days whose reports can no longer be late.

pub mod alert;
pub mod config;
pub mod detect;
pub mod evaluate;
pub mod ledger;
pub mod load;
mod message;
pub mod notify;
pub mod observations;
pub mod priors;
pub mod rules;
pub mod run;
pub mod state;
pub mod table;

pub use alert::{AlertEvent, AlertState as EventState, Detector, Severity};
pub use config::AlertConfig;
pub use evaluate::{PassOutcome, evaluate, evaluate_on};
pub use observations::Observations;
pub use state::AlertState;

/// What can go wrong in alerting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is not valid; the message names the key.
    #[error("alert configuration: {0}")]
    Config(String),
    /// The state file cannot be read as one.
    #[error("alert state: {0}")]
    State(String),
    /// A file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A custom rule's query failed or returned what a rule cannot use.
    #[error("rule {rule}: {message}")]
    Rule { rule: String, message: String },
    /// A query over the tables failed.
    #[error("cannot read {what} from the tables: {source}")]
    Query {
        what: &'static str,
        #[source]
        source: tlsrpt_query::QueryError,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
