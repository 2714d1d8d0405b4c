//! The built-in detectors: pure functions from the ledger (what has arrived) to findings.
//!
//! Each judges one domain on one day against the days before it. Rates, not counts: a day
//! whose reports have only partly arrived has a lower count but the same rate, which is
//! what lets a day be judged from its first reports. Baselines are the median and the
//! median absolute deviation (MAD) of the daily rates, which a past incident or one odd day
//! does not drag the way a mean and a standard deviation are dragged; days without reports
//! are left out of the baseline, not counted as zeros.

use std::cell::OnceCell;

use crate::config::AlertConfig;
use crate::ledger::{DomainDay, FailureCell, Ledger};
use crate::observations::{Day, Sym};
use crate::priors::{self, FleetPriors, chance_in_reports};

/// What a detector saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    /// A result type the domain had none of in its baseline window.
    NewResultType {
        domain: Sym,
        day: Day,
        result_type: Sym,
        /// The MX hosts the failures name (empty for policy-level failures).
        mxs: Vec<Sym>,
        failed: u64,
        sessions: u64,
        /// The domain had the type before, but not on these MX hosts.
        new_on_mx: bool,
        /// The reports of the day that show it, of the day's reports so far.
        reports: u32,
        day_reports: u32,
        /// The share of the whole fleet's reports that showed the type new in the weeks
        /// before ([`FleetPriors::new_cell_rate`]).
        fleet_new_rate: f64,
        /// When the weight of its reports made it count.
        heavy: Option<HeavyReport>,
    },
    /// The failure rate of one (MX, result type) far above its baseline.
    FailureSpike {
        domain: Sym,
        day: Day,
        mx: Sym,
        result_type: Sym,
        failed: u64,
        sessions: u64,
        baseline: Baseline,
        /// When the weight of its reports made it count.
        heavy: Option<HeavyReport>,
    },
    /// One reporter's failure rate for the domain far above its baseline.
    ReporterSpike {
        domain: Sym,
        day: Day,
        reporter: Sym,
        failed: u64,
        sessions: u64,
        baseline: Baseline,
    },
    /// An MTA-STS mode not seen in the baseline window.
    ModeChange {
        domain: Sym,
        day: Day,
        /// The mode most sessions had in the baseline window.
        old: Sym,
        new: Sym,
        sessions: u64,
    },
    /// A daily reporter that has sent no report for whole days.
    ReporterQuiet {
        domain: Sym,
        reporter: Sym,
        /// The first day without a report.
        since: Day,
        /// Its median daily sessions before.
        usual_sessions: u64,
    },
}

impl Finding {
    pub fn domain(&self) -> Sym {
        match self {
            Self::NewResultType { domain, .. }
            | Self::FailureSpike { domain, .. }
            | Self::ReporterSpike { domain, .. }
            | Self::ModeChange { domain, .. }
            | Self::ReporterQuiet { domain, .. } => *domain,
        }
    }
}

/// A baseline of daily rates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Baseline {
    pub median: f64,
    /// The MAD scaled to a standard deviation (×1.4826), floored at the configured spread.
    pub spread: f64,
    /// The rate above which the day is a spike (the failed sessions must also be beyond
    /// chance). For a failure spike, the lower of the rates of the absolute and the
    /// relative rule: a day back at or below it ends the incident.
    pub threshold: f64,
    /// The days it was computed from.
    pub days: u32,
}

/// The heaviest of the reports whose weight made a finding count.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HeavyReport {
    pub failed: u64,
    /// The failed sessions the host's usual rate predicted for the report's sessions.
    pub expected: f64,
    /// The share of the fleet's reports of the weeks before that were as heavy.
    pub fleet_rate: f64,
}

impl Baseline {
    /// From daily rates (at least one), with the spike settings.
    fn of(rates: &mut [f64], mad_factor: f64, rate_floor: f64, min_rate: f64) -> Self {
        let middle = median(rates);
        let mut deviations: Vec<f64> = rates.iter().map(|r| (r - middle).abs()).collect();
        let spread = (median(&mut deviations) * 1.4826).max(rate_floor);
        Self {
            median: middle,
            spread,
            threshold: (middle + mad_factor * spread).max(min_rate),
            days: rates.len() as u32,
        }
    }
}

fn median(values: &mut [f64]) -> f64 {
    debug_assert!(!values.is_empty());
    let mid = values.len() / 2;
    let (_, upper, _) = values.select_nth_unstable_by(mid, f64::total_cmp);
    let upper = *upper;
    if values.len() % 2 == 1 {
        upper
    } else {
        let lower = values[..mid]
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        (lower + upper) / 2.0
    }
}

/// An upper bound (Chernoff) on the natural log of the chance that a Poisson count with
/// mean `expected` reaches `count`: how surprising `count` failed sessions are when the
/// baseline rate predicts `expected`. A day judged from its first few reports has few
/// sessions, and its rate swings more than a whole day's; this is what keeps such a day from
/// looking like a spike.
pub fn log_chance_of_at_least(count: u64, expected: f64) -> f64 {
    let count = count as f64;
    let expected = expected.max(1e-9);
    if count <= expected {
        return 0.0;
    }
    -expected + count * (1.0 + expected.ln() - count.ln())
}

fn rate(failed: u64, sessions: u64) -> f64 {
    if sessions == 0 {
        0.0
    } else {
        failed as f64 / sessions as f64
    }
}

/// Whether `failed` of `sessions` is too many to be chance at the `usual` rate.
fn surprising(failed: u64, sessions: u64, usual: f64, max_chance: f64) -> bool {
    log_chance_of_at_least(failed, usual * sessions as f64) < max_chance.ln()
}

/// The usual rate of a series for the chance bound: its failed sessions over its sessions,
/// with one failure more than it had (a type never seen is rare, not impossible), and not
/// below the median daily rate (a series whose busy days fail less).
fn usual_rate(failed: u64, sessions: u64, median: f64) -> f64 {
    if sessions == 0 {
        return 1.0;
    }
    ((failed + 1) as f64 / sessions as f64).max(median)
}

/// Whether `shown` of the day's `reports` reports showing a type new is beyond chance at the
/// rate the fleet's reports show it new (`new_result_type.max_report_chance`), from two
/// reports on.
fn rare_in_the_fleet(
    config: &AlertConfig,
    priors: &FleetPriors,
    result_type: Sym,
    day: Day,
    shown: u32,
    reports: u32,
) -> bool {
    shown >= 2
        && chance_in_reports(shown, reports, priors.new_cell_rate(result_type, day))
            < config.new_result_type.max_report_chance
}

/// The cell's heaviest report, when its heaviest reports of the day are beyond chance
/// (`spike.heavy_report_max_chance`): for the `j` heaviest (by how often the fleet's reports
/// are as heavy, [`FleetPriors::heavy_report_rate`]), the chance that `j` of the day's
/// `reports` would each be at least as heavy as the `j`-th. `usual` is the cell's usual rate
/// ([`priors::cell_usual_rate`]).
fn heavy_beyond_chance(
    config: &AlertConfig,
    priors: &FleetPriors,
    cell: &FailureCell,
    usual: Option<f64>,
    day: Day,
    reports: u32,
) -> Option<HeavyReport> {
    let max_chance = config.spike.heavy_report_max_chance;
    let usual = usual.filter(|_| max_chance > 0.0 && priors.full_window(day))?;
    let mut weighed = [HeavyReport::default(); crate::ledger::HEAVIEST];
    let mut kept = 0;
    for report in cell.heaviest.iter().filter(|r| r.failed > 0) {
        let expected = usual * report.sessions as f64;
        weighed[kept] = HeavyReport {
            failed: report.failed,
            expected,
            fleet_rate: priors.heavy_report_rate(cell.result_type, day, report.failed, expected),
        };
        kept += 1;
    }
    let weighed = &mut weighed[..kept];
    weighed.sort_unstable_by(|a, b| a.fleet_rate.total_cmp(&b.fleet_rate));
    let beyond = weighed
        .iter()
        .zip(1u32..)
        .any(|(report, shown)| chance_in_reports(shown, reports, report.fleet_rate) < max_chance);
    beyond.then(|| weighed[0])
}

/// The usual rate of a cell (an MX and result type) from its failed sessions and the
/// domain's sessions over the `priors::WINDOW_DAYS` before `day`, as the fleet's
/// heavy-report counts take it.
fn cell_usual_rate(ledger: &Ledger, domain: Sym, cell: &FailureCell, day: Day) -> Option<f64> {
    let (mut failed, mut sessions) = (0, 0);
    for (_, d) in ledger.days_with_data(domain, day - priors::WINDOW_DAYS, day) {
        failed += d.failed_of(Some(cell.mx), cell.result_type);
        sessions += d.sessions;
    }
    priors::cell_usual_rate(failed, sessions)
}

/// The reports that must show a failure for it to be the domain's: the configured number,
/// or fewer when the domain's baseline days had fewer reports (median).
fn required_reports(min_reports: u32, history: &[&DomainDay]) -> u32 {
    let mut reports: Vec<f64> = history.iter().map(|d| f64::from(d.reports)).collect();
    if reports.is_empty() {
        return min_reports.max(1);
    }
    let usual = median(&mut reports).floor() as u32;
    min_reports.min(usual).max(1)
}

/// The baseline days of `day`: the `baseline_days` before it on which the domain had at
/// least `min_sessions` sessions.
fn baseline_days<'a>(
    config: &AlertConfig,
    ledger: &'a Ledger,
    domain: Sym,
    day: Day,
) -> impl Iterator<Item = &'a DomainDay> + 'a {
    let min_sessions = config.spike.min_sessions;
    ledger
        .days_with_data(domain, day - config.evaluation.baseline_days as Day, day)
        .map(|(_, d)| d)
        .filter(move |d| d.sessions >= min_sessions)
}

/// New result types and failure-rate spikes per (MX, result type) of one domain and day,
/// new types first.
///
/// Both ask for breadth or numbers: the failures must show in several of the day's reports
/// (`min_reports`) or be many (`enough_failed_sessions`), because what breaks on the
/// receiving side breaks for every sender, while a few failed sessions in one report are
/// that sender's odd sessions. Two reports are enough for a type that the fleet's reports
/// rarely show new (`priors`), on a cell that had at most one report's odd sessions.
pub fn failures(
    config: &AlertConfig,
    ledger: &Ledger,
    priors: &FleetPriors,
    domain: Sym,
    day: Day,
) -> Vec<Finding> {
    let today = ledger.day(domain, day);
    let spike = &config.spike;
    let new_type = &config.new_result_type;
    let mut found = Vec::new();
    if today.sessions == 0 || today.failures.is_empty() {
        return found;
    }
    // The gates on today's counts alone come first: most days of most domains have a few
    // failed sessions and pass none, and then no baseline need be read.
    let new_type_candidate = new_type.enabled
        && today.failures.iter().any(|c| {
            let failed = today.failed_of(None, c.result_type);
            let reports = today.reports_of(None, c.result_type);
            let share = rate(failed, today.sessions);
            (failed >= new_type.min_failed_sessions
                && (share >= new_type.min_rate || reports >= new_type.min_reports))
                || (reports >= 2 && share >= new_type.min_rate)
        });
    // A day of fewer than `min_sessions` sessions so far is judged only for failures in
    // `min_reports` reports: a small domain's first reports of the day may hold 18 sessions
    // of which 8 failed in three senders' reports, which is no sender's odd session.
    let spike_candidate = spike.enabled
        && today.failures.iter().any(|c| {
            c.failed >= spike.min_failed_sessions
                && (c.reports >= spike.min_reports
                    || (today.sessions >= spike.min_sessions
                        && rate(c.failed, today.sessions)
                            >= spike.min_rate.min(spike.relative_min_rate)))
        });
    if !new_type_candidate && !spike_candidate {
        return found;
    }
    let history: Vec<&DomainDay> = baseline_days(config, ledger, domain, day).collect();
    if history.len() < config.evaluation.min_baseline_days as usize {
        return found;
    }

    let baseline_sessions: u64 = history.iter().map(|d| d.sessions).sum();
    // Breadth, or numbers: enough reports; or many failed sessions in at least half the
    // day's reports so far (one report of several is one sender's trouble, a reporter
    // spike); or, from two reports on, failed sessions far beyond chance at the usual rate.
    let broad = |required: u32, enough: u64, reports: u32, failed: u64, usual: f64| {
        reports >= required
            || (failed >= enough && reports * 2 >= today.reports)
            || (reports >= 2
                && surprising(failed, today.sessions, usual, spike.relative_max_chance))
    };
    if new_type_candidate {
        let required = required_reports(new_type.min_reports, &history);
        // The type had no failure in the window: the usual rate is one in its sessions.
        let usual = usual_rate(0, baseline_sessions, 0.0);
        let window = day - config.evaluation.baseline_days as Day;
        // Enough failed sessions, and a share of the domain's sessions that matters; or, in
        // the configured number of reports, failed sessions far beyond chance whatever
        // their share: a secondary MX host of a big domain is a small share of its
        // sessions, and an incident that starts late in the day a small share of the day.
        let big_enough = |failed: u64, reports: u32| {
            failed >= new_type.min_failed_sessions
                && (rate(failed, today.sessions) >= new_type.min_rate
                    || (reports >= new_type.min_reports
                        && surprising(failed, today.sessions, usual, spike.relative_max_chance)))
        };
        let mut types: Vec<Sym> = today.failures.iter().map(|c| c.result_type).collect();
        types.sort_unstable();
        types.dedup();
        for result_type in types {
            let failed = today.failed_of(None, result_type);
            let reports = today.reports_of(None, result_type);
            // Or, with fewer failed sessions, in two reports or more of a type that the
            // fleet's reports rarely show new: two senders seeing an expired certificate on
            // the same host the same day is not two senders' odd sessions.
            let rare = |failed: u64, reports: u32| {
                rate(failed, today.sessions) >= new_type.min_rate
                    && rare_in_the_fleet(config, priors, result_type, day, reports, today.reports)
            };
            // Or reports far heavier than the host's usual rate (none, for a new type)
            // predicts, as rarely seen across the fleet.
            let heavy = |c: &FailureCell| {
                if c.failed < new_type.min_failed_sessions {
                    return None;
                }
                heavy_beyond_chance(
                    config,
                    priors,
                    c,
                    cell_usual_rate(ledger, domain, c, day),
                    day,
                    today.reports,
                )
            };
            let counts = |failed: u64, reports: u32| {
                (big_enough(failed, reports)
                    && broad(
                        required,
                        new_type.enough_failed_sessions,
                        reports,
                        failed,
                        usual,
                    ))
                    || rare(failed, reports)
            };
            let cells_of_type = || {
                today
                    .failures
                    .iter()
                    .filter(move |c| c.result_type == result_type)
            };
            // Each of the type's cells weighed once, and only when a rule asks: most types
            // that count do so by the rules above.
            let weighed: OnceCell<Vec<(Sym, Option<HeavyReport>)>> = OnceCell::new();
            let weights =
                || weighed.get_or_init(|| cells_of_type().map(|c| (c.mx, heavy(c))).collect());
            let heavy_of_type = || weights().iter().find_map(|(_, weight)| *weight);
            if !counts(failed, reports) && heavy_of_type().is_none() {
                continue;
            }
            // Every day of the window counts here, small ones too: a type seen once in the
            // window is not new.
            let seen_on = |mx: Option<Sym>| {
                ledger.days_with_data(domain, window, day).any(|(_, d)| {
                    d.failures
                        .iter()
                        .any(|c| c.result_type == result_type && mx.is_none_or(|mx| c.mx == mx))
                })
            };
            let cells = today
                .failures
                .iter()
                .filter(|c| c.result_type == result_type && !c.mx.is_none());
            let (mxs, failed, reports, new_on_mx): (Vec<Sym>, u64, u32, bool) = if !seen_on(None) {
                (cells.map(|c| c.mx).collect(), failed, reports, false)
            } else {
                // The domain has had the type, on other MX hosts: an MX that never had it
                // and now has enough of it is news too (a certificate replaced on one host).
                let new: Vec<_> = cells
                    .filter(|c| {
                        (counts(c.failed, c.reports)
                            || weights()
                                .iter()
                                .any(|(mx, weight)| *mx == c.mx && weight.is_some()))
                            && !seen_on(Some(c.mx))
                    })
                    .collect();
                if new.is_empty() {
                    continue;
                }
                (
                    new.iter().map(|c| c.mx).collect(),
                    new.iter().map(|c| c.failed).sum(),
                    new.iter().map(|c| c.reports).max().unwrap_or(0),
                    true,
                )
            };
            let mut mxs = mxs;
            mxs.sort_unstable();
            found.push(Finding::NewResultType {
                domain,
                day,
                result_type,
                mxs,
                failed,
                sessions: today.sessions,
                new_on_mx,
                reports,
                day_reports: today.reports,
                fleet_new_rate: priors.new_cell_rate(result_type, day),
                heavy: if counts(failed, reports) {
                    None
                } else {
                    heavy_of_type()
                },
            });
        }
    }

    if spike_candidate {
        let required = required_reports(spike.min_reports, &history);
        let mut rates = Vec::with_capacity(history.len());
        for cell in &today.failures {
            let today_rate = rate(cell.failed, today.sessions);
            // Cheap gates first: most cells are a handful of sessions.
            // In many reports the rate floors do not apply (below).
            let many_reports = cell.reports >= spike.min_reports;
            if cell.failed < spike.min_failed_sessions
                || (!many_reports
                    && (today.sessions < spike.min_sessions
                        || today_rate < spike.min_rate.min(spike.relative_min_rate)))
            {
                continue;
            }
            rates.clear();
            let mut baseline_failed = 0;
            let mut baseline_reports = 0;
            for d in &history {
                let failed = d.failed_of(Some(cell.mx), cell.result_type);
                baseline_failed += failed;
                baseline_reports += d.reports_of(Some(cell.mx), cell.result_type);
                rates.push(rate(failed, d.sessions));
            }
            let baseline = Baseline::of(
                &mut rates,
                spike.mad_factor,
                spike.rate_floor,
                spike.min_rate,
            );
            let usual = usual_rate(baseline_failed, baseline_sessions, baseline.median);
            // Breadth; or a cell whose four weeks hold one sender's odd report, as good as
            // new: in two reports or more it counts as a new type does, by the fleet's rate.
            // Reports each far heavier than the host's usual rate predicts, as rarely seen
            // across the fleet: one sender's odd sessions are a handful.
            let heavy = || {
                heavy_beyond_chance(
                    config,
                    priors,
                    cell,
                    cell_usual_rate(ledger, domain, cell, day),
                    day,
                    today.reports,
                )
            };
            let mut heavy_known = None;
            let mut is_heavy = || heavy_known.get_or_insert_with(heavy).is_some();
            let wide = broad(
                required,
                spike.enough_failed_sessions,
                cell.reports,
                cell.failed,
                usual,
            ) || (baseline_reports <= 1
                && rare_in_the_fleet(
                    config,
                    priors,
                    cell.result_type,
                    day,
                    cell.reports,
                    today.reports,
                ))
                || is_heavy();
            if !wide {
                continue;
            }
            let absolute = today_rate > baseline.threshold
                && surprising(cell.failed, today.sessions, usual, spike.max_chance);
            // A jump of many times the usual rate that is far beyond chance counts even
            // below the minimum rate: a secondary MX host failing for most of its sessions
            // is a small share of the domain's sessions (reports do not count sessions per
            // MX), yet many failed sessions where there were a few. Seen in the configured
            // number of reports (the breadth rule without its allowance for small domains),
            // it counts whatever its share: a big domain's secondary MX, or an incident
            // that started late in the day, may be well under `relative_min_rate`.
            let relative_floor = if many_reports {
                0.0
            } else {
                spike.relative_min_rate
            };
            let relative_threshold = relative_floor.max(spike.relative_factor * usual);
            // Beyond chance: at the usual rate, or by the weight of its reports, which the
            // fleet measures with what a day's Poisson bound does not know (one sender's
            // odd sessions come several at a time).
            let relative = today_rate >= relative_threshold
                && (surprising(
                    cell.failed,
                    today.sessions,
                    usual,
                    spike.relative_max_chance,
                ) || is_heavy());
            if absolute || relative {
                found.push(Finding::FailureSpike {
                    domain,
                    day,
                    mx: cell.mx,
                    result_type: cell.result_type,
                    failed: cell.failed,
                    sessions: today.sessions,
                    baseline: Baseline {
                        threshold: baseline.threshold.min(relative_threshold),
                        ..baseline
                    },
                    heavy: heavy_known.flatten(),
                });
            }
        }
    }
    found
}

/// Failure-rate spikes of one reporter's sessions for one domain and day, which the other
/// reporters of the day do not share.
pub fn reporters(config: &AlertConfig, ledger: &Ledger, domain: Sym, day: Day) -> Vec<Finding> {
    let spike = &config.spike;
    let today = ledger.day(domain, day);
    let mut found = Vec::new();
    if !spike.enabled {
        return found;
    }
    let from = day - config.evaluation.baseline_days as Day;
    let mut rates = Vec::new();
    for r in &today.reporters {
        let today_rate = rate(r.failed, r.sessions);
        if r.failed < spike.reporter_min_failed_sessions
            || r.sessions < spike.min_sessions
            || today_rate < spike.min_rate
        {
            continue;
        }
        rates.clear();
        rates.extend(
            ledger
                .days_with_data(domain, from, day)
                .filter_map(|(_, d)| d.reporter(r.reporter))
                .filter(|past| past.sessions >= spike.min_sessions)
                .map(|past| rate(past.failed, past.sessions)),
        );
        if rates.len() < config.evaluation.min_baseline_days as usize {
            continue;
        }
        let baseline = Baseline::of(
            &mut rates,
            spike.mad_factor,
            spike.rate_floor,
            spike.min_rate,
        );
        // One sender's word: the usual rate is the median, floored, not the pooled rate of
        // the (MX, result type) spikes, which many reports back.
        let usual = baseline.median.max(spike.rate_floor);
        // And the other senders must not see it: failures every sender sees are the
        // domain's, for the failure detectors. Until others have reported for the day, it
        // cannot be told which.
        let others_sessions = today.sessions.saturating_sub(r.sessions);
        let others_rate = rate(today.failed.saturating_sub(r.failed), others_sessions);
        let alone = others_sessions >= spike.min_sessions
            && others_rate * spike.relative_factor <= today_rate;
        if alone
            && today_rate > baseline.threshold
            && surprising(r.failed, r.sessions, usual, spike.max_chance)
        {
            found.push(Finding::ReporterSpike {
                domain,
                day,
                reporter: r.reporter,
                failed: r.failed,
                sessions: r.sessions,
                baseline,
            });
        }
    }
    found
}

/// MTA-STS modes of one domain and day that its baseline window did not have.
pub fn modes(config: &AlertConfig, ledger: &Ledger, domain: Sym, day: Day) -> Vec<Finding> {
    let mut found = Vec::new();
    if !config.mode_change.enabled {
        return found;
    }
    let today = ledger.day(domain, day);
    if today.modes.is_empty() {
        return found;
    }
    let from = day - config.evaluation.baseline_days as Day;
    // Nearly always the latest day before with a mode had today's modes too: then none is
    // new, and the window need not be read.
    if let Some((_, latest)) = ledger
        .days_with_data(domain, from, day)
        .find(|(_, d)| !d.modes.is_empty())
        && today.modes.iter().all(|&(mode, _)| latest.has_mode(mode))
    {
        return found;
    }
    // The window's modes by sessions, and the days that had any mode.
    let mut window: Vec<(Sym, u64)> = Vec::new();
    let mut days_with_mode = 0;
    for (_, past) in ledger.days_with_data(domain, from, day) {
        if past.modes.is_empty() {
            continue;
        }
        days_with_mode += 1;
        for &(mode, sessions) in &past.modes {
            match window.iter_mut().find(|(m, _)| *m == mode) {
                Some((_, total)) => *total += sessions,
                None => window.push((mode, sessions)),
            }
        }
    }
    if days_with_mode < config.evaluation.min_baseline_days {
        return found;
    }
    let Some(&(old, _)) = window
        .iter()
        .max_by_key(|&&(mode, sessions)| (sessions, mode))
    else {
        return found;
    };
    for &(mode, sessions) in &today.modes {
        if sessions >= config.mode_change.min_sessions && !window.iter().any(|(m, _)| *m == mode) {
            found.push(Finding::ModeChange {
                domain,
                day,
                old,
                new: mode,
                sessions,
            });
        }
    }
    found
}

/// Reporters of one domain that reported every day and have now been silent for
/// `missing_days` complete days, the last of which is `last_complete`.
pub fn quiet(
    config: &AlertConfig,
    ledger: &Ledger,
    domain: Sym,
    last_complete: Day,
) -> Vec<Finding> {
    let quiet = &config.reporter_quiet;
    let mut found = Vec::new();
    if !quiet.enabled || quiet.missing_days == 0 || quiet.daily_days == 0 {
        return found;
    }
    let since = last_complete - quiet.missing_days as Day + 1;
    // The day just before the silence names the candidates.
    let before = ledger.day(domain, since - 1);
    for r in &before.reporters {
        let silent = (since..=last_complete)
            .all(|day| ledger.day(domain, day).reporter(r.reporter).is_none());
        if !silent {
            continue;
        }
        let mut sessions: Vec<f64> = Vec::with_capacity(quiet.daily_days as usize);
        for day in (since - quiet.daily_days as Day)..since {
            match ledger.day(domain, day).reporter(r.reporter) {
                Some(past) => sessions.push(past.sessions as f64),
                None => break,
            }
        }
        if sessions.len() < quiet.daily_days as usize {
            continue;
        }
        let usual = median(&mut sessions);
        if usual >= quiet.min_daily_sessions as f64 {
            found.push(Finding::ReporterQuiet {
                domain,
                reporter: r.reporter,
                since,
                usual_sessions: usual.round() as u64,
            });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_odd_and_even_series() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut [5.0]), 5.0);
    }

    #[test]
    fn one_outlier_moves_neither_the_median_nor_the_spread_much() {
        let mut rates = vec![0.01, 0.012, 0.011, 0.009, 0.01, 0.5, 0.01];
        let baseline = Baseline::of(&mut rates, 5.0, 0.001, 0.0);
        assert_eq!(baseline.median, 0.01);
        assert!(baseline.spread < 0.005, "{baseline:?}");
        assert!(baseline.threshold < 0.03, "{baseline:?}");
    }

    #[test]
    fn the_chance_bound_tells_noise_from_a_spike() {
        // 11 failed where 4 are usual: happens (about 0.3%, bounded by 2%).
        let noise = log_chance_of_at_least(11, 4.0).exp();
        assert!(noise > 1e-3 && noise < 0.05, "{noise}");
        // 60 failed where 4 are usual: never by chance.
        assert!(log_chance_of_at_least(60, 4.0) < 1e-6f64.ln());
        assert_eq!(log_chance_of_at_least(3, 4.0), 0.0);
    }

    #[test]
    fn a_flat_series_uses_the_floor_and_the_minimum_rate() {
        let mut rates = vec![0.0; 10];
        let baseline = Baseline::of(&mut rates, 5.0, 0.01, 0.05);
        assert_eq!(baseline.spread, 0.01);
        assert_eq!(baseline.threshold, 0.05);
    }
}
