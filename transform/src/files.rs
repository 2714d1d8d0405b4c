//! The tables on disk: which files there are, writing and reading them as Parquet, and the
//! order of rows inside a file.
//!
//! Names follow `tlsrpt_schemas::layout` exactly; this module adds the I/O.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{Date32Type, SchemaRef};
use arrow::row::{RowConverter, Rows, SortField};
use chrono::NaiveDate;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;
use tlsrpt_schemas::dedup;
use tlsrpt_schemas::layout::{self, FileRange};
use tlsrpt_schemas::rollup::{self, Rollups};
use tlsrpt_schemas::tables::{Tables, failures_schema, policies_schema, reports_schema};

use crate::error::{Result, TransformError, io};
use crate::store::TableStore;

/// Prefix of a file being written in a date directory (a compaction's output before its
/// rename, `.tmp-<writer>.<final name>`). It starts with `.`, so readers skip it
/// (`layout::is_data_name`).
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

/// zstd at its fastest level, for every column. A merge copies compressed pages as they
/// are, so this is the level files keep. Level 1 against 3 (measured on 200,000 generated
/// reports, both profiles, after compaction): files 0.4% larger to 3% smaller (pages of
/// dictionary keys and short strings give the slower matcher little to find), transformer
/// CPU per report about 9% lower. On `raw_json`, most of the bytes a flush compresses,
/// level 1 halved zstd's time under HTTP load for files about 10% larger.
const ZSTD_LEVEL: i32 = 1;

/// False-positive rate of the `report_id` bloom filters.
const REPORT_ID_BLOOM_FPP: f64 = 0.01;

/// One of the tables: the three raw ones, then the daily rollups summed from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Table {
    Reports,
    Policies,
    Failures,
    PoliciesDaily,
    FailuresDaily,
    ReportsDaily,
}

impl Table {
    /// In the order of `layout::TABLES`, then of `rollup::ROLLUPS`.
    pub(crate) const ALL: [Table; 6] = [
        Table::Reports,
        Table::Policies,
        Table::Failures,
        Table::PoliciesDaily,
        Table::FailuresDaily,
        Table::ReportsDaily,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Table::Reports => layout::TABLES[0],
            Table::Policies => layout::TABLES[1],
            Table::Failures => layout::TABLES[2],
            Table::PoliciesDaily => rollup::ROLLUPS[0],
            Table::FailuresDaily => rollup::ROLLUPS[1],
            Table::ReportsDaily => rollup::ROLLUPS[2],
        }
    }

    /// Whether its rows are sums (a rollup), which a compaction may add up again.
    pub(crate) fn is_rollup(self) -> bool {
        matches!(
            self,
            Table::PoliciesDaily | Table::FailuresDaily | Table::ReportsDaily
        )
    }

    pub(crate) fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    pub(crate) fn schema(self) -> SchemaRef {
        match self {
            Table::Reports => reports_schema(),
            Table::Policies => policies_schema(),
            Table::Failures => failures_schema(),
            Table::PoliciesDaily => rollup::policies_daily_schema(),
            Table::FailuresDaily => rollup::failures_daily_schema(),
            Table::ReportsDaily => rollup::reports_daily_schema(),
        }
    }

    /// The order of rows inside a file: what the common questions filter on first, so that
    /// the page index lets a reader skip most pages (a one-domain trend query went from
    /// 1.5 s to 7 ms, DESIGN.md). `date` is constant inside a file today; it is listed so the
    /// declared order stays true should a file ever span dates.
    pub(crate) fn sort_columns(self) -> &'static [&'static str] {
        match self {
            Table::Reports => &["organization_name", "date"],
            Table::Policies => &["policy_domain", "date"],
            Table::Failures => &["policy_domain", "receiving_mx_hostname", "date"],
            Table::PoliciesDaily => &["policy_domain", "organization_name", "date"],
            Table::FailuresDaily => &["policy_domain", "receiving_mx_hostname", "date"],
            Table::ReportsDaily => &["organization_name", "policy_domain", "date"],
        }
    }

    /// Columns written without zstd: a date, a day's timestamps, small enumerations and
    /// indexes are dictionary- and run-length-encoded to a few bits per row, and zstd made
    /// those pages larger, not smaller (measured on generated data: 0.7 to 1.2 times their
    /// size). Each compressed column also costs a compression context per file (two with
    /// the decompressor Parquet creates beside it), which showed in a profile of a flush.
    pub(crate) fn uncompressed_columns(self) -> &'static [&'static str] {
        match self {
            Table::Reports => &[
                "start_datetime",
                "end_datetime",
                "date",
                "transport",
                "dkim",
                "policy_count",
            ],
            Table::Policies => &[
                "policy_index",
                "date",
                "start_datetime",
                "policy_type",
                "sts_mode",
                "sts_max_age",
            ],
            Table::Failures => &[
                "policy_index",
                "date",
                "start_datetime",
                "policy_type",
                "failure_reason_code",
            ],
            Table::PoliciesDaily => &["date", "policy_type", "sts_mode"],
            Table::FailuresDaily => &["date", "result_type"],
            Table::ReportsDaily => &["date"],
        }
    }

    /// Columns of arrival instants, written without a dictionary: see [`writer_properties`].
    pub(crate) fn arrival_columns(self) -> &'static [&'static str] {
        match self {
            Table::Reports => &["received_at"],
            Table::ReportsDaily => &["last_received_at"],
            _ => &[],
        }
    }

    /// Text columns written without min/max statistics (Parquet leaf paths): see
    /// [`writer_properties`].
    pub(crate) fn unfiltered_text_columns(self) -> &'static [&'static str] {
        match self {
            Table::Reports => &[
                "report_uid",
                "contact_info",
                "report_id",
                "warnings.list.item",
            ],
            Table::Policies => &["report_uid", "policy_string.list.item", "mx_host.list.item"],
            Table::Failures => &[
                "report_uid",
                "receiving_mx_helo",
                "additional_information",
                "failure_reason_code",
            ],
            Table::PoliciesDaily | Table::FailuresDaily | Table::ReportsDaily => &[],
        }
    }

    /// The table's rows in a flush: the batch's own, or the rollup summed from them.
    pub(crate) fn of<'a>(self, tables: &'a Tables, rollups: &'a Rollups) -> &'a RecordBatch {
        match self {
            Table::Reports => &tables.reports,
            Table::Policies => &tables.policies,
            Table::Failures => &tables.failures,
            Table::PoliciesDaily => &rollups.policies_daily,
            Table::FailuresDaily => &rollups.failures_daily,
            Table::ReportsDaily => &rollups.reports_daily,
        }
    }
}

/// One data file found under the root.
#[derive(Debug, Clone)]
pub(crate) struct DataFile {
    pub(crate) table: Table,
    pub(crate) date: NaiveDate,
    pub(crate) range: FileRange,
    /// Its key under the root: `failures/date=2026-01-01/p00000-…-….parquet`.
    pub(crate) key: String,
    pub(crate) bytes: u64,
    pub(crate) modified: SystemTime,
}

/// What is under the root.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub(crate) files: Vec<DataFile>,
    /// Temporary files of compactions (local stores only): their keys and when they were
    /// last written. An old one was left by an interrupted merge.
    pub(crate) temporaries: Vec<(String, SystemTime)>,
}

impl Scan {
    /// Keeps only the files (and temporaries) of the partitions `keep` accepts.
    pub(crate) fn retain_partitions(&mut self, keep: impl Fn(u32) -> bool) {
        self.files.retain(|f| keep(f.range.partition));
        self.temporaries.retain(|(key, _)| {
            key.rsplit('/')
                .next()
                .and_then(|n| n.strip_prefix(TEMP_PREFIX))
                .and_then(|n| n.split_once('.'))
                .and_then(|(_writer, name)| FileRange::parse(name))
                .is_none_or(|range| keep(range.partition))
        });
    }
}

/// Every data file of every table (superseded ones included), and leftover temporaries.
pub(crate) fn scan(store: &TableStore) -> Result<Scan> {
    let mut scan = Scan::default();
    for table in Table::ALL {
        for name in store.list(table.name())?.dirs {
            let Some(date) = layout::parse_date_dir(&name) else {
                continue;
            };
            scan_date_dir(store, table, date, &mut scan)?;
        }
    }
    Ok(scan)
}

/// The files of one date directory (all partitions), appended to `scan`.
pub(crate) fn scan_date_dir(
    store: &TableStore,
    table: Table,
    date: NaiveDate,
    scan: &mut Scan,
) -> Result<()> {
    let dir = layout::date_dir(table.name(), date);
    for entry in store.list(&dir)?.files {
        let key = format!("{dir}/{}", entry.name);
        if entry.name.starts_with(TEMP_PREFIX) {
            scan.temporaries.push((key, entry.modified));
            continue;
        }
        if !layout::is_data_name(&entry.name) {
            continue;
        }
        let Some(range) = FileRange::parse(&entry.name) else {
            continue;
        };
        scan.files.push(DataFile {
            table,
            date,
            range,
            key,
            bytes: entry.bytes,
            modified: entry.modified,
        });
    }
    Ok(())
}

/// The files a reader sees (`layout::visible`), per table and date directory.
pub(crate) fn visible(files: &[DataFile]) -> Vec<&DataFile> {
    let mut by_dir: BTreeMap<(Table, NaiveDate), Vec<&DataFile>> = BTreeMap::new();
    for file in files {
        by_dir
            .entry((file.table, file.date))
            .or_default()
            .push(file);
    }
    let mut out = Vec::new();
    for group in by_dir.values() {
        let ranges: Vec<FileRange> = group.iter().map(|f| f.range).collect();
        let shown = layout::visible(&ranges);
        out.extend(group.iter().filter(|f| shown.contains(&f.range)).copied());
    }
    out
}

/// Makes a file's contents, or a directory's entries (a created, renamed or removed name in
/// it), durable.
pub(crate) fn sync_path(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io("sync", path))
}

/// The writer properties of a table's files: zstd, Parquet dictionary pages, page-level
/// statistics (the page index), row groups of at most `row_group_rows` rows, and the sort
/// order declared so that readers may rely on it. `rows` is the number of rows the file will
/// hold: it sizes the bloom filters.
fn writer_properties(table: Table, row_group_rows: usize, rows: usize) -> Result<WriterProperties> {
    let schema = table.schema();
    let descriptor = ArrowSchemaConverter::new()
        .convert(&schema)
        .map_err(|source| TransformError::Parquet {
            path: PathBuf::from(table.name()),
            source,
        })?;
    // Parquet numbers leaf columns, not Arrow fields: look the sort columns up by path.
    let sorting = table
        .sort_columns()
        .iter()
        .map(|name| {
            let index = descriptor
                .columns()
                .iter()
                .position(|c| c.path().string() == *name)
                .expect("sort columns are top-level columns of the schema");
            SortingColumn {
                column_idx: index as i32,
                descending: false,
                nulls_first: true,
            }
        })
        .collect();
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(ZSTD_LEVEL).expect("a valid zstd level"),
        ))
        // Version 2 data pages: the writer compresses a page's values straight from its
        // encoder, where a version 1 page is first copied whole into a buffer beside its
        // levels and then compressed into a vector that is grown and shrunk again (those
        // copies were 2% of the transformer's instructions). Every reader this project
        // supports (DataFusion, DuckDB, pyarrow) reads them.
        .set_writer_version(WriterVersion::PARQUET_2_0)
        // What a column without a dictionary (or whose dictionary overflows) is written as:
        // plain, as with version 1 pages. Version 2's default for text is prefix-delta
        // encoding, which costs more to write and gives zstd less to find in JSON.
        .set_encoding(Encoding::PLAIN)
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        .set_sorting_columns(Some(sorting));
    for column in table.uncompressed_columns() {
        builder =
            builder.set_column_compression(ColumnPath::from(*column), Compression::UNCOMPRESSED);
    }
    // A `report_uid` is random text: in `policies` and `failures` it repeats only across
    // the rows of one report, which sit apart once the rows are sorted by domain. A
    // dictionary of them grew to its size limit within each file and was then abandoned:
    // plain pages make `policies` files 3.8% and `failures` files 2.8% smaller (200,000
    // generated reports, session 14; the transformer's CPU unchanged within noise).
    if table != Table::Reports {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from("report_uid"), false);
    }
    // Min/max of text no reader can prune by: a page of random uids spans the whole range,
    // and nobody filters on a policy string, an MX pattern, a HELO name or a free-text
    // reason. Comparing every value to keep them was 2% of the transformer's time; the
    // columns readers filter on (the sort columns, dates, reporter, result type, addresses)
    // keep theirs.
    for column in table.unfiltered_text_columns() {
        builder = builder.set_column_statistics_enabled(leaf_path(column), EnabledStatistics::None);
    }
    // The instant a receiver accepted a report: microseconds, all but one per row distinct,
    // so a dictionary would hold every value and add an index per row to it.
    for column in table.arrival_columns() {
        builder = builder.set_column_dictionary_enabled(leaf_path(column), false);
    }
    if table == Table::Reports {
        // One distinct value per row: a dictionary would only be built to be abandoned, and
        // min/max of whole reports help no reader.
        for column in ["raw_json", "report_uid", "report_id"] {
            builder = builder.set_column_dictionary_enabled(ColumnPath::from(column), false);
        }
        // "Where is report X?" is asked by its report-id (a sender's operator quotes it), and
        // the rows are sorted by domain, so min/max cannot skip a file: a bloom filter per row
        // group can. Sized for the rows it will hold: about 1.2 bytes per report at 1% false
        // positives, where the writer's default (a million distinct values) is 1 MiB per file.
        let distinct = rows.clamp(1, row_group_rows.max(1)) as u64;
        builder = builder
            .set_column_bloom_filter_enabled(ColumnPath::from("report_id"), true)
            .set_column_bloom_filter_fpp(ColumnPath::from("report_id"), REPORT_ID_BLOOM_FPP)
            .set_column_bloom_filter_max_ndv(ColumnPath::from("report_id"), distinct);
        builder = builder
            .set_column_statistics_enabled(ColumnPath::from("raw_json"), EnabledStatistics::None);
    }
    Ok(builder.build())
}

/// A Parquet leaf column by its dotted path (`mx_host.list.item`): `ColumnPath::from` would
/// take the dots as part of one name, and the setting would silently match no column.
fn leaf_path(dotted: &str) -> ColumnPath {
    ColumnPath::new(dotted.split('.').map(str::to_owned).collect())
}

/// Makes the contents of `paths` (files or directories) durable, several at a time: a flush
/// writes a file per table and date, and syncing them one after the other cost a few ms
/// each on this machine's disk; concurrent syncs share the file system's journal commits.
pub(crate) fn sync_paths(paths: &[PathBuf]) -> Result<()> {
    const THREADS: usize = 8;
    if paths.len() <= 1 {
        return paths.iter().try_for_each(|p| sync_path(p));
    }
    let per_thread = paths.len().div_ceil(THREADS);
    std::thread::scope(|scope| {
        let workers: Vec<_> = paths
            .chunks(per_thread)
            .map(|chunk| scope.spawn(move || chunk.iter().try_for_each(|p| sync_path(p))))
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("a sync thread does not panic"))
    })
}

/// Rows taken from a flush's batch and handed to the Parquet writer at a time.
const WRITE_ROWS: usize = 4096;

/// Writes the `rows` of `batch` (indices, in the order to write them) as a Parquet file
/// into `sink` (`path` names it in errors). The caller closes and syncs it.
pub(crate) fn write_parquet<W: Write + Send>(
    sink: W,
    path: &Path,
    table: Table,
    batch: &RecordBatch,
    rows: &UInt32Array,
    row_group_rows: usize,
) -> Result<()> {
    let parquet = |source| TransformError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let properties = writer_properties(table, row_group_rows, rows.len())?;
    // The Arrow schema is stored in the file's metadata (the writer's default), so readers
    // get the dictionary-typed columns back as dictionaries.
    let mut writer =
        ArrowWriter::try_new(sink, table.schema(), Some(properties)).map_err(parquet)?;
    let mut start = 0;
    while start < rows.len() {
        let chunk = rows.slice(start, WRITE_ROWS.min(rows.len() - start));
        writer
            .write(&take_record_batch(batch, &chunk)?)
            .map_err(parquet)?;
        start += chunk.len();
    }
    writer.into_inner().map_err(parquet)?;
    Ok(())
}

/// The dedup sets' hasher. A `report_uid` is the first 128 bits of a SHA-256, already as
/// evenly spread as a hash can make it: its low 64 bits serve as the hash, where SipHash
/// (the standard library's default, made to resist chosen keys) was about 1% of the
/// transformer's time in a profile.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct UidHasher(u64);

impl std::hash::Hasher for UidHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for types other than `u128`; fold the bytes in.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u128(&mut self, uid: u128) {
        self.0 = uid as u64;
    }
}

/// A set of `report_uid`s (see [`UidHasher`]).
pub(crate) type UidSet = HashSet<u128, std::hash::BuildHasherDefault<UidHasher>>;

/// Adds the `report_uid` of every row of a `reports` file to `uids` (reading that column
/// only).
pub(crate) fn read_report_uids(
    store: &TableStore,
    file: &DataFile,
    uids: &mut HashSet<u128, impl std::hash::BuildHasher>,
) -> Result<()> {
    let path = store.display_key(&file.key);
    for batch in store.read_column(&file.key, file.bytes, "report_uid")? {
        let column =
            batch
                .column(0)
                .as_string_opt::<i32>()
                .ok_or_else(|| TransformError::Unexpected {
                    path: path.clone(),
                    message: "report_uid is not a string column".into(),
                })?;
        for i in 0..column.len() {
            // As a number: 16 bytes in the dedup set instead of a 32-byte string.
            let uid = dedup::report_uid_value_of_hex(column.value(i)).ok_or_else(|| {
                TransformError::Unexpected {
                    path: path.clone(),
                    message: format!("report_uid {:?} is not 32 hex digits", column.value(i)),
                }
            })?;
            uids.insert(uid);
        }
    }
    Ok(())
}

/// The rank of each row's value in one sort column of a flush's batch: equal values share a
/// rank, ranks follow the column's order (text by its bytes, as Arrow and Parquet order it;
/// a dictionary by its values), and null is 0, first. With ranks, the sort compares
/// integers: comparing the text of `policy_domain` and `receiving_mx_hostname` row against
/// row was a tenth of the transformer's time, where hashing each row's text once and
/// sorting the distinct values is a fraction of that.
fn sort_ranks(column: &arrow::array::ArrayRef) -> Result<Vec<u32>> {
    use arrow::datatypes::Int32Type;
    /// Ranks from 1 of `values` (distinct or not) in byte order.
    fn ranks_of_values(values: &[Option<&str>]) -> Vec<u32> {
        let mut order: Vec<u32> = (0..values.len() as u32).collect();
        order.sort_unstable_by_key(|&i| values[i as usize]);
        let mut ranks = vec![0; values.len()];
        let mut rank = 0;
        for (position, &i) in order.iter().enumerate() {
            if position == 0 || values[order[position - 1] as usize] != values[i as usize] {
                rank += 1;
            }
            ranks[i as usize] = rank;
        }
        ranks
    }
    if let Some(text) = column.as_string_opt::<i32>() {
        // Each distinct value once: ids in first-seen order, then ranked.
        let mut ids: std::collections::HashMap<&str, u32, foldhash::fast::FixedState> =
            std::collections::HashMap::default();
        let mut distinct: Vec<Option<&str>> = Vec::new();
        let row_ids: Vec<Option<u32>> = text
            .iter()
            .map(|value| {
                value.map(|value| {
                    *ids.entry(value).or_insert_with(|| {
                        distinct.push(Some(value));
                        distinct.len() as u32 - 1
                    })
                })
            })
            .collect();
        let ranks = ranks_of_values(&distinct);
        return Ok(row_ids
            .into_iter()
            .map(|id| id.map_or(0, |id| ranks[id as usize]))
            .collect());
    }
    let unsupported = || {
        TransformError::Arrow(arrow::error::ArrowError::ComputeError(format!(
            "a sort column of type {} (text or a dictionary of text was expected)",
            column.data_type()
        )))
    };
    let dictionary = column
        .as_dictionary_opt::<Int32Type>()
        .ok_or_else(unsupported)?;
    let values = dictionary
        .values()
        .as_string_opt::<i32>()
        .ok_or_else(unsupported)?;
    // A dictionary may hold a value twice, or a null value: both rank as their value.
    let values: Vec<Option<&str>> = values.iter().collect();
    let ranks = ranks_of_values(&values);
    Ok(dictionary
        .keys()
        .iter()
        .map(|key| key.map_or(0, |key| ranks[key as usize]))
        .collect())
}

/// Row indices ordered by day, then by each column's rank. The date as days from the
/// batch's first and the ranks go into one u64 per row when they fit in 64 bits (16 for
/// the date, 24 for each of up to two ranks: every table today), and the rows are sorted
/// by that; else they are compared column by column ([`row_order_compared`]).
fn row_order(days: &[i32], ranks: &[Vec<u32>]) -> Vec<u32> {
    let rows = days.len();
    let first_day = days.iter().copied().min().unwrap_or_default();
    let day_span = i64::from(days.iter().copied().max().unwrap_or_default()) - i64::from(first_day);
    if day_span >= 1 << 16 || ranks.len() > 2 || rows >= 1 << 24 {
        return row_order_compared(days, ranks);
    }
    let mut keyed: Vec<(u64, u32)> = (0..rows)
        .map(|row| {
            let mut key = (days[row] - first_day) as u64;
            for column in ranks {
                key = key << 24 | u64::from(column[row]);
            }
            (key << (24 * (2 - ranks.len())), row as u32)
        })
        .collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, row)| row).collect()
}

/// [`row_order`] by comparing each pair of rows column by column.
fn row_order_compared(days: &[i32], ranks: &[Vec<u32>]) -> Vec<u32> {
    let mut indices: Vec<u32> = (0..days.len() as u32).collect();
    indices.sort_by(|&a, &b| {
        let (a, b) = (a as usize, b as usize);
        days[a].cmp(&days[b]).then_with(|| {
            ranks
                .iter()
                .map(|column| column[a].cmp(&column[b]))
                .find(|order| order.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        })
    });
    indices
}

/// The rows of one flush per value of its `date` column, in date order: for each date, the
/// indices of its rows in `batch` in the table's file order ([`Table::sort_columns`],
/// ascending, nulls first, as the files declare). One sort by date and then the file order;
/// the rows themselves are not copied here but taken [`WRITE_ROWS`] at a time as the file
/// is written ([`write_parquet`]): a sorted copy of a whole flush (about 20 MB of
/// `raw_json` for 10,000 reports) was fresh memory on every flush, and first touches of
/// fresh memory were a third of a flush's time.
///
/// The comparison is written out rather than left to Arrow's `lexsort_to_indices`, whose
/// comparator goes through a dynamic call per column and looks dictionary values up per
/// comparison: this one ranks each sort column's values once ([`sort_ranks`]) and sorts
/// by the ranks ([`row_order`]; a test holds the order to Arrow's).
pub(crate) fn sorted_by_date(
    table: Table,
    batch: &RecordBatch,
) -> Result<Vec<(NaiveDate, UInt32Array)>> {
    if batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let dates = batch
        .column_by_name("date")
        .and_then(|c| c.as_primitive_opt::<Date32Type>())
        .expect("every table has a Date32 date column");
    let ranks = table
        .sort_columns()
        .iter()
        .filter(|name| **name != "date")
        .map(|name| {
            sort_ranks(
                batch
                    .column_by_name(name)
                    .expect("sort columns are columns of the table"),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let days = dates.values();
    let indices = UInt32Array::from(row_order(days, &ranks));
    let day_of = |i: usize| days[indices.value(i) as usize];
    let mut parts = Vec::new();
    let mut start = 0;
    while start < indices.len() {
        let day = day_of(start);
        let mut end = start + 1;
        while end < indices.len() && day_of(end) == day {
            end += 1;
        }
        let date = Date32Type::to_naive_date_opt(day).ok_or_else(|| {
            TransformError::Arrow(arrow::error::ArrowError::ComputeError(format!(
                "date {day} out of range"
            )))
        })?;
        parts.push((date, indices.slice(start, end - start)));
        start = end;
    }
    Ok(parts)
}

/// Rows read at a time from each input of a merge: bounds a merge's memory by the number of
/// its inputs, not by their size (a `reports` row carries about 2 KB of `raw_json`).
const MERGE_READ_ROWS: usize = 1024;
/// Rows written to the output at a time by a merge.
const MERGE_WRITE_ROWS: usize = 4096;

/// One input of a merge: its reader, the batch being consumed and its sort keys as rows.
struct MergeInput {
    path: PathBuf,
    reader: parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    /// Index of the current batch in the merge's `sources`, its sort keys, the next row.
    current: Option<(usize, Rows, usize)>,
}

/// Merges `inputs` (files of one table and date, each in the table's file order) into a new
/// file written to `output`, in the same order; returns the output (for the caller to close
/// and sync) and its rows. A streaming k-way
/// merge: each input is read [`MERGE_READ_ROWS`] rows at a time and the output written as it
/// goes, so memory stays near `inputs × MERGE_READ_ROWS` rows plus the output's encoded row
/// group, where reading every input whole held the merge's rows decoded twice (about 300 MB
/// for a 16 MiB `reports` merge). Rows with equal keys keep the order of the inputs.
pub(crate) fn merge_files<W: Write + Send>(
    store: &TableStore,
    table: Table,
    inputs: &[String],
    output: W,
    output_path: &Path,
    row_group_rows: usize,
) -> Result<(W, usize)> {
    let schema = table.schema();
    if table.is_rollup() {
        return merge_rollup_files(store, table, inputs, output, output_path, row_group_rows);
    }
    let key_indices: Vec<usize> = table
        .sort_columns()
        .iter()
        .map(|name| schema.index_of(name).expect("sort columns are columns"))
        .collect();
    let converter = RowConverter::new(
        key_indices
            .iter()
            .map(|&i| SortField::new(schema.field(i).data_type().clone()))
            .collect(),
    )?;
    let mut rows = 0usize;
    let mut readers = Vec::with_capacity(inputs.len());
    for key in inputs {
        let path = store.display_key(key);
        let parquet = |source| TransformError::Parquet {
            path: path.clone(),
            source,
        };
        let source = store.open_parquet(key)?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(source).map_err(parquet)?;
        rows += usize::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
        let reader = builder
            .with_batch_size(MERGE_READ_ROWS)
            .build()
            .map_err(parquet)?;
        readers.push(MergeInput {
            path,
            reader,
            current: None,
        });
    }
    // The batches the output chunk being gathered takes rows from.
    let mut sources: Vec<RecordBatch> = Vec::new();
    let load = |input: &mut MergeInput, sources: &mut Vec<RecordBatch>| -> Result<()> {
        input.current = None;
        let Some(batch) = input.reader.next() else {
            return Ok(());
        };
        let batch = batch.map_err(|e| TransformError::Parquet {
            path: input.path.clone(),
            source: e.into(),
        })?;
        if batch.schema().fields() != schema.fields() {
            return Err(TransformError::Unexpected {
                path: input.path.clone(),
                message: format!("not the schema of the {} table", table.name()),
            });
        }
        let batch = batch.with_schema(Arc::clone(&schema))?;
        let keys: Vec<_> = key_indices
            .iter()
            .map(|&i| Arc::clone(batch.column(i)))
            .collect();
        let key_rows = converter.convert_columns(&keys)?;
        sources.push(batch);
        input.current = Some((sources.len() - 1, key_rows, 0));
        Ok(())
    };
    for input in &mut readers {
        load(input, &mut sources)?;
    }

    let parquet = |source| TransformError::Parquet {
        path: output_path.to_path_buf(),
        source,
    };
    let properties = writer_properties(table, row_group_rows, rows)?;
    let mut writer =
        ArrowWriter::try_new(output, Arc::clone(&schema), Some(properties)).map_err(parquet)?;
    let mut written = 0usize;
    let mut chunk: Vec<(usize, usize)> = Vec::with_capacity(MERGE_WRITE_ROWS);
    loop {
        // The input whose next row is smallest; the first such input on ties.
        let mut smallest: Option<usize> = None;
        for (i, input) in readers.iter().enumerate() {
            let Some((_, keys, row)) = &input.current else {
                continue;
            };
            let better = match smallest {
                None => true,
                Some(s) => {
                    let (_, best_keys, best_row) =
                        readers[s].current.as_ref().expect("a current batch");
                    keys.row(*row) < best_keys.row(*best_row)
                }
            };
            if better {
                smallest = Some(i);
            }
        }
        let exhausted = match smallest {
            Some(i) => {
                let (source, keys, row) = readers[i].current.as_mut().expect("a current batch");
                chunk.push((*source, *row));
                *row += 1;
                *row == keys.num_rows()
            }
            None => false,
        };
        if chunk.len() == MERGE_WRITE_ROWS || (smallest.is_none() && !chunk.is_empty()) {
            let refs: Vec<&RecordBatch> = sources.iter().collect();
            let out = arrow::compute::interleave_record_batch(&refs, &chunk)?;
            writer.write(&out).map_err(parquet)?;
            written += out.num_rows();
            chunk.clear();
            // Keep only the batches still being read, renumbered.
            let mut kept = Vec::new();
            for input in &mut readers {
                if let Some((source, _, _)) = &mut input.current {
                    kept.push(sources[*source].clone());
                    *source = kept.len() - 1;
                }
            }
            sources = kept;
        }
        match smallest {
            None => break,
            Some(i) if exhausted => load(&mut readers[i], &mut sources)?,
            Some(_) => {}
        }
    }
    let output = writer.into_inner().map_err(parquet)?;
    Ok((output, written))
}

/// [`merge_files`] for a rollup table: its rows summed again per key
/// (`tlsrpt_schemas::rollup::merge`), so a merged file holds one row per key where its
/// inputs held one per key and flush. Rollup files are small (a few hundred rows per
/// directory and flush), so the inputs are read whole. Returns the output and its rows.
fn merge_rollup_files<W: Write + Send>(
    store: &TableStore,
    table: Table,
    inputs: &[String],
    output: W,
    output_path: &Path,
    row_group_rows: usize,
) -> Result<(W, usize)> {
    let schema = table.schema();
    let mut batches = Vec::new();
    for key in inputs {
        let path = store.display_key(key);
        let parquet = |source| TransformError::Parquet {
            path: path.clone(),
            source,
        };
        let reader = ParquetRecordBatchReaderBuilder::try_new(store.open_parquet(key)?)
            .map_err(parquet)?
            .with_batch_size(MERGE_READ_ROWS)
            .build()
            .map_err(parquet)?;
        for batch in reader {
            let batch = batch.map_err(|e| parquet(e.into()))?;
            if batch.schema().fields() != schema.fields() {
                return Err(TransformError::Unexpected {
                    path: path.clone(),
                    message: format!("not the schema of the {} table", table.name()),
                });
            }
            batches.push(batch.with_schema(Arc::clone(&schema))?);
        }
    }
    let merged = rollup::merge(&schema, &batches)?;
    // The inputs are of one date directory: one date, one file.
    let rows = match sorted_by_date(table, &merged)?.as_slice() {
        [] => UInt32Array::from(Vec::<u32>::new()),
        [(_, rows)] => rows.clone(),
        _ => {
            return Err(TransformError::Unexpected {
                path: output_path.to_path_buf(),
                message: "the files of one date directory hold rows of several dates".into(),
            });
        }
    };
    let mut output = output;
    write_parquet(
        &mut output,
        output_path,
        table,
        &merged,
        &rows,
        row_group_rows,
    )?;
    Ok((output, rows.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Date32Array, DictionaryArray, Int32Array, StringArray};
    use arrow::compute::{SortColumn, lexsort_to_indices};
    use arrow::datatypes::Int32Type;

    /// A batch with the sort columns of every table: text with nulls and repeats, and a
    /// dictionary whose values are out of order, hold a null and a value twice.
    fn batch() -> RecordBatch {
        let rows = 500;
        let mut state = 7u64;
        let mut next = move |n: u64| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) % n
        };
        let text = |n: u64, next: &mut dyn FnMut(u64) -> u64| -> Vec<Option<String>> {
            (0..rows)
                .map(|_| match next(n + 1) {
                    0 => None,
                    v => Some(format!("host-{}", v % n)),
                })
                .collect()
        };
        let dates: Vec<i32> = (0..rows).map(|_| 20_000 + next(3) as i32).collect();
        let domains = text(7, &mut next);
        let mxs = text(5, &mut next);
        let values = StringArray::from(vec![Some("m"), Some("b"), None, Some("z"), Some("b")]);
        let keys: Vec<Option<i32>> = (0..rows)
            .map(|_| match next(6) {
                5 => None,
                k => Some(k as i32),
            })
            .collect();
        let organizations =
            DictionaryArray::<Int32Type>::try_new(Int32Array::from(keys), Arc::new(values))
                .unwrap();
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("date", Arc::new(Date32Array::from(dates))),
            ("policy_domain", Arc::new(StringArray::from(domains))),
            ("receiving_mx_hostname", Arc::new(StringArray::from(mxs))),
            ("organization_name", Arc::new(organizations)),
        ];
        RecordBatch::try_from_iter(columns).unwrap()
    }

    /// The sort key of each row, as text, in the given row order.
    fn keys_in_order(table: Table, batch: &RecordBatch, order: &[u32]) -> Vec<String> {
        let printable: Vec<ArrayRef> = std::iter::once("date")
            .chain(table.sort_columns().iter().copied())
            .map(|name| {
                arrow::compute::cast(
                    batch.column_by_name(name).unwrap(),
                    &arrow::datatypes::DataType::Utf8,
                )
                .unwrap()
            })
            .collect();
        order
            .iter()
            .map(|&row| {
                printable
                    .iter()
                    .map(|c| {
                        let c = c.as_string::<i32>();
                        if c.is_valid(row as usize) {
                            c.value(row as usize).to_owned()
                        } else {
                            "<null>".into()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect()
    }

    #[test]
    fn one_key_per_row_and_column_by_column_give_one_order() {
        let batch = batch();
        for table in [Table::Reports, Table::Policies, Table::Failures] {
            let days = batch
                .column_by_name("date")
                .unwrap()
                .as_primitive::<Date32Type>()
                .values();
            let ranks: Vec<Vec<u32>> = table
                .sort_columns()
                .iter()
                .filter(|name| **name != "date")
                .map(|name| sort_ranks(batch.column_by_name(name).unwrap()).unwrap())
                .collect();
            // Both break ties by row (the compared sort is stable), so the indices agree.
            assert_eq!(
                row_order(days, &ranks),
                row_order_compared(days, &ranks),
                "{table:?}"
            );
            // Days too far apart for the packed key are still ordered: the row moved 2^17
            // days ahead comes last.
            let mut far: Vec<i32> = days.to_vec();
            far[0] = days.iter().copied().max().unwrap() + (1 << 17);
            assert_eq!(row_order(&far, &ranks).last(), Some(&0), "{table:?}");
        }
    }

    #[test]
    fn the_flush_order_is_arrows_lexicographic_order() {
        let batch = batch();
        for table in [Table::Reports, Table::Policies, Table::Failures] {
            let ours: Vec<u32> = sorted_by_date(table, &batch)
                .unwrap()
                .into_iter()
                .flat_map(|(_, rows)| rows.values().to_vec())
                .collect();
            let columns: Vec<SortColumn> = std::iter::once("date")
                .chain(table.sort_columns().iter().copied())
                .map(|name| SortColumn {
                    values: batch.column_by_name(name).unwrap().clone(),
                    options: None,
                })
                .collect();
            let arrows = lexsort_to_indices(&columns, None).unwrap();
            assert_eq!(ours.len(), batch.num_rows());
            assert_eq!(
                keys_in_order(table, &batch, &ours),
                keys_in_order(table, &batch, arrows.values()),
                "{table:?}"
            );
        }
    }
}
