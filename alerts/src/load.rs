//! Reads the observations of a window of days straight from the tables' Parquet files.
//!
//! A pass reads every report of its window (three months of them on a first pass: nine
//! million reports for 10,000 domains), so this is the pass's biggest cost, and it does not
//! go through SQL. The layout ([`tlsrpt_schemas::layout`]) names each file by the bus
//! partition and offset range of the flush that wrote it, the same in all three tables: the
//! reports of a `reports` file are those of the `policies` and `failures` files whose
//! ranges overlap its range (compaction may have merged one table's files and not yet the
//! others'). So the files are read in such groups, each small enough that the join of
//! `policies` to `reports` (for `received_at`) and of `failures` to the parts is a hash
//! table that fits in the cache, and the groups are spread over the cores. The result is
//! what `policies JOIN reports` and `failures` summed per (report, domain, MX, result type)
//! give in SQL; a test holds the two to the same sums.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::array::{Array, AsArray, RecordBatch, StringArray, StringViewArray};
use arrow::datatypes::{DataType, Int32Type, Int64Type, TimestampMicrosecondType, UInt64Type};
use chrono::{DateTime, NaiveDate, Utc};
use foldhash::HashMap;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tlsrpt_schemas::dedup::report_uid_value_of_hex;
use tlsrpt_schemas::layout::{self, FileRange, TABLES};

use crate::observations::{Day, Names, Observations, Sym, day_of};
use crate::{Error, Result};

/// The reports of days `from..=to` received at or before `until`, from the tables under
/// `tables`.
pub fn observations(
    tables: &Path,
    from: NaiveDate,
    to: NaiveDate,
    until: DateTime<Utc>,
) -> Result<Observations> {
    let started = std::time::Instant::now();
    let groups = groups(tables, from, to)?;
    let until = until.timestamp_micros();
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(groups.len())
        .max(1);
    let next = AtomicUsize::new(0);
    let failed: Mutex<Option<Error>> = Mutex::new(None);
    let shards: Vec<Observations> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut shard = Observations::default();
                    let mut scratch = Scratch::default();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(group) = groups.get(i) else { break };
                        if let Err(error) = read_group(group, until, &mut shard, &mut scratch) {
                            failed.lock().expect("not poisoned").get_or_insert(error);
                            next.store(groups.len(), Ordering::Relaxed);
                            break;
                        }
                    }
                    // Grouped and sorted here, on this thread; the shards are merged below.
                    shard.finish();
                    shard
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a reader does not panic"))
            .collect()
    });
    if let Some(error) = failed.into_inner().expect("not poisoned") {
        return Err(error);
    }
    let read = started.elapsed();
    let mut shards = shards.into_iter();
    let mut observations = shards.next().unwrap_or_default();
    for shard in shards {
        observations.merge(shard);
    }
    tracing::debug!(
        reports = observations.len(),
        file_groups = groups.len(),
        ?read,
        finished = ?started.elapsed(),
        "Alert observations loaded (times since the start of the load)."
    );
    Ok(observations)
}

/// The files of one date holding the same reports in the three tables.
#[derive(Debug, Default)]
struct Group {
    day: Day,
    /// Per table, in [`TABLES`] order.
    files: [Vec<PathBuf>; 3],
}

const REPORTS: usize = 0;
const POLICIES: usize = 1;
const FAILURES: usize = 2;

/// The file groups of the days `from..=to`: per date and bus partition, the visible files of
/// the three tables whose offset ranges overlap, merged into one group.
fn groups(tables: &Path, from: NaiveDate, to: NaiveDate) -> Result<Vec<Group>> {
    debug_assert_eq!(TABLES[REPORTS], "reports");
    debug_assert_eq!(TABLES[POLICIES], "policies");
    debug_assert_eq!(TABLES[FAILURES], "failures");
    let mut groups = Vec::new();
    for date in from.iter_days().take_while(|d| *d <= to) {
        let mut ranges: Vec<(FileRange, usize)> = Vec::new();
        for (table, name) in TABLES.iter().enumerate() {
            let dir = tables.join(name).join(layout::date_dir_name(date));
            ranges.extend(visible_ranges(&dir)?.into_iter().map(|r| (r, table)));
        }
        ranges.sort_by_key(|(r, _)| (r.partition, r.first, r.last));
        // (partition, last offset) of the group being filled.
        let mut current: Option<(u32, u64)> = None;
        for (range, table) in ranges {
            let joins = current.is_some_and(|(partition, last)| {
                range.partition == partition && range.first <= last
            });
            if !joins {
                groups.push(Group {
                    day: day_of(date),
                    ..Group::default()
                });
            }
            let last = current
                .filter(|_| joins)
                .map_or(range.last, |(_, last)| last.max(range.last));
            current = Some((range.partition, last));
            let group = groups.last_mut().expect("pushed above");
            group.files[table].push(
                tables
                    .join(TABLES[table])
                    .join(layout::date_dir_name(date))
                    .join(range.file_name()),
            );
        }
    }
    Ok(groups)
}

/// The ranges of the data files of a date directory a reader must read; none when it does
/// not exist.
fn visible_ranges(dir: &Path) -> Result<Vec<FileRange>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Io {
                what: format!("cannot list {}", dir.display()),
                source,
            });
        }
    };
    let mut ranges = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Io {
            what: format!("cannot list {}", dir.display()),
            source,
        })?;
        if let Some(name) = entry.file_name().to_str()
            && layout::is_data_name(name)
            && let Some(range) = FileRange::parse(name)
        {
            ranges.push(range);
        }
    }
    Ok(layout::visible(&ranges))
}

/// What a reader keeps between groups, so that its tables are allocated once.
#[derive(Default)]
struct Scratch {
    /// The group's reports: id -> received_at.
    received: HashMap<u128, i64>,
    /// The group's parts: (report id, domain) -> index in the shard.
    parts: HashMap<(u128, Sym), usize>,
    /// Per part of the group, from its first: (STS sessions, STS failed, largest other
    /// sessions, its failed).
    counts: Vec<[u64; 4]>,
}

/// Reads one group's reports, policies and failures into `shard`.
fn read_group(
    group: &Group,
    until: i64,
    shard: &mut Observations,
    scratch: &mut Scratch,
) -> Result<()> {
    scratch.received.clear();
    scratch.parts.clear();
    scratch.counts.clear();
    for path in &group.files[REPORTS] {
        for batch in read(path, &["report_uid", "received_at"])? {
            let uid = strings(&batch, "report_uid", path)?;
            let received = column(&batch, "received_at", path)?;
            let received = received
                .as_primitive_opt::<TimestampMicrosecondType>()
                .ok_or_else(|| unreadable(path, "received_at is not a timestamp"))?;
            for row in 0..batch.num_rows() {
                // A report received after `until` is not known yet.
                if received.is_valid(row)
                    && received.value(row) <= until
                    && let Some(uid) = uid.get(row).and_then(report_uid_value_of_hex)
                {
                    scratch.received.insert(uid, received.value(row));
                }
            }
        }
    }

    let first_part = shard.len();
    let sts = shard.names.intern("sts");
    for path in &group.files[POLICIES] {
        let columns = [
            "report_uid",
            "organization_name",
            "policy_domain",
            "policy_type",
            "sts_mode",
            "total_successful_session_count",
            "total_failure_session_count",
        ];
        for batch in read(path, &columns)? {
            let names = &mut shard.names;
            let uid = strings(&batch, "report_uid", path)?;
            let reporter = syms(&batch, "organization_name", names, path)?;
            let domain = syms(&batch, "policy_domain", names, path)?;
            let policy_type = syms(&batch, "policy_type", names, path)?;
            let mode = syms(&batch, "sts_mode", names, path)?;
            let successful = integers(&batch, "total_successful_session_count", path)?;
            let failed = integers(&batch, "total_failure_session_count", path)?;
            for row in 0..batch.num_rows() {
                if domain[row].is_none() {
                    continue;
                }
                let Some(uid) = uid.get(row).and_then(report_uid_value_of_hex) else {
                    continue;
                };
                let Some(&received_at) = scratch.received.get(&uid) else {
                    continue;
                };
                let part = *scratch.parts.entry((uid, domain[row])).or_insert_with(|| {
                    scratch.counts.push([0; 4]);
                    shard.add_part_syms(received_at, group.day, reporter[row], domain[row])
                });
                // A sender that evaluates MTA-STS and DANE for one domain counts the same
                // sessions under both, so a part's sessions are the larger of its STS
                // policies' sum (several on the day a policy changes, the sessions split
                // between the old and the new) and any other policy's.
                let sessions = successful[row] + failed[row];
                let count = &mut scratch.counts[part - first_part];
                if policy_type[row] == sts {
                    count[0] += sessions;
                    count[1] += failed[row];
                    if !mode[row].is_none() {
                        shard.add_mode_sym(part, mode[row], sessions);
                    }
                } else if sessions > count[2] {
                    count[2] = sessions;
                    count[3] = failed[row];
                }
            }
        }
    }
    for (i, count) in scratch.counts.iter().enumerate() {
        let (sessions, failed) = if count[0] >= count[2] {
            (count[0], count[1])
        } else {
            (count[2], count[3])
        };
        shard.set_counts(first_part + i, sessions, failed);
    }

    for path in &group.files[FAILURES] {
        let columns = [
            "report_uid",
            "policy_domain",
            "receiving_mx_hostname",
            "result_type",
            "failed_session_count",
        ];
        for batch in read(path, &columns)? {
            let names = &mut shard.names;
            let uid = strings(&batch, "report_uid", path)?;
            let domain = syms(&batch, "policy_domain", names, path)?;
            let mx = syms(&batch, "receiving_mx_hostname", names, path)?;
            let result_type = syms(&batch, "result_type", names, path)?;
            let failed = integers(&batch, "failed_session_count", path)?;
            for row in 0..batch.num_rows() {
                if domain[row].is_none() || result_type[row].is_none() {
                    continue;
                }
                let Some(uid) = uid.get(row).and_then(report_uid_value_of_hex) else {
                    continue;
                };
                // A report received after `until` has no part: its failures are not known.
                if let Some(&part) = scratch.parts.get(&(uid, domain[row])) {
                    shard.add_failure_syms(part, mx[row], result_type[row], failed[row]);
                }
            }
        }
    }
    Ok(())
}

/// The named columns of a Parquet file, in batches.
fn read(path: &Path, columns: &[&str]) -> Result<Vec<RecordBatch>> {
    let file = File::open(path).map_err(|source| Error::Io {
        what: format!("cannot open {}", path.display()),
        source,
    })?;
    let parquet = |error: parquet::errors::ParquetError| unreadable(path, &error.to_string());
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet)?;
    let mut roots = Vec::with_capacity(columns.len());
    for name in columns {
        let (index, _) = builder
            .schema()
            .column_with_name(name)
            .ok_or_else(|| unreadable(path, &format!("no column {name}")))?;
        roots.push(index);
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(16 * 1024)
        .build()
        .map_err(parquet)?;
    reader
        .map(|batch| batch.map_err(|error| unreadable(path, &error.to_string())))
        .collect()
}

fn unreadable(path: &Path, message: &str) -> Error {
    Error::Io {
        what: format!("cannot read {}", path.display()),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, message.to_owned()),
    }
}

fn column<'a>(batch: &'a RecordBatch, name: &str, path: &Path) -> Result<&'a dyn Array> {
    batch
        .column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| unreadable(path, &format!("no column {name}")))
}

/// A text column as interned names, one per row ([`Sym::NONE`] for nulls). A dictionary's
/// values are interned once per batch, and a run of one name (the tables are sorted by
/// domain) once per run.
fn syms(batch: &RecordBatch, name: &str, names: &mut Names, path: &Path) -> Result<Vec<Sym>> {
    let array = column(batch, name, path)?;
    if let DataType::Dictionary(key, _) = array.data_type()
        && **key == DataType::Int32
    {
        let dictionary = array.as_dictionary::<Int32Type>();
        let values = arrow::compute::cast(dictionary.values(), &DataType::Utf8)
            .map_err(|error| unreadable(path, &error.to_string()))?;
        let values = values.as_string::<i32>();
        let value_syms: Vec<Sym> = (0..values.len())
            .map(|i| names.intern_opt(values.is_valid(i).then(|| values.value(i))))
            .collect();
        return Ok(dictionary
            .keys()
            .iter()
            .map(|key| key.map_or(Sym::NONE, |k| value_syms[k as usize]))
            .collect());
    }
    let text = strings(batch, name, path)?;
    let mut previous: Option<(&str, Sym)> = None;
    Ok((0..array.len())
        .map(|row| match (text.get(row), previous) {
            (Some(name), Some((last, sym))) if name == last => sym,
            (Some(name), _) => {
                let sym = names.intern(name);
                previous = Some((name, sym));
                sym
            }
            (None, _) => Sym::NONE,
        })
        .collect())
}

/// A text column: plain and view arrays are read in place, others (dictionaries) cast.
fn strings(batch: &RecordBatch, name: &str, path: &Path) -> Result<Text> {
    let array = column(batch, name, path)?;
    Ok(match array.data_type() {
        DataType::Utf8 => Text::Plain(array.as_string::<i32>().clone()),
        DataType::Utf8View => Text::View(array.as_string_view().clone()),
        _ => {
            let cast = arrow::compute::cast(array, &DataType::Utf8)
                .map_err(|error| unreadable(path, &format!("{name}: {error}")))?;
            Text::Plain(cast.as_string::<i32>().clone())
        }
    })
}

enum Text {
    Plain(StringArray),
    View(StringViewArray),
}

impl Text {
    fn get(&self, row: usize) -> Option<&str> {
        match self {
            Self::Plain(a) => a.is_valid(row).then(|| a.value(row)),
            Self::View(a) => a.is_valid(row).then(|| a.value(row)),
        }
    }
}

/// An integer column as u64 (nulls and negatives as 0).
fn integers(batch: &RecordBatch, name: &str, path: &Path) -> Result<Vec<u64>> {
    let array = column(batch, name, path)?;
    if let DataType::UInt64 = array.data_type() {
        let a = array.as_primitive::<UInt64Type>();
        return Ok((0..a.len())
            .map(|i| if a.is_valid(i) { a.value(i) } else { 0 })
            .collect());
    }
    let cast = arrow::compute::cast(array, &DataType::Int64)
        .map_err(|error| unreadable(path, &format!("{name}: {error}")))?;
    let a = cast.as_primitive::<Int64Type>();
    Ok((0..a.len())
        .map(|i| {
            if a.is_valid(i) {
                a.value(i).max(0) as u64
            } else {
                0
            }
        })
        .collect())
}
