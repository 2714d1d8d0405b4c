//! Where the tables live on disk, and which files a reader must see.
//!
//! The transformer writes and the query service reads; this module is the contract between
//! them, as pure functions on names (neither side's I/O lives here).
//!
//! ```text
//! <root>/<table>/date=YYYY-MM-DD/p<partition>-<first>-<last>.parquet
//! ```
//! - `<table>`: `reports`, `policies` or `failures` ([`TABLES`]).
//! - `date`: the Hive partition: the UTC date of the rows' `start_datetime`.
//! - `<partition>`, `<first>`, `<last>`: the bus partition and the inclusive range of its
//!   offsets the file accounts for (zero-padded to 5 and 20 digits so names sort by offset).
//!   The range is that of the whole flush (or compaction) that wrote the file, not only of
//!   the rows in it: a flush of offsets 100..=199 whose reports fall on two dates writes two
//!   files per table, both named `…-100-199`.
//! - Names beginning with `.` or `_` are not data (temporary files, staging directories).
//!
//! **Superseded files.** Compaction merges the files of one (table, date, partition) into one
//! whose range covers theirs, renames it into place, and deletes the inputs later. From the
//! rename on, a reader ignores every file whose range lies inside another file's range in the
//! same directory and partition ([`visible`]), so a query sees each row exactly once whether
//! it lists the directory before, during or after a compaction.

use chrono::NaiveDate;

/// The three tables, in the order they are written.
pub const TABLES: [&str; 3] = ["reports", "policies", "failures"];

/// One data file, as its path describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileRange {
    pub partition: u32,
    /// First bus offset accounted for, inclusive.
    pub first: u64,
    /// Last bus offset accounted for, inclusive.
    pub last: u64,
}

impl FileRange {
    /// `p00003-00000000000000000100-00000000000000000199.parquet`.
    pub fn file_name(&self) -> String {
        format!(
            "p{:05}-{:020}-{:020}.parquet",
            self.partition, self.first, self.last
        )
    }

    /// Reads a data file name back; `None` for anything else (temporary files included).
    pub fn parse(name: &str) -> Option<Self> {
        let stem = name.strip_prefix('p')?.strip_suffix(".parquet")?;
        let mut parts = stem.split('-');
        let partition = parts.next()?.parse().ok()?;
        let first = parts.next()?.parse().ok()?;
        let last = parts.next()?.parse().ok()?;
        (parts.next().is_none() && first <= last).then_some(Self {
            partition,
            first,
            last,
        })
    }

    /// Whether `self` lies inside `other` (same partition) without being the same range.
    pub fn is_within(&self, other: &FileRange) -> bool {
        self.partition == other.partition
            && other.first <= self.first
            && self.last <= other.last
            && (self.first, self.last) != (other.first, other.last)
    }
}

/// The directory of one date of one table, relative to the root: `failures/date=2026-01-01`.
pub fn date_dir(table: &str, date: NaiveDate) -> String {
    format!("{table}/{}", date_dir_name(date))
}

/// The name of one date's directory within a table: `date=2026-01-01`.
pub fn date_dir_name(date: NaiveDate) -> String {
    format!("date={}", date.format("%Y-%m-%d"))
}

/// Reads `date=YYYY-MM-DD` back.
pub fn parse_date_dir(name: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(name.strip_prefix("date=")?, "%Y-%m-%d").ok()
}

/// Whether a directory entry is data (not temporary, not staging).
pub fn is_data_name(name: &str) -> bool {
    !name.starts_with('.') && !name.starts_with('_')
}

/// The files of one date directory a reader must read: all but those superseded by a
/// compaction (inside another file's range, same partition). Keeps the input order.
pub fn visible(files: &[FileRange]) -> Vec<FileRange> {
    files
        .iter()
        .filter(|f| !files.iter().any(|other| f.is_within(other)))
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(partition: u32, first: u64, last: u64) -> FileRange {
        FileRange {
            partition,
            first,
            last,
        }
    }

    #[test]
    fn names_read_back_and_sort_by_offset() {
        let a = range(3, 100, 199);
        assert_eq!(
            a.file_name(),
            "p00003-00000000000000000100-00000000000000000199.parquet"
        );
        assert_eq!(FileRange::parse(&a.file_name()), Some(a));
        assert!(range(3, 9, 9).file_name() < range(3, 10, 10).file_name());
        for bad in [
            ".tmp-p00003-1-2.parquet",
            "p3-2-1.parquet",
            "p3-1-2-4.parquet",
            "p3-1-2.parq",
            "x.parquet",
        ] {
            assert_eq!(FileRange::parse(bad), None, "{bad}");
        }
        assert_eq!(
            date_dir("failures", NaiveDate::from_ymd_opt(2026, 1, 2).unwrap()),
            "failures/date=2026-01-02"
        );
        assert_eq!(
            parse_date_dir("date=2026-01-02"),
            NaiveDate::from_ymd_opt(2026, 1, 2)
        );
    }

    #[test]
    fn a_compacted_file_hides_its_inputs_and_nothing_else() {
        let inputs = [range(0, 0, 9), range(0, 10, 19), range(0, 20, 29)];
        let merged = range(0, 0, 29);
        let later = range(0, 30, 39);
        let other_partition = range(1, 5, 5);
        let files = [
            inputs[0],
            inputs[1],
            merged,
            inputs[2],
            later,
            other_partition,
        ];
        assert_eq!(visible(&files), vec![merged, later, other_partition]);
        // Before the merged file exists, the inputs are what a reader sees.
        assert_eq!(visible(&inputs), inputs.to_vec());
    }
}
