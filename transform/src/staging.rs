//! Publishing one flush atomically, all of its files or none, with at most one writer per
//! range: the commit protocol, the same on a local disk and on an object store.
//!
//! A flush of one partition's offsets `first..=last` writes up to three tables times the
//! dates present. Several files cannot appear at once, and a reader (or the resume logic)
//! that saw some of them would count the range as written. And with several transformers
//! on one store, one that lost its partition without noticing yet (a stale owner) may try to
//! publish a range the new owner is also reading. So a flush:
//!
//! 1. writes every file under `_staging/p<partition>/<first>-<last>-<writer>/` (`writer`:
//!    unique per transformer instance, so two writers never touch each other's staging), and
//!    makes them durable (local: `fsync` of the files and directories; an object's PUT is
//!    durable when it returns);
//! 2. **claims the range** by creating `_claims/p<partition>/<first>.json`, which names the
//!    staging directory and the final paths, *only if no such claim exists*: `O_EXCL` on a
//!    local disk, a conditional PUT (`PutMode::Create`, `If-None-Match: *`) on S3. This
//!    creation is the commit point. Writers of one partition always start a flush where the
//!    last claim ended (they resume there), so a stale owner and the new owner race for the
//!    same claim key, and exactly one wins; the loser drops its batch and takes the
//!    partition over again from the claims (it resumes after the winner's range);
//! 3. moves each file into place (local: `rename`; S3 has no rename: a server-side copy);
//! 4. deletes the staging directory.
//!
//! Taking a partition over ([`recover`]) rolls forward every staging directory whose claim
//! names it (files already moved are skipped) and deletes those claimed by another writer's
//! directory (losers). An unclaimed one is deleted when its range starts before the end of
//! the claims (it can never be claimed), and otherwise left alone for [`CLAIM_GRACE`]: it may
//! be a stale owner's flush about to claim. The first flush after a take-over sweeps those
//! up once it holds the claim at their start ([`sweep`]).
//!
//! Claims are kept for [`CLAIM_GRACE`] after they are made and then deleted (the newest of
//! each partition stays: it says where the claims end); the fence only matters while a
//! stale owner could still be about to publish, milliseconds after its last ownership check.
//!
//! `_staging` and `_claims` start with `_`, so readers never take them for tables.

use std::time::{Duration, SystemTime};

use arrow::array::{RecordBatch, UInt32Array};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use tlsrpt_schemas::layout::{self, FileRange};

use crate::CrashPoint;
use crate::error::{Result, TransformError};
use crate::files::{self, Table};
use crate::store::TableStore;

/// The staging area, under the root.
pub(crate) const STAGING_DIR: &str = "_staging";
/// The claims, under the root.
pub(crate) const CLAIMS_DIR: &str = "_claims";

/// How long a claim is kept after it is made, and an unclaimed staging directory that could
/// still be claimed is left alone: far longer than a stale owner's window between checking
/// that it owns a partition and claiming (milliseconds), so that a paused process cannot
/// outlive it in practice.
pub(crate) const CLAIM_GRACE: Duration = Duration::from_secs(600);

/// A claim: who published a range, from which staging directory, to which paths.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Claim {
    pub(crate) partition: u32,
    pub(crate) first: u64,
    pub(crate) last: u64,
    /// The staging directory (a key under the root).
    pub(crate) staging: String,
    pub(crate) files: Vec<ClaimedFile>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ClaimedFile {
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

/// How a flush ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The range is claimed and its files are in place.
    Published(Vec<Published>),
    /// Another writer holds the claim at this range's start: nothing of this flush is
    /// published (its staging is deleted).
    Lost { winner: Claim },
}

fn partition_dir(area: &str, partition: u32) -> String {
    format!("{area}/p{partition:05}")
}

fn claim_key(partition: u32, first: u64) -> String {
    format!("{}/{first:020}.json", partition_dir(CLAIMS_DIR, partition))
}

fn parse_claim_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".json")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// `<first>-<last>-<writer>`: a staging directory's name.
fn parse_staging_name(name: &str) -> Option<(u64, u64, &str)> {
    let mut parts = name.splitn(3, '-');
    let first = parts.next()?.parse().ok()?;
    let last = parts.next()?.parse().ok()?;
    let writer = parts.next().filter(|w| !w.is_empty())?;
    Some((first, last, writer))
}

/// Writes `files` for `range` and publishes them under a claim (see the module docs).
/// `writer` names this transformer instance. `crash` stops at a step, as a crash there
/// would, for tests; `None` in production.
pub(crate) fn publish(
    store: &TableStore,
    writer: &str,
    range: FileRange,
    files: &[FlushFile],
    row_group_rows: usize,
    crash: Option<CrashPoint>,
) -> Result<Outcome> {
    let dir = format!(
        "{}/{:020}-{:020}-{writer}",
        partition_dir(STAGING_DIR, range.partition),
        range.first,
        range.last
    );
    // No earlier attempt of this writer can have left this directory: a failed flush stops
    // the transformer, and a lost one deletes its staging. (Deleting first cost a listing
    // per flush on S3.)
    let mut claim = Claim {
        partition: range.partition,
        first: range.first,
        last: range.last,
        staging: dir.clone(),
        files: Vec::with_capacity(files.len()),
    };
    let staged = stage(store, &dir, range, files, row_group_rows, &mut claim);
    let key = claim_key(range.partition, range.first);
    let published = match staged {
        Ok(published) => published,
        Err(error) => {
            // Another writer deletes staging that can no longer be claimed: this flush's,
            // if it claimed this range first. Then the flush lost, it did not fail.
            if let Ok(Some(winner)) = read_claim(store, &key)
                && winner.staging != dir
            {
                discard(store, &dir);
                return Ok(Outcome::Lost { winner });
            }
            return Err(error);
        }
    };
    if crash == Some(CrashPoint::FlushStaged) {
        return Err(TransformError::SimulatedCrash(CrashPoint::FlushStaged));
    }

    let text = serde_json::to_vec_pretty(&claim).expect("a claim serialises");
    // The commit point: from here on the flush happens, now or at the next take-over.
    if !store.create_new(&key, text)? {
        let winner = match read_claim(store, &key)? {
            Some(winner) if winner.staging == dir => {
                // Our own claim, from an attempt whose answer was lost (a retried PUT).
                winner
            }
            Some(winner) => {
                discard(store, &dir);
                return Ok(Outcome::Lost { winner });
            }
            None => {
                return Err(TransformError::Unexpected {
                    path: store.display_key(&key),
                    message: "the claim exists but cannot be read".into(),
                });
            }
        };
        debug_assert_eq!(winner.staging, dir);
    }
    roll_forward(store, &claim, crash)?;
    store.delete_dir(&dir)?;
    Ok(Outcome::Published(published))
}

/// Step 1 of [`publish`]: writes the files into the staging directory `dir`, durably, and
/// lists them in `claim`.
fn stage(
    store: &TableStore,
    dir: &str,
    range: FileRange,
    files: &[FlushFile],
    row_group_rows: usize,
    claim: &mut Claim,
) -> Result<Vec<Published>> {
    let mut sinks = Vec::with_capacity(files.len());
    for (i, file) in files.iter().enumerate() {
        let staged = format!("{i:03}.parquet");
        let key = format!("{dir}/{staged}");
        let mut sink = store.create(&key)?;
        files::write_parquet(
            &mut sink,
            &store.display_key(&key),
            file.table,
            &file.batch,
            &file.rows,
            row_group_rows,
        )?;
        sinks.push((key, sink));
        claim.files.push(ClaimedFile {
            staged,
            path: format!(
                "{}/{}",
                layout::date_dir(file.table.name(), file.date),
                range.file_name()
            ),
        });
    }
    let mut written: Vec<String> = sinks.iter().map(|(key, _)| key.clone()).collect();
    let sizes = store.close_all(sinks)?;
    let published = files
        .iter()
        .zip(sizes)
        .map(|(file, bytes)| Published {
            table: file.table,
            date: file.date,
            bytes,
        })
        .collect();
    // The files, their names, and the staging directory's own name, durable before the
    // claim.
    if !files.is_empty() {
        written.push(dir.to_owned());
        written.push(partition_dir(STAGING_DIR, range.partition));
        written.push(STAGING_DIR.to_owned());
        store.sync(&written)?;
    }
    Ok(published)
}

/// Moves a claimed flush's files into place, skipping those already there.
fn roll_forward(store: &TableStore, claim: &Claim, crash: Option<CrashPoint>) -> Result<()> {
    let moves: Vec<(String, String)> = claim
        .files
        .iter()
        .map(|f| (format!("{}/{}", claim.staging, f.staged), f.path.clone()))
        .collect();
    store.move_into_place(&moves, |moved| {
        if crash == Some(CrashPoint::FlushMoving { moved }) {
            return Err(TransformError::SimulatedCrash(CrashPoint::FlushMoving {
                moved,
            }));
        }
        Ok(())
    })
}

/// What [`recover`] did and found, for one partition.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// Claimed flushes whose files were not all in place, finished.
    pub(crate) rolled_forward: usize,
    /// Staging directories deleted: unclaimed and never claimable, or a losing writer's.
    pub(crate) discarded: usize,
    /// One past the last offset claimed (0 without claims): where the next flush starts.
    pub(crate) claims_end: u64,
    /// The claims there are (their first offset), oldest first, with when each was made.
    pub(crate) claims: Vec<(u64, SystemTime)>,
}

/// Takes one partition's flushes over: finishes those claimed, discards the staging that can
/// no longer be claimed (see the module docs), and reports where the claims end.
pub(crate) fn recover(store: &TableStore, partition: u32) -> Result<Recovered> {
    let mut recovered = Recovered::default();
    let claims_dir = partition_dir(CLAIMS_DIR, partition);
    let listing = store.list(&claims_dir)?;
    for entry in &listing.files {
        // A local claim being written (`TableStore::create_new`), left by a crash.
        if entry.name.starts_with(".new-")
            && SystemTime::now()
                .duration_since(entry.modified)
                .unwrap_or_default()
                > CLAIM_GRACE
        {
            store.delete(&format!("{claims_dir}/{}", entry.name))?;
        }
    }
    let mut claims: Vec<(u64, SystemTime)> = listing
        .files
        .iter()
        .filter_map(|e| Some((parse_claim_name(&e.name)?, e.modified)))
        .collect();
    claims.sort_unstable();
    if let Some(&(newest, _)) = claims.last() {
        let key = claim_key(partition, newest);
        let claim = read_claim(store, &key)?.ok_or_else(|| TransformError::Unexpected {
            path: store.display_key(&key),
            message: "listed, then not found".into(),
        })?;
        recovered.claims_end = claim.last + 1;
    }
    let staging_dir = partition_dir(STAGING_DIR, partition);
    for name in store.list(&staging_dir)?.dirs {
        let dir = format!("{staging_dir}/{name}");
        let Some((first, _, _)) = parse_staging_name(&name) else {
            tracing::warn!(dir, "Unexpected directory in the staging area; left alone.");
            continue;
        };
        let claim = if claims.iter().any(|&(f, _)| f == first) {
            read_claim(store, &claim_key(partition, first))?
        } else {
            None
        };
        match claim {
            Some(claim) if claim.staging == dir => {
                roll_forward(store, &claim, None)?;
                store.delete_dir(&dir)?;
                recovered.rolled_forward += 1;
            }
            Some(_) => {
                discard(store, &dir);
                recovered.discarded += 1;
            }
            None if first < recovered.claims_end || older_than_grace(store, &dir)? => {
                discard(store, &dir);
                recovered.discarded += 1;
            }
            None => {}
        }
    }
    recovered.claims = claims;
    Ok(recovered)
}

/// After this writer claimed `first` (its first flush since taking the partition over):
/// deletes the staging directories of other writers that start at or before it and are not
/// theirs to roll forward: they can never be claimed now.
pub(crate) fn sweep(store: &TableStore, partition: u32, first: u64, writer: &str) -> Result<usize> {
    let staging_dir = partition_dir(STAGING_DIR, partition);
    let mut swept = 0;
    for name in store.list(&staging_dir)?.dirs {
        let Some((start, _, owner)) = parse_staging_name(&name) else {
            continue;
        };
        if owner == writer || start > first {
            continue;
        }
        let dir = format!("{staging_dir}/{name}");
        let claimed_by_it = read_claim(store, &claim_key(partition, start))?
            .is_some_and(|claim| claim.staging == dir);
        if !claimed_by_it {
            discard(store, &dir);
            swept += 1;
        }
    }
    Ok(swept)
}

/// Records a claim this writer made, and deletes those of the partition older than
/// [`CLAIM_GRACE`] except the newest.
pub(crate) fn prune_claims(
    store: &TableStore,
    partition: u32,
    claims: &mut Vec<(u64, SystemTime)>,
    made: u64,
) -> Result<()> {
    let now = SystemTime::now();
    claims.push((made, now));
    let old = |made: SystemTime| now.duration_since(made).unwrap_or_default() > CLAIM_GRACE;
    let keep_from = claims
        .iter()
        .position(|&(_, at)| !old(at))
        .unwrap_or(claims.len())
        .min(claims.len() - 1);
    for (first, _) in claims.drain(..keep_from) {
        store.delete(&claim_key(partition, first))?;
    }
    Ok(())
}

/// Deletes a staging directory that will never be claimed, as far as it can: its writer may
/// still be writing into it (it learns that it lost when it tries to claim), so a failure
/// only leaves garbage for a later take-over or sweep, and is logged.
fn discard(store: &TableStore, dir: &str) {
    if let Err(error) = store.delete_dir(dir) {
        tracing::info!(%error, "Staging that can no longer be claimed not deleted yet.");
    }
}

fn older_than_grace(store: &TableStore, dir: &str) -> Result<bool> {
    // An empty directory may be a flush writing its first file: not known to be old. (One
    // left empty by a crash goes with the sweep after the next claim.)
    let newest = store.list(dir)?.files.iter().map(|e| e.modified).max();
    Ok(newest
        .is_some_and(|at| SystemTime::now().duration_since(at).unwrap_or_default() > CLAIM_GRACE))
}

/// Reads a claim and checks that it names only what a flush writes: paths inside the tables,
/// named for the claim's own range, staged names without directories.
fn read_claim(store: &TableStore, key: &str) -> Result<Option<Claim>> {
    let Some(text) = store.read(key)? else {
        return Ok(None);
    };
    let bad = |message: String| TransformError::Unexpected {
        path: store.display_key(key),
        message,
    };
    let claim: Claim =
        serde_json::from_slice(&text).map_err(|e| bad(format!("unreadable claim: {e}")))?;
    let range = FileRange {
        partition: claim.partition,
        first: claim.first,
        last: claim.last,
    };
    let staging_ok = claim
        .staging
        .strip_prefix(&format!("{}/", partition_dir(STAGING_DIR, claim.partition)))
        .and_then(parse_staging_name)
        .is_some_and(|(first, last, _)| first == claim.first && last == claim.last);
    if !staging_ok {
        return Err(bad(format!("unexpected staging {:?}", claim.staging)));
    }
    for entry in &claim.files {
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
    Ok(Some(claim))
}
