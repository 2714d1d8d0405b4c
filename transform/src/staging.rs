//! Publishing one flush atomically: all of its files, or none.
//!
//! A flush of one partition's offsets `first..=last` writes up to three tables times the
//! dates present. Renames of several files are not atomic together, and a reader (or the
//! resume logic) that saw some of them would count the range as written. So:
//!
//! 1. every file is written into `<root>/_staging/<flush>/` and synced, with that directory;
//! 2. a `MANIFEST` listing the final paths is written to a temporary name, synced and
//!    renamed: **this rename is the commit point**;
//! 3. each file is renamed into place (date directories created and synced);
//! 4. the staging directory is removed.
//!
//! On start ([`recover`]), a staging directory with a `MANIFEST` is rolled forward (files
//! already moved are skipped) and one without is deleted, its flush done again from the bus.
//! `_staging` starts with `_`, so readers never take it for a table.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use arrow::array::{RecordBatch, UInt32Array};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use tlsrpt_schemas::layout::{self, FileRange};

use crate::CrashPoint;
use crate::error::{Result, TransformError, io};
use crate::files::{self, Table, sync_path};

/// The staging area, under the root.
pub(crate) const STAGING_DIR: &str = "_staging";
const MANIFEST: &str = "MANIFEST";
const MANIFEST_TMP: &str = "MANIFEST.tmp";

/// What a flush put in place: its final paths, relative to the root.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    partition: u32,
    first: u64,
    last: u64,
    files: Vec<ManifestEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ManifestEntry {
    /// The file's name in the staging directory.
    staged: String,
    /// Where it goes: `failures/date=2026-01-01/p00000-…-….parquet`.
    path: String,
}

/// One file of a flush before it is written: which rows of the flush's table, in file order.
#[derive(Debug)]
pub(crate) struct FlushFile {
    pub(crate) table: Table,
    pub(crate) date: NaiveDate,
    /// The flush's whole table (shared by the files of its dates).
    pub(crate) batch: RecordBatch,
    /// Indices into `batch`: this file's rows, sorted.
    pub(crate) rows: UInt32Array,
}

/// A file a flush put in place.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Published {
    pub(crate) table: Table,
    pub(crate) date: NaiveDate,
    pub(crate) bytes: u64,
}

/// The staging directory of a flush: named after its range, so a retry reuses the name.
fn flush_dir(root: &Path, range: FileRange) -> PathBuf {
    let name = range.file_name();
    root.join(STAGING_DIR)
        .join(name.strip_suffix(".parquet").unwrap_or(&name))
}

/// Writes `files` for `range` and puts them in place, all or none (see the module docs).
/// `crash` stops at a step, as a crash there would, for tests; `None` in production.
pub(crate) fn publish(
    root: &Path,
    range: FileRange,
    files: &[FlushFile],
    row_group_rows: usize,
    crash: Option<CrashPoint>,
) -> Result<Vec<Published>> {
    let staging = root.join(STAGING_DIR);
    let dir = flush_dir(root, range);
    if dir.exists() {
        // Left by an earlier attempt in this process that failed before its MANIFEST
        // (`recover` clears the area at start). Nothing of it is published.
        std::fs::remove_dir_all(&dir).map_err(io("remove", &dir))?;
    }
    std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
    let mut manifest = Manifest {
        partition: range.partition,
        first: range.first,
        last: range.last,
        files: Vec::with_capacity(files.len()),
    };
    let mut published = Vec::with_capacity(files.len());
    let mut written = Vec::with_capacity(files.len() + 1);
    for (i, file) in files.iter().enumerate() {
        let staged = format!("{i:03}.parquet");
        let path = dir.join(&staged);
        let bytes = files::write_parquet_unsynced(
            &path,
            file.table,
            &file.batch,
            &file.rows,
            row_group_rows,
        )?;
        written.push(path);
        manifest.files.push(ManifestEntry {
            staged,
            path: format!(
                "{}/{}",
                layout::date_dir(file.table.name(), file.date),
                range.file_name()
            ),
        });
        published.push(Published {
            table: file.table,
            date: file.date,
            bytes,
        });
    }
    // The files, their names, and the flush directory's own name, durable before the
    // MANIFEST.
    written.push(dir.clone());
    written.push(staging.clone());
    files::sync_paths(&written)?;
    if crash == Some(CrashPoint::FlushStaged) {
        return Err(TransformError::SimulatedCrash(CrashPoint::FlushStaged));
    }

    let text = serde_json::to_vec_pretty(&manifest).expect("a manifest serialises");
    let tmp = dir.join(MANIFEST_TMP);
    let mut out = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
    out.write_all(&text).map_err(io("write", &tmp))?;
    out.sync_all().map_err(io("sync", &tmp))?;
    drop(out);
    let manifest_path = dir.join(MANIFEST);
    std::fs::rename(&tmp, &manifest_path).map_err(io("rename", &tmp))?;
    // The commit point: from here on the flush happens, now or at the next start.
    sync_path(&dir)?;

    roll_forward(root, &dir, &manifest, crash)?;
    remove_flush_dir(root, &dir)?;
    Ok(published)
}

/// Moves a committed flush's files into place, skipping those already there.
fn roll_forward(
    root: &Path,
    dir: &Path,
    manifest: &Manifest,
    crash: Option<CrashPoint>,
) -> Result<()> {
    // Directories whose entries changed, synced once each at the end.
    let mut to_sync: BTreeSet<PathBuf> = BTreeSet::new();
    for (moved, entry) in manifest.files.iter().enumerate() {
        if crash == Some(CrashPoint::FlushMoving { moved }) {
            return Err(TransformError::SimulatedCrash(CrashPoint::FlushMoving {
                moved,
            }));
        }
        let source = dir.join(&entry.staged);
        let target = root.join(&entry.path);
        let target_dir = target.parent().expect("manifest paths have a directory");
        if !source.exists() {
            if target.exists() {
                continue;
            }
            return Err(TransformError::Unexpected {
                path: source,
                message: format!("staged file missing, and {} is not in place", entry.path),
            });
        }
        if !target_dir.exists() {
            // A new date directory (and maybe table directory): their parents' entries
            // must be durable too, or the renamed file could vanish with them.
            let mut ancestor = target_dir;
            while let Some(parent) = ancestor.parent() {
                to_sync.insert(parent.to_path_buf());
                if parent == root || parent.exists() {
                    break;
                }
                ancestor = parent;
            }
            std::fs::create_dir_all(target_dir).map_err(io("create", target_dir))?;
        }
        std::fs::rename(&source, &target).map_err(io("rename", &source))?;
        to_sync.insert(target_dir.to_path_buf());
    }
    let to_sync: Vec<PathBuf> = to_sync.into_iter().collect();
    files::sync_paths(&to_sync)
}

fn remove_flush_dir(root: &Path, dir: &Path) -> Result<()> {
    std::fs::remove_dir_all(dir).map_err(io("remove", dir))?;
    sync_path(&root.join(STAGING_DIR))
}

/// What [`recover`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recovered {
    /// Flushes past their commit point, finished.
    pub(crate) rolled_forward: usize,
    /// Flushes interrupted before it, discarded (their offsets are read again).
    pub(crate) discarded: usize,
}

/// Finishes or discards every interrupted flush of the partitions `owned` says are this
/// transformer's (see the module docs). Other partitions' flushes are left alone: with
/// several transformers on one store, another one may be writing them right now.
pub(crate) fn recover(root: &Path, owned: impl Fn(u32) -> bool) -> Result<Recovered> {
    let staging = root.join(STAGING_DIR);
    std::fs::create_dir_all(&staging).map_err(io("create", &staging))?;
    let mut recovered = Recovered::default();
    let entries = std::fs::read_dir(&staging).map_err(io("list", &staging))?;
    for entry in entries {
        let entry = entry.map_err(io("list", &staging))?;
        let dir = entry.path();
        let name = entry.file_name();
        let partition = name
            .to_str()
            .and_then(|n| FileRange::parse(&format!("{n}.parquet")))
            .map(|range| range.partition);
        if partition.is_some_and(|p| !owned(p)) {
            continue;
        }
        if !entry.file_type().map_err(io("stat", &dir))?.is_dir() {
            std::fs::remove_file(&dir).map_err(io("remove", &dir))?;
            continue;
        }
        let manifest_path = dir.join(MANIFEST);
        match std::fs::read(&manifest_path) {
            Ok(text) => {
                let manifest = read_manifest(&manifest_path, &text)?;
                roll_forward(root, &dir, &manifest, None)?;
                std::fs::remove_dir_all(&dir).map_err(io("remove", &dir))?;
                recovered.rolled_forward += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::remove_dir_all(&dir).map_err(io("remove", &dir))?;
                recovered.discarded += 1;
            }
            Err(e) => return Err(io("read", &manifest_path)(e)),
        }
    }
    if recovered != Recovered::default() {
        sync_path(&staging)?;
    }
    Ok(recovered)
}

/// Parses a MANIFEST and checks that it names only what a flush writes: paths inside the
/// tables, named for the manifest's own range, staged names without directories.
fn read_manifest(path: &Path, text: &[u8]) -> Result<Manifest> {
    let bad = |message: String| TransformError::Unexpected {
        path: path.to_path_buf(),
        message,
    };
    let manifest: Manifest =
        serde_json::from_slice(text).map_err(|e| bad(format!("unreadable manifest: {e}")))?;
    let range = FileRange {
        partition: manifest.partition,
        first: manifest.first,
        last: manifest.last,
    };
    for entry in &manifest.files {
        let parts: Vec<&str> = entry.path.split('/').collect();
        let well_formed = matches!(
            parts.as_slice(),
            [table, date, name]
                if Table::from_name(table).is_some()
                    && layout::parse_date_dir(date).is_some()
                    && FileRange::parse(name) == Some(range)
        );
        let staged_ok = entry
            .staged
            .strip_suffix(".parquet")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !well_formed || !staged_ok {
            return Err(bad(format!(
                "unexpected entry {:?} -> {:?}",
                entry.staged, entry.path
            )));
        }
    }
    Ok(manifest)
}
