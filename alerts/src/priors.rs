//! What the whole fleet says about a failure type: how often a report shows a result type on
//! an MX host of a domain that had none of it in the days before.
//!
//! Senders' own odd sessions land in a small share of all reports, one report at a time,
//! on any domain: a report with a few `validation-failure` sessions the domain never had is
//! common across a provider's domains, one with `tlsa-invalid` is rare. One domain's past
//! cannot tell these apart (it had neither), the fleet's can. The new-type detector uses the
//! rate to ask how likely it is that, by chance, as many of the day's reports as show a new
//! type would each carry such odd sessions.
//!
//! Only complete days count, and only those at least two days before the day judged: a day's
//! reports arrive until 48 hours after it ends, so every report counted here had arrived
//! before any report of the judged day could have. A pass that replays months fires what
//! passes running live would have.

use foldhash::HashMap;

use crate::observations::{Day, Observations, Part, Sym};

/// A cell with no failure in this many days before is new for the fleet's counts.
pub const NEW_AFTER_DAYS: Day = 7;

/// The days of reports before the judged day the rates are counted over.
pub const WINDOW_DAYS: Day = 28;

/// Per day, the reports and, per result type, the reports that showed it on a new cell.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FleetPriors {
    reports: HashMap<Day, u64>,
    new_cells: HashMap<(Day, Sym), u64>,
}

impl FleetPriors {
    /// Counts the parts of `observations` (any order; a part's failures from the
    /// observations).
    pub fn count<'a>(observations: &Observations, parts: impl Iterator<Item = &'a Part>) -> Self {
        let mut priors = Self::default();
        // (domain, MX, type, day) of every failure, to find each cell's previous day.
        let mut cells: Vec<(Sym, Sym, Sym, Day)> = Vec::new();
        for part in parts {
            *priors.reports.entry(part.day).or_default() += 1;
            for failure in observations.failures_of(part) {
                cells.push((part.domain, failure.mx, failure.result_type, part.day));
            }
        }
        cells.sort_unstable();
        // Walking each cell's days in order: a report counts when its day is the cell's
        // first, or more than `NEW_AFTER_DAYS` after the cell's previous day with failures.
        let mut previous: Option<((Sym, Sym, Sym), Day, bool)> = None;
        for &(domain, mx, result_type, day) in &cells {
            let cell = (domain, mx, result_type);
            let new = match previous {
                Some((c, last, new)) if c == cell && last == day => new,
                Some((c, last, _)) if c == cell => day - last > NEW_AFTER_DAYS,
                _ => true,
            };
            if new {
                *priors.new_cells.entry((day, result_type)).or_default() += 1;
            }
            previous = Some((cell, day, new));
        }
        priors
    }

    /// Adds another shard's counts.
    pub fn merge(&mut self, other: Self) {
        for (day, n) in other.reports {
            *self.reports.entry(day).or_default() += n;
        }
        for (key, n) in other.new_cells {
            *self.new_cells.entry(key).or_default() += n;
        }
    }

    /// The share of reports that showed `result_type` on a new cell, over the
    /// `WINDOW_DAYS` days ending two days before `day`, counting one report more that did:
    /// a type the fleet never saw new is rare, not impossible (and without reports, 1).
    pub fn new_cell_rate(&self, result_type: Sym, day: Day) -> f64 {
        let (mut shown, mut reports) = (0u64, 0u64);
        for d in day - 1 - WINDOW_DAYS..day - 1 {
            reports += self.reports.get(&d).copied().unwrap_or(0);
            shown += self.new_cells.get(&(d, result_type)).copied().unwrap_or(0);
        }
        ((shown + 1) as f64 / (reports + 1) as f64).min(1.0)
    }
}

/// An upper bound on the chance that at least `shown` of `reports` reports each show
/// something that one report shows with probability `rate`: C(reports, shown) ×
/// rate^shown.
pub fn chance_in_reports(shown: u32, reports: u32, rate: f64) -> f64 {
    if shown == 0 {
        return 1.0;
    }
    let mut ways = 1.0;
    for k in 0..shown {
        ways *= f64::from(reports.saturating_sub(k)) / f64::from(k + 1);
    }
    (ways * rate.powi(shown as i32)).min(1.0)
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, NaiveDate, TimeZone, Utc};

    use super::*;

    #[test]
    fn a_report_counts_when_its_cell_had_no_failure_in_the_week_before() {
        let start = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
        let mut observations = Observations::default();
        // (domain, day, failed sessions of `certificate-expired` on mx1, if any)
        let reports = [
            ("a.example", 0, Some(1)), // new
            ("a.example", 3, Some(2)), // three days after: not new, nor its twin
            ("a.example", 3, Some(1)),
            ("a.example", 20, Some(1)), // 17 days after: new
            ("b.example", 3, Some(1)),  // another domain's cell: new
            ("b.example", 4, None),
            ("b.example", 5, None),
        ];
        for (domain, day, failed) in reports {
            let date = start + Duration::days(day);
            let part = observations.add_part(
                Utc.from_utc_datetime(&date.and_hms_opt(23, 0, 0).unwrap()),
                date,
                "Google Inc.",
                domain,
                100,
                failed.unwrap_or(0),
                None,
            );
            if let Some(failed) = failed {
                observations.add_failure(part, Some("mx1"), "certificate-expired", failed);
            }
        }
        observations.finish();
        let priors = FleetPriors::count(&observations, observations.parts().iter());
        let expired = observations.names.get("certificate-expired").unwrap();
        let day = |d: i64| crate::observations::day_of(start + Duration::days(d));
        assert_eq!(priors.new_cells.get(&(day(0), expired)), Some(&1));
        assert_eq!(priors.new_cells.get(&(day(3), expired)), Some(&1));
        assert_eq!(priors.new_cells.get(&(day(20), expired)), Some(&1));
        assert_eq!(priors.new_cells.len(), 3);
        // Judging day 30: days 1 to 28 count, 6 reports of which 2 new, plus one.
        assert!((priors.new_cell_rate(expired, day(30)) - 3.0 / 7.0).abs() < 1e-12);
        // Judging day 5: days -24 to 3, so day 3's report but not day 4's.
        assert!((priors.new_cell_rate(expired, day(5)) - 3.0 / 5.0).abs() < 1e-12);
        // Shards add up to the whole.
        let mut merged = FleetPriors::count(
            &observations,
            observations
                .parts()
                .iter()
                .filter(|p| p.domain == observations.names.get("a.example").unwrap()),
        );
        merged.merge(FleetPriors::count(
            &observations,
            observations
                .parts()
                .iter()
                .filter(|p| p.domain == observations.names.get("b.example").unwrap()),
        ));
        assert_eq!(merged, priors);
    }

    #[test]
    fn the_chance_in_reports_is_the_binomial_bound() {
        assert_eq!(chance_in_reports(0, 5, 0.5), 1.0);
        assert!((chance_in_reports(1, 5, 0.01) - 0.05).abs() < 1e-12);
        // C(5, 2) × 0.001² = 1e-5.
        assert!((chance_in_reports(2, 5, 0.001) - 1e-5).abs() < 1e-15);
        assert_eq!(chance_in_reports(2, 3, 0.9), 1.0);
    }
}
