//! What alerting remembers between passes, kept durably in one JSON file: how far it has
//! evaluated, the incidents still open, the cool-downs, and the alerts not yet delivered.
//!
//! The file is replaced whole (written to a temporary name, synced, renamed, directory
//! synced), so a crash leaves the old state or the new one, never half of one. A pass saves
//! its alerts here *before* sending them and marks each one sent afterwards, so a restart
//! neither forgets an incident (it is open here) nor sends an alert twice (a sent one is
//! marked; at worst one whose send was cut short by the crash goes again).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::alert::{AlertEvent, Detector, Severity};
use crate::{Error, Result};

/// What an incident is about, within its domain. One incident per (domain, subject): the
/// detectors that see the same problem (a new result type and the spike of that type on an
/// MX) join one incident rather than page twice.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Subject {
    /// Failures of one result type, on any MX.
    Failure { result_type: String },
    /// One reporter's failure rate.
    Reporter { reporter: String },
    /// One reporter's silence.
    Quiet { reporter: String },
    /// The MTA-STS mode.
    Mode,
    /// A custom SQL rule, by name, and the row's key.
    Rule { rule: String, key: String },
}

/// An incident that has fired and not yet ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenIncident {
    pub id: u64,
    pub domain: String,
    pub subject: Subject,
    pub detector: Detector,
    pub severity: Severity,
    pub opened_at: DateTime<Utc>,
    /// The report day that first showed it.
    pub first_day: NaiveDate,
    /// The latest report day that still showed it.
    pub last_day: NaiveDate,
    /// MX hosts concerned (failure incidents).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mxs: Vec<String>,
    /// A day at or below this failure rate is back to normal (spike incidents).
    #[serde(default)]
    pub resolve_below: f64,
    /// Sessions of a usual day, so that a day with too few reports in yet does not end the
    /// incident (a day counts when at least half of this has arrived).
    #[serde(default)]
    pub usual_sessions: u64,
}

/// The state file's contents.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertState {
    /// Everything that arrived up to here has been evaluated.
    pub watermark: Option<DateTime<Utc>>,
    pub next_incident_id: u64,
    /// The sequence number of the next alert (the `alerts` table's `event_seq`).
    pub next_event_seq: u64,
    /// Open incidents by domain.
    pub open: BTreeMap<String, Vec<OpenIncident>>,
    /// (domain, subject) pairs that may not open a new incident before the time given.
    pub cooldowns: Vec<Cooldown>,
    /// Alerts recorded and not yet delivered to every notifier they are routed to.
    pub outbox: Vec<Pending>,
    /// When each custom rule last ran, by name.
    #[serde(default)]
    pub rule_runs: BTreeMap<String, DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cooldown {
    pub domain: String,
    pub subject: Subject,
    pub until: DateTime<Utc>,
}

/// An alert waiting for delivery, and the notifiers that still have to take it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub event: AlertEvent,
    pub notifiers: Vec<String>,
    /// Failed attempts so far.
    #[serde(default)]
    pub attempts: u32,
}

impl AlertState {
    /// Reads the state; a missing file is a fresh state.
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|err| {
                Error::State(format!(
                    "{} is not an alert state file ({err}); move it away to start afresh",
                    path.display()
                ))
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(Error::Io {
                what: format!("cannot read the alert state {}", path.display()),
                source,
            }),
        }
    }

    /// Replaces the state file atomically and durably.
    pub fn save(&self, path: &Path) -> Result<()> {
        let io = |what: &str| {
            let what = format!("{what} {}", path.display());
            move |source| Error::Io { what, source }
        };
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir).map_err(io("cannot create the directory of"))?;
        }
        let temporary = temporary_name(path);
        let bytes = serde_json::to_vec_pretty(self).expect("the state serialises");
        let mut file =
            std::fs::File::create(&temporary).map_err(io("cannot write the alert state"))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(io("cannot write the alert state"))?;
        std::fs::rename(&temporary, path).map_err(io("cannot replace the alert state"))?;
        if let Some(dir) = dir {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io("cannot sync the directory of"))?;
        }
        Ok(())
    }

    pub fn open_incident(&self, domain: &str, subject: &Subject) -> Option<&OpenIncident> {
        self.open
            .get(domain)?
            .iter()
            .find(|incident| &incident.subject == subject)
    }

    pub fn open_incident_mut(
        &mut self,
        domain: &str,
        subject: &Subject,
    ) -> Option<&mut OpenIncident> {
        self.open
            .get_mut(domain)?
            .iter_mut()
            .find(|incident| &incident.subject == subject)
    }

    pub fn cooling(&self, domain: &str, subject: &Subject, at: DateTime<Utc>) -> bool {
        self.cooldowns
            .iter()
            .any(|c| c.domain == domain && &c.subject == subject && at < c.until)
    }

    /// Forgets cool-downs that have run out.
    pub fn expire_cooldowns(&mut self, at: DateTime<Utc>) {
        self.cooldowns.retain(|c| at < c.until);
    }

    /// Removes an open incident and returns it.
    pub fn close(&mut self, domain: &str, subject: &Subject) -> Option<OpenIncident> {
        let list = self.open.get_mut(domain)?;
        let index = list.iter().position(|i| &i.subject == subject)?;
        let incident = list.remove(index);
        if list.is_empty() {
            self.open.remove(domain);
        }
        Some(incident)
    }

    pub fn open_count(&self) -> usize {
        self.open.values().map(Vec::len).sum()
    }
}

fn temporary_name(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}
