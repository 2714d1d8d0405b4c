//! What the detectors read: each report as it arrived, reduced to what it says about each
//! policy domain, with every name interned.
//!
//! One [`Part`] is one (report, policy domain) pair: the sessions the report counted for
//! the domain, the STS mode it saw, and its failure counts per (receiving MX, result type).
//! Parts keep the report's `received_at`, because alerting replays the reports in the order
//! they arrived: the question is always "what did we know at that hour".

use foldhash::HashMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};

/// An interned name (domain, reporter, MX host, result type, mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sym(pub(crate) u32);

impl Sym {
    /// No name: a failure without a receiving MX (policy-level failures such as
    /// `sts-policy-fetch-error`), a policy without an STS mode.
    pub const NONE: Sym = Sym(u32::MAX);

    pub fn is_none(self) -> bool {
        self == Self::NONE
    }
}

/// Names to [`Sym`]s and back; ids are dense, so they index vectors.
#[derive(Debug, Default, Clone)]
pub struct Names {
    names: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Names {
    pub fn intern(&mut self, name: &str) -> Sym {
        if let Some(&id) = self.ids.get(name) {
            return Sym(id);
        }
        let id = u32::try_from(self.names.len()).expect("fewer than 4 billion names");
        self.names.push(name.to_owned());
        self.ids.insert(name.to_owned(), id);
        Sym(id)
    }

    pub fn intern_opt(&mut self, name: Option<&str>) -> Sym {
        name.map_or(Sym::NONE, |name| self.intern(name))
    }

    /// The symbol of a name already seen.
    pub fn get(&self, name: &str) -> Option<Sym> {
        self.ids.get(name).map(|&id| Sym(id))
    }

    /// The name of a symbol; `""` for [`Sym::NONE`].
    pub fn name(&self, sym: Sym) -> &str {
        if sym.is_none() {
            ""
        } else {
            &self.names[sym.0 as usize]
        }
    }

    pub fn name_opt(&self, sym: Sym) -> Option<&str> {
        (!sym.is_none()).then(|| self.name(sym))
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// A UTC date as a day number (days since 0001-01-01), so days index vectors.
pub type Day = i32;

pub fn day_of(date: NaiveDate) -> Day {
    date.num_days_from_ce()
}

pub fn date_of(day: Day) -> NaiveDate {
    NaiveDate::from_num_days_from_ce_opt(day).expect("a day number from a valid date")
}

/// What one report said about one policy domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// When the report was received, microseconds since the epoch (UTC).
    pub received_at: i64,
    /// The report's day (UTC date of its start).
    pub day: Day,
    pub reporter: Sym,
    pub domain: Sym,
    /// Sessions the report counted for the domain (successful + failed), from the
    /// summaries: the largest of the domain's policies, because a sender that evaluates two
    /// policies for one domain (MTA-STS and DANE) counts the same sessions under both.
    pub sessions: u64,
    /// Failed sessions of the domain, from the summaries (same rule).
    pub failed: u64,
    /// This part's failure counts: `failures[first_failure..first_failure + failure_count]`.
    pub first_failure: u32,
    pub failure_count: u32,
    /// The MTA-STS modes the report saw (`enforce`, `testing`, `none`) with their sessions:
    /// `modes[first_mode..first_mode + mode_count]`; none when the domain had no STS policy
    /// in the report. A report for the day a policy changed has two.
    pub first_mode: u32,
    pub mode_count: u32,
}

/// Failed sessions of one (receiving MX, result type) in one part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureCount {
    /// [`Sym::NONE`] for failures the sender did not tie to an MX.
    pub mx: Sym,
    pub result_type: Sym,
    pub sessions: u64,
}

/// The parts of many reports and their failure counts, with the names they use.
///
/// Filled with [`Self::add_part`] and [`Self::add_failure`] in any order, then
/// [`Self::finish`]ed, which groups each part's failures and puts the parts in the order
/// they arrived.
#[derive(Debug, Default, Clone)]
pub struct Observations {
    pub names: Names,
    parts: Vec<Part>,
    failures: Vec<FailureCount>,
    modes: Vec<(Sym, u64)>,
    /// Failures and modes added and not yet grouped by part: (part index, counts).
    staged: Vec<(u32, FailureCount)>,
    staged_modes: Vec<(u32, Sym, u64)>,
}

impl Observations {
    /// Adds what one report said about one domain (with its STS mode, if any); returns the
    /// part's index, for [`Self::add_failure`].
    #[allow(clippy::too_many_arguments)]
    pub fn add_part(
        &mut self,
        received_at: DateTime<Utc>,
        date: NaiveDate,
        reporter: &str,
        domain: &str,
        sessions: u64,
        failed: u64,
        sts_mode: Option<&str>,
    ) -> usize {
        let reporter = self.names.intern(reporter);
        let domain = self.names.intern(domain);
        let part = self.add_part_syms(
            received_at.timestamp_micros(),
            day_of(date),
            reporter,
            domain,
        );
        self.set_counts(part, sessions, failed);
        if let Some(mode) = sts_mode {
            self.add_mode(part, mode, sessions);
        }
        part
    }

    /// Adds sessions under an MTA-STS mode to a part.
    pub fn add_mode(&mut self, part: usize, mode: &str, sessions: u64) {
        let mode = self.names.intern(mode);
        self.add_mode_sym(part, mode, sessions);
    }

    /// Adds failed sessions of one (MX, result type) to a part.
    pub fn add_failure(&mut self, part: usize, mx: Option<&str>, result_type: &str, sessions: u64) {
        let mx = self.names.intern_opt(mx);
        let result_type = self.names.intern(result_type);
        self.add_failure_syms(part, mx, result_type, sessions);
    }

    /// A part with its names already interned, no counts and no mode yet.
    pub(crate) fn add_part_syms(
        &mut self,
        received_at: i64,
        day: Day,
        reporter: Sym,
        domain: Sym,
    ) -> usize {
        self.parts.push(Part {
            received_at,
            day,
            reporter,
            domain,
            sessions: 0,
            failed: 0,
            first_failure: 0,
            failure_count: 0,
            first_mode: 0,
            mode_count: 0,
        });
        self.parts.len() - 1
    }

    pub(crate) fn add_mode_sym(&mut self, part: usize, mode: Sym, sessions: u64) {
        self.staged_modes.push((index_of(part), mode, sessions));
    }

    pub(crate) fn add_failure_syms(
        &mut self,
        part: usize,
        mx: Sym,
        result_type: Sym,
        sessions: u64,
    ) {
        let count = FailureCount {
            mx,
            result_type,
            sessions,
        };
        self.staged.push((index_of(part), count));
    }

    /// Takes in another finished set (read by another thread), its names mapped to this
    /// one's, keeping the parts in the order they arrived. Both must be finished.
    pub(crate) fn merge(&mut self, other: Observations) {
        let to_self: Vec<Sym> = other
            .names
            .names
            .iter()
            .map(|name| self.names.intern(name))
            .collect();
        let map = |sym: Sym| {
            if sym.is_none() {
                sym
            } else {
                to_self[sym.0 as usize]
            }
        };
        let failure_offset = index_of(self.failures.len());
        let mode_offset = index_of(self.modes.len());
        self.failures
            .extend(other.failures.into_iter().map(|count| FailureCount {
                mx: map(count.mx),
                result_type: map(count.result_type),
                ..count
            }));
        self.modes
            .extend(other.modes.into_iter().map(|(mode, n)| (map(mode), n)));
        let theirs = other.parts.into_iter().map(|part| Part {
            reporter: map(part.reporter),
            domain: map(part.domain),
            first_failure: part.first_failure + failure_offset,
            first_mode: part.first_mode + mode_offset,
            ..part
        });
        let ours = std::mem::take(&mut self.parts);
        let mut merged = Vec::with_capacity(ours.len() + theirs.len());
        let mut ours = ours.into_iter().peekable();
        let mut theirs = theirs.peekable();
        loop {
            let next = match (ours.peek(), theirs.peek()) {
                (Some(a), Some(b)) if b.received_at < a.received_at => theirs.next(),
                (Some(_), _) => ours.next(),
                (None, _) => theirs.next(),
            };
            match next {
                Some(part) => merged.push(part),
                None => break,
            }
        }
        self.parts = merged;
    }

    /// Sets a part's session counts (the loader sums a report's policies first).
    pub(crate) fn set_counts(&mut self, part: usize, sessions: u64, failed: u64) {
        self.parts[part].sessions = sessions;
        self.parts[part].failed = failed;
    }

    /// Groups the failures and modes by part (summing repeats of one MX and result type, or
    /// of one mode) and sorts the parts by arrival. Call it once, after everything is added.
    pub fn finish(&mut self) {
        let mut staged = std::mem::take(&mut self.staged);
        // Readers add a part's failures right after it, as a rule: then only the runs of one
        // part need sorting.
        if staged.is_sorted_by_key(|&(part, _)| part) {
            for run in staged.chunk_by_mut(|a, b| a.0 == b.0) {
                run.sort_unstable_by_key(|&(_, f)| (f.mx, f.result_type));
            }
        } else {
            staged.sort_unstable_by_key(|&(part, f)| (part, f.mx, f.result_type));
        }
        for group in
            staged.chunk_by(|a, b| (a.0, a.1.mx, a.1.result_type) == (b.0, b.1.mx, b.1.result_type))
        {
            let (index, first) = group[0];
            let part = &mut self.parts[index as usize];
            if part.failure_count == 0 {
                part.first_failure = index_of(self.failures.len());
            }
            part.failure_count += 1;
            self.failures.push(FailureCount {
                sessions: group.iter().map(|g| g.1.sessions).sum(),
                ..first
            });
        }

        let mut staged = std::mem::take(&mut self.staged_modes);
        if staged.is_sorted_by_key(|&(part, _, _)| part) {
            for run in staged.chunk_by_mut(|a, b| a.0 == b.0) {
                run.sort_unstable_by_key(|&(_, mode, _)| mode);
            }
        } else {
            staged.sort_unstable_by_key(|&(part, mode, _)| (part, mode));
        }
        for group in staged.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
            let (index, mode, _) = group[0];
            let part = &mut self.parts[index as usize];
            if part.mode_count == 0 {
                part.first_mode = index_of(self.modes.len());
            }
            part.mode_count += 1;
            self.modes.push((mode, group.iter().map(|g| g.2).sum()));
        }
        // Unstable: reports that arrived in the same microsecond may replay in either order,
        // which changes no sum a detector reads.
        self.parts.sort_unstable_by_key(|p| p.received_at);
    }

    pub fn modes_of(&self, part: &Part) -> &[(Sym, u64)] {
        let first = part.first_mode as usize;
        &self.modes[first..first + part.mode_count as usize]
    }

    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    pub fn failures_of(&self, part: &Part) -> &[FailureCount] {
        let first = part.first_failure as usize;
        &self.failures[first..first + part.failure_count as usize]
    }

    pub fn len(&self) -> usize {
        self.parts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }
}

fn index_of(n: usize) -> u32 {
    u32::try_from(n).expect("fewer than 4 billion")
}
