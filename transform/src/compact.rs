//! Merging small files, and deleting the files a merge superseded once no query can still
//! be reading them.
//!
//! A flush every second per partition makes many small files; readers pay per file. When a
//! (table, date, partition) has at least `compact_min_files` consecutive small files, they are
//! merged into one named with the range covering theirs, written to a temporary name
//! (`.tmp-…`, not data to readers), synced and renamed. From that rename on, the inputs are
//! superseded: readers ignore them (`layout::visible`), so a query sees each row once whether
//! it lists the directory before or after. The inputs are deleted `superseded_grace` later,
//! for queries that listed them before the rename and are still reading.
//!
//! Compaction runs in the transformer's own loop between flushes, one merge per pass, so it
//! never races a flush into the same directory and never holds back new reports for long.
//!
//! Runs are size-tiered (a file merges only with files that together outweigh it several
//! times over, see `find_run`), and a merge streams its inputs through a k-way merge
//! (`files::merge_files`), so its memory depends on the number of inputs, not their size.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use chrono::NaiveDate;
use tlsrpt_schemas::layout::FileRange;

use crate::CrashPoint;
use crate::error::{Result, TransformError};
use crate::files::{self, DataFile, Scan, TEMP_PREFIX, Table};
use crate::staging::CLAIM_GRACE;
use crate::store::TableStore;

/// Directories examined for a merge per pass, at most: bounds the listing work of a pass.
const DIRS_PER_PASS: usize = 16;

/// One (table, date, partition): the unit compaction works on.
pub(crate) type DirKey = (Table, NaiveDate, u32);

/// What a merge did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Merged {
    pub(crate) inputs: usize,
    pub(crate) bytes: u64,
}

#[derive(Debug)]
pub(crate) struct Compactor {
    store: Arc<TableStore>,
    /// This transformer instance (`staging`): names its temporary files, so that two
    /// writers merging the same run (one of them having lost the partition unawares) never
    /// write into one file.
    writer: String,
    min_files: usize,
    max_file_bytes: u64,
    grace: Duration,
    row_group_rows: usize,
    /// Directories that may have something to merge: all at start, then those flushed into.
    dirty: BTreeSet<DirKey>,
    /// Superseded files (keys) and when they may go.
    deletions: BTreeMap<String, Instant>,
}

impl Compactor {
    pub(crate) fn new(
        store: Arc<TableStore>,
        writer: String,
        min_files: usize,
        max_file_bytes: u64,
        grace: Duration,
        row_group_rows: usize,
    ) -> Self {
        Self {
            store,
            writer,
            // Merging one file into itself would only rewrite it.
            min_files: min_files.max(2),
            max_file_bytes,
            grace,
            row_group_rows,
            dirty: BTreeSet::new(),
            deletions: BTreeMap::new(),
        }
    }

    /// Takes note of what is on disk at start: every directory is a merge candidate, and
    /// every superseded file is deleted once `grace` has passed since the file superseding it
    /// was written (now, if it has; later in this run otherwise), so a restart neither keeps
    /// superseded files for ever nor cuts a running query's grace short.
    /// Only the files of the partitions the transformer owns are given: with several
    /// transformers on one store, each compacts its own partitions.
    pub(crate) fn start(&mut self, scan: &Scan, now: Instant, wall_now: SystemTime) -> Result<()> {
        let mut by_dir: BTreeMap<DirKey, Vec<&DataFile>> = BTreeMap::new();
        for file in &scan.files {
            by_dir
                .entry((file.table, file.date, file.range.partition))
                .or_default()
                .push(file);
        }
        for (key, group) in &by_dir {
            self.dirty.insert(*key);
            for file in group {
                let superseded_since = group
                    .iter()
                    .filter(|other| file.range.is_within(&other.range))
                    .map(|other| other.modified)
                    .min();
                let Some(since) = superseded_since else {
                    continue;
                };
                let age = wall_now.duration_since(since).unwrap_or(Duration::ZERO);
                let remaining = self.grace.saturating_sub(age);
                self.deletions.insert(file.key.clone(), now + remaining);
            }
        }
        self.delete_abandoned(&scan.temporaries, wall_now)
    }

    /// Deletes the temporary files of merges interrupted before their rename (their inputs
    /// are still the data) once they are older than `staging::CLAIM_GRACE`: a younger one
    /// may be another writer's merge in progress (one that lost the partition unawares).
    fn delete_abandoned(
        &self,
        temporaries: &[(String, SystemTime)],
        now: SystemTime,
    ) -> Result<()> {
        for (key, written) in temporaries {
            if now.duration_since(*written).unwrap_or_default() > CLAIM_GRACE {
                self.store.delete(key)?;
            }
        }
        Ok(())
    }

    /// Forgets a partition given to another transformer: its directories are not merged
    /// here any more, and its superseded files are the new owner's to delete.
    pub(crate) fn release(&mut self, partition: u32) {
        self.dirty.retain(|&(_, _, p)| p != partition);
        self.deletions.retain(|key, _| {
            key.rsplit('/')
                .next()
                .and_then(FileRange::parse)
                .is_none_or(|range| range.partition != partition)
        });
    }

    /// A flush put a file into this directory.
    pub(crate) fn touched(&mut self, key: DirKey) {
        self.dirty.insert(key);
    }

    /// Whether a pass may find something to merge.
    pub(crate) fn has_candidates(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// When the next superseded file may be deleted.
    pub(crate) fn next_deletion(&self) -> Option<Instant> {
        self.deletions.values().min().copied()
    }

    /// Deletes the superseded files whose grace has passed. A file that cannot be deleted is
    /// logged and left: it is invisible to readers, and the next start tries again.
    pub(crate) fn delete_due(&mut self, now: Instant) -> usize {
        let due: Vec<String> = self
            .deletions
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(path, _)| path.clone())
            .collect();
        let mut deleted = 0;
        for key in due {
            self.deletions.remove(&key);
            match self.store.delete(&key) {
                Ok(true) => deleted += 1,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, "Cannot delete a superseded file.");
                }
            }
        }
        deleted
    }

    /// Examines a few candidate directories and merges at most one run of small files.
    pub(crate) fn step(&mut self, crash: Option<CrashPoint>) -> Result<Option<Merged>> {
        for _ in 0..DIRS_PER_PASS {
            let Some(key) = self.dirty.pop_first() else {
                return Ok(None);
            };
            if let Some(merged) = self.compact_dir(key, crash)? {
                // There may be another run in it.
                self.dirty.insert(key);
                return Ok(Some(merged));
            }
        }
        Ok(None)
    }

    fn compact_dir(&mut self, key: DirKey, crash: Option<CrashPoint>) -> Result<Option<Merged>> {
        let (table, date, partition) = key;
        let mut scan = Scan::default();
        files::scan_date_dir(&self.store, table, date, &mut scan)?;
        scan.retain_partitions(|p| p == partition);
        self.delete_abandoned(&scan.temporaries, SystemTime::now())?;
        let all: Vec<DataFile> = scan
            .files
            .into_iter()
            .filter(|f| f.range.partition == partition)
            .collect();
        let mut shown: Vec<&DataFile> = files::visible(&all);
        shown.sort_by_key(|f| f.range.first);
        let Some(run) = self.find_run(&shown) else {
            return Ok(None);
        };
        let merged_range = FileRange {
            partition,
            first: run[0].range.first,
            last: run[run.len() - 1].range.last,
        };
        // Visible files of one partition have disjoint ranges (flushes never overlap, and a
        // merge covers consecutive files only), so the run is every visible file inside the
        // merged range: nothing else is superseded by the new file.
        let dir = tlsrpt_schemas::layout::date_dir(table.name(), date);
        let target = format!("{dir}/{}", merged_range.file_name());
        let inputs: Vec<String> = run.iter().map(|f| f.key.clone()).collect();
        // Local: a temporary name, synced, then renamed. An object store's PUT is atomic, so
        // the output goes to its final key directly.
        let written = if self.store.renames() {
            format!(
                "{dir}/{TEMP_PREFIX}{}.{}",
                self.writer,
                merged_range.file_name()
            )
        } else {
            target.clone()
        };
        let sink = self.store.create(&written)?;
        let (sink, rows) = files::merge_files(
            &self.store,
            table,
            &inputs,
            sink,
            &self.store.display_key(&written),
            self.row_group_rows,
        )?;
        let bytes = self.store.close(&written, sink)?;
        if self.store.renames() {
            self.store.sync(std::slice::from_ref(&written))?;
            self.store.rename(&written, &target)?;
        }
        if crash == Some(CrashPoint::CompactionRenamed) {
            return Err(TransformError::SimulatedCrash(
                CrashPoint::CompactionRenamed,
            ));
        }
        // Every file now inside the merged range goes, including older inputs still waiting
        // for their own deletion.
        let delete_at = Instant::now() + self.grace;
        for file in all.iter().filter(|f| f.range.is_within(&merged_range)) {
            self.deletions
                .entry(file.key.clone())
                .and_modify(|at| *at = (*at).min(delete_at))
                .or_insert(delete_at);
        }
        tracing::debug!(
            table = table.name(),
            %date,
            partition,
            inputs = run.len(),
            rows,
            bytes,
            "Files compacted."
        );
        Ok(Some(Merged {
            inputs: run.len(),
            bytes,
        }))
    }

    /// The first run of consecutive small files, at least `min_files` long, whose total size
    /// stays within `max_file_bytes` (roughly the output's size), and in which the other files
    /// together outweigh the largest `(min_files - 1) / 2` times over.
    ///
    /// That last rule makes compaction size-tiered. Without it, a merged file was merged again
    /// with the next few flushes, and again, until it reached the size cap: each report was
    /// rewritten up to `max_file_bytes / (min_files * flush size)` times (about 20 under HTTP
    /// load). The others must outweigh the largest `(min_files - 1) / 2` times over, so every
    /// merge multiplies the largest of its inputs by at least `(min_files + 1) / 2` (4.5 by
    /// default) and a report is rewritten at most `log(cap / flush size)` to that base times.
    /// With a factor of 2 (the largest no heavier than the others), a merged file took in the
    /// next seven flushes as soon as they came: under HTTP load every report was rewritten
    /// three times in its first 20 s, and compaction was half of the transformer's CPU.
    fn find_run<'a>(&self, shown: &[&'a DataFile]) -> Option<Vec<&'a DataFile>> {
        for start in 0..shown.len() {
            let mut longest = None;
            let mut total = 0u64;
            let mut largest = 0u64;
            for (len, file) in (1..).zip(&shown[start..]) {
                if file.bytes >= self.max_file_bytes || total + file.bytes > self.max_file_bytes {
                    break;
                }
                total += file.bytes;
                largest = largest.max(file.bytes);
                let others = total - largest;
                let balanced = largest * (self.min_files as u64 - 1) <= 2 * others;
                if len >= self.min_files && balanced {
                    longest = Some(len);
                }
            }
            if let Some(len) = longest {
                return Some(shown[start..start + len].to_vec());
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(first: u64, last: u64, bytes: u64) -> DataFile {
        DataFile {
            table: Table::Failures,
            date: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
            range: FileRange {
                partition: 0,
                first,
                last,
            },
            key: format!("{first}"),
            bytes,
            modified: SystemTime::UNIX_EPOCH,
        }
    }

    fn firsts(run: Option<Vec<&DataFile>>) -> Option<Vec<u64>> {
        run.map(|r| r.iter().map(|f| f.range.first).collect())
    }

    #[test]
    fn a_run_is_consecutive_small_files_within_the_size_cap() {
        let compactor = Compactor::new(
            Arc::new(TableStore::local("")),
            String::new(),
            3,
            100,
            Duration::ZERO,
            10,
        );
        let files = [
            file(0, 9, 10),
            file(10, 19, 500), // large: breaks the run
            file(20, 29, 10),
            file(30, 39, 10),
            file(40, 49, 10),
            file(50, 59, 10),
        ];
        let shown: Vec<&DataFile> = files.iter().collect();
        assert_eq!(
            firsts(compactor.find_run(&shown)),
            Some(vec![20, 30, 40, 50])
        );
        // Too few on either side of the large file.
        assert_eq!(firsts(compactor.find_run(&shown[..4])), None);
        // The size cap moves a run's start: 40 + 40 + 40 > 100, 40 + 40 + 10 + 10 is not.
        let big = [
            file(0, 0, 40),
            file(1, 1, 40),
            file(2, 2, 40),
            file(3, 3, 10),
            file(4, 4, 10),
        ];
        let shown: Vec<&DataFile> = big.iter().collect();
        assert_eq!(firsts(compactor.find_run(&shown)), Some(vec![1, 2, 3, 4]));
    }

    #[test]
    fn a_merged_file_waits_for_files_of_its_own_size() {
        let compactor = Compactor::new(
            Arc::new(TableStore::local("")),
            String::new(),
            3,
            1000,
            Duration::ZERO,
            10,
        );
        // A merge's output and two new flushes: not merged again yet.
        let files = [file(0, 29, 30), file(30, 39, 10), file(40, 49, 10)];
        let shown: Vec<&DataFile> = files.iter().collect();
        assert_eq!(firsts(compactor.find_run(&shown)), None);
        // A third flush makes a run of its own tier.
        let files = [
            file(0, 29, 30),
            file(30, 39, 10),
            file(40, 49, 10),
            file(50, 59, 9),
        ];
        let shown: Vec<&DataFile> = files.iter().collect();
        assert_eq!(firsts(compactor.find_run(&shown)), Some(vec![30, 40, 50]));
        // Three outputs of about one size merge into the next tier.
        let files = [file(0, 29, 30), file(30, 59, 34), file(60, 89, 28)];
        let shown: Vec<&DataFile> = files.iter().collect();
        assert_eq!(firsts(compactor.find_run(&shown)), Some(vec![0, 30, 60]));
    }

    #[test]
    fn with_the_default_eight_files_a_merge_multiplies_its_largest_input() {
        let compactor = Compactor::new(
            Arc::new(TableStore::local("")),
            String::new(),
            8,
            1 << 30,
            Duration::ZERO,
            10,
        );
        // A merge of eight flushes and seven more flushes: the merged file waits (7 x 10 is
        // less than 3.5 x 80), and the seven wait for an eighth.
        let mut files = vec![file(0, 79, 80)];
        files.extend((8..15).map(|i| file(i * 10, i * 10 + 9, 10)));
        let shown: Vec<&DataFile> = files.iter().collect();
        assert_eq!(firsts(compactor.find_run(&shown)), None);
        files.push(file(150, 159, 10));
        let shown: Vec<&DataFile> = files.iter().collect();
        let run = firsts(compactor.find_run(&shown)).expect("eight flushes merge");
        assert_eq!(run.first(), Some(&80));
        assert_eq!(run.len(), 8);
        // Four merged files of one size and three flushes: 3 x 80 + 30 is less than 3.5 x 80.
        let mut files: Vec<DataFile> = (0..4).map(|i| file(i * 80, i * 80 + 79, 80)).collect();
        files.extend((32..35).map(|i| file(i * 10, i * 10 + 9, 10)));
        let shown: Vec<&DataFile> = files.iter().collect();
        assert_eq!(firsts(compactor.find_run(&shown)), None);
        files.extend((35..40).map(|i| file(i * 10, i * 10 + 9, 10)));
        let shown: Vec<&DataFile> = files.iter().collect();
        assert_eq!(
            firsts(compactor.find_run(&shown)).map(|r| r.len()),
            Some(12),
            "the four merged files and the eight flushes after them"
        );
    }
}
