//! One evaluation pass: the reports replayed hour by hour in the order they arrived, the
//! detectors run on what each hour brought, incidents opened, grouped and ended.
//!
//! A pass starts where the previous one stopped (the state's watermark) and walks to `now`
//! in one-hour steps, so a pass that catches up on three months of history fires exactly
//! the alerts, at exactly the times, that hourly passes would have fired live. At each step
//! only the (domain, day) pairs that received reports are judged; a day is judged from its
//! first reports on (rates do not need the whole day), and judged again as later reports
//! land, without firing twice: an open incident absorbs what it already said.

use chrono::{DateTime, Duration, DurationRound, Utc};

use crate::alert::{AlertEvent, Severity};
use crate::config::AlertConfig;
use crate::detect::{self, Finding};
use crate::ledger::Ledger;
use crate::message;
use crate::observations::{Day, Names, Observations, Part, Sym, date_of, day_of};
use crate::priors::FleetPriors;
use crate::state::{AlertState, Cooldown, OpenIncident, Subject};
use foldhash::HashMap;

/// What a pass did.
#[derive(Debug, Clone, Default)]
pub struct PassOutcome {
    /// Alerts in the order they happened.
    pub events: Vec<AlertEvent>,
    /// One-hour steps walked.
    pub steps: u64,
    /// Reports (per domain) replayed in the steps, and before the first one as history.
    pub replayed: usize,
    pub history: usize,
    /// (domain, day) pairs judged.
    pub judged: u64,
}

/// Runs a pass over `observations` (sorted by arrival) up to `now`, updating `state`, on
/// as many threads as there are cores.
pub fn evaluate(
    config: &AlertConfig,
    observations: &Observations,
    state: &mut AlertState,
    now: DateTime<Utc>,
) -> PassOutcome {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    evaluate_on(config, observations, state, now, threads)
}

/// [`evaluate`] on `threads` threads (at least one). The outcome does not depend on how
/// many: every detector, incident and cool-down belongs to one domain, so the domains are
/// dealt to the threads (by a hash of the name), each thread replays its domains' reports,
/// and the alerts are put back in the order they happened (time, then domain) and the new
/// incidents numbered in that order.
pub fn evaluate_on(
    config: &AlertConfig,
    observations: &Observations,
    state: &mut AlertState,
    now: DateTime<Utc>,
    threads: usize,
) -> PassOutcome {
    let parts = observations.parts();
    debug_assert!(parts.is_sorted_by_key(|p| p.received_at));
    let Some(first) = parts.first() else {
        state.watermark = Some(now);
        return PassOutcome::default();
    };
    let start = state.watermark.unwrap_or_else(|| {
        DateTime::from_timestamp_micros(first.received_at - 1).expect("a valid time")
    });
    // Small passes (a scheduled one reads hours, not months) are not worth the threads.
    let threads = if parts.len() < 100_000 {
        1
    } else {
        threads.max(1)
    };
    let names = &observations.names;
    let shard_of_name: Vec<usize> = (0..names.len())
        .map(|i| (stable_hash(names.name(Sym(i as u32)).as_bytes()) % threads as u64) as usize)
        .collect();
    let shard_of_domain = |domain: &str| (stable_hash(domain.as_bytes()) % threads as u64) as usize;

    // Each shard's reports and state; new incidents get ids from a range of their own,
    // renumbered below.
    let base = state.next_incident_id;
    // One thread replays `parts` as they are; several get a copy of their domains' parts.
    let mut shard_parts: Vec<Vec<Part>> = vec![Vec::new(); if threads == 1 { 0 } else { threads }];
    for part in parts.iter().filter(|_| threads > 1) {
        shard_parts[shard_of_name[part.domain.0 as usize]].push(*part);
    }
    let mut shard_states: Vec<AlertState> = (0..threads)
        .map(|k| AlertState {
            watermark: state.watermark,
            next_incident_id: base + ((k as u64) << SHARD_ID_BITS),
            ..AlertState::default()
        })
        .collect();
    for (domain, incidents) in std::mem::take(&mut state.open) {
        shard_states[shard_of_domain(&domain)]
            .open
            .insert(domain, incidents);
    }
    for cooldown in std::mem::take(&mut state.cooldowns) {
        shard_states[shard_of_domain(&cooldown.domain)]
            .cooldowns
            .push(cooldown);
    }

    // What the fleet says of each failure type, from every domain's reports (each shard
    // counts its domains').
    let priors = if threads == 1 {
        FleetPriors::count(observations, parts.iter())
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = shard_parts
                .iter()
                .map(|parts| scope.spawn(move || FleetPriors::count(observations, parts.iter())))
                .collect();
            let mut priors = FleetPriors::default();
            for handle in handles {
                priors.merge(handle.join().expect("a counting thread does not panic"));
            }
            priors
        })
    };
    let priors = &priors;

    let outcomes: Vec<PassOutcome> = if threads == 1 {
        vec![evaluate_shard(
            config,
            observations,
            priors,
            parts,
            &mut shard_states[0],
            start,
            now,
        )]
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = shard_parts
                .iter()
                .zip(shard_states.iter_mut())
                .map(|(parts, state)| {
                    scope.spawn(move || {
                        evaluate_shard(config, observations, priors, parts, state, start, now)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("an evaluation thread does not panic"))
                .collect()
        })
    };

    let mut outcome = PassOutcome::default();
    for shard in outcomes {
        outcome.events.extend(shard.events);
        outcome.steps = outcome.steps.max(shard.steps);
        outcome.replayed += shard.replayed;
        outcome.history += shard.history;
        outcome.judged += shard.judged;
    }
    // In the order they happened; one domain's alerts all come from one thread, in order.
    outcome
        .events
        .sort_by(|a, b| (a.at, &a.policy_domain).cmp(&(b.at, &b.policy_domain)));
    let mut renumbered: HashMap<u64, u64> = HashMap::default();
    for event in &mut outcome.events {
        if event.incident_id >= base {
            let next = base + renumbered.len() as u64;
            event.incident_id = *renumbered.entry(event.incident_id).or_insert(next);
        }
    }
    state.next_incident_id = base + renumbered.len() as u64;
    for shard in shard_states {
        for (domain, mut incidents) in shard.open {
            for incident in &mut incidents {
                if let Some(&id) = renumbered.get(&incident.id) {
                    incident.id = id;
                }
            }
            state.open.insert(domain, incidents);
        }
        state.cooldowns.extend(shard.cooldowns);
        state.watermark = state.watermark.max(shard.watermark);
    }
    state
        .cooldowns
        .sort_by(|a, b| (a.until, &a.domain, &a.subject).cmp(&(b.until, &b.domain, &b.subject)));
    outcome
}

/// The ids a shard may give new incidents: `base + shard << SHARD_ID_BITS` on.
const SHARD_ID_BITS: u32 = 40;

/// FNV-1a: the same on every machine and run, unlike the maps' seeded hashers, so that a
/// domain always goes to the same thread.
fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One shard's pass from `start` to `now`: its domains' parts (sorted by arrival), its
/// domains' state.
fn evaluate_shard(
    config: &AlertConfig,
    observations: &Observations,
    priors: &FleetPriors,
    parts: &[Part],
    state: &mut AlertState,
    start: DateTime<Utc>,
    now: DateTime<Utc>,
) -> PassOutcome {
    let mut outcome = PassOutcome::default();
    let settle = Duration::minutes(i64::from(config.evaluation.settle_minutes));
    let mut pass = Pass {
        config,
        priors,
        names: &observations.names,
        ledger: Ledger::default(),
        state,
    };

    // What arrived before the pass (less the settling margin) is history: it makes the
    // baselines, and the previous pass judged it.
    let history_end = (start - settle).timestamp_micros();
    let mut next = parts.partition_point(|p| p.received_at <= history_end);
    for part in &parts[..next] {
        pass.ledger.add(
            part,
            observations.failures_of(part),
            observations.modes_of(part),
        );
    }
    outcome.history = next;

    let mut last_complete: Option<Day> = None;
    let mut step = start;
    // What the step's reports touched: (domain, day, whether the report had failures).
    let mut touched: Vec<(Sym, Day, bool)> = Vec::new();
    while step < now {
        step = (step.duration_trunc(Duration::hours(1)).expect("in range") + Duration::hours(1))
            .min(now);
        outcome.steps += 1;
        pass.state.expire_cooldowns(step);
        let until = step.timestamp_micros();
        touched.clear();
        while next < parts.len() && parts[next].received_at <= until {
            let part = &parts[next];
            pass.ledger.add(
                part,
                observations.failures_of(part),
                observations.modes_of(part),
            );
            touched.push((part.domain, part.day, part.failure_count > 0));
            next += 1;
            outcome.replayed += 1;
        }
        touched.sort_unstable();
        touched.dedup();

        let oldest = day_of(step.date_naive()) - config.evaluation.lookback_days as Day;
        for group in touched.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
            let (domain, day, _) = group[0];
            let failures = group.iter().any(|t| t.2);
            pass.end_incidents(domain, day, step, &mut outcome.events);
            if day >= oldest {
                outcome.judged += 1;
                pass.judge(domain, day, failures, step, &mut outcome.events);
            }
        }

        // Silence is judged once a day, when another day has become complete.
        let complete = day_of(
            (step - Duration::hours(i64::from(config.evaluation.lateness_hours))).date_naive(),
        ) - 1;
        if last_complete != Some(complete) {
            last_complete = Some(complete);
            if config.reporter_quiet.enabled {
                let domains: Vec<Sym> = pass.ledger.domains().collect();
                for domain in domains {
                    for finding in detect::quiet(config, &pass.ledger, domain, complete) {
                        pass.handle(&finding, step, &mut outcome.events);
                    }
                }
            }
        }
    }
    state.watermark = Some(now.max(start));
    outcome
}

struct Pass<'a> {
    config: &'a AlertConfig,
    priors: &'a FleetPriors,
    names: &'a Names,
    ledger: Ledger,
    state: &'a mut AlertState,
}

impl Pass<'_> {
    /// Runs the detectors on one domain's day that reports just arrived for; `failures`
    /// says whether any of those reports had failures (reports without any only lower the
    /// day's failure rates, which cannot make a new failure finding; they can show that a
    /// reporter's failures are its own).
    fn judge(
        &mut self,
        domain: Sym,
        day: Day,
        failures: bool,
        at: DateTime<Utc>,
        events: &mut Vec<AlertEvent>,
    ) {
        if failures {
            for finding in detect::failures(self.config, &self.ledger, self.priors, domain, day) {
                self.handle(&finding, at, events);
            }
        }
        for finding in detect::modes(self.config, &self.ledger, domain, day) {
            self.handle(&finding, at, events);
        }
        // A reporter's spike that a failure incident of the domain explains (open, or just
        // ended) is the same incident seen from another side: it is not paged again.
        let domain_name = self.names.name(domain);
        let explained = self.state.open.get(domain_name).is_some_and(|open| {
            open.iter()
                .any(|i| matches!(i.subject, Subject::Failure { .. }))
        }) || self.state.cooldowns.iter().any(|c| {
            c.domain == domain_name && matches!(c.subject, Subject::Failure { .. }) && at < c.until
        });
        if !explained && self.ledger.day(domain, day).failed > 0 {
            for finding in detect::reporters(self.config, &self.ledger, domain, day) {
                self.handle(&finding, at, events);
            }
        }
    }

    fn subject(&self, finding: &Finding) -> Subject {
        let name = |sym| self.names.name(sym).to_owned();
        match finding {
            Finding::NewResultType { result_type, .. }
            | Finding::FailureSpike { result_type, .. } => Subject::Failure {
                result_type: name(*result_type),
            },
            Finding::ReporterSpike { reporter, .. } => Subject::Reporter {
                reporter: name(*reporter),
            },
            Finding::ReporterQuiet { reporter, .. } => Subject::Quiet {
                reporter: name(*reporter),
            },
            Finding::ModeChange { .. } => Subject::Mode,
        }
    }

    /// Opens an incident for a finding, or adds the finding to the open one.
    fn handle(&mut self, finding: &Finding, at: DateTime<Utc>, events: &mut Vec<AlertEvent>) {
        let domain = self.names.name(finding.domain());
        let subject = self.subject(finding);
        let (day, mx, resolve_below) = match finding {
            Finding::NewResultType { day, .. } => {
                (*day, None, self.config.new_result_type.min_rate)
            }
            Finding::FailureSpike {
                day, mx, baseline, ..
            } => (*day, self.names.name_opt(*mx), baseline.threshold),
            Finding::ReporterSpike { day, baseline, .. } => (*day, None, baseline.threshold),
            Finding::ModeChange { day, .. } => (*day, None, 0.0),
            Finding::ReporterQuiet { since, .. } => (*since, None, 0.0),
        };
        if let Some(open) = self.state.open_incident_mut(domain, &subject) {
            open.last_day = open.last_day.max(date_of(day));
            if let Some(mx) = mx
                && !open.mxs.iter().any(|m| m == mx)
            {
                open.mxs.push(mx.to_owned());
                open.mxs.sort();
            }
            open.resolve_below = open.resolve_below.max(resolve_below);
            return;
        }
        if self.state.cooling(domain, &subject, at) {
            return;
        }
        let severity = self.severity(finding);
        let id = self.state.next_incident_id;
        self.state.next_incident_id += 1;
        let event = message::fired(
            self.names,
            &self.ledger,
            finding,
            id,
            at,
            severity,
            self.config.evaluation.baseline_days,
        );
        let incident = OpenIncident {
            id,
            domain: domain.to_owned(),
            subject: subject.clone(),
            detector: event.detector,
            severity,
            opened_at: at,
            first_day: date_of(day),
            last_day: date_of(day),
            mxs: event.receiving_mx_hostnames.clone(),
            resolve_below,
            usual_sessions: self.usual_sessions(finding.domain(), day),
        };
        events.push(event);
        if subject == Subject::Mode {
            // A mode change is an event, not a state: nothing ends it. It may not fire
            // again for the same domain until its new mode has had a baseline's time.
            self.state.cooldowns.push(Cooldown {
                domain: domain.to_owned(),
                subject,
                until: at + Duration::days(i64::from(self.config.evaluation.baseline_days)),
            });
            return;
        }
        self.state
            .open
            .entry(domain.to_owned())
            .or_default()
            .push(incident);
    }

    fn severity(&self, finding: &Finding) -> Severity {
        match finding {
            Finding::NewResultType {
                domain,
                day,
                result_type,
                ..
            }
            | Finding::FailureSpike {
                domain,
                day,
                result_type,
                ..
            } => {
                let enforced = self
                    .names
                    .get("enforce")
                    .is_some_and(|enforce| self.ledger.day(*domain, *day).has_mode(enforce));
                let result_type = self.names.name(*result_type);
                // DANE is enforced by nature: a sender that found TLSA records refuses.
                let dane = matches!(
                    result_type,
                    "tlsa-invalid" | "dnssec-invalid" | "dane-required"
                );
                Severity::of_failures(result_type, enforced || dane)
            }
            Finding::ReporterSpike { .. } | Finding::ReporterQuiet { .. } => Severity::Warning,
            Finding::ModeChange { new, .. } => {
                if self.names.name(*new) == "enforce" {
                    Severity::Info
                } else {
                    Severity::Warning
                }
            }
        }
    }

    /// The median sessions of the domain's days before `day`.
    fn usual_sessions(&self, domain: Sym, day: Day) -> u64 {
        let mut sessions: Vec<u64> = self
            .ledger
            .days_with_data(
                domain,
                day - self.config.evaluation.baseline_days as Day,
                day,
            )
            .map(|(_, d)| d.sessions)
            .collect();
        if sessions.is_empty() {
            return 0;
        }
        let mid = sessions.len() / 2;
        *sessions.select_nth_unstable(mid).1
    }

    /// Ends the domain's open incidents that a later day shows over.
    fn end_incidents(
        &mut self,
        domain: Sym,
        day: Day,
        at: DateTime<Utc>,
        events: &mut Vec<AlertEvent>,
    ) {
        let name = self.names.name(domain);
        let Some(open) = self.state.open.get(name) else {
            return;
        };
        let today = self.ledger.day(domain, day);
        let min_sessions = self.config.spike.min_sessions;
        let mut ended = Vec::new();
        let mut ongoing = Vec::new();
        for incident in open {
            if day <= day_of(incident.last_day)
                && !matches!(incident.subject, Subject::Quiet { .. })
            {
                continue;
            }
            let enough = today.sessions >= min_sessions.max(incident.usual_sessions / 2);
            let over = match &incident.subject {
                Subject::Failure { result_type } => {
                    let Some(result_type) = self.names.get(result_type) else {
                        continue;
                    };
                    if !enough {
                        continue;
                    }
                    let failed: u64 = if incident.mxs.is_empty() {
                        today.failed_of(None, result_type)
                    } else {
                        incident
                            .mxs
                            .iter()
                            .filter_map(|mx| self.names.get(mx))
                            .map(|mx| today.failed_of(Some(mx), result_type))
                            .sum()
                    };
                    failed as f64 / today.sessions as f64 <= incident.resolve_below
                }
                Subject::Reporter { reporter } => {
                    let Some(r) = self
                        .names
                        .get(reporter)
                        .and_then(|r| today.reporter(r))
                        .filter(|r| r.sessions >= min_sessions)
                    else {
                        continue;
                    };
                    r.failed as f64 / r.sessions as f64 <= incident.resolve_below
                }
                Subject::Quiet { reporter } => {
                    day >= day_of(incident.first_day)
                        && self
                            .names
                            .get(reporter)
                            .is_some_and(|r| today.reporter(r).is_some())
                }
                Subject::Mode | Subject::Rule { .. } => false,
            };
            if over {
                ended.push(incident.subject.clone());
            } else if !matches!(incident.subject, Subject::Quiet { .. }) {
                ongoing.push(incident.subject.clone());
            }
        }
        for subject in ongoing {
            if let Some(open) = self.state.open_incident_mut(name, &subject) {
                open.last_day = open.last_day.max(date_of(day));
            }
        }
        for subject in ended {
            if let Some(incident) = self.state.close(name, &subject) {
                events.push(message::resolved(&incident, at, day));
                self.state.cooldowns.push(Cooldown {
                    domain: name.to_owned(),
                    subject,
                    until: at + Duration::hours(i64::from(self.config.evaluation.cooldown_hours)),
                });
            }
        }
    }
}
