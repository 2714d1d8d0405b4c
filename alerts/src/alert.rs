//! An alert as it is sent and stored: what happened, since when, how big against normal,
//! where, what it likely means and what to do, and the SQL to look deeper.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tlsrpt_schemas::catalogue::{Impact, result_type_entry};
use tlsrpt_schemas::model::ResultType;

/// Which detector (or rule) fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Detector {
    NewResultType,
    FailureSpike,
    ReporterSpike,
    ModeChange,
    ReporterQuiet,
    Rule,
}

impl Detector {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NewResultType => "new-result-type",
            Self::FailureSpike => "failure-spike",
            Self::ReporterSpike => "reporter-spike",
            Self::ModeChange => "mode-change",
            Self::ReporterQuiet => "reporter-quiet",
            Self::Rule => "rule",
        }
    }
}

/// How urgent an alert is.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing (a policy moved to `enforce`).
    #[default]
    Info,
    /// Something is wrong but mail still flows, or may.
    Warning,
    /// Mail is being refused, or will be under the published policy.
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }

    /// The severity of failures of a result type, given whether the domain's policy is
    /// enforced (MTA-STS `enforce`, or DANE): refused mail is critical, the rest a warning.
    pub fn of_failures(result_type: &str, enforced: bool) -> Self {
        let entry = result_type_entry(&ResultType::parse(result_type));
        match entry.impact {
            Impact::Delivery if enforced => Self::Critical,
            Impact::Protection if enforced && result_type == "sts-policy-fetch-error" => {
                Self::Critical
            }
            _ => Self::Warning,
        }
    }
}

/// Whether an alert opens an incident or ends one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Firing,
    Resolved,
}

/// One alert: an incident that started, or one that ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// The incident's id; its firing and its resolution share it.
    pub incident_id: u64,
    pub state: AlertState,
    /// When it was found (the evaluation time that first had the evidence).
    pub at: DateTime<Utc>,
    pub detector: Detector,
    pub severity: Severity,
    pub policy_domain: String,
    /// The report day that showed it (firing) or showed it gone (resolved).
    pub day: NaiveDate,
    /// The first report day of the incident.
    pub since: NaiveDate,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_type: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub receiving_mx_hostnames: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reporter: Option<String>,
    /// Failure rate seen, and the baseline's median and threshold (spikes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_sessions: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_mode: Option<String>,
    /// One line, for subjects and chat.
    pub title: String,
    /// The explanation in plain words: what, since when, how big, where, likely cause, fix.
    pub text: String,
    /// A query over the tables to look deeper.
    pub sql: String,
}

impl AlertEvent {
    /// An alert with what every alert has; the details (result type, MX hosts, rates,
    /// modes, words) start empty.
    pub fn new(
        incident_id: u64,
        state: AlertState,
        at: DateTime<Utc>,
        detector: Detector,
        severity: Severity,
        policy_domain: &str,
        day: NaiveDate,
    ) -> Self {
        Self {
            incident_id,
            state,
            at,
            detector,
            severity,
            policy_domain: policy_domain.to_owned(),
            day,
            since: day,
            result_type: None,
            receiving_mx_hostnames: Vec::new(),
            reporter: None,
            rate: None,
            baseline_rate: None,
            threshold_rate: None,
            failed_sessions: None,
            sessions: None,
            old_mode: None,
            new_mode: None,
            title: String::new(),
            text: String::new(),
            sql: String::new(),
        }
    }
}

pub(crate) fn percent(rate: f64) -> String {
    let percent = rate * 100.0;
    if percent >= 10.0 {
        format!("{percent:.0}%")
    } else if percent >= 1.0 {
        format!("{percent:.1}%")
    } else if percent >= 0.01 || percent <= 0.0 {
        format!("{percent:.2}%")
    } else {
        // Two significant digits: a rare type's 0.0031% is not "0.00%".
        let decimals = (1.0 - percent.log10().floor()) as usize;
        format!("{percent:.decimals$}%")
    }
}

/// SQL literal quoting.
pub(crate) fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::percent;

    #[test]
    fn percentages_keep_two_significant_digits_when_small() {
        assert_eq!(percent(0.256), "26%");
        assert_eq!(percent(0.0256), "2.6%");
        assert_eq!(percent(0.00256), "0.26%");
        assert_eq!(percent(0.0000314), "0.0031%");
        assert_eq!(percent(0.0), "0.00%");
    }
}
