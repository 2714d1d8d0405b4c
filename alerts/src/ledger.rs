//! The daily series the detectors compare: per policy domain and day, the sessions, the
//! failures per (MX, result type), each reporter's counts and the STS modes seen, summed
//! over the reports that have arrived so far.
//!
//! A day a domain received no report has no entry, and that is not the same as a day of
//! zero sessions: a reporter sends nothing on days it sent no mail, so the detectors skip
//! such days rather than read them as zeros.

use crate::observations::{Day, FailureCount, Part, Sym};

/// One reporter's counts for one domain and day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReporterDay {
    pub reporter: Sym,
    pub sessions: u64,
    pub failed: u64,
    pub reports: u32,
}

/// Failed sessions of one (MX, result type) for one domain and day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureCell {
    pub mx: Sym,
    pub result_type: Sym,
    pub failed: u64,
    /// The reports that had any: trouble on the receiving side shows in every sender's
    /// report, one sender's own trouble in one.
    pub reports: u32,
    /// The reports with the most failed sessions of the cell (most first; unused places
    /// are zero): a report that alone carries far more than the host's usual rate predicts
    /// for its sessions is evidence that a count summed over the day hides.
    pub heaviest: [ReportFailures; HEAVIEST],
}

/// How many of a cell's heaviest reports the ledger keeps.
pub const HEAVIEST: usize = 3;

/// One report's failed sessions of a cell, and the sessions it counted for the domain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportFailures {
    pub failed: u64,
    pub sessions: u64,
}

impl FailureCell {
    /// Keeps `report` among the heaviest: more failed sessions first, and of as many, the
    /// one with fewer sessions (the less expected).
    fn keep_if_heavy(&mut self, report: ReportFailures) {
        let heavier = |a: &ReportFailures, b: &ReportFailures| {
            a.failed > b.failed || (a.failed == b.failed && a.sessions < b.sessions)
        };
        let Some(place) = self
            .heaviest
            .iter()
            .position(|kept| kept.failed == 0 || heavier(&report, kept))
        else {
            return;
        };
        self.heaviest.copy_within(place..HEAVIEST - 1, place + 1);
        self.heaviest[place] = report;
    }
}

/// One domain's day, as far as it has arrived.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainDay {
    pub sessions: u64,
    pub failed: u64,
    pub reports: u32,
    pub reporters: Vec<ReporterDay>,
    pub failures: Vec<FailureCell>,
    /// Sessions per STS mode seen.
    pub modes: Vec<(Sym, u64)>,
}

impl DomainDay {
    pub fn has_data(&self) -> bool {
        self.reports > 0
    }

    /// Failed sessions of a result type on an MX (or on every MX, with `mx: None`).
    pub fn failed_of(&self, mx: Option<Sym>, result_type: Sym) -> u64 {
        self.failures
            .iter()
            .filter(|c| c.result_type == result_type && mx.is_none_or(|mx| c.mx == mx))
            .map(|c| c.failed)
            .sum()
    }

    /// The reports that had failures of a result type on an MX; with `mx: None`, the most
    /// on any one MX (a lower bound of the reports that had the type anywhere: a report may
    /// name several MX hosts).
    pub fn reports_of(&self, mx: Option<Sym>, result_type: Sym) -> u32 {
        self.failures
            .iter()
            .filter(|c| c.result_type == result_type && mx.is_none_or(|mx| c.mx == mx))
            .map(|c| c.reports)
            .max()
            .unwrap_or(0)
    }

    pub fn reporter(&self, reporter: Sym) -> Option<&ReporterDay> {
        self.reporters.iter().find(|r| r.reporter == reporter)
    }

    pub fn has_mode(&self, mode: Sym) -> bool {
        self.modes
            .iter()
            .any(|&(m, sessions)| m == mode && sessions > 0)
    }

    fn add(&mut self, part: &Part, failures: &[FailureCount], modes: &[(Sym, u64)]) {
        self.sessions += part.sessions;
        self.failed += part.failed;
        self.reports += 1;
        match self
            .reporters
            .iter_mut()
            .find(|r| r.reporter == part.reporter)
        {
            Some(r) => {
                r.sessions += part.sessions;
                r.failed += part.failed;
                r.reports += 1;
            }
            None => self.reporters.push(ReporterDay {
                reporter: part.reporter,
                sessions: part.sessions,
                failed: part.failed,
                reports: 1,
            }),
        }
        for f in failures {
            let report = ReportFailures {
                failed: f.sessions,
                sessions: part.sessions,
            };
            match self
                .failures
                .iter_mut()
                .find(|c| c.mx == f.mx && c.result_type == f.result_type)
            {
                Some(cell) => {
                    cell.failed += f.sessions;
                    cell.reports += 1;
                    cell.keep_if_heavy(report);
                }
                None => {
                    let mut heaviest = [ReportFailures::default(); HEAVIEST];
                    heaviest[0] = report;
                    self.failures.push(FailureCell {
                        mx: f.mx,
                        result_type: f.result_type,
                        failed: f.sessions,
                        reports: 1,
                        heaviest,
                    });
                }
            }
        }
        for &(mode, sessions) in modes {
            match self.modes.iter_mut().find(|(m, _)| *m == mode) {
                Some((_, total)) => *total += sessions,
                None => self.modes.push((mode, sessions)),
            }
        }
    }
}

/// Every domain's days, indexed by domain symbol and day.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    domains: Vec<DomainBook>,
}

#[derive(Debug, Clone, Default)]
struct DomainBook {
    /// The day of `days[0]`.
    first_day: Day,
    days: Vec<DomainDay>,
}

static EMPTY: DomainDay = DomainDay {
    sessions: 0,
    failed: 0,
    reports: 0,
    reporters: Vec::new(),
    failures: Vec::new(),
    modes: Vec::new(),
};

impl Ledger {
    /// Adds one arrived part, with its failures and modes.
    pub fn add(&mut self, part: &Part, failures: &[FailureCount], modes: &[(Sym, u64)]) {
        let index = part.domain.0 as usize;
        if self.domains.len() <= index {
            self.domains.resize_with(index + 1, DomainBook::default);
        }
        let book = &mut self.domains[index];
        if book.days.is_empty() {
            book.first_day = part.day;
        }
        if part.day < book.first_day {
            // A report for an earlier day than any so far: shift the days right.
            let shift = (book.first_day - part.day) as usize;
            book.days
                .splice(0..0, std::iter::repeat_n(DomainDay::default(), shift));
            book.first_day = part.day;
        }
        let offset = (part.day - book.first_day) as usize;
        if book.days.len() <= offset {
            book.days.resize_with(offset + 1, DomainDay::default);
        }
        book.days[offset].add(part, failures, modes);
    }

    /// A domain's day; empty (no reports) when nothing has arrived for it.
    pub fn day(&self, domain: Sym, day: Day) -> &DomainDay {
        let Some(book) = self.domains.get(domain.0 as usize) else {
            return &EMPTY;
        };
        if day < book.first_day {
            return &EMPTY;
        }
        book.days
            .get((day - book.first_day) as usize)
            .unwrap_or(&EMPTY)
    }

    /// The days in `from..to` (end exclusive) on which the domain has data, latest first.
    pub fn days_with_data(
        &self,
        domain: Sym,
        from: Day,
        to: Day,
    ) -> impl Iterator<Item = (Day, &DomainDay)> + '_ {
        (from..to)
            .rev()
            .map(move |day| (day, self.day(domain, day)))
            .filter(|(_, d)| d.has_data())
    }

    /// The domains with any data, as symbols.
    pub fn domains(&self) -> impl Iterator<Item = Sym> + '_ {
        self.domains
            .iter()
            .enumerate()
            .filter(|(_, book)| !book.days.is_empty())
            .map(|(i, _)| Sym(i as u32))
    }
}
