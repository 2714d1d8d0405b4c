//! How hard an incident is to find in time: how much of the background looks at least as
//! bad as what the incident had shown by then.
//!
//! A count-based detector sees, for a (policy domain, day, receiving MX, result type) cell,
//! four figures: the reports that show the failures, the failed sessions, their share of
//! the day's sessions so far, and how often the cell failed before (its *usual rate*: failed
//! sessions over sessions on the domain's days in the baseline window). An incident's
//! *evidence* is those figures for its cell with the reports that had arrived `within`
//! after its first evidence. A cell of a domain without an incident *looks at least as bad*
//! when, with all of its day's reports, it has at least as many reports showing it, at
//! least as many failed sessions, at least the same share of the day's sessions and a usual
//! rate no higher.
//!
//! A detector that fires more readily on more reports, more failed sessions, a larger
//! share and a lower usual rate, and on nothing else, and that fires on the incident's
//! evidence in time also fires on every such cell, at the latest when the cell's last
//! report has arrived: at least one false alert per such domain. The detectors of
//! `tlsrpt-alerts` lean that way but also weigh other figures (how many reports the day has
//! so far, the baseline's spread, how rare the type is across the fleet), so for them the
//! counts are a guide, not a bound. When those domains outnumber the false alerts allowed, the
//! incident cannot be found in time from the counts without breaking the false-alert
//! limit. The same count restricted to cells of the incident's result type answers the same
//! question for a detector that also weighs the type (a `certificate-expired` may be judged
//! rarer than a `validation-failure`).
//!
//! A second count asks what a rule on the chance bound would cost: the cells shown by at
//! least as many reports whose failed sessions are at most as likely at their usual rate
//! (the detectors' Poisson bound, with one failed session added to the baseline) as the
//! incident's are at its own. A rule that fires on the incident from that many reports at
//! that chance fires on all of them.
//!
//! The comparison is kind to the detector: a background cell is judged with its whole day,
//! whose share of sessions is lower than at its first reports, so fewer cells look as bad
//! than a detector judging each arrival would see.

use chrono::{Duration, NaiveDate};
use serde::Serialize;
use tlsrpt_alerts::Observations;
use tlsrpt_alerts::detect::log_chance_of_at_least;
use tlsrpt_alerts::ledger::Ledger;
use tlsrpt_alerts::observations::{Day, Sym, date_of};

use crate::history::TruthIncident;

/// The evidence of one (domain, day, MX, result type) cell.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Evidence {
    /// Reports showing failures of the cell.
    pub reports: u32,
    /// Its failed sessions.
    pub failed: u64,
    /// The domain's sessions of the day (so far).
    pub sessions: u64,
    /// The cell's failed sessions over the domain's sessions on its days in the baseline
    /// window before the day (0 when it had none).
    pub usual_rate: f64,
    /// The natural log of the chance of at least `failed` failed sessions in `sessions` at
    /// the usual rate with one failed session more (a cell never seen is rare, not
    /// impossible), as the detectors bound it.
    pub log_chance: f64,
}

impl Evidence {
    /// From the day's figures and the baseline's (failed sessions of the cell, sessions).
    fn of(reports: u32, failed: u64, sessions: u64, baseline: (u64, u64)) -> Self {
        let (usual_failed, usual_sessions) = baseline;
        let rate = |failed: u64| {
            if usual_sessions == 0 {
                1.0
            } else {
                failed as f64 / usual_sessions as f64
            }
        };
        Self {
            reports,
            failed,
            sessions,
            usual_rate: if usual_sessions == 0 {
                0.0
            } else {
                rate(usual_failed)
            },
            log_chance: log_chance_of_at_least(failed, rate(usual_failed + 1) * sessions as f64),
        }
    }

    fn share(&self) -> f64 {
        if self.sessions == 0 {
            0.0
        } else {
            self.failed as f64 / self.sessions as f64
        }
    }

    /// Whether `self` looks at least as bad as `other` in every figure.
    pub fn at_least_as_bad_as(&self, other: &Evidence) -> bool {
        self.reports >= other.reports
            && self.failed >= other.failed
            && self.share() >= other.share()
            && self.usual_rate <= other.usual_rate
    }
}

/// The background that looks at least as bad as one incident's evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LookAlikes {
    pub incident: usize,
    pub domain: String,
    /// The day of the report that first showed the incident, and the cell's MX.
    pub day: NaiveDate,
    pub mx: Option<String>,
    pub result_type: String,
    /// The incident's cell, with what had arrived `within` after the first evidence.
    pub evidence: Evidence,
    /// Cells of domains without an incident at least as bad: their distinct (domain, day)
    /// pairs and distinct domains, of any result type and of the incident's.
    pub domain_days: usize,
    pub domains: usize,
    pub same_type_domain_days: usize,
    pub same_type_domains: usize,
    /// Cells of domains without an incident shown by at least as many reports and at most
    /// as likely at their usual rate: what a rule on the chance bound and the reports would
    /// also fire on, if it fired on the incident.
    pub as_unlikely_domain_days: usize,
    pub as_unlikely_domains: usize,
}

/// For each of `ids` (incidents with a result type and a first evidence; others are
/// skipped), the background that looks at least as bad as what it showed `within` after
/// its first evidence. `baseline_days` is the detectors' baseline window; days with fewer
/// than `min_baseline_days` days of data before them are not compared (no detector judges
/// them).
pub fn look_alikes(
    observations: &Observations,
    incidents: &[TruthIncident],
    ids: &[usize],
    within: Duration,
    baseline_days: u32,
    min_baseline_days: u32,
) -> Vec<LookAlikes> {
    let names = &observations.names;
    let parts = observations.parts();
    let mut whole = Ledger::default();
    for part in parts {
        whole.add(
            part,
            observations.failures_of(part),
            observations.modes_of(part),
        );
    }
    let incident_domains: Vec<Sym> = incidents
        .iter()
        .filter_map(|i| names.get(&i.domain))
        .collect();

    // Each incident's cell and evidence.
    struct Target {
        look: LookAlikes,
        result_type: Sym,
    }
    let mut targets: Vec<Target> = Vec::new();
    for &id in ids {
        let Some(truth) = incidents.get(id) else {
            continue;
        };
        let (Some(result_type), Some(first)) = (&truth.result_type, truth.first_evidence_at) else {
            continue;
        };
        let (Some(domain), Some(type_sym)) = (names.get(&truth.domain), names.get(result_type))
        else {
            continue;
        };
        // A policy-level type names no MX.
        let Some(mx) = truth
            .mx
            .as_deref()
            .map_or(Some(Sym::NONE), |mx| names.get(mx))
        else {
            continue;
        };
        let shows = |part: &tlsrpt_alerts::observations::Part| {
            observations
                .failures_of(part)
                .iter()
                .any(|f| f.mx == mx && f.result_type == type_sym)
        };
        let first_micros = (first - Duration::seconds(1)).timestamp_micros();
        let Some(first_part) = parts
            .iter()
            .find(|p| p.domain == domain && p.received_at >= first_micros && shows(p))
        else {
            continue;
        };
        let day = first_part.day;
        let until = (first + within).timestamp_micros();
        let mut so_far = Ledger::default();
        for part in parts
            .iter()
            .filter(|p| p.domain == domain && p.day == day && p.received_at <= until)
        {
            so_far.add(
                part,
                observations.failures_of(part),
                observations.modes_of(part),
            );
        }
        let today = so_far.day(domain, day);
        let Some(cell) = today
            .failures
            .iter()
            .find(|c| c.mx == mx && c.result_type == type_sym)
        else {
            continue;
        };
        let evidence = Evidence::of(
            cell.reports,
            cell.failed,
            today.sessions,
            baseline(&whole, domain, day, mx, type_sym, baseline_days),
        );
        targets.push(Target {
            look: LookAlikes {
                incident: id,
                domain: truth.domain.clone(),
                day: date_of(day),
                mx: truth.mx.clone(),
                result_type: result_type.clone(),
                evidence,
                domain_days: 0,
                domains: 0,
                same_type_domain_days: 0,
                same_type_domains: 0,
                as_unlikely_domain_days: 0,
                as_unlikely_domains: 0,
            },
            result_type: type_sym,
        });
    }
    let Some(min_reports) = targets.iter().map(|t| t.look.evidence.reports).min() else {
        return Vec::new();
    };

    // Every background cell against every target, counting each (domain, day) and domain
    // once per target.
    let first_day = parts.iter().map(|p| p.day).min().unwrap_or_default();
    let last_day = parts.iter().map(|p| p.day).max().unwrap_or_default();
    for domain in whole.domains() {
        if incident_domains.contains(&domain) {
            continue;
        }
        let mut seen_domain = vec![(false, false, false); targets.len()];
        for (day, today) in whole.days_with_data(domain, first_day, last_day + 1) {
            let known_days = whole
                .days_with_data(domain, day - baseline_days as Day, day)
                .count();
            if known_days < min_baseline_days as usize {
                continue;
            }
            let mut seen_day = vec![(false, false, false); targets.len()];
            for cell in &today.failures {
                if cell.reports < min_reports {
                    continue;
                }
                let evidence = Evidence::of(
                    cell.reports,
                    cell.failed,
                    today.sessions,
                    baseline(
                        &whole,
                        domain,
                        day,
                        cell.mx,
                        cell.result_type,
                        baseline_days,
                    ),
                );
                for (k, target) in targets.iter().enumerate() {
                    let incident = &target.look.evidence;
                    if evidence.at_least_as_bad_as(incident) {
                        seen_day[k].0 = true;
                        seen_day[k].1 |= cell.result_type == target.result_type;
                    }
                    seen_day[k].2 |= evidence.reports >= incident.reports
                        && evidence.log_chance <= incident.log_chance;
                }
            }
            for (k, target) in targets.iter_mut().enumerate() {
                let (any, same, unlikely) = seen_day[k];
                target.look.domain_days += usize::from(any);
                target.look.same_type_domain_days += usize::from(same);
                target.look.as_unlikely_domain_days += usize::from(unlikely);
                seen_domain[k].0 |= any;
                seen_domain[k].1 |= same;
                seen_domain[k].2 |= unlikely;
            }
        }
        for (k, target) in targets.iter_mut().enumerate() {
            target.look.domains += usize::from(seen_domain[k].0);
            target.look.same_type_domains += usize::from(seen_domain[k].1);
            target.look.as_unlikely_domains += usize::from(seen_domain[k].2);
        }
    }
    targets.into_iter().map(|t| t.look).collect()
}

/// A cell's failed sessions, and the domain's sessions, on its days with data in the
/// `baseline_days` before `day`.
fn baseline(
    ledger: &Ledger,
    domain: Sym,
    day: Day,
    mx: Sym,
    result_type: Sym,
    baseline_days: u32,
) -> (u64, u64) {
    let (mut failed, mut sessions) = (0u64, 0u64);
    for (_, d) in ledger.days_with_data(domain, day - baseline_days as Day, day) {
        failed += d.failed_of(Some(mx), result_type);
        sessions += d.sessions;
    }
    (failed, sessions)
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::history::TruthKind;

    /// Failed sessions of (MX, result type).
    type Failures<'a> = &'a [(&'a str, &'a str, u64)];

    /// One report a day for 30 days with the `usual` failures, then the day's reports as
    /// given: (hours after the day ends, sessions, failures).
    fn domain(
        observations: &mut Observations,
        name: &str,
        usual: Failures<'_>,
        day31: &[(i64, u64, Failures<'_>)],
    ) {
        let start = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
        let midnight_after = |date: NaiveDate| {
            Utc.from_utc_datetime(&date.succ_opt().unwrap().and_hms_opt(0, 0, 0).unwrap())
        };
        for d in 0..30 {
            let date = start + Duration::days(d);
            let part = observations.add_part(
                midnight_after(date) + Duration::hours(1),
                date,
                "Google Inc.",
                name,
                100,
                usual.iter().map(|f| f.2).sum(),
                None,
            );
            for &(mx, result_type, failed) in usual {
                observations.add_failure(part, Some(mx), result_type, failed);
            }
        }
        let date = start + Duration::days(30);
        for (k, &(hours, sessions, failures)) in day31.iter().enumerate() {
            let part = observations.add_part(
                midnight_after(date) + Duration::hours(hours),
                date,
                &format!("reporter{k}"),
                name,
                sessions,
                failures.iter().map(|f| f.2).sum(),
                None,
            );
            for &(mx, result_type, failed) in failures {
                observations.add_failure(part, Some(mx), result_type, failed);
            }
        }
    }

    #[test]
    fn background_cells_at_least_as_bad_in_every_figure_are_counted_once_per_domain() {
        let mut observations = Observations::default();
        // The incident: 3 failed of 50 sessions in the first report; a second report 10
        // hours later, past the 6 hours, shows 5 more.
        domain(
            &mut observations,
            "incident.example",
            &[],
            &[
                (1, 50, &[("mx1", "certificate-expired", 3)]),
                (11, 50, &[("mx1", "certificate-expired", 5)]),
            ],
        );
        // At least as bad: two reports, 5 failed of 40, a type never seen.
        domain(
            &mut observations,
            "same-type.example",
            &[],
            &[
                (2, 20, &[("mx1", "certificate-expired", 3)]),
                (
                    3,
                    20,
                    &[
                        ("mx2", "certificate-expired", 2),
                        ("mx1", "certificate-expired", 2),
                    ],
                ),
            ],
        );
        // At least as bad, of another type.
        domain(
            &mut observations,
            "other-type.example",
            &[],
            &[(2, 20, &[("mx1", "validation-failure", 4)])],
        );
        // Not as bad: the type is usual on this domain.
        domain(
            &mut observations,
            "usual.example",
            &[("mx1", "validation-failure", 1)],
            &[(2, 20, &[("mx1", "validation-failure", 4)])],
        );
        // Not as bad: fewer failed sessions; a smaller share.
        domain(
            &mut observations,
            "fewer.example",
            &[],
            &[(2, 20, &[("mx1", "certificate-expired", 2)])],
        );
        domain(
            &mut observations,
            "smaller-share.example",
            &[],
            &[(2, 2000, &[("mx1", "certificate-expired", 9)])],
        );
        observations.finish();

        let incident = TruthIncident {
            id: 0,
            kind: TruthKind::CertExpired,
            domain: "incident.example".into(),
            mx: Some("mx1".into()),
            result_type: Some("certificate-expired".into()),
            reporter: None,
            old_mode: None,
            new_mode: None,
            starts_at: Utc.with_ymd_and_hms(2025, 1, 31, 12, 0, 0).unwrap(),
            ends_at: None,
            first_evidence_at: Some(Utc.with_ymd_and_hms(2025, 2, 1, 1, 0, 0).unwrap()),
        };
        let found = look_alikes(&observations, &[incident], &[0], Duration::hours(6), 28, 7);
        assert_eq!(found.len(), 1);
        let look = &found[0];
        let e = look.evidence;
        assert_eq!(
            (e.reports, e.failed, e.sessions, e.usual_rate),
            (1, 3, 50, 0.0)
        );
        assert_eq!(look.day, NaiveDate::from_ymd_opt(2025, 1, 31).unwrap());
        assert_eq!((look.domains, look.domain_days), (2, 2));
        assert_eq!((look.same_type_domains, look.same_type_domain_days), (1, 1));
        // As unlikely at their usual rate, from one report on: the two above, and the 9
        // failed sessions of 2,000 that are a smaller share of a bigger day.
        assert_eq!(
            (look.as_unlikely_domains, look.as_unlikely_domain_days),
            (3, 3)
        );
    }
}
