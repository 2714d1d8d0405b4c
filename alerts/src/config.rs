//! The alert configuration: detectors, timing, notifiers and routes, read from TOML.
//!
//! Every field has a default, so an empty file (or none) gives a working setup that alerts
//! to the log. Unknown keys are refused, so a misspelt threshold is an error rather than a
//! silent default.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The whole configuration (`tlsrpt alerts run --config FILE`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertConfig {
    pub evaluation: Evaluation,
    pub spike: Spike,
    pub new_result_type: NewResultType,
    pub mode_change: ModeChange,
    pub reporter_quiet: ReporterQuiet,
    /// Custom rules in SQL ([`crate::rules`]).
    #[serde(rename = "rule", skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<crate::rules::RuleConfig>,
    /// Where alerts go; none configured: the log only.
    #[serde(rename = "notifier", skip_serializing_if = "Vec::is_empty")]
    pub notifiers: Vec<NotifierConfig>,
}

impl AlertConfig {
    /// Reads a TOML file; errors name the file and the key.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            what: format!("cannot read the alert configuration {}", path.display()),
            source,
        })?;
        Self::from_toml(&text).map_err(|err| match err {
            Error::Config(message) => Error::Config(format!("{}: {message}", path.display())),
            other => other,
        })
    }

    /// The configuration as TOML, every key written (defaults included): what
    /// `tlsrpt alerts config` prints, and a file [`Self::from_toml`] reads back the same.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the configuration is TOML")
    }

    pub fn from_toml(text: &str) -> Result<Self> {
        let config: Self = toml::from_str(text).map_err(|err| Error::Config(err.to_string()))?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        let e = &self.evaluation;
        if e.baseline_days < e.min_baseline_days || e.min_baseline_days == 0 {
            return Err(Error::Config(format!(
                "evaluation.min_baseline_days ({}) must be between 1 and baseline_days ({})",
                e.min_baseline_days, e.baseline_days
            )));
        }
        for (name, rate) in [
            ("spike.min_rate", self.spike.min_rate),
            ("spike.rate_floor", self.spike.rate_floor),
            ("spike.max_chance", self.spike.max_chance),
            ("spike.relative_min_rate", self.spike.relative_min_rate),
            ("spike.relative_max_chance", self.spike.relative_max_chance),
            ("new_result_type.min_rate", self.new_result_type.min_rate),
            (
                "new_result_type.max_report_chance",
                self.new_result_type.max_report_chance,
            ),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(Error::Config(format!(
                    "{name} is a share or a chance between 0 and 1, not {rate}"
                )));
            }
        }
        for notifier in &self.notifiers {
            notifier.check()?;
        }
        Ok(())
    }
}

/// When and over what the detectors look.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Evaluation {
    /// Days before the evaluated one that make its baseline.
    pub baseline_days: u32,
    /// Days with data the baseline needs before a domain is judged at all: a domain seen
    /// for the first time does not alert on everything it has.
    pub min_baseline_days: u32,
    /// How long after a day ends its reports may still arrive (senders retry for a day
    /// after a random delay). A day is complete, and a missing report really missing, only
    /// after this.
    pub lateness_hours: u32,
    /// Only days this recent (before the evaluation time's date) raise new alerts; a
    /// backfill of old reports is stored, not paged about.
    pub lookback_days: u32,
    /// After an incident ends, the same incident (domain and subject) does not open again
    /// for this long.
    pub cooldown_hours: u32,
    /// Reports are re-examined this long after they arrived, for rows that reached the
    /// tables after the previous pass had run.
    pub settle_minutes: u32,
    /// A pass that catches up on a long stretch (the first one, or after a long stop)
    /// records every alert but sends only those this recent; the rest are in the `alerts`
    /// table.
    pub notify_within_hours: u32,
    /// Interval of the scheduled passes inside `tlsrpt up` and `tlsrpt query`.
    pub interval_minutes: u32,
    /// How far back the first pass (no state yet) starts judging; the baseline days before
    /// that are read too.
    pub first_pass_days: u32,
}

impl Default for Evaluation {
    fn default() -> Self {
        Self {
            baseline_days: 28,
            min_baseline_days: 7,
            lateness_hours: 48,
            lookback_days: 3,
            cooldown_hours: 24,
            settle_minutes: 60,
            notify_within_hours: 24,
            interval_minutes: 15,
            first_pass_days: 90,
        }
    }
}

impl Evaluation {
    pub fn interval(&self) -> Duration {
        Duration::from_secs(u64::from(self.interval_minutes.max(1)) * 60)
    }
}

/// A failure-rate spike, per (policy domain, receiving MX, result type) and per (policy
/// domain, reporter), against the median and MAD of the baseline days.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Spike {
    pub enabled: bool,
    /// Fewer failed sessions than this never alert (three out of five page nobody).
    pub min_failed_sessions: u64,
    /// Failures of one MX and result type alert only when at least this many of the day's
    /// reports have them (fewer when the domain usually gets fewer reports a day). Trouble
    /// on the receiving side (a certificate, STARTTLS, the policy) shows in every sender's
    /// report; one sender's own trouble shows in one, and is a reporter spike instead.
    pub min_reports: u32,
    /// This many failed sessions alert from fewer reports: a sender's odd sessions are a
    /// handful, not dozens.
    pub enough_failed_sessions: u64,
    /// The reporter spike's `min_failed_sessions`: one sender's failures are one sender's
    /// word, so more of them are needed.
    pub reporter_min_failed_sessions: u64,
    /// Days with fewer sessions than this are not part of a baseline, and are judged only
    /// on failures seen in `min_reports` reports (a small domain's first reports of a day).
    pub min_sessions: u64,
    /// A failure rate below this share of sessions never alerts.
    pub min_rate: f64,
    /// How many (scaled) MADs above the median a rate must be.
    pub mad_factor: f64,
    /// The smallest spread assumed, as a share of sessions: a series that was flat at 0%
    /// does not alert on 0.1%.
    pub rate_floor: f64,
    /// The failed sessions must also be this unlikely under the usual rate (a Poisson
    /// bound), so that a day judged from its first few reports, whose rate swings more than
    /// a whole day's, does not look like a spike. The usual rate is the baseline's failed
    /// sessions over its sessions, counting one failure more than it had: a type never
    /// seen is not impossible.
    pub max_chance: f64,
    /// Below `min_rate`, a rate this many times the usual one still alerts when it is at
    /// least `relative_min_rate` and beyond `relative_max_chance` (a secondary MX host
    /// failing for most of its sessions); in `min_reports` reports or more, at any rate
    /// (a big domain's secondary MX, an incident that started late in the day).
    pub relative_factor: f64,
    pub relative_min_rate: f64,
    pub relative_max_chance: f64,
    /// Reports that each carry far more failed sessions of an MX and result type than the
    /// host's usual rate predicts for their sessions count as breadth, however few, when
    /// the chance that as many of the day's reports would be as heavy is below this, at
    /// the rate the whole fleet's reports were as heavy in the weeks before (`priors`).
    /// One report in a provider's million being that heavy by chance is what the default
    /// asks; a fleet of fewer reports cannot say so of one report. 0 turns this off.
    pub heavy_report_max_chance: f64,
}

impl Default for Spike {
    fn default() -> Self {
        Self {
            enabled: true,
            min_failed_sessions: 4,
            min_reports: 3,
            enough_failed_sessions: 20,
            reporter_min_failed_sessions: 10,
            min_sessions: 20,
            min_rate: 0.02,
            mad_factor: 5.0,
            rate_floor: 0.004,
            max_chance: 1e-6,
            relative_factor: 10.0,
            relative_min_rate: 0.005,
            relative_max_chance: 1e-12,
            heavy_report_max_chance: 2e-6,
        }
    }
}

/// A result type the domain has not had in its baseline window (the first
/// `certificate-expired`, `sts-policy-fetch-error` while the policy is enforced).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NewResultType {
    pub enabled: bool,
    pub min_failed_sessions: u64,
    /// The share of the day's sessions below which a new type does not alert, unless it
    /// shows in `min_reports` reports and beyond `spike.relative_max_chance`.
    pub min_rate: f64,
    /// As `spike.min_reports` and `spike.enough_failed_sessions`: the reports of the day
    /// that must have the type, unless it has this many failed sessions.
    pub min_reports: u32,
    pub enough_failed_sessions: u64,
    /// Two reports or more also count, whatever their failed sessions (but not below
    /// `min_rate`), when the chance that as many of the day's reports would show the type
    /// new is below this, at the rate the whole fleet's reports show it new (`priors`): a
    /// type that is rare as a sender's odd session.
    pub max_report_chance: f64,
}

impl Default for NewResultType {
    fn default() -> Self {
        Self {
            enabled: true,
            min_failed_sessions: 5,
            min_rate: 0.01,
            min_reports: 3,
            enough_failed_sessions: 20,
            max_report_chance: 3e-5,
        }
    }
}

/// An MTA-STS mode not seen in the baseline window appears in reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModeChange {
    pub enabled: bool,
    /// Sessions under the new mode on one day before it counts.
    pub min_sessions: u64,
}

impl Default for ModeChange {
    fn default() -> Self {
        Self {
            enabled: true,
            min_sessions: 1,
        }
    }
}

/// A reporter that sends a report for the domain every day has sent none for whole days.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReporterQuiet {
    pub enabled: bool,
    /// The reporter must have reported on each of this many days before the silence.
    pub daily_days: u32,
    /// ... with at least this many sessions on a median day (a reporter that sends little
    /// mail skips days for want of mail, not because something broke).
    pub min_daily_sessions: u64,
    /// Complete days without a report before it alerts.
    pub missing_days: u32,
}

impl Default for ReporterQuiet {
    fn default() -> Self {
        Self {
            enabled: true,
            daily_days: 14,
            min_daily_sessions: 20,
            missing_days: 2,
        }
    }
}

/// One place alerts go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawNotifier", into = "RawNotifier")]
pub struct NotifierConfig {
    /// A name for the log and the state.
    pub name: String,
    pub kind: NotifierKind,
    /// Only alerts for these policy domains (`example.com`, or `*.example.com` for the
    /// domain and every name under it); empty: every domain.
    pub domains: Vec<String>,
    /// Only alerts at least this severe.
    pub min_severity: crate::Severity,
}

/// A `[[notifier]]` table as written: one flat set of keys, which of them are needed
/// depending on `kind` (serde cannot refuse unknown keys of an internally tagged enum
/// flattened into a struct, so the kinds are told apart here).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotifier {
    name: String,
    kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    smtp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    to: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<MailTls>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ca_file: Option<std::path::PathBuf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    domains: Vec<String>,
    #[serde(default)]
    min_severity: crate::Severity,
}

/// Back to the keys as written, for `tlsrpt alerts config`.
impl From<NotifierConfig> for RawNotifier {
    fn from(notifier: NotifierConfig) -> Self {
        let mut raw = RawNotifier {
            name: notifier.name,
            domains: notifier.domains,
            min_severity: notifier.min_severity,
            ..RawNotifier::default()
        };
        match notifier.kind {
            NotifierKind::Webhook {
                url,
                timeout_seconds,
                ca_file,
            } => {
                raw.kind = "webhook".to_owned();
                raw.url = Some(url);
                raw.timeout_seconds = Some(timeout_seconds);
                raw.ca_file = ca_file;
            }
            NotifierKind::Mail {
                smtp,
                from,
                to,
                timeout_seconds,
                tls,
                ca_file,
            } => {
                raw.kind = "mail".to_owned();
                raw.smtp = Some(smtp);
                raw.from = Some(from);
                raw.to = to;
                raw.timeout_seconds = Some(timeout_seconds);
                raw.tls = Some(tls);
                raw.ca_file = ca_file;
            }
            NotifierKind::Log => raw.kind = "log".to_owned(),
        }
        raw
    }
}

impl TryFrom<RawNotifier> for NotifierConfig {
    type Error = String;

    fn try_from(raw: RawNotifier) -> Result<Self, String> {
        let name = raw.name;
        let needs = |what: &str, value: Option<String>| {
            value.ok_or_else(|| format!("notifier {name:?} of kind {:?} needs `{what}`", raw.kind))
        };
        let timeout_seconds = raw.timeout_seconds.unwrap_or(10);
        let kind = match raw.kind.as_str() {
            "webhook" if raw.tls.is_some() => {
                return Err(format!(
                    "notifier {name:?}: `tls` is for mail; a webhook's `url` says https or http"
                ));
            }
            "webhook" => NotifierKind::Webhook {
                url: needs("url", raw.url)?,
                timeout_seconds,
                ca_file: raw.ca_file,
            },
            "mail" => {
                if raw.to.is_empty() {
                    return Err(format!("notifier {name:?} of kind \"mail\" needs `to`"));
                }
                NotifierKind::Mail {
                    smtp: needs("smtp", raw.smtp)?,
                    from: needs("from", raw.from)?,
                    to: raw.to,
                    timeout_seconds,
                    tls: raw.tls.unwrap_or_default(),
                    ca_file: raw.ca_file,
                }
            }
            "log" => NotifierKind::Log,
            other => {
                return Err(format!(
                    "notifier {name:?}: kind must be \"webhook\", \"mail\" or \"log\", not {other:?}"
                ));
            }
        };
        Ok(Self {
            name,
            kind,
            domains: raw.domains,
            min_severity: raw.min_severity,
        })
    }
}

impl NotifierConfig {
    fn check(&self) -> Result<()> {
        if let NotifierKind::Webhook { url, .. } = &self.kind
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(Error::Config(format!(
                "notifier {}: url must start with http:// or https://, not {url:?}",
                self.name
            )));
        }
        Ok(())
    }

    /// Whether this notifier takes alerts for `domain`.
    pub fn routes(&self, domain: &str) -> bool {
        self.domains.is_empty()
            || self.domains.iter().any(|pattern| {
                let domain = domain.trim_end_matches('.').to_ascii_lowercase();
                match pattern.strip_prefix("*.") {
                    Some(parent) => domain == parent || domain.ends_with(&format!(".{parent}")),
                    None => domain == pattern.to_ascii_lowercase(),
                }
            })
    }
}

/// How a mail notifier protects its connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailTls {
    /// Plain SMTP: for a relay on the same host or network (the default).
    #[default]
    None,
    /// STARTTLS, required: the mail is not sent when the server does not offer it
    /// (submission, port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// The kinds of notifier.
#[derive(Debug, Clone, PartialEq)]
pub enum NotifierKind {
    /// A JSON POST (the alert, with a Slack-compatible `text` field).
    Webhook {
        /// `https://` (the system's trusted roots, and `ca_file`) or `http://`.
        url: String,
        /// Seconds before a delivery attempt gives up (default 10).
        timeout_seconds: u64,
        /// A PEM file of certificates to trust besides the system's (a private CA).
        ca_file: Option<std::path::PathBuf>,
    },
    /// A mail over SMTP.
    Mail {
        /// `host:port` of the SMTP server (port 25 when none is given).
        smtp: String,
        from: String,
        to: Vec<String>,
        timeout_seconds: u64,
        tls: MailTls,
        /// A PEM file of certificates to trust besides the system's (a private CA).
        ca_file: Option<std::path::PathBuf>,
    },
    /// The process log (standard error).
    Log,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(AlertConfig::from_toml("").unwrap(), AlertConfig::default());
    }

    #[test]
    fn notifiers_of_each_kind_are_read_and_routed() {
        let config = AlertConfig::from_toml(
            r#"
            [spike]
            min_rate = 0.1
            [[notifier]]
            name = "chat"
            kind = "webhook"
            url = "https://hooks.example/x"
            [[notifier]]
            name = "noc"
            kind = "mail"
            smtp = "localhost:25"
            from = "a@b.example"
            to = ["c@d.example"]
            domains = ["*.customer.example", "other.example"]
            min_severity = "critical"
            "#,
        )
        .unwrap();
        assert_eq!(config.spike.min_rate, 0.1);
        assert_eq!(
            config.spike.min_failed_sessions, 4,
            "the rest stays default"
        );
        let [chat, noc] = &config.notifiers[..] else {
            panic!("two notifiers")
        };
        assert!(
            matches!(&chat.kind, NotifierKind::Webhook { url, timeout_seconds: 10, ca_file: None } if url == "https://hooks.example/x")
        );
        assert!(chat.routes("anything.example"));
        assert_eq!(noc.min_severity, crate::Severity::Critical);
        assert!(noc.routes("customer.example") && noc.routes("mx.Customer.example."));
        assert!(noc.routes("other.example") && !noc.routes("notcustomer.example"));
    }

    #[test]
    fn the_printed_configuration_reads_back_the_same() {
        let config = AlertConfig::from_toml(
            r#"
            [spike]
            min_reports = 2
            max_chance = 1e-9
            [[notifier]]
            name = "chat"
            kind = "webhook"
            url = "https://hooks.example/x"
            ca_file = "/etc/ca.pem"
            [[notifier]]
            name = "noc"
            kind = "mail"
            smtp = "localhost:25"
            from = "a@b.example"
            to = ["c@d.example"]
            domains = ["*.customer.example"]
            [[notifier]]
            name = "log"
            kind = "log"
            [[rule]]
            name = "dane"
            sql = "SELECT policy_domain FROM failures"
            every_minutes = 60
            "#,
        )
        .unwrap();
        let printed = config.to_toml();
        assert!(printed.contains("min_reports = 2"), "{printed}");
        assert!(printed.contains("baseline_days = 28"), "{printed}");
        assert_eq!(
            AlertConfig::from_toml(&printed).unwrap(),
            config,
            "{printed}"
        );
        assert_eq!(
            AlertConfig::from_toml(&AlertConfig::default().to_toml()).unwrap(),
            AlertConfig::default()
        );
    }

    #[test]
    fn mistakes_are_refused_with_the_key_named() {
        let error = |text: &str| AlertConfig::from_toml(text).unwrap_err().to_string();
        assert!(error("[spike]\nmin_fialed_sessions = 3").contains("min_fialed_sessions"));
        assert!(error("[spike]\nmin_rate = 5").contains("spike.min_rate"));
        assert!(error("[[notifier]]\nname = \"x\"\nkind = \"webhook\"").contains("needs `url`"));
        assert!(error("[[notifier]]\nname = \"x\"\nkind = \"pager\"").contains("kind must be"));
        assert!(error("[[notifier]]\nname = \"x\"\nkind = \"log\"\nurl2 = \"y\"").contains("url2"));
        assert!(
            error(
                "[[notifier]]\nname = \"x\"\nkind = \"webhook\"\nurl = \"https://a\"\ntls = \"tls\""
            )
            .contains("`tls` is for mail")
        );
        assert!(
            error("[[notifier]]\nname = \"x\"\nkind = \"mail\"\nsmtp = \"a:25\"\nfrom = \"a@b\"\nto = [\"c@d\"]\ntls = \"ssl\"")
                .contains("ssl")
        );
    }
}
