//! The three tables as DataFusion sees them: listed afresh at every scan.
//!
//! Each table is a [`VisibleFilesTable`], a `TableProvider` that, when a query scans it, lists
//! `<root>/<table>/date=*/` as [`tlsrpt_schemas::layout`] says a reader must (data names only,
//! superseded files left out) and hands the resulting file list to a DataFusion
//! `ListingTable` built for this one scan. The listing table does the rest (projection,
//! Parquet row-group and page pruning, statistics, limits).
//!
//! Why not one `ListingTable` over the table directory: it would read every file a
//! compaction has superseded but not yet deleted (rows counted twice), temporary files
//! included, and DataFusion 55 caches directory listings, so new files would not be seen
//! until the cache expired. Listing per scan costs a `read_dir` per date directory and a
//! `stat` per file; the Parquet footers and file statistics are cached by the engine's
//! runtime across queries (keyed by path, size and modification time).
//!
//! Measured on this 2-core machine (debug build of this crate, dependencies optimised), 3,000
//! one-report files per table over 30 dates: listing them here takes 10 ms, the listing
//! table's `stat` and statistics-cache lookup per file 60 ms, so `count(*)` (answered from
//! the cached statistics) takes 85 ms warm and 350 ms cold (every footer read once), and
//! `sum(failed_session_count)`, which opens every file, 325 ms. Listing does not dominate;
//! compaction, which keeps the file count down, matters more.
//!
//! A superseded file is deleted 60 s after its replacement appears (the transformer's grace
//! period). A query lists once, when it is planned, so one running longer than that (only
//! possible with a timeout above 60 s) can find a file gone and fail with a storage error;
//! running it again sees the merged file.
//!
//! Date directories are pruned before listing: filters on `date` alone are evaluated
//! against the directory names, so a one-week query over years of data lists one week.
//!
//! Each core reads a range of consecutive dates, in order, and the scan tells the planner so
//! ([`partitioned_by_date`]): a trend question grouped by date is then finished within each
//! core's range, one date at a time, instead of being hashed across cores and grouped
//! again (over all time on 100 million failure rows: 0.66x of the time; BENCHMARKS, issue 5,
//! session 26).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, Date32Array, RecordBatch};
use arrow::datatypes::{DataType, Date32Type, Field, Schema, SchemaRef};
use async_trait::async_trait;
use chrono::NaiveDate;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{
    Column, DFSchema, DataFusionError, ScalarValue, SplitPoint, project_schema,
};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig};
use datafusion::datasource::source::DataSourceExec;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::expressions::Column as PhysicalColumn;
use datafusion::physical_expr::{LexOrdering, Partitioning, PhysicalSortExpr, RangePartitioning};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use futures::{StreamExt as _, TryStreamExt as _};
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use tlsrpt_schemas::layout::{self, FileRange};
use tracing::debug;

/// The name of the partition column, stored in the files and in the directory names.
const DATE: &str = "date";

/// One table (`reports`, `policies` or `failures`) over the files a reader must see.
#[derive(Debug)]
pub(crate) struct VisibleFilesTable {
    source: TableSource,
    schema: SchemaRef,
}

/// How many date prefixes of an object store are listed at once.
const OBJECT_LISTINGS_IN_FLIGHT: usize = 16;

/// Where one table's date directories are.
#[derive(Clone)]
pub(crate) enum TableSource {
    /// `<root>/<table>`; it need not exist (a table with no files yet is empty).
    Local(PathBuf),
    /// `<prefix>/<table>` in an object store registered with the session under `base`.
    Object {
        store: Arc<dyn ObjectStore>,
        base: url::Url,
        dir: ObjectPath,
    },
}

impl std::fmt::Debug for TableSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(dir) => write!(f, "{}", dir.display()),
            Self::Object { base, dir, .. } => write!(f, "{base}{dir}"),
        }
    }
}

impl VisibleFilesTable {
    pub(crate) fn new(source: TableSource, schema: SchemaRef) -> Self {
        Self { source, schema }
    }
}

impl TableSource {
    /// The dates the table has a directory for, sorted.
    pub(crate) async fn dates(&self) -> datafusion::common::Result<Vec<NaiveDate>> {
        let dates = match self {
            TableSource::Local(dir) => {
                let dir = dir.clone();
                blocking(move || list_date_dirs(&dir)).await?
            }
            TableSource::Object { store, dir, .. } => {
                list_object_dates(store.as_ref(), dir).await?
            }
        };
        Ok(dates)
    }

    /// The URL of the file of `range` in the directory of `date`.
    fn file_url(
        &self,
        date: NaiveDate,
        range: &FileRange,
    ) -> datafusion::common::Result<ListingTableUrl> {
        match self {
            TableSource::Local(dir) => local_file_url(
                &dir.join(layout::date_dir_name(date))
                    .join(range.file_name()),
            ),
            TableSource::Object { base, dir, .. } => object_url(
                base,
                &dir.clone()
                    .join(layout::date_dir_name(date))
                    .join(range.file_name()),
            ),
        }
    }

    /// For each of `dates`, the ranges of the files a reader must read there (none where the
    /// table has no such date). A file's range names its rows for good: files are written
    /// once under their final name, and compaction writes a new name, so the same ranges mean
    /// the same rows.
    pub(crate) async fn visible_ranges(
        &self,
        dates: Vec<NaiveDate>,
    ) -> datafusion::common::Result<Vec<Vec<FileRange>>> {
        match self {
            TableSource::Local(dir) => {
                let dir = dir.clone();
                blocking(move || {
                    dates
                        .iter()
                        .map(|date| visible_ranges(&dir.join(layout::date_dir_name(*date))))
                        .collect()
                })
                .await
            }
            TableSource::Object { store, dir, .. } => {
                // One listing per date, several in flight: an object store answers each in
                // tens of milliseconds, so a question over months of dates (or
                // `policy_overview`'s every date) waited for them one after another.
                futures::stream::iter(dates)
                    .map(|date| {
                        let date_dir = dir.clone().join(layout::date_dir_name(date));
                        async move { visible_object_ranges(store.as_ref(), &date_dir).await }
                    })
                    .buffered(OBJECT_LISTINGS_IN_FLIGHT)
                    .try_collect()
                    .await
            }
        }
    }
}

/// Why the files of a table could not be listed.
#[derive(Debug, thiserror::Error)]
#[error("listing {}: {source}", path.display())]
pub(crate) struct ListingError {
    pub(crate) path: PathBuf,
    #[source]
    pub(crate) source: io::Error,
}

/// Why the objects of a table could not be listed.
#[derive(Debug, thiserror::Error)]
#[error("listing {path}: {source}")]
pub(crate) struct ObjectListingError {
    pub(crate) path: String,
    #[source]
    pub(crate) source: object_store::Error,
}

impl From<ListingError> for DataFusionError {
    fn from(error: ListingError) -> Self {
        DataFusionError::External(Box::new(error))
    }
}

#[async_trait]
impl TableProvider for VisibleFilesTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// Inexact for every filter: date directories are pruned with them, but DataFusion still
    /// applies each filter to the rows, so a pruning that keeps too much is never wrong.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::common::Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        let dates = prune_dates(state, filters, self.source.dates().await?);
        let ranges = self.source.visible_ranges(dates.clone()).await?;
        let mut urls = Vec::new();
        for (date, ranges) in dates.iter().zip(&ranges) {
            for range in ranges {
                urls.push(self.source.file_url(*date, range)?);
            }
        }
        debug!(table = ?self.source, files = urls.len(), "Listed a table for a scan.");
        if urls.is_empty() {
            let schema = project_schema(&self.schema, projection)?;
            return Ok(Arc::new(EmptyExec::new(schema)));
        }

        let format = ParquetFormat::default().with_options(state.table_options().parquet.clone());
        let options = ListingOptions::new(Arc::new(format)).with_file_extension(".parquet");
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            // The schema is the contract (tables.rs), never inferred from whichever file
            // comes first.
            .with_schema(Arc::clone(&self.schema));
        let table = ListingTable::try_new(config)?
            .with_cache(state.runtime_env().cache_manager.get_file_statistic_cache());
        let scan = table.scan(state, projection, filters, limit).await?;
        Ok(partitioned_by_date(&self.schema, scan))
    }
}

/// `scan` with its files regrouped into ranges of consecutive dates, and the scan declaring
/// that partitioning (`Partitioning::Range` on `date`); `scan` as it is when it reads fewer
/// than two dates or is not a plain file scan.
///
/// Why: every file holds the rows of one date, so a partition that reads whole dates holds
/// every row of each of its dates. A `GROUP BY date, ...` (every trend question) is then
/// complete within each partition: DataFusion aggregates once per partition
/// (`SinglePartitioned`) instead of aggregating partially, hashing every partial group across
/// partitions and aggregating again. Over all time on the raw `failures` table that shuffle
/// was about half of the work (12 million groups out of 100 million rows). The session lets a
/// range on `date` satisfy a grouping by `date` and more columns (`subset_repartition_threshold`
/// in `engine`); joins still repartition unless both sides declare the same ranges.
///
/// The groups hold about equal bytes, so the partitions stay balanced as long as one date is
/// not most of the data, which a window of days never is.
fn partitioned_by_date(schema: &SchemaRef, scan: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    let Ok(date_index) = schema.index_of(DATE) else {
        return scan;
    };
    let Some(config) = scan
        .downcast_ref::<DataSourceExec>()
        .and_then(|exec| exec.data_source().downcast_ref::<FileScanConfig>())
    else {
        return scan;
    };
    let partitions = config.file_groups.len();
    let mut files: Vec<(NaiveDate, PartitionedFile)> = Vec::new();
    for file in config.file_groups.iter().flat_map(|group| group.files()) {
        // A file split into byte ranges, or a path not in a date directory: leave the plan be.
        let Some(date) = file_date(&file.object_meta.location) else {
            return scan;
        };
        if file.range.is_some() {
            return scan;
        }
        files.push((date, file.clone()));
    }
    files.sort_by_key(|(date, _)| *date);
    let by_date: Vec<&[(NaiveDate, PartitionedFile)]> = files.chunk_by(|a, b| a.0 == b.0).collect();
    let groups = partitions.min(by_date.len());
    if groups < 2 {
        return scan;
    }
    let bytes: Vec<u64> = by_date
        .iter()
        .map(|same_date| {
            same_date
                .iter()
                .map(|(_, file)| file.object_meta.size)
                .sum()
        })
        .collect();
    let starts = range_starts(&bytes, groups);
    let split_points = starts
        .iter()
        .skip(1)
        .map(|&first| {
            let day = Date32Type::from_naive_date(by_date[first][0].0);
            SplitPoint::new(vec![ScalarValue::Date32(Some(day))])
        })
        .collect();
    let file_groups: Vec<FileGroup> = starts
        .iter()
        .zip(starts.iter().skip(1).chain([&by_date.len()]))
        .map(|(&first, &end)| {
            let files = by_date[first..end]
                .iter()
                .flat_map(|same_date| same_date.iter().map(|(_, file)| file.clone()));
            FileGroup::new(files.collect())
        })
        .collect();
    let ordering = LexOrdering::new([PhysicalSortExpr::new_default(Arc::new(
        PhysicalColumn::new(DATE, date_index),
    ))])
    .expect("one sort expression");
    let Ok(range) = RangePartitioning::try_new(ordering, split_points) else {
        return scan;
    };
    let mut config = config.clone();
    config.file_groups = file_groups;
    // Each partition reads its dates in order, so its rows come sorted by date: a grouping
    // by date then keeps one date's groups at a time (a table of thousands of groups that
    // stays in cache, where all time's millions did not) and emits them as the date ends.
    config.output_ordering = vec![range.ordering().clone()];
    config.output_partitioning = Some(Partitioning::Range(range));
    DataSourceExec::from_data_source(config)
}

/// Where each of `groups` ranges of consecutive dates starts (indexes into `bytes`, the bytes
/// of each date in date order; the first is 0), so that each range holds about
/// `1 / groups` of the bytes and none is empty. Needs `2 <= groups <= bytes.len()`.
fn range_starts(bytes: &[u64], groups: usize) -> Vec<usize> {
    let total: u64 = bytes.iter().sum();
    let mut starts = vec![0];
    let mut before = 0u64;
    for (index, &size) in bytes.iter().enumerate() {
        let ranges_left = groups - starts.len();
        let dates_left = bytes.len() - index;
        // Start the next range here once the ranges so far hold their share, or when each
        // date left must start a range of its own for every range to have one.
        if index > *starts.last().expect("the first range")
            && ranges_left > 0
            && (before * groups as u64 >= starts.len() as u64 * total || dates_left == ranges_left)
        {
            starts.push(index);
        }
        before += size;
    }
    starts
}

/// The date of a data file, from the name of its date directory.
fn file_date(location: &ObjectPath) -> Option<NaiveDate> {
    let mut parts: Vec<_> = location.parts().collect();
    parts.pop()?;
    layout::parse_date_dir(parts.pop()?.as_ref())
}

/// Runs file-system work off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ListingError> + Send + 'static,
) -> datafusion::common::Result<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => Ok(result?),
        Err(join) => Err(DataFusionError::External(Box::new(join))),
    }
}

/// The `date=YYYY-MM-DD` directories of a table, sorted by date. None when the table
/// directory does not exist yet.
fn list_date_dirs(table_dir: &Path) -> Result<Vec<NaiveDate>, ListingError> {
    let mut dates: Vec<NaiveDate> = read_dir_names(table_dir)?
        .iter()
        .filter_map(|name| layout::parse_date_dir(name))
        .collect();
    dates.sort();
    Ok(dates)
}

/// The ranges of the data files of one date directory a reader must read ([`layout::visible`]):
/// data names only, superseded ones left out. A directory that vanished since it was listed
/// holds nothing.
fn visible_ranges(date_dir: &Path) -> Result<Vec<FileRange>, ListingError> {
    let ranges: Vec<FileRange> = read_dir_names(date_dir)?
        .iter()
        .filter(|name| layout::is_data_name(name))
        .filter_map(|name| FileRange::parse(name))
        .collect();
    Ok(layout::visible(&ranges))
}

/// The entry names of a directory (UTF-8 ones: the layout has no others); empty when it does
/// not exist.
fn read_dir_names(dir: &Path) -> Result<Vec<String>, ListingError> {
    let failed = |source| ListingError {
        path: dir.to_owned(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(failed(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(failed)?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

/// The `date=YYYY-MM-DD` "directories" (common prefixes) of a table in an object store,
/// sorted by date.
async fn list_object_dates(
    store: &dyn ObjectStore,
    table_dir: &ObjectPath,
) -> datafusion::common::Result<Vec<NaiveDate>> {
    let listed = store
        .list_with_delimiter(Some(table_dir))
        .await
        .map_err(|source| object_listing_error(table_dir, source))?;
    let mut dates: Vec<NaiveDate> = listed
        .common_prefixes
        .iter()
        .filter_map(|prefix| layout::parse_date_dir(prefix.filename()?))
        .collect();
    dates.sort();
    Ok(dates)
}

/// The ranges of the data objects of one date prefix a reader must read
/// ([`layout::visible`]).
async fn visible_object_ranges(
    store: &dyn ObjectStore,
    date_dir: &ObjectPath,
) -> datafusion::common::Result<Vec<FileRange>> {
    let listed = store
        .list_with_delimiter(Some(date_dir))
        .await
        .map_err(|source| object_listing_error(date_dir, source))?;
    let ranges: Vec<FileRange> = listed
        .objects
        .iter()
        .filter_map(|object| object.location.filename())
        .filter(|name| layout::is_data_name(name))
        .filter_map(FileRange::parse)
        .collect();
    Ok(layout::visible(&ranges))
}

fn object_listing_error(path: &ObjectPath, source: object_store::Error) -> DataFusionError {
    DataFusionError::External(Box::new(ObjectListingError {
        path: path.to_string(),
        source,
    }))
}

/// The URL of one object, under the store's base URL (`s3://bucket/key`).
fn object_url(base: &url::Url, key: &ObjectPath) -> datafusion::common::Result<ListingTableUrl> {
    let url = base
        .join(key.as_ref())
        .map_err(|e| DataFusionError::Execution(format!("{base} + {key}: {e}")))?;
    ListingTableUrl::try_new(url, None)
}

/// A `file://` URL for one data file. Built directly rather than with
/// `ListingTableUrl::parse`, which would `stat` the path (once more per file) and read glob
/// characters in the root's name as a pattern.
fn local_file_url(path: &Path) -> datafusion::common::Result<ListingTableUrl> {
    let url = url::Url::from_file_path(path).map_err(|()| {
        DataFusionError::Execution(format!("{} is not an absolute path", path.display()))
    })?;
    ListingTableUrl::try_new(url, None)
}

/// Keeps the date directories that the filters on `date` alone can match. Anything it cannot
/// evaluate keeps every directory: the filters are applied to the rows anyway.
pub(crate) fn prune_dates(
    state: &dyn Session,
    filters: &[Expr],
    dates: Vec<NaiveDate>,
) -> Vec<NaiveDate> {
    let date_filters: Vec<&Expr> = filters.iter().filter(|f| on_date_only(f)).collect();
    if date_filters.is_empty() || dates.is_empty() {
        return dates;
    }
    match date_matches(state, &date_filters, &dates) {
        Ok(keep) => dates
            .into_iter()
            .zip(keep)
            .filter_map(|(date, keep)| keep.then_some(date))
            .collect(),
        Err(error) => {
            debug!(%error, "Date filters not evaluated on directory names; listing all dates.");
            dates
        }
    }
}

fn on_date_only(filter: &Expr) -> bool {
    let columns = filter.column_refs();
    !columns.is_empty() && columns.iter().all(|c| c.name == DATE) && !filter.is_volatile()
}

/// For each date, whether every filter is true for it (null counts as false, as in `WHERE`).
fn date_matches(
    state: &dyn Session,
    filters: &[&Expr],
    dates: &[NaiveDate],
) -> datafusion::common::Result<Vec<bool>> {
    let schema = Arc::new(Schema::new(vec![Field::new(DATE, DataType::Date32, false)]));
    let days: Date32Array = dates
        .iter()
        .map(|date| Some(Date32Type::from_naive_date(*date)))
        .collect();
    let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(days)])?;
    let df_schema = DFSchema::try_from(schema)?;
    let mut keep = vec![true; dates.len()];
    for filter in filters {
        // Filters arrive qualified with the table name; the one-column schema is not.
        let filter = (*filter)
            .clone()
            .transform(|e| {
                Ok(match e {
                    Expr::Column(c) if c.relation.is_some() => {
                        Transformed::yes(Expr::Column(Column::new_unqualified(c.name)))
                    }
                    other => Transformed::no(other),
                })
            })
            .data()?;
        let predicate = state.create_physical_expr(filter, &df_schema)?;
        let values = predicate.evaluate(&batch)?.into_array(dates.len())?;
        let Some(values) = values.as_boolean_opt() else {
            return Err(DataFusionError::Execution(format!(
                "filter gives {}, not booleans",
                values.data_type()
            )));
        };
        for (i, keep) in keep.iter_mut().enumerate() {
            *keep &= values.is_valid(i) && values.value(i);
        }
    }
    Ok(keep)
}

#[cfg(test)]
mod tests {
    use super::range_starts;

    #[test]
    fn ranges_of_dates_hold_about_equal_bytes() {
        assert_eq!(range_starts(&[10, 10, 10, 10], 2), [0, 2]);
        assert_eq!(range_starts(&[10; 9], 3), [0, 3, 6]);
        assert_eq!(range_starts(&[5, 20, 5, 5, 5, 5], 2), [0, 2]);
    }

    #[test]
    fn a_heavy_date_gets_a_range_and_every_range_gets_a_date() {
        assert_eq!(range_starts(&[100, 1, 1, 1], 2), [0, 1]);
        assert_eq!(range_starts(&[1, 1, 1, 100], 2), [0, 3]);
        assert_eq!(range_starts(&[1, 1, 1, 100], 4), [0, 1, 2, 3]);
        assert_eq!(range_starts(&[0, 0, 0], 3), [0, 1, 2]);
    }
}
