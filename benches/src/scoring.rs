//! Scores alerts against a [`History`](crate::history::History)'s ground truth: which
//! incidents were found, how soon after their first evidence, and what fired that no
//! incident explains.
//!
//! # Matching
//! A firing alert matches an incident when it is about the incident's policy domain, fired
//! at or after the incident started and, for an incident that ended, at most
//! [`GRACE_AFTER_END`] after its end (the last reports of its last day arrive up to two
//! days later), and its detector fits the kind:
//!
//! | incident | detector |
//! |---|---|
//! | cert-expired, starttls-stopped, sts-fetch-error, failure-spike | `new-result-type` or `failure-spike` of the incident's result type; `reporter-spike` (the same failures seen from one sender) |
//! | mode-change | `mode-change` to the incident's new mode |
//! | reporter-quiet | `reporter-quiet` of the incident's reporter |
//!
//! An incident is *detected in time* when its first matching alert fired at most `within`
//! after [`TruthIncident::first_evidence_at`], *late* when after that, *missed* when no
//! alert matches. Incidents that nothing in the history shows (no first evidence) cannot
//! be detected and are left out of recall (counted apart). A firing alert that matches no
//! incident is a *false alert*; matched firing alerts beyond the first of an incident are
//! *duplicates*.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use serde::Serialize;
use tlsrpt_alerts::{AlertConfig, AlertEvent, AlertState, Detector, EventState, Observations};

use crate::history::{HistoryConfig, TruthIncident, TruthKind};

/// How long after the history's last day the replay goes on: until the last report has
/// arrived (48 hours after the last day ends), when that day is complete and the silences
/// that end on it are judged. Not longer: a day after the history would then count as
/// complete, and every daily reporter of every domain would look gone quiet on it,
/// because the history ends, not because anything happened. (The last reporter-quiet
/// incident starts at least five days before the end, so its reference time, four days
/// after its first quiet day, is inside the history.)
pub const REPLAY_TAIL: Duration = Duration::hours(48);

/// What [`replay`] did.
#[derive(Debug, Clone)]
pub struct Replay {
    /// Every alert, in the order they happened.
    pub events: Vec<AlertEvent>,
    /// The (report, policy domain) parts loaded, and the one-hour steps walked.
    pub parts: usize,
    pub steps: u64,
    pub load_seconds: f64,
    pub evaluate_seconds: f64,
    /// The end of the replay.
    pub now: DateTime<Utc>,
    /// What was replayed.
    pub observations: Observations,
}

/// Loads the observations of the whole history from `data_dir/tables` and replays them
/// with the given alert configuration in ONE pass from an empty state, up to the end of
/// the history plus [`REPLAY_TAIL`]. A pass walks hour by hour, so it fires exactly what
/// hourly passes would have fired live.
pub fn replay(
    data_dir: &Path,
    history: &HistoryConfig,
    config: &AlertConfig,
) -> anyhow::Result<Replay> {
    let from = history.start_date;
    let last = from + Duration::days(i64::from(history.days) - 1);
    let end = Utc.from_utc_datetime(
        &(last + Duration::days(1))
            .and_hms_opt(0, 0, 0)
            .expect("midnight"),
    );
    let now = end + REPLAY_TAIL;
    let started = Instant::now();
    let observations = tlsrpt_alerts::load::observations(&data_dir.join("tables"), from, last, now)
        .context("cannot load the observations")?;
    let load_seconds = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut state = AlertState::default();
    let outcome = tlsrpt_alerts::evaluate(config, &observations, &mut state, now);
    let evaluate_seconds = started.elapsed().as_secs_f64();
    Ok(Replay {
        events: outcome.events,
        parts: observations.parts().len(),
        steps: outcome.steps,
        load_seconds,
        evaluate_seconds,
        now,
        observations,
    })
}

/// How long after an incident's end an alert may still be about it.
pub const GRACE_AFTER_END: Duration = Duration::days(3);

/// The score of one run (module docs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    /// The detection-delay target: in time means at most this long after first evidence.
    pub within_seconds: i64,
    /// Incidents in the ground truth.
    pub incidents: usize,
    /// Incidents with a first evidence: the denominator of recall.
    pub scored: usize,
    /// Ids of the incidents nothing showed (not scored).
    pub unscorable: Vec<usize>,
    pub detected_in_time: usize,
    pub detected_late: Vec<Detection>,
    pub missed: Vec<Missed>,
    /// `detected_in_time / scored` (1 when nothing is scored).
    pub recall: f64,
    /// Detected (in time or late) over scored.
    pub recall_any_delay: f64,
    /// By incident kind (kebab-case names).
    pub by_kind: BTreeMap<String, KindScore>,
    /// Every detection, in incident order (delays signed: an alert may fire on the
    /// incident's first failures before the report the ground truth names arrives).
    pub detections: Vec<Detection>,
    /// Median and largest delay of the detections, in seconds.
    pub delay_median_seconds: Option<i64>,
    pub delay_max_seconds: Option<i64>,
    /// Firing alerts, and those that matched an incident.
    pub firing: usize,
    pub matched_firing: usize,
    /// Matched firing alerts beyond the first of each incident.
    pub duplicates: usize,
    /// Matched firing alerts per detected incident.
    pub alerts_per_incident: f64,
    pub false_alerts: Vec<FalseAlert>,
    /// The false-alert rate's denominator: domains × days.
    pub domain_days: u64,
    pub false_alerts_per_10k_domain_days: f64,
    /// Resolved alerts, and those of incidents that matched.
    pub resolutions: usize,
    pub matched_resolutions: usize,
}

/// How one incident was found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    pub incident: usize,
    pub kind: TruthKind,
    pub domain: String,
    /// The first matching alert: its detector and when it fired.
    pub detector: Detector,
    pub at: DateTime<Utc>,
    pub first_evidence_at: DateTime<Utc>,
    /// `at - first_evidence_at`.
    pub delay_seconds: i64,
    /// Matching firing alerts (the first and its duplicates).
    pub alerts: usize,
    /// The incident as injected.
    pub truth: TruthIncident,
}

/// An incident no alert matched.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Missed {
    pub incident: usize,
    pub kind: TruthKind,
    pub domain: String,
    pub first_evidence_at: DateTime<Utc>,
    /// The incident as injected.
    pub truth: TruthIncident,
}

/// A firing alert that matched no incident.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FalseAlert {
    pub detector: Detector,
    pub domain: String,
    pub day: NaiveDate,
    pub at: DateTime<Utc>,
    pub title: String,
}

/// Counts for one kind of incident.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KindScore {
    pub scored: usize,
    pub in_time: usize,
    pub late: usize,
    pub missed: usize,
    pub unscorable: usize,
}

/// Whether a firing alert is about `incident` (module docs, "Matching").
pub fn matches(incident: &TruthIncident, alert: &AlertEvent) -> bool {
    if alert.state != EventState::Firing
        || alert.policy_domain != incident.domain
        || alert.at < incident.starts_at
        || incident
            .ends_at
            .is_some_and(|end| alert.at > end + GRACE_AFTER_END)
    {
        return false;
    }
    match incident.kind {
        TruthKind::CertExpired
        | TruthKind::StarttlsStopped
        | TruthKind::StsFetchError
        | TruthKind::FailureSpike => match alert.detector {
            Detector::NewResultType | Detector::FailureSpike => {
                alert.result_type.is_some() && alert.result_type == incident.result_type
            }
            Detector::ReporterSpike => true,
            _ => false,
        },
        TruthKind::ModeChange => {
            alert.detector == Detector::ModeChange
                && alert.new_mode.is_some()
                && alert.new_mode == incident.new_mode
        }
        TruthKind::ReporterQuiet => {
            alert.detector == Detector::ReporterQuiet
                && alert.reporter.is_some()
                && alert.reporter == incident.reporter
        }
    }
}

/// Scores `events` against `incidents` (module docs). `domain_days` is the false-alert
/// rate's denominator; `within` the delay allowed after first evidence.
pub fn score(
    incidents: &[TruthIncident],
    events: &[AlertEvent],
    domain_days: u64,
    within: Duration,
) -> Score {
    let mut firing: Vec<&AlertEvent> = events
        .iter()
        .filter(|e| e.state == EventState::Firing)
        .collect();
    firing.sort_by_key(|e| e.at);

    let mut matched = vec![false; firing.len()];
    let mut matched_ids = HashSet::new();
    let mut by_kind: BTreeMap<String, KindScore> = BTreeMap::new();
    let (mut unscorable, mut detections, mut late, mut missed) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut detected_in_time = 0;
    let mut duplicates = 0;
    for incident in incidents {
        let kind = by_kind.entry(kind_name(incident.kind)).or_default();
        let mut first: Option<&AlertEvent> = None;
        let mut alerts = 0usize;
        for (i, alert) in firing.iter().enumerate() {
            if matches(incident, alert) {
                matched[i] = true;
                matched_ids.insert(alert.incident_id);
                alerts += 1;
                first.get_or_insert(alert);
            }
        }
        duplicates += alerts.saturating_sub(1);
        let Some(evidence) = incident.first_evidence_at else {
            unscorable.push(incident.id);
            kind.unscorable += 1;
            continue;
        };
        kind.scored += 1;
        let Some(first) = first else {
            kind.missed += 1;
            missed.push(Missed {
                incident: incident.id,
                kind: incident.kind,
                domain: incident.domain.clone(),
                first_evidence_at: evidence,
                truth: incident.clone(),
            });
            continue;
        };
        let detection = Detection {
            incident: incident.id,
            kind: incident.kind,
            domain: incident.domain.clone(),
            detector: first.detector,
            at: first.at,
            first_evidence_at: evidence,
            delay_seconds: (first.at - evidence).num_seconds(),
            alerts,
            truth: incident.clone(),
        };
        if first.at <= evidence + within {
            detected_in_time += 1;
            kind.in_time += 1;
        } else {
            kind.late += 1;
            late.push(detection.clone());
        }
        detections.push(detection);
    }

    let false_alerts: Vec<FalseAlert> = firing
        .iter()
        .zip(&matched)
        .filter(|(_, matched)| !**matched)
        .map(|(alert, _)| FalseAlert {
            detector: alert.detector,
            domain: alert.policy_domain.clone(),
            day: alert.day,
            at: alert.at,
            title: alert.title.clone(),
        })
        .collect();
    let resolved: Vec<&AlertEvent> = events
        .iter()
        .filter(|e| e.state == EventState::Resolved)
        .collect();
    let matched_resolutions = resolved
        .iter()
        .filter(|e| matched_ids.contains(&e.incident_id))
        .count();

    let mut delays: Vec<i64> = detections.iter().map(|d| d.delay_seconds).collect();
    delays.sort_unstable();
    let scored = incidents.len() - unscorable.len();
    let share = |n: usize| {
        if scored == 0 {
            1.0
        } else {
            n as f64 / scored as f64
        }
    };
    let matched_firing = matched.iter().filter(|m| **m).count();
    Score {
        within_seconds: within.num_seconds(),
        incidents: incidents.len(),
        scored,
        unscorable,
        detected_in_time,
        recall: share(detected_in_time),
        recall_any_delay: share(detections.len()),
        detected_late: late,
        missed,
        by_kind,
        delay_median_seconds: (!delays.is_empty()).then(|| delays[(delays.len() - 1) / 2]),
        delay_max_seconds: delays.last().copied(),
        alerts_per_incident: if detections.is_empty() {
            0.0
        } else {
            matched_firing as f64 / detections.len() as f64
        },
        detections,
        firing: firing.len(),
        matched_firing,
        duplicates,
        false_alerts_per_10k_domain_days: if domain_days == 0 {
            0.0
        } else {
            false_alerts.len() as f64 * 10_000.0 / domain_days as f64
        },
        false_alerts,
        domain_days,
        resolutions: resolved.len(),
        matched_resolutions,
    }
}

fn kind_name(kind: TruthKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{kind:?}"))
}

/// `1h05m`, `-20m`, `2d03h`.
fn duration_text(seconds: i64) -> String {
    let sign = if seconds < 0 { "-" } else { "" };
    let s = seconds.unsigned_abs();
    let (days, hours, minutes) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    if days > 0 {
        format!("{sign}{days}d{hours:02}h")
    } else if hours > 0 {
        format!("{sign}{hours}h{minutes:02}m")
    } else {
        format!("{sign}{minutes}m")
    }
}

impl fmt::Display for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let within = duration_text(self.within_seconds);
        writeln!(
            f,
            "recall {:.1}%: {} of {} scored incidents detected within {within} of first evidence \
             ({} late, {} missed; {} of {} incidents not scored: nothing showed them)",
            self.recall * 100.0,
            self.detected_in_time,
            self.scored,
            self.detected_late.len(),
            self.missed.len(),
            self.unscorable.len(),
            self.incidents,
        )?;
        let delay = |d: Option<i64>| d.map_or_else(|| "-".to_owned(), duration_text);
        writeln!(
            f,
            "delay after first evidence: median {}, max {}",
            delay(self.delay_median_seconds),
            delay(self.delay_max_seconds)
        )?;
        for (kind, k) in &self.by_kind {
            writeln!(
                f,
                "  {kind:<17} {} in time, {} late, {} missed of {} scored ({} not scored)",
                k.in_time, k.late, k.missed, k.scored, k.unscorable
            )?;
        }
        for d in &self.detected_late {
            writeln!(
                f,
                "  late by {}: {}; first alert {} at {}",
                duration_text(d.delay_seconds),
                describe(&d.truth),
                d.detector.as_str(),
                d.at
            )?;
        }
        for m in &self.missed {
            writeln!(f, "  missed: {}", describe(&m.truth))?;
        }
        writeln!(
            f,
            "alerts: {} firing, {} matched ({} duplicates, {:.2} per detected incident), {} \
             resolutions ({} of matched incidents)",
            self.firing,
            self.matched_firing,
            self.duplicates,
            self.alerts_per_incident,
            self.resolutions,
            self.matched_resolutions
        )?;
        writeln!(
            f,
            "false alerts: {} ({:.2} per 10,000 domain-days over {})",
            self.false_alerts.len(),
            self.false_alerts_per_10k_domain_days,
            self.domain_days
        )?;
        for a in self.false_alerts.iter().take(FALSE_ALERTS_LISTED) {
            writeln!(
                f,
                "  false: {} {} day {} at {}: {}",
                a.detector.as_str(),
                a.domain,
                a.day,
                a.at,
                a.title
            )?;
        }
        if let Some(more) = self.false_alerts.len().checked_sub(FALSE_ALERTS_LISTED)
            && more > 0
        {
            writeln!(f, "  ... and {more} more false alerts")?;
        }
        Ok(())
    }
}

/// False alerts the readable score lists (the JSON has them all).
const FALSE_ALERTS_LISTED: usize = 40;

/// One line about an incident: `#3 failure-spike a.example (certificate-expired on mx1.a.example)
/// from .. to .., first evidence ..`.
fn describe(truth: &TruthIncident) -> String {
    let mut what = Vec::new();
    if let Some(result_type) = &truth.result_type {
        what.push(result_type.clone());
    }
    if let Some(mx) = &truth.mx {
        what.push(format!("on {mx}"));
    }
    if let Some(reporter) = &truth.reporter {
        what.push(format!("from {reporter}"));
    }
    if let (Some(old), Some(new)) = (&truth.old_mode, &truth.new_mode) {
        what.push(format!("{old} -> {new}"));
    }
    let end = truth
        .ends_at
        .map_or_else(|| "the end".to_owned(), |end| end.to_string());
    let evidence = truth
        .first_evidence_at
        .map_or_else(|| "none".to_owned(), |at| at.to_string());
    format!(
        "#{} {} {} ({}) from {} to {end}, first evidence {evidence}",
        truth.id,
        kind_name(truth.kind),
        truth.domain,
        what.join(" "),
        truth.starts_at
    )
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use tlsrpt_alerts::Severity;

    use super::*;

    fn at(day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 2, day, hour, 0, 0).unwrap()
    }

    fn incident(id: usize, kind: TruthKind, domain: &str) -> TruthIncident {
        TruthIncident {
            id,
            kind,
            domain: domain.to_owned(),
            mx: None,
            result_type: None,
            reporter: None,
            old_mode: None,
            new_mode: None,
            starts_at: at(10, 5),
            ends_at: Some(at(12, 7)),
            first_evidence_at: Some(at(11, 3)),
        }
    }

    fn expired(id: usize, domain: &str) -> TruthIncident {
        TruthIncident {
            mx: Some(format!("mx1.{domain}")),
            result_type: Some("certificate-expired".to_owned()),
            ..incident(id, TruthKind::CertExpired, domain)
        }
    }

    fn alert(detector: Detector, domain: &str, when: DateTime<Utc>) -> AlertEvent {
        let mut event = AlertEvent::new(
            0,
            EventState::Firing,
            when,
            detector,
            Severity::Critical,
            domain,
            when.date_naive(),
        );
        event.title = format!("{} on {domain}", detector.as_str());
        event
    }

    fn failing(
        detector: Detector,
        domain: &str,
        result_type: &str,
        when: DateTime<Utc>,
    ) -> AlertEvent {
        AlertEvent {
            result_type: Some(result_type.to_owned()),
            ..alert(detector, domain, when)
        }
    }

    #[test]
    fn a_failure_incident_matches_its_result_type_on_its_domain_in_its_time() {
        let truth = expired(0, "a.example");
        let fits = |a: &AlertEvent| matches(&truth, a);
        for detector in [Detector::NewResultType, Detector::FailureSpike] {
            assert!(fits(&failing(
                detector,
                "a.example",
                "certificate-expired",
                at(11, 4)
            )));
        }
        // The same incident as one sender saw it.
        assert!(fits(&alert(
            Detector::ReporterSpike,
            "a.example",
            at(11, 4)
        )));
        // Another type, domain, detector.
        assert!(!fits(&failing(
            Detector::NewResultType,
            "a.example",
            "validation-failure",
            at(11, 4)
        )));
        assert!(!fits(&failing(
            Detector::NewResultType,
            "b.example",
            "certificate-expired",
            at(11, 4)
        )));
        assert!(!fits(&alert(
            Detector::NewResultType,
            "a.example",
            at(11, 4)
        )));
        assert!(!fits(&alert(Detector::ModeChange, "a.example", at(11, 4))));
        // Before the start; within three days of the end; after.
        assert!(!fits(&failing(
            Detector::FailureSpike,
            "a.example",
            "certificate-expired",
            at(10, 4)
        )));
        assert!(fits(&failing(
            Detector::FailureSpike,
            "a.example",
            "certificate-expired",
            at(15, 7)
        )));
        assert!(!fits(&failing(
            Detector::FailureSpike,
            "a.example",
            "certificate-expired",
            at(15, 8)
        )));
        // An incident that does not end matches any time after its start.
        let ongoing = TruthIncident {
            ends_at: None,
            ..expired(0, "a.example")
        };
        assert!(matches(
            &ongoing,
            &failing(
                Detector::FailureSpike,
                "a.example",
                "certificate-expired",
                at(28, 0)
            )
        ));
        // Only firing alerts match.
        let resolved = AlertEvent {
            state: EventState::Resolved,
            ..failing(
                Detector::FailureSpike,
                "a.example",
                "certificate-expired",
                at(11, 4),
            )
        };
        assert!(!fits(&resolved));
    }

    #[test]
    fn mode_changes_match_the_new_mode_and_quiet_reporters_the_reporter() {
        let mode = TruthIncident {
            old_mode: Some("testing".to_owned()),
            new_mode: Some("enforce".to_owned()),
            ..incident(0, TruthKind::ModeChange, "m.example")
        };
        let to = |new: &str| AlertEvent {
            new_mode: Some(new.to_owned()),
            ..alert(Detector::ModeChange, "m.example", at(11, 0))
        };
        assert!(matches(&mode, &to("enforce")));
        assert!(!matches(&mode, &to("none")));

        let quiet = TruthIncident {
            reporter: Some("Google Inc.".to_owned()),
            ..incident(1, TruthKind::ReporterQuiet, "q.example")
        };
        let from = |reporter: &str| AlertEvent {
            reporter: Some(reporter.to_owned()),
            ..alert(Detector::ReporterQuiet, "q.example", at(12, 0))
        };
        assert!(matches(&quiet, &from("Google Inc.")));
        assert!(!matches(&quiet, &from("Yahoo")));
        // A reporter's failure spike is not its silence.
        let spike = AlertEvent {
            reporter: Some("Google Inc.".to_owned()),
            ..alert(Detector::ReporterSpike, "q.example", at(12, 0))
        };
        assert!(!matches(&quiet, &spike));
    }

    #[test]
    fn the_score_counts_in_time_late_missed_unscored_duplicates_and_false_alerts() {
        let within = Duration::hours(6);
        let truth = vec![
            expired(0, "a.example"), // in time (evidence 11 03:00, alert 11 04:00)
            expired(1, "b.example"), // late (alert 11 10:00)
            expired(2, "c.example"), // missed
            TruthIncident {
                first_evidence_at: None,
                ..expired(3, "d.example")
            }, // not scored, and its alert is not false
        ];
        let mut events = vec![
            failing(
                Detector::NewResultType,
                "a.example",
                "certificate-expired",
                at(11, 4),
            ),
            failing(
                Detector::FailureSpike,
                "a.example",
                "certificate-expired",
                at(11, 9),
            ),
            failing(
                Detector::FailureSpike,
                "b.example",
                "certificate-expired",
                at(11, 10),
            ),
            failing(
                Detector::FailureSpike,
                "d.example",
                "certificate-expired",
                at(11, 10),
            ),
            failing(
                Detector::FailureSpike,
                "e.example",
                "validation-failure",
                at(20, 1),
            ),
        ];
        for (i, e) in events.iter_mut().enumerate() {
            e.incident_id = i as u64;
        }
        events.push(AlertEvent {
            state: EventState::Resolved,
            ..events[0].clone()
        });
        events.push(AlertEvent {
            state: EventState::Resolved,
            ..events[4].clone()
        });

        let score = score(&truth, &events, 20_000, within);
        assert_eq!(score.scored, 3);
        assert_eq!(score.unscorable, vec![3]);
        assert_eq!(score.detected_in_time, 1);
        assert_eq!(score.detected_late.len(), 1);
        assert_eq!(score.detected_late[0].delay_seconds, 7 * 3600);
        assert_eq!(score.missed.len(), 1);
        assert_eq!(score.missed[0].incident, 2);
        assert!((score.recall - 1.0 / 3.0).abs() < 1e-9);
        assert!((score.recall_any_delay - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(score.delay_median_seconds, Some(3600));
        assert_eq!(score.delay_max_seconds, Some(7 * 3600));
        assert_eq!(score.firing, 5);
        assert_eq!(score.matched_firing, 4);
        assert_eq!(score.duplicates, 1);
        assert!((score.alerts_per_incident - 2.0).abs() < 1e-9);
        assert_eq!(score.false_alerts.len(), 1);
        assert_eq!(score.false_alerts[0].domain, "e.example");
        assert!((score.false_alerts_per_10k_domain_days - 0.5).abs() < 1e-9);
        assert_eq!((score.resolutions, score.matched_resolutions), (2, 1));
        let expired = &score.by_kind["cert-expired"];
        assert_eq!(
            (
                expired.scored,
                expired.in_time,
                expired.late,
                expired.missed,
                expired.unscorable
            ),
            (3, 1, 1, 1, 1)
        );
        let text = score.to_string();
        assert!(text.contains("recall 33.3%"), "{text}");
        assert!(text.contains("false: failure-spike e.example"), "{text}");
        let json = serde_json::to_value(&score).unwrap();
        assert_eq!(json["missed"][0]["kind"], "cert-expired");
    }

    #[test]
    fn durations_read_as_days_hours_and_minutes() {
        assert_eq!(duration_text(300), "5m");
        assert_eq!(duration_text(3900), "1h05m");
        assert_eq!(duration_text(-1200), "-20m");
        assert_eq!(duration_text(2 * 86_400 + 3 * 3600), "2d03h");
    }
}
