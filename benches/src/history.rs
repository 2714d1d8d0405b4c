//! A seeded provider history: 90 days of TLS-RPT reports for a mail provider's policy
//! domains, with injected incidents as ground truth, for scoring an anomaly-alerting engine.
//!
//! The [`generator`](crate::generator) makes report streams for load; this module makes a
//! *history* a detector can be scored on: a steady background with the rhythms and noise
//! real reports have (weekends, day-to-day swings, reporters that skip days, late and
//! retried deliveries, persistent and sporadic failures), and incidents whose first visible
//! evidence is known. It is meant to be realistic, not shaped for any one detector; the
//! model is written down here so a detector's author can argue with it.
//!
//! # The model
//!
//! **Domains.** `N` policy domains named `{word}{i}.example`, each with 1 to 4 MX hosts
//! (`mx1.NAME` ..). The primary MX takes 70-90% of the sessions, the others split the rest
//! evenly. Daily volume (sessions from senders that send TLS reports) is log-uniform
//! between 30 and 30,000. Policy: MTA-STS `enforce` 60%, MTA-STS `testing` 20%, DANE (TLSA
//! records, `3 1 1`) 10%, none 10%. An MTA-STS domain also publishes TLSA records 10% of the
//! time (Microsoft then reports both policies).
//!
//! **Traffic.** The sessions a reporter has with a domain on a day are
//! Poisson(volume × reporter share × weekday factor × day swing): the weekday factor is 0.6
//! on Saturdays and Sundays (UTC) and 1 otherwise; the day swing is a log-normal factor
//! (σ = 0.15, clamped to 0.5-2), one per (domain, day) and shared by all its reporters, as
//! real mail volume moves more from day to day than a Poisson count alone would. A reporter
//! with no session on a day sends no report for it; 0.1% of the reports that should be sent
//! are lost (never sent).
//!
//! **Reporters.** The five big ones of the generator (Google, Microsoft, Yahoo, Mail.ru,
//! Comcast: same organisation names, contacts and submitter domains) take 35/25/8/4/3% of
//! every domain's sessions. A tail of 40 small reporters shares the other 25%: each domain
//! draws 3 to 8 of them, without replacement, with weights 1/rank, and splits the 25% among
//! those it drew in proportion to the same weights. Small reporters on small domains
//! therefore skip many days.
//!
//! **Reports.** One per (day, domain, reporter) with sessions: date range the UTC day
//! (`00:00:00Z` to `23:59:59Z`), the reporter's organisation name and contact, a report id
//! unique per report in the reporter's style (Google `{start}_{domain}`, Microsoft a
//! FILETIME `+{domain}`, others a UUID `@{submitter}`). One policy: `sts` (policy string
//! `version: STSv1`, `mode: X`, one `mx:` line per MX, `max_age: N`; `mx-host` the MX list),
//! `tlsa` (the records) or `no-policy-found`. Microsoft adds the `tlsa` policy beside the
//! `sts` one, with the same sessions and no failures, when the domain has TLSA records. In
//! each policy `failed` is the sum of its failure details and `successful` the rest.
//! Failure details name the type, a sending IP of the reporter, the receiving MX and its IP
//! (none of the three for the policy-level types `sts-policy-fetch-error`,
//! `sts-policy-invalid`, `sts-webpki-invalid`), the count and the reason code the
//! generator uses. Counts are aggregated per (type, MX): one detail each.
//!
//! **Background failures** (noise; never an incident). *Persistent*: each domain with a
//! policy has 0 to 2 failure types, each on one MX at a rate log-uniform in 0.05-2% of that
//! MX's sessions, drawn per report (a binomial, Poisson-like at these rates). MTA-STS domains
//! draw from `validation-failure`, `certificate-host-mismatch`, `starttls-not-supported`,
//! `certificate-not-trusted`; DANE domains from `validation-failure`,
//! `starttls-not-supported`, `tlsa-invalid`, `dnssec-invalid` (DANE-EE ignores names and
//! trust chains, so the WebPKI types do not arise); domains without a policy have none
//! (opportunistic TLS validates nothing). *Sporadic*: with probability 2% a report carries
//! 1 to 3 failed sessions of any registered type (weighted as the generator weights them:
//! validation failures and name mismatches common, DANE types rare) on a random MX,
//! whatever the domain's policy, as reporters' odd sessions and bugs do.
//!
//! **Arrival.** A report is received after its day ends: Google 0-6 h, Microsoft 2-14 h,
//! others 0-24 h later (uniform); 3% are retried, adding 6-24 h; never later than 48 h
//! after the day ends.
//!
//! **Incidents.** `incidents` of them, on distinct domains drawn at random among those the
//! kind can happen on; the kinds in turn (cert-expired, starttls-stopped, sts-fetch-error,
//! failure-spike, mode-change, reporter-quiet, cert-expired, ..). Each starts on a day
//! uniform in `[warmup_days, days - 4)` at an hour uniform in 0-23; 70% end 1 to 6 days
//! later at an hour uniform in 0-23 (an end past the history is `None`), the others last to
//! the end. On a day partly inside an incident, the incident touches the share of the day's
//! sessions that fall in it (hours inside / 24, drawn per report).
//!
//! - *cert-expired* (MTA-STS domains: DANE-EE ignores expiry, opportunistic TLS does not
//!   check): one MX (the primary with 70% chance, else another) serves an expired
//!   certificate; every session to it fails with `certificate-expired`.
//! - *starttls-stopped* (MTA-STS or DANE domains): one MX, chosen the same way, stops
//!   offering STARTTLS; every session to it fails with `starttls-not-supported`.
//! - *sts-fetch-error* (MTA-STS domains): the policy cannot be fetched; a share of the
//!   domain's sessions, uniform in 30-100% per incident (the rest are senders still holding
//!   a cached policy), report `sts-policy-fetch-error` (no MX).
//! - *failure-spike* (domains with a persistent failure type): one of the domain's
//!   persistent types jumps, on its MX, to a rate uniform in 20-60% per incident, on top of
//!   its usual rate.
//! - *mode-change* (MTA-STS domains): `testing` → `enforce`, or `enforce` → `testing` or
//!   `none` (half each). From the start on, reports show the new mode (an ending change is
//!   a roll-back to the old one); the report of the day of a change carries two `sts`
//!   policies, old and new, with the sessions split by the hour of change.
//! - *reporter-quiet* (a domain on which some big reporter has at least 10 sessions
//!   expected even on its quietest day, so that it reports every day): that reporter sends
//!   nothing for the domain from the start day on. It is counted in whole days: it starts
//!   at 00:00 UTC of its first quiet day and, when it ends, at 00:00 UTC of the first day
//!   reported again, after 2 to 6 days (one missing day is indistinguishable from a lost
//!   report, which happens by itself).
//!
//! **Ground truth.** [`TruthIncident::first_evidence_at`] is the reference for detection
//! delay: the `received_at` of the earliest-arriving report whose counts show the incident
//! (a failure of the incident's type, on its MX or domain, caused by it and not by the
//! background; for mode-change, the first report carrying the new mode). For
//! reporter-quiet, nothing arrives to show it: the reference is when a silence of two days
//! can first be known. One missing day proves nothing (0.1% of reports are lost by
//! themselves), so the silence shows only once the *second* missing day is complete, and a
//! day is complete only when its last report could have arrived, 48 hours after it ends.
//! For the first day `D` the reporter would have reported but did not, the second is
//! `D+1`, which ends at `D+2 00:00`: the reference is `D+4 00:00` UTC, provided a second
//! quiet day would also have been reported. (`D+3 00:00`, when `D` itself is complete, is
//! too early: by then only one report is known to be missing.) `None` when no report
//! in the history shows the incident (a small domain's secondary MX failing for a day may
//! get no session at all): such an incident cannot be detected and must not count against
//! recall.
//!
//! # Determinism
//!
//! Everything is derived from the seed through ChaCha8 (as the generator does), on any
//! machine. Draws are keyed: the report of (day, domain, reporter) comes from its own
//! ChaCha8 stream, seeded by mixing the seed with the triple (splitmix64), and so do a
//! domain's set-up and a (domain, day)'s swing. So [`History::new`] computes the ground
//! truth by generating the incident domains' reports alone, and [`History::reports`] gives
//! exactly those reports again among all the others.

use std::borrow::Cow;
use std::f64::consts::TAU;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc, Weekday};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tlsrpt_schemas::{
    DateRange, FailureDetails, Policy, PolicyResult, PolicyType, Report, ResultType, Summary,
};

use crate::generator::owned_texts;

/// The shape of a history. [`HistoryConfig::default`] is the scoring setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryConfig {
    /// Policy domains (default 10,000).
    pub domains: usize,
    /// Days of reports (default 90).
    pub days: u32,
    /// The first report day (default 2025-01-01).
    pub start_date: NaiveDate,
    /// Incidents to inject (default 50). Fewer are placed only when too few domains can
    /// take them (tiny configurations).
    pub incidents: usize,
    /// No incident starts before this day (default 28), so a detector has a baseline.
    pub warmup_days: u32,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            domains: 10_000,
            days: 90,
            start_date: NaiveDate::from_ymd_opt(2025, 1, 1).expect("valid date"),
            incidents: 50,
            warmup_days: 28,
        }
    }
}

/// Kinds of injected incident (see the module docs for what each does to the reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TruthKind {
    CertExpired,
    StarttlsStopped,
    StsFetchError,
    FailureSpike,
    ModeChange,
    ReporterQuiet,
}

impl TruthKind {
    /// Every kind, in the order incidents are assigned.
    pub const ALL: [TruthKind; 6] = [
        Self::CertExpired,
        Self::StarttlsStopped,
        Self::StsFetchError,
        Self::FailureSpike,
        Self::ModeChange,
        Self::ReporterQuiet,
    ];
}

/// One injected incident, as ground truth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruthIncident {
    /// Index in [`History::incidents`].
    pub id: usize,
    pub kind: TruthKind,
    /// The policy domain.
    pub domain: String,
    /// The MX concerned (cert-expired, starttls-stopped, failure-spike).
    pub mx: Option<String>,
    /// The failure type the incident produces (none for mode-change and reporter-quiet).
    pub result_type: Option<String>,
    /// The `organization-name` of the reporter gone quiet (reporter-quiet).
    pub reporter: Option<String>,
    /// Mode-change: the STS mode before and after (`testing`, `enforce`, `none`).
    pub old_mode: Option<String>,
    pub new_mode: Option<String>,
    pub starts_at: DateTime<Utc>,
    /// `None`: lasts to the end of the history.
    pub ends_at: Option<DateTime<Utc>>,
    /// The reference for detection delay (module docs, "Ground truth"): the `received_at`
    /// of the earliest-arriving report showing the incident; for reporter-quiet `D+4 00:00`
    /// for the first quiet day `D` (when the second quiet day, `D+1`, is complete: 48 h
    /// after it ends). `None` if nothing in the history shows it: such an incident cannot
    /// count against recall.
    pub first_evidence_at: Option<DateTime<Utc>>,
}

/// One report of the history.
#[derive(Debug, Clone)]
pub struct HistoryReport {
    pub report: Report<'static>,
    /// `report.to_json()`.
    pub json: String,
    /// When the report arrives: within 48 h after the end of its day.
    pub received_at: DateTime<Utc>,
    /// The policy domain (the `TLS-Report-Domain`).
    pub policy_domain: String,
    /// The reporter's domain (the `TLS-Report-Submitter`).
    pub submitter: String,
}

/// A provider's history: its domains, reporters and incidents, and the reports they give.
#[derive(Debug)]
pub struct History {
    config: HistoryConfig,
    seed: u64,
    reporters: Vec<Reporter>,
    domains: Vec<Domain>,
    incidents: Vec<TruthIncident>,
    /// What each incident does to the reports, by incident id.
    effects: Vec<Effect>,
    /// The incident on each domain, if any (incidents are on distinct domains).
    incident_of_domain: Vec<Option<usize>>,
}

// ---------------------------------------------------------------------------------------
// Constants of the model (module docs).

/// The big reporters: organisation, contact, submitter, report-id style, share of a
/// domain's sessions.
const BIG_REPORTERS: [(&str, &str, &str, IdStyle, f64); 5] = [
    (
        "Google Inc.",
        "smtp-tls-reporting@google.com",
        "google.com",
        IdStyle::Google,
        0.35,
    ),
    (
        "Microsoft Corporation",
        "tlsrpt-noreply@microsoft.com",
        "microsoft.com",
        IdStyle::Microsoft,
        0.25,
    ),
    (
        "Yahoo",
        "smtp-tls-reporting@yahooinc.com",
        "yahoo.com",
        IdStyle::Uuid,
        0.08,
    ),
    (
        "Mail.ru",
        "tls_support@corp.mail.ru",
        "mail.ru",
        IdStyle::Uuid,
        0.04,
    ),
    (
        "Comcast",
        "tlsrpt@comcast.net",
        "comcast.net",
        IdStyle::Uuid,
        0.03,
    ),
];
/// Small reporters in the tail, and how many of them each domain draws.
const TAIL_REPORTERS: usize = 40;
const TAIL_PER_DOMAIN: (usize, usize) = (3, 8);
/// Daily sessions per domain: log-uniform in this range.
const VOLUME_RANGE: (f64, f64) = (30.0, 30_000.0);
const WEEKEND_FACTOR: f64 = 0.6;
/// The day swing: exp(N(0, σ²)), clamped.
const DAY_SWING_SIGMA: f64 = 0.15;
const DAY_SWING_RANGE: (f64, f64) = (0.5, 2.0);
/// Share of reports that are never sent.
const LOSS_RATE: f64 = 0.001;
/// Share of reports retried, and the delay a retry adds, in hours.
const RETRY_RATE: f64 = 0.03;
const RETRY_DELAY_HOURS: (i64, i64) = (6, 24);
/// No report arrives later than this after its day ends.
const MAX_DELAY_HOURS: i64 = 48;
/// Persistent failure types: rate log-uniform in this range.
const PERSISTENT_RATE_RANGE: (f64, f64) = (0.0005, 0.02);
/// Chance that a report carries 1 to 3 sporadic failed sessions.
const SPORADIC_RATE: f64 = 0.02;
/// Share of incidents that end (the others last to the end), and their length in days.
const ENDING_SHARE: f64 = 0.7;
const INCIDENT_DAYS: (u32, u32) = (1, 6);
const QUIET_DAYS: (u32, u32) = (2, 6);
/// A big reporter can go quiet on a domain only if it has at least this many sessions
/// expected on its quietest possible day (then it reports daily: P(0) < 5e-5).
const QUIET_MIN_SESSIONS: f64 = 10.0;

/// Result types of sporadic failures, with relative weights (the generator's).
const SPORADIC_WEIGHTS: &[(ResultType, u32)] = &[
    (ResultType::ValidationFailure, 30),
    (ResultType::CertificateHostMismatch, 25),
    (ResultType::CertificateNotTrusted, 12),
    (ResultType::StarttlsNotSupported, 10),
    (ResultType::CertificateExpired, 8),
    (ResultType::StsPolicyFetchError, 6),
    (ResultType::StsWebpkiInvalid, 3),
    (ResultType::StsPolicyInvalid, 2),
    (ResultType::DnssecInvalid, 2),
    (ResultType::TlsaInvalid, 1),
    (ResultType::DaneRequired, 1),
];

const STS_PERSISTENT_TYPES: [ResultType; 4] = [
    ResultType::ValidationFailure,
    ResultType::CertificateHostMismatch,
    ResultType::StarttlsNotSupported,
    ResultType::CertificateNotTrusted,
];
const DANE_PERSISTENT_TYPES: [ResultType; 4] = [
    ResultType::ValidationFailure,
    ResultType::StarttlsNotSupported,
    ResultType::TlsaInvalid,
    ResultType::DnssecInvalid,
];

const WORDS: &[&str] = &[
    "acme",
    "globex",
    "initech",
    "umbrella",
    "hooli",
    "vandelay",
    "stark",
    "wayne",
    "wonka",
    "tyrell",
    "cyberdyne",
    "soylent",
    "oscorp",
    "monarch",
    "gringotts",
    "nakatomi",
];

/// Keys of the independent random streams (first part of every [`keyed_rng`] key).
const STREAM_REPORTERS: u64 = 1;
const STREAM_DOMAIN: u64 = 2;
const STREAM_INCIDENTS: u64 = 3;
const STREAM_DAY_SWING: u64 = 4;
const STREAM_REPORT: u64 = 5;

// ---------------------------------------------------------------------------------------
// The world: reporters, domains, incidents.

#[derive(Debug, Clone)]
struct Reporter {
    organization: String,
    contact: String,
    submitter: String,
    style: IdStyle,
    sending_ips: Vec<String>,
}

/// How a reporter writes report ids and how late its reports come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdStyle {
    Google,
    Microsoft,
    Uuid,
}

impl IdStyle {
    /// Delay after the end of the day, in hours: uniform in [low, high).
    fn delay_hours(self) -> (i64, i64) {
        match self {
            IdStyle::Google => (0, 6),
            IdStyle::Microsoft => (2, 14),
            IdStyle::Uuid => (0, 24),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StsMode {
    Enforce,
    Testing,
    None,
}

impl StsMode {
    fn as_str(self) -> &'static str {
        match self {
            StsMode::Enforce => "enforce",
            StsMode::Testing => "testing",
            StsMode::None => "none",
        }
    }
}

/// The policy a domain publishes (a report shows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DomainPolicy {
    Sts(StsMode),
    Tlsa,
    None,
}

/// A reporter of a domain and its share of the domain's sessions.
#[derive(Debug, Clone, Copy)]
struct ReporterShare {
    /// Index in `History::reporters`.
    reporter: usize,
    share: f64,
}

/// A failure type a domain always has on one MX (misconfigured backup MX, a reporter's
/// stale CA bundle, ...).
#[derive(Debug, Clone)]
struct PersistentFailure {
    result_type: ResultType,
    mx: usize,
    rate: f64,
}

#[derive(Debug, Clone)]
struct Domain {
    name: String,
    mx: Vec<String>,
    mx_ips: Vec<String>,
    /// Share of the sessions each MX takes; sums to 1.
    mx_shares: Vec<f64>,
    policy: DomainPolicy,
    /// TLSA records in presentation form (DANE domains, and some MTA-STS ones).
    dane: Vec<String>,
    max_age: u64,
    /// Expected sessions on a weekday before the day swing.
    volume: f64,
    /// The big reporters, then the tail reporters it drew.
    reporters: Vec<ReporterShare>,
    persistent: Vec<PersistentFailure>,
}

/// What an incident does to its domain's reports.
#[derive(Debug, Clone)]
enum Effect {
    /// Every session to one MX fails with this type (cert-expired, starttls-stopped).
    MxFails {
        mx: usize,
        result_type: ResultType,
    },
    /// This share of the domain's sessions cannot fetch the STS policy.
    StsFetchError {
        rate: f64,
    },
    /// A persistent failure type of the domain (index in `Domain::persistent`) jumps by
    /// this rate.
    Spike {
        persistent: usize,
        rate: f64,
    },
    ModeChange {
        old: StsMode,
        new: StsMode,
    },
    /// This reporter (index in `History::reporters`) sends nothing for the domain.
    ReporterQuiet {
        reporter: usize,
    },
}

/// A report before serialisation, with what the ground truth needs to know about it.
#[derive(Debug)]
struct Draft {
    report: Report<'static>,
    received_at: DateTime<Utc>,
    domain: usize,
    reporter: usize,
    /// Whether its counts show the domain's incident (module docs, "Ground truth").
    shows_incident: bool,
}

impl History {
    /// Builds the world and its incidents from the seed, and computes the ground truth
    /// (which generates the reports of the incident domains).
    ///
    /// Panics if incidents are asked for and `days` leaves no room after `warmup_days`
    /// (incidents start in `[warmup_days, days - 4)`).
    pub fn new(config: HistoryConfig, seed: u64) -> Self {
        assert!(
            config.incidents == 0 || config.days > config.warmup_days + 4,
            "incidents start in [warmup_days, days - 4): {} days leave no room after a {}-day warm-up",
            config.days,
            config.warmup_days
        );
        let reporters = make_reporters(seed);
        let domains: Vec<Domain> = (0..config.domains).map(|i| make_domain(seed, i)).collect();
        let mut history = Self {
            incident_of_domain: vec![None; domains.len()],
            config,
            seed,
            reporters,
            domains,
            incidents: Vec::new(),
            effects: Vec::new(),
        };
        history.place_incidents();
        for id in 0..history.incidents.len() {
            history.incidents[id].first_evidence_at = history.first_evidence(id);
        }
        history
    }

    pub fn config(&self) -> &HistoryConfig {
        &self.config
    }

    /// The injected incidents, ground truth included.
    pub fn incidents(&self) -> &[TruthIncident] {
        &self.incidents
    }

    /// Every report of the history, day by day; within a day, domain by domain (big
    /// reporters first). Not in arrival order: a day's reports arrive over the 48 hours
    /// after it ends, so a replay by `received_at` needs about three days of reports in
    /// hand. Deterministic, and lazy (nothing is kept).
    pub fn reports(&self) -> impl Iterator<Item = HistoryReport> + '_ {
        (0..self.config.days).flat_map(move |day| {
            self.domains
                .iter()
                .enumerate()
                .flat_map(move |(d, domain)| {
                    (0..domain.reporters.len()).filter_map(move |slot| self.draft(day, d, slot))
                })
                .map(|draft| HistoryReport {
                    json: draft.report.to_json(),
                    policy_domain: self.domains[draft.domain].name.clone(),
                    submitter: self.reporters[draft.reporter].submitter.clone(),
                    received_at: draft.received_at,
                    report: draft.report,
                })
        })
    }

    /// Domains × days: the denominator of the false-alert rate.
    pub fn domain_days(&self) -> u64 {
        self.domains.len() as u64 * u64::from(self.config.days)
    }

    fn day_start(&self, day: u32) -> DateTime<Utc> {
        let date = self.config.start_date + Duration::days(i64::from(day));
        Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).expect("midnight"))
    }

    /// The end of the history's last day.
    fn history_end(&self) -> DateTime<Utc> {
        self.day_start(self.config.days)
    }

    // -----------------------------------------------------------------------------------
    // Incidents and ground truth.

    fn place_incidents(&mut self) {
        let mut rng = keyed_rng(self.seed, &[STREAM_INCIDENTS]);
        let (first_day, end_day) = (self.config.warmup_days, self.config.days.saturating_sub(4));
        for turn in 0..self.config.incidents {
            let kind = TruthKind::ALL[turn % TruthKind::ALL.len()];
            let candidates: Vec<usize> = (0..self.domains.len())
                .filter(|&d| self.incident_of_domain[d].is_none() && self.can_happen(kind, d))
                .collect();
            let Some(&d) = candidates.choose(&mut rng) else {
                continue;
            };
            let domain = &self.domains[d];
            let start_day = rng.random_range(first_day..end_day);
            // Reporter-quiet is counted in whole days (a report covers one).
            let whole_days = kind == TruthKind::ReporterQuiet;
            let start_hour = if whole_days {
                0
            } else {
                rng.random_range(0..24)
            };
            let starts_at = self.day_start(start_day) + Duration::hours(start_hour);
            let ends_at = rng.random_bool(ENDING_SHARE).then(|| {
                let (low, high) = if whole_days {
                    QUIET_DAYS
                } else {
                    INCIDENT_DAYS
                };
                let end_hour = if whole_days {
                    0
                } else {
                    rng.random_range(0..24)
                };
                self.day_start(start_day + rng.random_range(low..=high)) + Duration::hours(end_hour)
            });
            let ends_at = ends_at.filter(|&end| end < self.history_end());
            let mut truth = TruthIncident {
                id: self.incidents.len(),
                kind,
                domain: domain.name.clone(),
                mx: None,
                result_type: None,
                reporter: None,
                old_mode: None,
                new_mode: None,
                starts_at,
                ends_at,
                first_evidence_at: None,
            };
            let effect = match kind {
                TruthKind::CertExpired | TruthKind::StarttlsStopped => {
                    let mx = if domain.mx.len() == 1 || rng.random_bool(0.7) {
                        0
                    } else {
                        rng.random_range(1..domain.mx.len())
                    };
                    let result_type = if kind == TruthKind::CertExpired {
                        ResultType::CertificateExpired
                    } else {
                        ResultType::StarttlsNotSupported
                    };
                    truth.mx = Some(domain.mx[mx].clone());
                    truth.result_type = Some(result_type.as_str().to_owned());
                    Effect::MxFails { mx, result_type }
                }
                TruthKind::StsFetchError => {
                    truth.result_type = Some(ResultType::StsPolicyFetchError.as_str().to_owned());
                    Effect::StsFetchError {
                        rate: rng.random_range(0.3..=1.0),
                    }
                }
                TruthKind::FailureSpike => {
                    let persistent = rng.random_range(0..domain.persistent.len());
                    let failure = &domain.persistent[persistent];
                    truth.mx = Some(domain.mx[failure.mx].clone());
                    truth.result_type = Some(failure.result_type.as_str().to_owned());
                    Effect::Spike {
                        persistent,
                        rate: rng.random_range(0.2..=0.6),
                    }
                }
                TruthKind::ModeChange => {
                    let old = match domain.policy {
                        DomainPolicy::Sts(mode) => mode,
                        _ => unreachable!("mode-change is placed on MTA-STS domains"),
                    };
                    let new = match old {
                        StsMode::Testing => StsMode::Enforce,
                        _ if rng.random_bool(0.5) => StsMode::Testing,
                        _ => StsMode::None,
                    };
                    truth.old_mode = Some(old.as_str().to_owned());
                    truth.new_mode = Some(new.as_str().to_owned());
                    Effect::ModeChange { old, new }
                }
                TruthKind::ReporterQuiet => {
                    let steady: Vec<usize> = self.steady_big_reporters(d).collect();
                    let reporter = *steady.choose(&mut rng).expect("placed where one exists");
                    truth.reporter = Some(self.reporters[reporter].organization.clone());
                    Effect::ReporterQuiet { reporter }
                }
            };
            self.incident_of_domain[d] = Some(truth.id);
            self.incidents.push(truth);
            self.effects.push(effect);
        }
    }

    /// Whether an incident of this kind can happen on the domain (module docs).
    fn can_happen(&self, kind: TruthKind, d: usize) -> bool {
        let domain = &self.domains[d];
        let sts = matches!(
            domain.policy,
            DomainPolicy::Sts(StsMode::Enforce | StsMode::Testing)
        );
        match kind {
            TruthKind::CertExpired | TruthKind::StsFetchError | TruthKind::ModeChange => sts,
            TruthKind::StarttlsStopped => domain.policy != DomainPolicy::None,
            TruthKind::FailureSpike => !domain.persistent.is_empty(),
            TruthKind::ReporterQuiet => self.steady_big_reporters(d).next().is_some(),
        }
    }

    /// The big reporters that report on the domain every day (module docs).
    fn steady_big_reporters(&self, d: usize) -> impl Iterator<Item = usize> + '_ {
        let domain = &self.domains[d];
        domain.reporters[..BIG_REPORTERS.len()]
            .iter()
            .filter(move |r| {
                domain.volume * r.share * WEEKEND_FACTOR * DAY_SWING_RANGE.0 >= QUIET_MIN_SESSIONS
            })
            .map(|r| r.reporter)
    }

    /// The ground-truth reference time of an incident (module docs, "Ground truth").
    fn first_evidence(&self, id: usize) -> Option<DateTime<Utc>> {
        let truth = &self.incidents[id];
        let d = self
            .incident_of_domain
            .iter()
            .position(|&i| i == Some(id))?;
        let start_day = (truth.starts_at - self.day_start(0)).num_days() as u32;
        // The days the incident touches: to the day of its end (if that day is touched).
        let end_day = truth.ends_at.map_or(self.config.days, |end| {
            let day = (end - self.day_start(0)).num_days() as u32;
            if end > self.day_start(day) {
                day + 1
            } else {
                day
            }
        });
        if let Effect::ReporterQuiet { reporter } = self.effects[id] {
            let slot = self.domains[d]
                .reporters
                .iter()
                .position(|r| r.reporter == reporter)?;
            let mut missing =
                (start_day..end_day).filter(|&day| self.sessions_drawn(day, d, slot).1 > 0);
            let first = missing.next()?;
            missing.next()?;
            // The second quiet day (`first + 1`) ends a day after `first` does, and its
            // reports may arrive until 48 hours after that (module docs, "Ground truth").
            let second_complete = self.day_start(first + 2) + Duration::hours(MAX_DELAY_HOURS);
            return Some(second_complete);
        }
        (start_day..end_day)
            .flat_map(|day| {
                (0..self.domains[d].reporters.len())
                    .filter_map(move |slot| self.draft(day, d, slot))
            })
            .filter(|draft| draft.shows_incident)
            .map(|draft| draft.received_at)
            .min()
    }

    // -----------------------------------------------------------------------------------
    // Reports.

    /// The first draws of a report: its random stream, and the sessions it reports (0 when
    /// the reporter had none or the report is lost). The incidents play no part, so
    /// reporter-quiet can ask what would have been sent.
    fn sessions_drawn(&self, day: u32, d: usize, slot: usize) -> (ChaCha8Rng, u64) {
        let domain = &self.domains[d];
        let ReporterShare { reporter, share } = domain.reporters[slot];
        let mut rng = keyed_rng(
            self.seed,
            &[STREAM_REPORT, u64::from(day), d as u64, reporter as u64],
        );
        let expected = domain.volume * share * self.traffic_factor(day, d);
        let sessions = poisson(&mut rng, expected);
        let lost = rng.random_bool(LOSS_RATE);
        (rng, if lost { 0 } else { sessions })
    }

    /// Weekday factor × day swing of a (domain, day).
    fn traffic_factor(&self, day: u32, d: usize) -> f64 {
        let weekday = self.day_start(day).weekday();
        let weekday_factor = if matches!(weekday, Weekday::Sat | Weekday::Sun) {
            WEEKEND_FACTOR
        } else {
            1.0
        };
        let mut rng = keyed_rng(self.seed, &[STREAM_DAY_SWING, u64::from(day), d as u64]);
        let swing = (DAY_SWING_SIGMA * standard_normal(&mut rng))
            .exp()
            .clamp(DAY_SWING_RANGE.0, DAY_SWING_RANGE.1);
        weekday_factor * swing
    }

    /// The report of (day, domain, the domain's `slot`-th reporter), if one is sent.
    fn draft(&self, day: u32, d: usize, slot: usize) -> Option<Draft> {
        let (mut rng, sessions) = self.sessions_drawn(day, d, slot);
        if sessions == 0 {
            return None;
        }
        let domain = &self.domains[d];
        let r = domain.reporters[slot].reporter;
        let reporter = &self.reporters[r];
        let day_start = self.day_start(day);
        let day_end = day_start + Duration::days(1);
        let incident =
            self.incident_of_domain[d].map(|id| (&self.incidents[id], &self.effects[id]));
        // The share of the day inside the incident; the incident acts only where it is > 0.
        let (affected, effect) = match incident {
            Some((truth, effect)) => {
                let share = share_of_day(day_start, truth.starts_at, truth.ends_at);
                (share, (share > 0.0).then_some(effect))
            }
            None => (0.0, None),
        };
        if matches!(effect, Some(Effect::ReporterQuiet { reporter }) if *reporter == r) {
            return None;
        }

        let received_at = day_end + arrival_delay(&mut rng, reporter.style);
        let report_id = match reporter.style {
            IdStyle::Google => {
                format!("{}_{}", day_start.format("%Y-%m-%dT%H:%M:%SZ"), domain.name)
            }
            // A Windows FILETIME (100 ns since 1601) within the first hour after the day
            // ends: unique per (domain, day).
            IdStyle::Microsoft => format!(
                "{}+{}",
                (day_end.timestamp() as u64 + 11_644_473_600) * 10_000_000
                    + rng.random_range(0..36_000_000_000u64),
                domain.name
            ),
            IdStyle::Uuid => format!(
                "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}@{}",
                rng.random::<u32>(),
                rng.random::<u16>(),
                rng.random::<u16>() & 0xfff,
                (rng.random::<u16>() & 0x3fff) | 0x8000,
                rng.random::<u64>() & 0xffff_ffff_ffff,
                reporter.submitter
            ),
        };

        // The policies the day's sessions were delivered under: one, or two on the day a
        // mode changes (sessions split by the hour of change).
        let segments: Vec<(DomainPolicy, f64)> = match (effect, domain.policy) {
            (Some(&Effect::ModeChange { old, new }), _) if affected < 1.0 => {
                let started_today = incident.is_some_and(|(t, _)| t.starts_at > day_start);
                if started_today {
                    vec![
                        (DomainPolicy::Sts(old), 1.0 - affected),
                        (DomainPolicy::Sts(new), affected),
                    ]
                } else {
                    vec![
                        (DomainPolicy::Sts(new), affected),
                        (DomainPolicy::Sts(old), 1.0 - affected),
                    ]
                }
            }
            (Some(&Effect::ModeChange { new, .. }), _) => vec![(DomainPolicy::Sts(new), 1.0)],
            (_, policy) => vec![(policy, 1.0)],
        };
        let mut segment_sessions = Vec::with_capacity(segments.len());
        let mut left = sessions;
        for (i, (_, share)) in segments.iter().enumerate() {
            let n = if i + 1 == segments.len() {
                left
            } else {
                binomial(&mut rng, left, *share)
            };
            segment_sessions.push(n);
            left -= n;
        }

        let sporadic = rng.random_bool(SPORADIC_RATE);
        let mut sporadic_done = false;
        let mut shows_incident = false;
        let mut policies = Vec::with_capacity(2);
        for ((policy, _), &n) in segments.iter().zip(&segment_sessions) {
            if n == 0 {
                continue;
            }
            if let Some(&Effect::ModeChange { new, .. }) = effect
                && *policy == DomainPolicy::Sts(new)
            {
                shows_incident = true;
            }
            let (failures, shows) = self.failures(
                &mut rng,
                domain,
                reporter,
                n,
                effect.map(|e| (e, affected)),
                sporadic && !sporadic_done,
            );
            sporadic_done = true;
            shows_incident |= shows;
            let failed: u64 = failures.iter().filter_map(|f| f.failed_session_count).sum();
            policies.push(PolicyResult {
                policy: policy_of(domain, *policy),
                summary: Summary {
                    total_successful_session_count: Some(n - failed),
                    total_failure_session_count: Some(failed),
                },
                failure_details: failures,
            });
        }
        // Microsoft validates DANE as well and reports the TLSA policy beside MTA-STS.
        if reporter.style == IdStyle::Microsoft
            && matches!(domain.policy, DomainPolicy::Sts(_))
            && !domain.dane.is_empty()
        {
            policies.push(PolicyResult {
                policy: policy_of(domain, DomainPolicy::Tlsa),
                summary: Summary {
                    total_successful_session_count: Some(sessions),
                    total_failure_session_count: Some(0),
                },
                failure_details: Vec::new(),
            });
        }

        let report = Report {
            organization_name: reporter.organization.clone().into(),
            date_range: DateRange {
                start_datetime: day_start,
                end_datetime: day_end - Duration::seconds(1),
            },
            contact_info: Some(reporter.contact.clone().into()),
            report_id: report_id.into(),
            policies,
            warnings: Vec::new(),
        };
        Some(Draft {
            report,
            received_at,
            domain: d,
            reporter: r,
            shows_incident,
        })
    }

    /// The failure details of `sessions` sessions under one policy, and whether the
    /// incident (its effect, and the share of the day it covers) caused any of them.
    fn failures(
        &self,
        rng: &mut ChaCha8Rng,
        domain: &Domain,
        reporter: &Reporter,
        sessions: u64,
        incident: Option<(&Effect, f64)>,
        sporadic: bool,
    ) -> (Vec<FailureDetails<'static>>, bool) {
        let mut details = Vec::new();
        let mut shows_incident = false;
        // Policy-level first: a session that cannot fetch the policy never reaches an MX.
        let mut reaching_mx = sessions;
        if let Some((&Effect::StsFetchError { rate }, affected)) = incident {
            let n = binomial(rng, sessions, rate * affected);
            if n > 0 {
                shows_incident = true;
                reaching_mx -= n;
                details.push(failure(
                    rng,
                    reporter,
                    domain,
                    ResultType::StsPolicyFetchError,
                    None,
                    n,
                ));
            }
        }
        // Sessions still succeeding, per MX; each failure below takes from them.
        let mut ok_per_mx = split(rng, reaching_mx, &domain.mx_shares);
        if let Some((Effect::MxFails { mx, result_type }, affected)) = incident {
            let n = binomial(rng, ok_per_mx[*mx], affected);
            if n > 0 {
                shows_incident = true;
                ok_per_mx[*mx] -= n;
                details.push(failure(
                    rng,
                    reporter,
                    domain,
                    result_type.clone(),
                    Some(*mx),
                    n,
                ));
            }
        }
        for (p, persistent) in domain.persistent.iter().enumerate() {
            let mut n = 0;
            if let Some((
                &Effect::Spike {
                    persistent: spiking,
                    rate,
                },
                affected,
            )) = incident
                && spiking == p
            {
                let extra = binomial(rng, ok_per_mx[persistent.mx], rate * affected);
                shows_incident |= extra > 0;
                ok_per_mx[persistent.mx] -= extra;
                n += extra;
            }
            let usual = binomial(rng, ok_per_mx[persistent.mx], persistent.rate);
            ok_per_mx[persistent.mx] -= usual;
            n += usual;
            if n > 0 {
                details.push(failure(
                    rng,
                    reporter,
                    domain,
                    persistent.result_type.clone(),
                    Some(persistent.mx),
                    n,
                ));
            }
        }
        if sporadic {
            let result_type = pick_weighted(rng, SPORADIC_WEIGHTS);
            let mx = rng.random_range(0..domain.mx.len());
            let n = rng.random_range(1..=3u64).min(ok_per_mx[mx]);
            if n > 0 {
                ok_per_mx[mx] -= n;
                let detail = failure(rng, reporter, domain, result_type, Some(mx), n);
                // Reporters aggregate per (type, MX): add to an existing detail if any.
                match details.iter_mut().find(|f| {
                    f.result_type == detail.result_type
                        && f.receiving_mx_hostname == detail.receiving_mx_hostname
                }) {
                    Some(existing) => {
                        existing.failed_session_count =
                            Some(existing.failed_session_count.unwrap_or(0) + n);
                    }
                    None => details.push(detail),
                }
            }
        }
        (details, shows_incident)
    }
}

/// The reporters: the five big ones, then the tail.
fn make_reporters(seed: u64) -> Vec<Reporter> {
    let mut rng = keyed_rng(seed, &[STREAM_REPORTERS]);
    let mut reporters: Vec<Reporter> = BIG_REPORTERS
        .iter()
        .map(|&(organization, contact, submitter, style, _)| Reporter {
            organization: organization.into(),
            contact: contact.into(),
            submitter: submitter.into(),
            style,
            sending_ips: Vec::new(),
        })
        .collect();
    for rank in 0..TAIL_REPORTERS {
        let name = format!("mx{rank}.{}-mail.example", WORDS[rank % WORDS.len()]);
        reporters.push(Reporter {
            organization: name.clone(),
            contact: format!("postmaster@{name}"),
            submitter: name,
            style: IdStyle::Uuid,
            sending_ips: Vec::new(),
        });
    }
    // The big two send from many machines.
    for (i, reporter) in reporters.iter_mut().enumerate() {
        let count = if i < 2 { 16 } else { 4 };
        reporter.sending_ips = (0..count)
            .map(|k| {
                if k % 3 == 2 {
                    format!(
                        "2001:db8:{:x}::{:x}",
                        rng.random_range(1..0xffff),
                        rng.random_range(1..0xffff)
                    )
                } else {
                    format!("198.51.{}.{}", i % 200, rng.random_range(1..255))
                }
            })
            .collect();
    }
    reporters
}

/// Domain `i`, from its own random stream (so it does not depend on the domain count).
fn make_domain(seed: u64, i: usize) -> Domain {
    let mut rng = keyed_rng(seed, &[STREAM_DOMAIN, i as u64]);
    let name = format!("{}{i}.example", WORDS[i % WORDS.len()]);
    let mx_count = rng.random_range(1..=4usize);
    let mx: Vec<String> = (1..=mx_count).map(|m| format!("mx{m}.{name}")).collect();
    let mx_ips = (0..mx_count)
        .map(|_| format!("203.0.113.{}", rng.random_range(1..255)))
        .collect();
    let mx_shares = if mx_count == 1 {
        vec![1.0]
    } else {
        let primary = rng.random_range(0.7..=0.9);
        let other = (1.0 - primary) / (mx_count - 1) as f64;
        std::iter::once(primary)
            .chain(std::iter::repeat_n(other, mx_count - 1))
            .collect()
    };
    let policy = match rng.random_range(0..100) {
        0..60 => DomainPolicy::Sts(StsMode::Enforce),
        60..80 => DomainPolicy::Sts(StsMode::Testing),
        80..90 => DomainPolicy::Tlsa,
        _ => DomainPolicy::None,
    };
    let dane = if policy == DomainPolicy::Tlsa || rng.random_bool(0.1) {
        (0..rng.random_range(1..=2))
            .map(|_| {
                let hash: String = (0..32)
                    .map(|_| format!("{:02X}", rng.random::<u8>()))
                    .collect();
                format!("3 1 1 {hash}")
            })
            .collect()
    } else {
        Vec::new()
    };
    let max_age = *[86_400u64, 604_800, 2_592_000, 31_557_600]
        .choose(&mut rng)
        .expect("non-empty");
    let volume = log_uniform(&mut rng, VOLUME_RANGE);

    let mut reporters: Vec<ReporterShare> = BIG_REPORTERS
        .iter()
        .enumerate()
        .map(|(reporter, &(.., share))| ReporterShare { reporter, share })
        .collect();
    let tail_share = 1.0 - BIG_REPORTERS.iter().map(|r| r.4).sum::<f64>();
    let tail_weight = |rank: usize| 1.0 / (rank as f64 + 1.0);
    let mut ranks: Vec<usize> = (0..TAIL_REPORTERS).collect();
    let mut drawn = Vec::new();
    for _ in 0..rng.random_range(TAIL_PER_DOMAIN.0..=TAIL_PER_DOMAIN.1) {
        let total: f64 = ranks.iter().map(|&r| tail_weight(r)).sum();
        let mut pick = rng.random_range(0.0..total);
        let position = ranks
            .iter()
            .position(|&r| {
                pick -= tail_weight(r);
                pick < 0.0
            })
            .unwrap_or(ranks.len() - 1);
        drawn.push(ranks.remove(position));
    }
    drawn.sort_unstable();
    let drawn_weight: f64 = drawn.iter().map(|&r| tail_weight(r)).sum();
    reporters.extend(drawn.iter().map(|&rank| ReporterShare {
        reporter: BIG_REPORTERS.len() + rank,
        share: tail_share * tail_weight(rank) / drawn_weight,
    }));

    let menu: &[ResultType] = match policy {
        DomainPolicy::Sts(_) => &STS_PERSISTENT_TYPES,
        DomainPolicy::Tlsa => &DANE_PERSISTENT_TYPES,
        DomainPolicy::None => &[],
    };
    let persistent_count = if menu.is_empty() {
        0
    } else {
        rng.random_range(0..=2)
    };
    let persistent = menu
        .choose_multiple(&mut rng, persistent_count)
        .cloned()
        .collect::<Vec<_>>()
        .into_iter()
        .map(|result_type| PersistentFailure {
            result_type,
            mx: rng.random_range(0..mx_count),
            rate: log_uniform(&mut rng, PERSISTENT_RATE_RANGE),
        })
        .collect();

    Domain {
        name,
        mx,
        mx_ips,
        mx_shares,
        policy,
        dane,
        max_age,
        volume,
        reporters,
        persistent,
    }
}

/// The `policy` object of a report for the domain under this policy.
fn policy_of(domain: &Domain, policy: DomainPolicy) -> Policy<'static> {
    let (policy_type, policy_string, mx_host) = match policy {
        DomainPolicy::Sts(mode) => {
            let mut lines = Vec::with_capacity(domain.mx.len() + 3);
            lines.push(Cow::Borrowed("version: STSv1"));
            lines.push(format!("mode: {}", mode.as_str()).into());
            lines.extend(domain.mx.iter().map(|mx| format!("mx: {mx}").into()));
            lines.push(format!("max_age: {}", domain.max_age).into());
            (
                PolicyType::Sts,
                lines,
                owned_texts(domain.mx.iter().cloned()),
            )
        }
        DomainPolicy::Tlsa => (
            PolicyType::Tlsa,
            owned_texts(domain.dane.iter().cloned()),
            Vec::new(),
        ),
        DomainPolicy::None => (PolicyType::NoPolicyFound, Vec::new(), Vec::new()),
    };
    Policy {
        policy_type: Some(policy_type),
        policy_string,
        policy_domain: Some(domain.name.clone().into()),
        mx_host,
    }
}

/// One failure-details entry: on MX `mx`, or policy-level (no MX, no sending IP) for the
/// types that happen before a connection.
fn failure(
    rng: &mut ChaCha8Rng,
    reporter: &Reporter,
    domain: &Domain,
    result_type: ResultType,
    mx: Option<usize>,
    count: u64,
) -> FailureDetails<'static> {
    let policy_level = matches!(
        result_type,
        ResultType::StsPolicyFetchError
            | ResultType::StsPolicyInvalid
            | ResultType::StsWebpkiInvalid
    );
    let mx = mx.filter(|_| !policy_level);
    FailureDetails {
        sending_mta_ip: mx.map(|_| {
            reporter
                .sending_ips
                .choose(rng)
                .expect("every reporter has sending IPs")
                .clone()
                .into()
        }),
        receiving_mx_hostname: mx.map(|m| domain.mx[m].clone().into()),
        receiving_mx_helo: None,
        receiving_ip: mx.map(|m| domain.mx_ips[m].clone().into()),
        failed_session_count: Some(count),
        additional_information: None,
        failure_reason_code: reason_code(&result_type).map(Cow::Borrowed),
        result_type,
    }
}

/// The reason codes the generator writes.
fn reason_code(result_type: &ResultType) -> Option<&'static str> {
    Some(match result_type {
        ResultType::ValidationFailure => "X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
        ResultType::CertificateHostMismatch => "X509_V_ERR_HOSTNAME_MISMATCH",
        ResultType::CertificateExpired => "X509_V_ERR_CERT_HAS_EXPIRED",
        ResultType::CertificateNotTrusted => "X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN",
        ResultType::StsPolicyFetchError => "bad https response code: 404",
        _ => return None,
    })
}

/// How long after the end of its day a report arrives (module docs, "Arrival").
fn arrival_delay(rng: &mut ChaCha8Rng, style: IdStyle) -> Duration {
    let (low, high) = style.delay_hours();
    let mut seconds = rng.random_range(low * 3600..high * 3600);
    if rng.random_bool(RETRY_RATE) {
        seconds += rng.random_range(RETRY_DELAY_HOURS.0 * 3600..=RETRY_DELAY_HOURS.1 * 3600);
    }
    Duration::seconds(seconds.min(MAX_DELAY_HOURS * 3600))
}

/// The share of the day starting at `day_start` inside [start, end).
fn share_of_day(day_start: DateTime<Utc>, start: DateTime<Utc>, end: Option<DateTime<Utc>>) -> f64 {
    let day_end = day_start + Duration::days(1);
    let from = start.max(day_start);
    let to = end.map_or(day_end, |end| end.min(day_end));
    if to <= from {
        return 0.0;
    }
    (to - from).num_seconds() as f64 / 86_400.0
}

// ---------------------------------------------------------------------------------------
// Randomness.

/// splitmix64's finaliser: a good 64-bit mix, to derive stream keys.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The random stream keyed by `parts` (a stream tag, then indices) under `seed`.
fn keyed_rng(seed: u64, parts: &[u64]) -> ChaCha8Rng {
    let key = parts
        .iter()
        .fold(splitmix64(seed), |key, &part| splitmix64(key ^ part));
    ChaCha8Rng::seed_from_u64(key)
}

fn log_uniform(rng: &mut ChaCha8Rng, (low, high): (f64, f64)) -> f64 {
    (low.ln() + rng.random::<f64>() * (high.ln() - low.ln())).exp()
}

/// N(0, 1), Box-Muller.
fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1 = 1.0 - rng.random::<f64>(); // (0, 1]: ln is finite
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
}

/// Poisson(lambda): Knuth's product of uniforms below 30, a rounded normal above (where
/// its error is far below the model's own).
fn poisson(rng: &mut ChaCha8Rng, lambda: f64) -> u64 {
    if lambda <= 0.0 {
        return 0;
    }
    if lambda < 30.0 {
        let limit = (-lambda).exp();
        let mut product: f64 = rng.random();
        let mut k = 0;
        while product > limit {
            k += 1;
            product *= rng.random::<f64>();
        }
        k
    } else {
        (lambda + lambda.sqrt() * standard_normal(rng))
            .round()
            .max(0.0) as u64
    }
}

/// Binomial(n, p): exact for small n, Poisson when successes (or failures) are rare, a
/// rounded normal otherwise.
fn binomial(rng: &mut ChaCha8Rng, n: u64, p: f64) -> u64 {
    if n == 0 || p <= 0.0 {
        return 0;
    }
    if p >= 1.0 {
        return n;
    }
    let mean = n as f64 * p;
    if n <= 32 {
        (0..n).filter(|_| rng.random_bool(p)).count() as u64
    } else if mean < 30.0 {
        poisson(rng, mean).min(n)
    } else if n as f64 - mean < 30.0 {
        n - poisson(rng, n as f64 - mean).min(n)
    } else {
        let sd = (mean * (1.0 - p)).sqrt();
        (mean + sd * standard_normal(rng))
            .round()
            .clamp(0.0, n as f64) as u64
    }
}

/// `n` sessions split among MX hosts by their shares (a multinomial, as binomials).
fn split(rng: &mut ChaCha8Rng, n: u64, shares: &[f64]) -> Vec<u64> {
    let mut parts = Vec::with_capacity(shares.len());
    let (mut left, mut mass) = (n, 1.0);
    for (i, &share) in shares.iter().enumerate() {
        let part = if i + 1 == shares.len() {
            left
        } else {
            binomial(rng, left, (share / mass).min(1.0))
        };
        parts.push(part);
        left -= part;
        mass -= share;
    }
    parts
}

fn pick_weighted(rng: &mut ChaCha8Rng, weights: &[(ResultType, u32)]) -> ResultType {
    let total: u32 = weights.iter().map(|(_, w)| w).sum();
    let mut pick = rng.random_range(0..total);
    for (result_type, weight) in weights {
        if pick < *weight {
            return result_type.clone();
        }
        pick -= weight;
    }
    unreachable!("pick < total")
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use tlsrpt_schemas::parse_report;

    use super::*;

    /// Small enough for debug builds: 200 domains, 40 days, two incidents of each kind.
    fn small() -> HistoryConfig {
        HistoryConfig {
            domains: 200,
            days: 40,
            incidents: 12,
            warmup_days: 14,
            ..HistoryConfig::default()
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_history() {
        let config = HistoryConfig {
            domains: 60,
            days: 24,
            ..small()
        };
        let a = History::new(config.clone(), 7);
        let b = History::new(config.clone(), 7);
        let c = History::new(config, 8);
        assert_eq!(a.incidents(), b.incidents());
        let mut count = 0;
        for (x, y) in a.reports().zip(b.reports()) {
            assert_eq!((&x.json, x.received_at), (&y.json, y.received_at));
            count += 1;
        }
        assert_eq!(count, b.reports().count());
        assert!(count > 5_000, "{count} reports");
        let differs = a.reports().zip(c.reports()).any(|(x, y)| x.json != y.json);
        assert!(differs);
    }

    #[test]
    fn every_report_parses_with_consistent_counts_and_arrives_in_time() {
        let history = History::new(small(), 11);
        let mut ids = HashSet::new();
        let mut count = 0;
        for generated in history.reports() {
            count += 1;
            let parsed = parse_report(&generated.json).expect("parses").into_owned();
            assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
            assert_eq!(parsed, generated.report);
            for policy in &parsed.policies {
                let details: u64 = policy
                    .failure_details
                    .iter()
                    .map(|f| f.failed_session_count.expect("always written"))
                    .sum();
                assert_eq!(policy.summary.total_failure_session_count, Some(details));
                assert!(policy.summary.total_successful_session_count.is_some());
                assert_eq!(
                    policy.policy.policy_domain.as_deref(),
                    Some(generated.policy_domain.as_str())
                );
            }
            let sessions: u64 = parsed.policies[..1]
                .iter()
                .map(|p| {
                    p.summary.total_successful_session_count.unwrap()
                        + p.summary.total_failure_session_count.unwrap()
                })
                .sum();
            assert!(sessions > 0);
            let day_end = parsed.date_range.end_datetime + Duration::seconds(1);
            assert_eq!(
                day_end - parsed.date_range.start_datetime,
                Duration::days(1)
            );
            let delay = generated.received_at - day_end;
            assert!(
                delay >= Duration::zero() && delay <= Duration::hours(48),
                "{delay}"
            );
            assert!(ids.insert((generated.submitter.clone(), parsed.report_id.clone())));
        }
        // 200 domains × 40 days × about 10 reporters, most of them with mail every day.
        assert!((40_000..90_000).contains(&count), "{count} reports");
    }

    #[test]
    fn every_kind_of_incident_is_placed_and_shows() {
        let history = History::new(small(), 5);
        let incidents = history.incidents();
        assert_eq!(incidents.len(), 12);
        let domains: HashSet<&str> = incidents.iter().map(|i| i.domain.as_str()).collect();
        assert_eq!(domains.len(), incidents.len(), "distinct domains");
        for kind in TruthKind::ALL {
            assert!(
                incidents
                    .iter()
                    .any(|i| i.kind == kind && i.first_evidence_at.is_some()),
                "{kind:?}: {incidents:#?}"
            );
        }
        let warmup_end = history.day_start(history.config().warmup_days);
        for incident in incidents {
            assert!(incident.starts_at >= warmup_end);
            assert!(incident.ends_at.is_none_or(|end| end > incident.starts_at));
            if let Some(evidence) = incident.first_evidence_at {
                assert!(evidence > incident.starts_at, "{incident:#?}");
            }
        }

        // The evidence is among the reports, and nothing shows a mode change earlier.
        let by_id: HashMap<&str, &TruthIncident> =
            incidents.iter().map(|i| (i.domain.as_str(), i)).collect();
        let mut evidence_seen = HashSet::new();
        for generated in history.reports() {
            let Some(incident) = by_id.get(generated.policy_domain.as_str()) else {
                continue;
            };
            let report = &generated.report;
            match incident.kind {
                TruthKind::ModeChange => {
                    let new_mode = incident.new_mode.as_deref();
                    if report
                        .policies
                        .iter()
                        .any(|p| p.policy.sts_mode() == new_mode)
                    {
                        let evidence = incident.first_evidence_at.expect("shows");
                        assert!(generated.received_at >= evidence);
                        if generated.received_at == evidence {
                            evidence_seen.insert(incident.id);
                        }
                    }
                }
                TruthKind::ReporterQuiet => {
                    let day = report.date_range.start_datetime;
                    let quiet =
                        day >= incident.starts_at && incident.ends_at.is_none_or(|end| day < end);
                    if quiet {
                        assert_ne!(
                            Some(&*report.organization_name),
                            incident.reporter.as_deref(),
                            "{incident:#?}"
                        );
                    }
                }
                _ => {
                    let shows = report
                        .policies
                        .iter()
                        .flat_map(|p| &p.failure_details)
                        .any(|f| {
                            Some(f.result_type.as_str()) == incident.result_type.as_deref()
                                && f.receiving_mx_hostname.as_deref() == incident.mx.as_deref()
                        });
                    if shows && Some(generated.received_at) == incident.first_evidence_at {
                        evidence_seen.insert(incident.id);
                    }
                }
            }
        }
        for incident in incidents {
            match (incident.kind, incident.first_evidence_at) {
                (TruthKind::ReporterQuiet, Some(evidence)) => {
                    // The second quiet day complete: it ends at D+2, its reports
                    // may come until 48 h later.
                    assert_eq!(evidence, incident.starts_at + Duration::days(4));
                }
                (_, Some(_)) => assert!(evidence_seen.contains(&incident.id), "{incident:#?}"),
                (_, None) => {}
            }
        }
    }

    #[test]
    fn the_default_history_places_its_incidents_after_the_warmup() {
        let history = History::new(HistoryConfig::default(), 1);
        assert_eq!(history.incidents().len(), 50);
        assert_eq!(history.domain_days(), 900_000);
        let shown = history
            .incidents()
            .iter()
            .filter(|i| i.first_evidence_at.is_some())
            .count();
        assert!(shown >= 45, "{shown} of 50 show");
    }

    #[test]
    fn small_reporters_skip_days_and_noise_rarely_looks_like_an_expired_certificate() {
        let history = History::new(small(), 3);
        let incident_domains: HashSet<&str> = history
            .incidents()
            .iter()
            .map(|i| i.domain.as_str())
            .collect();
        let mut days_reported: HashMap<(String, String), u32> = HashMap::new();
        let mut expired_domain_days = HashSet::new();
        for generated in history.reports() {
            *days_reported
                .entry((generated.policy_domain.clone(), generated.submitter.clone()))
                .or_default() += 1;
            let expired = generated
                .report
                .policies
                .iter()
                .flat_map(|p| &p.failure_details)
                .any(|f| f.result_type == ResultType::CertificateExpired);
            if expired && !incident_domains.contains(generated.policy_domain.as_str()) {
                expired_domain_days.insert((
                    generated.policy_domain.clone(),
                    generated.report.date_range.start_datetime,
                ));
            }
        }
        let days = history.config().days;
        let big: HashSet<&str> = BIG_REPORTERS.iter().map(|r| r.2).collect();
        let tail_pairs = days_reported
            .iter()
            .filter(|((_, submitter), _)| !big.contains(submitter.as_str()));
        let (mut gappy, mut total) = (0, 0);
        for (_, &reported) in tail_pairs {
            total += 1;
            if reported < days {
                gappy += 1;
            }
        }
        assert!(
            gappy * 10 > total,
            "{gappy} of {total} tail pairs skip days"
        );
        let share = expired_domain_days.len() as f64 / history.domain_days() as f64;
        assert!(share < 0.05, "{share}");
    }

    #[test]
    fn the_samplers_have_the_right_moments() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for lambda in [0.5, 4.0, 29.0, 31.0, 500.0] {
            let draws: Vec<f64> = (0..20_000)
                .map(|_| poisson(&mut rng, lambda) as f64)
                .collect();
            let mean = draws.iter().sum::<f64>() / draws.len() as f64;
            let var = draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / draws.len() as f64;
            assert!(
                (mean - lambda).abs() < 0.05 * lambda + 0.05,
                "{lambda}: {mean}"
            );
            assert!(
                (var - lambda).abs() < 0.1 * lambda + 0.05,
                "{lambda}: {var}"
            );
        }
        for (n, p) in [(10, 0.3), (1000, 0.01), (1000, 0.5), (1000, 0.99)] {
            let draws: Vec<f64> = (0..20_000)
                .map(|_| binomial(&mut rng, n, p) as f64)
                .collect();
            let mean = draws.iter().sum::<f64>() / draws.len() as f64;
            let expected = n as f64 * p;
            assert!(
                (mean - expected).abs() < 0.05 * expected + 0.05,
                "{n} {p}: {mean}"
            );
        }
        let parts = split(&mut rng, 10_000, &[0.8, 0.1, 0.1]);
        assert_eq!(parts.iter().sum::<u64>(), 10_000);
    }
}
