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
//! The fleet also says how often a report is *heavy*: carries at least so many failed
//! sessions of a type on a host where the host's usual rate predicted at most so many for the
//! report's sessions. A host that usually fails one session in two thousand does, now and
//! then, fail three in one sender's report; whether eight in one report happens without an
//! incident is what the fleet's reports of the weeks before can tell, and one domain's past
//! cannot.
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

/// Per day, the reports and, per result type, the reports that showed it on a new cell, and
/// the reports that showed it, by how heavy they were ([`HeavyCounts`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FleetPriors {
    reports: HashMap<Day, u64>,
    new_cells: HashMap<(Day, Sym), u64>,
    heavy: HashMap<(Day, Sym), HeavyCounts>,
}

/// The usual failure rate of a cell for the heavy-report counts: its failed sessions over
/// the domain's sessions in the [`WINDOW_DAYS`] days before, counting one failure more than
/// it had (a host that never failed is rare, not impossible); `None` without sessions.
pub fn cell_usual_rate(window_failed: u64, window_sessions: u64) -> Option<f64> {
    (window_sessions > 0).then(|| (window_failed + 1) as f64 / window_sessions as f64)
}

/// Bins of failed sessions: half octaves (1, 2, 3, 4-5, 6-7, 8-11, 12-15, ..).
const FAILED_BINS: usize = 16;
/// Bins of expected failed sessions: half decades from 10⁻¹⁰ (below it, the first) to
/// about 30 (above it, the last).
const EXPECTED_BINS: usize = 24;

fn failed_bin(failed: u64) -> usize {
    ((failed.max(1) as f64).log2() * 2.0)
        .floor()
        .min((FAILED_BINS - 1) as f64) as usize
}

fn expected_bin(expected: f64) -> usize {
    ((expected.max(1e-12).log10() * 2.0).floor() + 20.0).clamp(0.0, (EXPECTED_BINS - 1) as f64)
        as usize
}

/// One day's reports of one result type, counted so that a lookup answers "how many were at
/// least this heavy": `at_least[f][e]` counts the reports with a failed-sessions bin of `f`
/// or more and an expected bin of `e` or less. Bins make the answer generous (a report in
/// the same bin counts as at least as heavy), and sums of such tables are such tables, so
/// shards add up.
#[derive(Debug, Clone, PartialEq)]
struct HeavyCounts {
    at_least: Box<[[u32; EXPECTED_BINS]; FAILED_BINS]>,
}

impl HeavyCounts {
    fn of(reports: &[(u64, f64)]) -> Self {
        let mut counts = Box::new([[0u32; EXPECTED_BINS]; FAILED_BINS]);
        for &(failed, expected) in reports {
            counts[failed_bin(failed)][expected_bin(expected)] += 1;
        }
        for f in (0..FAILED_BINS).rev() {
            for e in 0..EXPECTED_BINS {
                let more_failed = if f + 1 < FAILED_BINS {
                    counts[f + 1][e]
                } else {
                    0
                };
                let less_expected = if e > 0 { counts[f][e - 1] } else { 0 };
                let both = if f + 1 < FAILED_BINS && e > 0 {
                    counts[f + 1][e - 1]
                } else {
                    0
                };
                counts[f][e] += more_failed + less_expected - both;
            }
        }
        Self { at_least: counts }
    }

    fn add(&mut self, other: &Self) {
        for (row, other_row) in self.at_least.iter_mut().zip(other.at_least.iter()) {
            for (n, m) in row.iter_mut().zip(other_row) {
                *n += m;
            }
        }
    }

    fn at_least(&self, failed: u64, expected: f64) -> u64 {
        u64::from(self.at_least[failed_bin(failed)][expected_bin(expected)])
    }
}

impl FleetPriors {
    /// Counts the parts of `observations` (any order; a part's failures from the
    /// observations).
    pub fn count<'a>(observations: &Observations, parts: impl Iterator<Item = &'a Part>) -> Self {
        let mut priors = Self::default();
        // (domain, MX, type, day, failed sessions, the report's sessions) of every failure,
        // to find each cell's previous day and its usual rate.
        let mut cells: Vec<(Sym, Sym, Sym, Day, u64, u64)> = Vec::new();
        // (domain, day, sessions) of every report.
        let mut domain_days: Vec<(Sym, Day, u64)> = Vec::new();
        for part in parts {
            *priors.reports.entry(part.day).or_default() += 1;
            domain_days.push((part.domain, part.day, part.sessions));
            for failure in observations.failures_of(part) {
                cells.push((
                    part.domain,
                    failure.mx,
                    failure.result_type,
                    part.day,
                    failure.sessions,
                    part.sessions,
                ));
            }
        }
        cells.sort_unstable();
        priors.count_heavy(&cells, domain_days);
        // Walking each cell's days in order: a report counts when its day is the cell's
        // first, or more than `NEW_AFTER_DAYS` after the cell's previous day with failures.
        let mut previous: Option<((Sym, Sym, Sym), Day, bool)> = None;
        for &(domain, mx, result_type, day, _, _) in &cells {
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

    /// Counts every report's failures of each cell by how heavy they were: their failed
    /// sessions, and the failed sessions the cell's usual rate over the [`WINDOW_DAYS`]
    /// before predicted for the report's sessions (`cells` sorted, as in [`Self::count`]).
    fn count_heavy(
        &mut self,
        cells: &[(Sym, Sym, Sym, Day, u64, u64)],
        mut domain_days: Vec<(Sym, Day, u64)>,
    ) {
        // Each domain's sessions summed day by day, to sum any window by two lookups;
        // `running_domain[i]` is the domain of `running[i]`, so that a domain's sums are one
        // slice of `running`.
        domain_days.sort_unstable_by_key(|&(domain, day, _)| (domain, day));
        let mut running: Vec<(Day, u64)> = Vec::with_capacity(domain_days.len());
        let mut running_domain: Vec<Sym> = Vec::with_capacity(domain_days.len());
        for (domain, day, sessions) in domain_days {
            let same_domain = running_domain.last() == Some(&domain);
            match running.last_mut() {
                Some(last) if same_domain && last.0 == day => last.1 += sessions,
                Some(&mut (_, total)) if same_domain => running.push((day, total + sessions)),
                _ => running.push((day, sessions)),
            }
            if running.len() > running_domain.len() {
                running_domain.push(domain);
            }
        }
        // The sum of the domain's sessions (or a cell's failed sessions) on days before
        // `day`, from a running sum by day.
        fn before(running: &[(Day, u64)], day: Day) -> u64 {
            match running.partition_point(|&(d, _)| d < day) {
                0 => 0,
                n => running[n - 1].1,
            }
        }
        let mut heavy: HashMap<(Day, Sym), Vec<(u64, f64)>> = HashMap::default();
        let mut cell_running: Vec<(Day, u64)> = Vec::new();
        for cell in cells.chunk_by(|a, b| (a.0, a.1, a.2) == (b.0, b.1, b.2)) {
            let (domain, _, result_type, ..) = cell[0];
            let from = running_domain.partition_point(|d| *d < domain);
            let to = running_domain.partition_point(|d| *d <= domain);
            let domain_running = &running[from..to];
            cell_running.clear();
            for &(.., day, failed, _) in cell {
                match cell_running.last_mut() {
                    Some(last) if last.0 == day => last.1 += failed,
                    Some(&mut (_, total)) => cell_running.push((day, total + failed)),
                    None => cell_running.push((day, failed)),
                }
            }
            for &(.., day, failed, report_sessions) in cell {
                let window = day - WINDOW_DAYS;
                let failed_before = before(&cell_running, day) - before(&cell_running, window);
                let sessions_before = before(domain_running, day) - before(domain_running, window);
                if let Some(usual) = cell_usual_rate(failed_before, sessions_before) {
                    heavy
                        .entry((day, result_type))
                        .or_default()
                        .push((failed, usual * report_sessions as f64));
                }
            }
        }
        self.heavy = heavy
            .into_iter()
            .map(|(key, reports)| (key, HeavyCounts::of(&reports)))
            .collect();
    }

    /// Adds another shard's counts.
    pub fn merge(&mut self, other: Self) {
        for (day, n) in other.reports {
            *self.reports.entry(day).or_default() += n;
        }
        for (key, n) in other.new_cells {
            *self.new_cells.entry(key).or_default() += n;
        }
        for (key, counts) in other.heavy {
            match self.heavy.get_mut(&key) {
                Some(mine) => mine.add(&counts),
                None => {
                    self.heavy.insert(key, counts);
                }
            }
        }
    }

    /// Whether the fleet had reports on every day of `day`'s window. In the first weeks a
    /// cell's usual rate rests on fewer days, so the same report weighs differently, and
    /// the weeks before cannot say how heavy is unusual.
    pub fn full_window(&self, day: Day) -> bool {
        (day - 1 - WINDOW_DAYS..day - 1).all(|d| self.reports.get(&d).is_some_and(|&n| n > 0))
    }

    /// The share of reports, over the `WINDOW_DAYS` days ending two days before `day`, that
    /// showed `result_type` on a cell with at least `failed` failed sessions where the cell's
    /// usual rate predicted at most `expected` (generously binned), counting one report
    /// more that did: how often a report is this heavy without telling of anything.
    pub fn heavy_report_rate(&self, result_type: Sym, day: Day, failed: u64, expected: f64) -> f64 {
        let (mut heavy, mut reports) = (0u64, 0u64);
        for d in day - 1 - WINDOW_DAYS..day - 1 {
            reports += self.reports.get(&d).copied().unwrap_or(0);
            if let Some(counts) = self.heavy.get(&(d, result_type)) {
                heavy += counts.at_least(failed, expected);
            }
        }
        ((heavy + 1) as f64 / (reports + 1) as f64).min(1.0)
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
    fn heavy_counts_answer_how_many_were_at_least_as_heavy() {
        // (failed sessions, expected)
        let counts = HeavyCounts::of(&[(1, 0.5), (3, 0.01), (8, 0.4), (8, 5.0), (40, 1e-6)]);
        // Eight or more where at most 0.4 were expected: (8, 0.4) and (40, 1e-6).
        assert_eq!(counts.at_least(8, 0.4), 2);
        // Any failed sessions, any expectation: all five.
        assert_eq!(counts.at_least(1, 100.0), 5);
        // Three or more where at most 0.01 were expected: (3, 0.01) and (40, 1e-6).
        assert_eq!(counts.at_least(3, 0.01), 2);
        // Bins are generous: 9 shares 8's bin (8 to 11), 0.45 shares 0.4's (0.316 to 1).
        assert_eq!(counts.at_least(9, 0.45), 2);
        assert_eq!(counts.at_least(12, 0.3), 1);
        assert_eq!(counts.at_least(64, 1.0), 0);
        // Tables of shards add up to the table of the whole.
        let mut sum = HeavyCounts::of(&[(1, 0.5), (3, 0.01)]);
        sum.add(&HeavyCounts::of(&[(8, 0.4), (8, 5.0), (40, 1e-6)]));
        assert_eq!(sum, counts);
    }

    #[test]
    fn a_report_is_heavy_against_its_cells_weeks_before_not_its_own_day() {
        let start = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
        let mut observations = Observations::default();
        // One domain, one report of 1,000 sessions a day; one failed session of
        // `certificate-not-trusted` on mx4 on days 0 to 27; 8 on day 28.
        for day in 0..29 {
            let date = start + Duration::days(day);
            let failed = if day == 28 { 8 } else { 1 };
            let part = observations.add_part(
                Utc.from_utc_datetime(&date.and_hms_opt(23, 0, 0).unwrap()),
                date,
                "Google Inc.",
                "a.example",
                1_000,
                failed,
                None,
            );
            observations.add_failure(part, Some("mx4"), "certificate-not-trusted", failed);
        }
        observations.finish();
        let priors = FleetPriors::count(&observations, observations.parts().iter());
        let not_trusted = observations.names.get("certificate-not-trusted").unwrap();
        let day = |d: i64| crate::observations::day_of(start + Duration::days(d));
        // Day 28's report: 8 failed where (28 + 1) / 28,000 × 1,000 = 1.04 were expected.
        // Judged on day 40, the window (days 11 to 38) holds 18 reports, one that heavy.
        let rate = priors.heavy_report_rate(not_trusted, day(40), 8, 1.04);
        assert!((rate - 2.0 / 19.0).abs() < 1e-12, "{rate}");
        // None was as heavy where under 0.3 were expected (day 28's bin starts at 1).
        let rate = priors.heavy_report_rate(not_trusted, day(40), 8, 0.3);
        assert!((rate - 1.0 / 19.0).abs() < 1e-12, "{rate}");
        // Judged on day 29 (window days 0 to 27), every report but day 0's had at least one
        // failed session where 2 or fewer were expected; day 0's, with no weeks before, has
        // no usual rate and is not counted.
        let rate = priors.heavy_report_rate(not_trusted, day(29), 1, 2.0);
        assert!((rate - 28.0 / 29.0).abs() < 1e-12, "{rate}");
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
