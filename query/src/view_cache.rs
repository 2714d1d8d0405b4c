//! The answers of the per-day views, kept per date between queries.
//!
//! Every built-in view but `policy_overview` groups by `date`, so its rows for one date depend
//! only on the files of that date's directories in the tables it reads. A [`CachedDatedView`]
//! therefore keeps, for each date, the view's rows together with the file ranges they were
//! computed from (the "coverage": the visible files' partition and offset ranges in each table
//! read). At a scan it lists the dates the query's filters keep, compares each date's coverage
//! with the one kept, computes only the dates that changed or were never seen, and answers
//! from memory. Over years of data a question about all time reads one date's worth of rollups
//! after a flush instead of every row again, which is how Apache Druid caches results per
//! segment. The rows returned are exactly those of the plain view: coverage is compared on
//! every scan, so a new file, a compaction (which renames) or a deleted file makes the date
//! computed again, and a test holds the cached answers to the raw tables' after each kind of
//! change.
//!
//! What it costs: the memory of the rows kept, bounded by [`ViewCache::new`]'s budget, least
//! recently used dates dropped first; the listing of each kept date's directories at every
//! scan (one `read_dir` per date and table read). Dates missing from the cache are computed a
//! block of consecutive dates at a time and kept as each block completes, so a first question
//! about all time that runs into the query timeout still leaves its finished blocks for the
//! next one. Clients limited to some domains do not use it (their views are planned over
//! filtered tables, see `engine`).
//!
//! `policy_overview`, whose rows span all dates, is kept the same way by month and by year
//! ([`MonthlyPartsView`]): parts that add up across months, merged again when a month
//! changed; its whole answer is kept too, for as long as no file changes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use arrow::array::{AsArray, RecordBatch, UInt32Array};
use arrow::compute::{cast, concat_batches, sort_to_indices, take_record_batch};
use arrow::datatypes::{DataType, Date32Type, SchemaRef};
use async_trait::async_trait;
use chrono::{Datelike, NaiveDate};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{MemTable, provider_as_source};
use datafusion::logical_expr::{
    Expr, LogicalPlan, LogicalPlanBuilder, TableProviderFilterPushDown, TableType, col, lit,
};
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::SessionContext;
use tlsrpt_schemas::layout::FileRange;
use tracing::debug;

use crate::catalog::{TableSource, prune_dates};
use crate::views::View;

/// The column every cached view groups by.
const DATE: &str = "date";

/// How many consecutive dates missing from the cache are computed by one query.
const DATES_PER_BLOCK: usize = 128;

/// The rows kept for the per-day views, shared by all of them under one memory budget.
#[derive(Debug)]
pub struct ViewCache {
    budget_bytes: usize,
    state: Mutex<CacheState>,
}

#[derive(Debug, Default)]
struct CacheState {
    entries: HashMap<Key, Entry>,
    bytes: usize,
    /// Advances at each use, so the least recently used entries are dropped first.
    clock: u64,
    /// For each view warming computes ([`crate::warm`]), the first date it computes:
    /// those dates (and the parts of the views over every date) are dropped only when nothing
    /// else is left to drop, so that one large question does not push out what dashboards ask
    /// about. [`NaiveDate::MIN`] for a view warmed over every date.
    warm_from: HashMap<&'static str, NaiveDate>,
    /// Lookups answered from memory, and those that found nothing or rows computed from
    /// other files; entries dropped to stay within the budget, and rows too large to keep.
    hits: u64,
    misses: u64,
    dropped: u64,
    too_large: u64,
}

/// What an entry holds: a view's rows (or parts) for the span starting on the date.
type Key = (&'static str, Span, NaiveDate);

/// The dates an entry covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Span {
    Day,
    Month,
    Year,
    /// Every date: a view's whole answer (keyed by [`NaiveDate::MIN`]).
    All,
}

#[derive(Debug)]
struct Entry {
    coverage: Coverage,
    /// The view's rows for the date, in the view's schema; `None` when it has none.
    rows: Option<RecordBatch>,
    bytes: usize,
    last_used: u64,
}

/// The files one date's rows were computed from: for each table the view reads, in order,
/// the ranges of the files visible in that table's directory for the date.
type DateCoverage = Vec<Vec<FileRange>>;

/// The files an entry was computed from: each date it covers with that date's
/// [`DateCoverage`]; one date for a per-day view, the month's dates for a month's parts.
type Coverage = Vec<(NaiveDate, DateCoverage)>;

/// A view's dates kept ([`ViewCache::dates_kept`]): how many, and their memory in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DatesKept {
    /// From the first date asked about on.
    pub(crate) from_first: (usize, usize),
    /// At any date.
    pub(crate) all: (usize, usize),
}

/// What the cache holds and how it served, for `GET /metrics`, logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewCacheStats {
    /// (view, date) entries kept (and the parts of the views over every date).
    pub entries: usize,
    /// Their memory, in bytes.
    pub bytes: usize,
    /// The most they may hold, in bytes.
    pub budget_bytes: usize,
    /// Lookups of an entry (a view's date, month, year or whole answer) answered from
    /// memory.
    pub hits: u64,
    /// Lookups that found nothing kept, or rows computed from files that have changed since.
    pub misses: u64,
    /// Entries dropped to stay within the budget.
    pub dropped: u64,
    /// Rows computed but not kept because they alone were larger than the budget.
    pub too_large: u64,
}

impl ViewCache {
    /// A cache that keeps at most `budget_bytes` of rows.
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            budget_bytes,
            state: Mutex::new(CacheState::default()),
        }
    }

    pub fn stats(&self) -> ViewCacheStats {
        let state = self.lock();
        ViewCacheStats {
            entries: state.entries.len(),
            bytes: state.bytes,
            budget_bytes: self.budget_bytes,
            hits: state.hits,
            misses: state.misses,
            dropped: state.dropped,
            too_large: state.too_large,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        // The state is a map and two counters, consistent after every statement: a panic
        // elsewhere while it was held leaves nothing half-done.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The rows kept for `key` when they were computed from `coverage`.
    fn get(&self, key: Key, coverage: &Coverage) -> Option<Option<RecordBatch>> {
        self.get_if(key, |kept| kept == coverage)
    }

    /// The rows kept for `key` when `current` says the files they were computed from are
    /// the files there are now.
    fn get_if(
        &self,
        key: Key,
        current: impl FnOnce(&Coverage) -> bool,
    ) -> Option<Option<RecordBatch>> {
        let mut state = self.lock();
        state.clock += 1;
        let now = state.clock;
        let rows = match state.entries.get_mut(&key) {
            Some(entry) if current(&entry.coverage) => {
                entry.last_used = now;
                Some(entry.rows.clone())
            }
            _ => None,
        };
        match rows {
            Some(_) => state.hits += 1,
            None => state.misses += 1,
        }
        rows
    }

    /// Keeps `view`'s dates from `first` on (its parts, for a view over every date) over
    /// every other entry when the cache is full.
    pub(crate) fn warm_from(&self, view: &'static str, first: NaiveDate) {
        self.lock().warm_from.insert(view, first);
    }

    /// The first date kept warm for `view`, if warming computes it.
    pub(crate) fn warmed_from(&self, view: &str) -> Option<NaiveDate> {
        self.lock().warm_from.get(view).copied()
    }

    /// The memory of the entries warming keeps when the per-day views are warmed from
    /// `first` on: their dates from `first` on, and every part of the views over every date.
    pub(crate) fn bytes_warmed_from(&self, first: NaiveDate) -> usize {
        let state = self.lock();
        state
            .entries
            .iter()
            .filter(|((view, span, date), _)| match span {
                Span::Day => *date >= first,
                Span::Month | Span::Year | Span::All => state.warm_from.contains_key(view),
            })
            .map(|(_, entry)| entry.bytes)
            .sum()
    }

    /// For each view with dates kept, how many and their memory: from `first` on, and at any
    /// date (one pass over the entries for both).
    pub(crate) fn dates_kept(&self, first: NaiveDate) -> HashMap<&'static str, DatesKept> {
        let state = self.lock();
        let mut kept: HashMap<&'static str, DatesKept> = HashMap::new();
        for ((view, span, date), entry) in &state.entries {
            if *span == Span::Day {
                let view = kept.entry(view).or_default();
                view.all.0 += 1;
                view.all.1 += entry.bytes;
                if *date >= first {
                    view.from_first.0 += 1;
                    view.from_first.1 += entry.bytes;
                }
            }
        }
        kept
    }

    /// The memory kept for each of `views` (their dates, or their parts), zero for those
    /// with nothing kept, in the order given.
    pub(crate) fn bytes_by_view<'a>(
        &self,
        views: impl IntoIterator<Item = &'a str>,
    ) -> Vec<(&'a str, usize)> {
        let state = self.lock();
        let mut kept: HashMap<&str, usize> = HashMap::new();
        for ((view, _, _), entry) in &state.entries {
            *kept.entry(view).or_default() += entry.bytes;
        }
        views
            .into_iter()
            .map(|view| (view, kept.get(view).copied().unwrap_or(0)))
            .collect()
    }

    /// The most the cache may hold, in bytes.
    pub(crate) fn budget_bytes(&self) -> usize {
        self.budget_bytes
    }

    /// Whether anything is kept for `key`, from whatever files.
    fn holds(&self, key: Key) -> bool {
        self.lock().entries.contains_key(&key)
    }

    /// Keeps `rows` for `key`, replacing what was kept, then drops the least recently used
    /// entries while over budget. Rows larger than the whole budget are not kept.
    fn put(&self, key: Key, coverage: Coverage, rows: Option<RecordBatch>) {
        let bytes = rows.as_ref().map_or(0, RecordBatch::get_array_memory_size)
            + coverage
                .iter()
                .flat_map(|(_, tables)| tables)
                .map(Vec::len)
                .sum::<usize>()
                * size_of::<FileRange>()
            + coverage.len() * size_of::<(NaiveDate, DateCoverage)>()
            + size_of::<Entry>();
        let mut state = self.lock();
        if let Some(old) = state.entries.remove(&key) {
            state.bytes -= old.bytes;
        }
        if bytes > self.budget_bytes {
            state.too_large += 1;
            return;
        }
        state.clock += 1;
        let last_used = state.clock;
        state.bytes += bytes;
        state.entries.insert(
            key,
            Entry {
                coverage,
                rows,
                bytes,
                last_used,
            },
        );
        if state.bytes > self.budget_bytes {
            let target = self.budget_bytes / 10 * 9;
            let warm_from = &state.warm_from;
            let warm = |(view, span, date): &Key| match (span, warm_from.get(view)) {
                (_, None) => false,
                (Span::Day, Some(first)) => date >= first,
                (Span::Month | Span::Year | Span::All, Some(_)) => true,
            };
            // The entries not warmed first (down to 90% of the budget, so that one sort serves
            // many insertions), each kind least recently used first.
            let mut by_age: Vec<(Key, bool, u64)> = state
                .entries
                .iter()
                .map(|(key, entry)| (*key, warm(key), entry.last_used))
                .collect();
            by_age.sort_by_key(|(_, warm, last_used)| (*warm, *last_used));
            // Warmed entries only to 99% of the budget: they are what the next questions ask
            // about, yet when they alone overflow it (every date warmed, a budget too small),
            // each insertion would sort every entry again to drop one.
            let warm_target = self.budget_bytes / 100 * 99;
            for (key, warm, _) in by_age {
                if state.bytes <= if warm { warm_target } else { target } {
                    break;
                }
                if let Some(old) = state.entries.remove(&key) {
                    state.bytes -= old.bytes;
                    state.dropped += 1;
                }
            }
        }
    }
}

/// A per-day view answered from the [`ViewCache`], computing the dates it lacks with the
/// view's own plan.
#[derive(Debug)]
pub(crate) struct CachedDatedView {
    name: &'static str,
    /// The view's SQL, as catalogs show it.
    definition: &'static str,
    /// The view's plan over the shared tables.
    plan: LogicalPlan,
    schema: SchemaRef,
    /// The tables the plan reads, whose date directories decide a date's coverage.
    sources: Vec<TableSource>,
    cache: Arc<ViewCache>,
}

impl CachedDatedView {
    /// The view `view` planned as `plan`, reading tables found in `tables` by name; `None`
    /// when it has no `date` column or reads a table not in `tables`, so cannot be cached by
    /// date.
    pub(crate) fn new(
        view: &'static View,
        plan: LogicalPlan,
        tables: &BTreeMap<String, TableSource>,
        cache: Arc<ViewCache>,
    ) -> Option<Self> {
        let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
        schema.column_with_name(DATE)?;
        let sources = tables_read(&plan, tables)?;
        Some(Self {
            name: view.name,
            definition: view.sql,
            plan,
            schema,
            sources,
            cache,
        })
    }
}

/// The tables `plan` reads, found in `tables` by name; `None` when one is not there.
fn tables_read(
    plan: &LogicalPlan,
    tables: &BTreeMap<String, TableSource>,
) -> Option<Vec<TableSource>> {
    let mut read = Vec::new();
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            read.push(scan.table_name.table().to_owned());
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .ok()?;
    read.sort();
    read.dedup();
    read.iter()
        .map(|table| tables.get(table).cloned())
        .collect::<Option<Vec<_>>>()
}

/// The rows of `plan` (of `schema`) whose column `key` (a date: the rows' `date`, or the
/// month they fall in) is one of `keys` (sorted), computed with one query and split by key;
/// a key without rows maps to nothing.
async fn compute(
    state: &dyn Session,
    plan: &LogicalPlan,
    schema: &SchemaRef,
    key: &str,
    keys: &[NaiveDate],
) -> Result<HashMap<NaiveDate, RecordBatch>> {
    let (Some(first), Some(last)) = (keys.first(), keys.last()) else {
        return Ok(HashMap::new());
    };
    let day = |date: &NaiveDate| {
        lit(ScalarValue::Date32(Some(Date32Type::from_naive_date(
            *date,
        ))))
    };
    // The range lets every table's directories be pruned (a filter on a grouping key reaches
    // the scans below the grouping, `month` as the expression of `date` it stands for); the
    // list keeps out keys in it that are already cached.
    let filter = col(key)
        .gt_eq(day(first))
        .and(col(key).lt_eq(day(last)))
        .and(col(key).in_list(keys.iter().map(day).collect(), false));
    let plan = LogicalPlanBuilder::from(plan.clone())
        .filter(filter)?
        .build()?;
    let physical = state.create_physical_plan(&plan).await?;
    let batches = collect(physical, state.task_ctx()).await?;
    let all = concat_batches(schema, &batches)?;
    split_by_date(&all, key)
}

/// The dates any of `sources` has a directory for, sorted, once each.
pub(crate) async fn dates_of(
    sources: impl IntoIterator<Item = &TableSource>,
) -> Result<Vec<NaiveDate>> {
    let mut dates = Vec::new();
    for source in sources {
        dates.extend(source.dates().await?);
    }
    dates.sort();
    dates.dedup();
    Ok(dates)
}

/// For each of `dates`, the visible file ranges of each of `sources`.
async fn date_coverages(sources: &[TableSource], dates: &[NaiveDate]) -> Result<Vec<DateCoverage>> {
    let mut coverage: Vec<DateCoverage> = vec![Vec::with_capacity(sources.len()); dates.len()];
    for source in sources {
        for (of_date, ranges) in coverage
            .iter_mut()
            .zip(source.visible_ranges(dates.to_vec()).await?)
        {
            of_date.push(ranges);
        }
    }
    Ok(coverage)
}

/// The rows of `batch` grouped by the date in their column `key`, each group in its own
/// arrays (so each date's memory is its own).
fn split_by_date(batch: &RecordBatch, key: &str) -> Result<HashMap<NaiveDate, RecordBatch>> {
    let mut by_date = HashMap::new();
    if batch.num_rows() == 0 {
        return Ok(by_date);
    }
    let dates = batch
        .column_by_name(key)
        .ok_or_else(|| DataFusionError::Internal(format!("a cached view lost its {key}")))?;
    let order = sort_to_indices(dates, None, None)?;
    let days = dates
        .as_primitive_opt::<Date32Type>()
        .ok_or_else(|| DataFusionError::Internal(format!("a cached view's {key} is not Date32")))?;
    let mut start = 0;
    while start < order.len() {
        let day = days.value(order.value(start) as usize);
        let mut end = start + 1;
        while end < order.len() && days.value(order.value(end) as usize) == day {
            end += 1;
        }
        let rows: UInt32Array = order.slice(start, end - start);
        let date = Date32Type::to_naive_date_opt(day)
            .ok_or_else(|| DataFusionError::Internal(format!("day {day} is not a date")))?;
        by_date.insert(
            date,
            compact_dictionaries(take_record_batch(batch, &rows)?)?,
        );
        start = end;
    }
    Ok(by_date)
}

/// `batch` with each dictionary column holding only the values its rows use, once each.
///
/// Why: a date's rows are taken from the block's rows, whose dictionary columns carry the
/// values of every batch the aggregation emitted (one batch per date or so, concatenated
/// without merging their dictionaries). Kept as they are, each date would hold, and every
/// answer would send, the block's whole dictionary: all time of `failure_trend_by_reporter`
/// was 70 MB of Arrow IPC instead of 19, and 4x slower.
fn compact_dictionaries(batch: RecordBatch) -> Result<RecordBatch> {
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|field| matches!(field.data_type(), DataType::Dictionary(_, _)))
    {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .map(|column| match column.data_type() {
            DataType::Dictionary(_, values) => cast(&cast(column, values)?, column.data_type()),
            _ => Ok(Arc::clone(column)),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

#[async_trait]
impl TableProvider for CachedDatedView {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn get_table_definition(&self) -> Option<&str> {
        Some(self.definition)
    }

    // No `get_logical_plan`: DataFusion would inline the view's plan in place of the scan,
    // and the cache would never be asked.

    /// Inexact: filters on `date` choose the dates to answer, and DataFusion applies every
    /// filter to the rows.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let dates = prune_dates(state, filters, dates_of(&self.sources).await?);
        let mut coverage: Vec<Coverage> = dates
            .iter()
            .zip(date_coverages(&self.sources, &dates).await?)
            .map(|(date, of_date)| vec![(*date, of_date)])
            .collect();

        let mut answer: Vec<Option<RecordBatch>> = Vec::with_capacity(dates.len());
        let mut missing: Vec<usize> = Vec::new();
        for (i, date) in dates.iter().enumerate() {
            match self.cache.get((self.name, Span::Day, *date), &coverage[i]) {
                Some(rows) => answer.push(rows),
                None => {
                    answer.push(None);
                    missing.push(i);
                }
            }
        }
        debug!(
            view = self.name,
            dates = dates.len(),
            computed = missing.len(),
            "Answering a view from its per-date cache."
        );
        for block in missing.chunks(DATES_PER_BLOCK) {
            let block_dates: Vec<NaiveDate> = block.iter().map(|&i| dates[i]).collect();
            let mut computed = compute(state, &self.plan, &self.schema, DATE, &block_dates).await?;
            for &i in block {
                let rows = computed.remove(&dates[i]);
                let covered = std::mem::take(&mut coverage[i]);
                self.cache
                    .put((self.name, Span::Day, dates[i]), covered, rows.clone());
                answer[i] = rows;
            }
        }

        let batches: Vec<RecordBatch> = answer.into_iter().flatten().collect();
        Ok(MemorySourceConfig::try_new_exec(
            &[batches],
            Arc::clone(&self.schema),
            projection.cloned(),
        )?)
    }
}

/// How many months missing from the cache are computed by one query (about
/// [`DATES_PER_BLOCK`] dates).
const MONTHS_PER_BLOCK: usize = 4;

/// The column of a view's parts that names their month (its first day).
const MONTH: &str = "month";

/// The name `merge_sql` reads the parts by.
const PARTS: &str = "parts";

/// A view over every date (`policy_overview`) answered from parts kept per month in the
/// [`ViewCache`]: each month's rollup rows reduced by the view's `part_sql` (a few rows per
/// key and month), checked against the files of the month's dates as a per-day view's date
/// is, then each year's months combined into one part by its `combine_sql` (kept too,
/// checked against the whole year's files), and the view's rows given by its `merge_sql` over
/// the years' parts. A question asked again reads only the months whose files changed and
/// combines their years again; asked again with no file changed, it is answered with the rows
/// of the last merge, kept with the files of every date.
///
/// Why years above months: a month's part holds most of the keys (55,000 over the bench's 14
/// years, 22,000 in a month), so merging 166 months' parts grouped 3.7 million rows (0.7 s);
/// the 14 years' parts are 640,000. A year alone would recompute a whole year's rollup at
/// every flush of today's reports. A year not kept before is computed at once by the view's
/// `year_part_sql` (grouping the bench's 17 million rows into years' parts took 3.2 s, into
/// months' 6.1 s), and split into months at its first change.
#[derive(Debug)]
pub(crate) struct MonthlyPartsView {
    name: &'static str,
    /// The view's SQL, as catalogs show it.
    definition: &'static str,
    /// The view's schema, as its plain plan gives it; the merge's answer is given in it.
    schema: SchemaRef,
    /// The parts' plan over the shared tables, and its schema (`month` first).
    part_plan: LogicalPlan,
    /// The same for whole years.
    year_part_plan: LogicalPlan,
    part_schema: SchemaRef,
    /// The view's `combine_sql` and `merge_sql`, planned once over a table of parts that each
    /// question replaces with its own ([`with_parts`]).
    combine_plan: LogicalPlan,
    merge_plan: LogicalPlan,
    /// The tables the parts read, whose date directories decide a month's coverage.
    sources: Vec<TableSource>,
    cache: Arc<ViewCache>,
}

impl MonthlyPartsView {
    /// `view`, whose plain plan is `plan`, answered from its parts planned as `part_plans`
    /// (by month, by year) over tables found in `tables`; `None` when the view has no parts,
    /// the parts have no `month`, differ by span, read a table not in `tables`, or its steps
    /// over the parts cannot be planned.
    pub(crate) async fn new(
        view: &'static View,
        plan: &LogicalPlan,
        part_plans: [LogicalPlan; 2],
        tables: &BTreeMap<String, TableSource>,
        cache: Arc<ViewCache>,
    ) -> Option<Self> {
        let parts = view.parts?;
        let [part_plan, year_part_plan] = part_plans;
        let part_schema: SchemaRef = Arc::new(part_plan.schema().as_arrow().clone());
        part_schema.column_with_name(MONTH)?;
        if year_part_plan.schema().as_arrow() != part_schema.as_ref() {
            return None;
        }
        let sources = tables_read(&part_plan, tables)?;
        // A session of its own, so that `parts` is a name only these steps see.
        let over_parts = SessionContext::new();
        over_parts
            .register_table(
                PARTS,
                Arc::new(MemTable::try_new(Arc::clone(&part_schema), vec![vec![]]).ok()?),
            )
            .ok()?;
        let steps = over_parts.state();
        let combine_plan = steps.create_logical_plan(parts.combine_sql).await.ok()?;
        let merge_plan = steps.create_logical_plan(parts.merge_sql).await.ok()?;
        Some(Self {
            name: view.name,
            definition: view.sql,
            schema: Arc::new(plan.schema().as_arrow().clone()),
            part_plan,
            year_part_plan,
            part_schema,
            combine_plan,
            merge_plan,
            sources,
            cache,
        })
    }

    /// The rows of `step` (`combine_plan` or `merge_plan`) over `parts`, in `schema`.
    async fn over_parts(
        &self,
        state: &dyn Session,
        step: &LogicalPlan,
        parts: Vec<RecordBatch>,
        schema: &SchemaRef,
    ) -> Result<Vec<RecordBatch>> {
        let plan = with_parts(step, &self.part_schema, parts)?;
        let physical = state.create_physical_plan(&plan).await?;
        // Run under the question's own limits.
        collect(physical, state.task_ctx())
            .await?
            .iter()
            .map(|batch| conform(batch, schema))
            .collect()
    }
}

/// `step` with its scan of the table `parts` reading `parts` (of `schema`).
fn with_parts(
    step: &LogicalPlan,
    schema: &SchemaRef,
    parts: Vec<RecordBatch>,
) -> Result<LogicalPlan> {
    let source = provider_as_source(Arc::new(MemTable::try_new(
        Arc::clone(schema),
        vec![parts],
    )?));
    let mut replaced = 0;
    let plan = step
        .clone()
        .transform_up(|node| match node {
            LogicalPlan::TableScan(mut scan) if scan.table_name.table() == PARTS => {
                scan.source = Arc::clone(&source);
                replaced += 1;
                Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
            }
            other => Ok(Transformed::no(other)),
        })?
        .data;
    if replaced != 1 {
        return Err(DataFusionError::Internal(format!(
            "a view's step over its parts scans them {replaced} times"
        )));
    }
    Ok(plan)
}

/// `batch` in `schema`: its columns, in order, cast where their types differ (the plain
/// view's dictionaries and the merge's may not be the same).
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.num_columns() != schema.fields().len() {
        return Err(DataFusionError::Internal(format!(
            "a view's merge gave {} columns for its {}",
            batch.num_columns(),
            schema.fields().len()
        )));
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(Arc::clone(column))
            } else {
                cast(column, field.data_type())
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// The first day of `date`'s month.
fn month_of(date: NaiveDate) -> NaiveDate {
    date.with_day(1).unwrap_or(date)
}

#[async_trait]
impl TableProvider for MonthlyPartsView {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn get_table_definition(&self) -> Option<&str> {
        Some(self.definition)
    }

    /// Every month is read whatever the filters (the view has no `date` to choose months
    /// by); DataFusion applies them to the rows.
    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let dates = dates_of(&self.sources).await?;
        let of_dates = date_coverages(&self.sources, &dates).await?;
        let mut months: Vec<(NaiveDate, Coverage)> = Vec::new();
        for (date, of_date) in dates.into_iter().zip(of_dates) {
            let month = month_of(date);
            match months.last_mut() {
                Some((last, coverage)) if *last == month => coverage.push((date, of_date)),
                _ => months.push((month, vec![(date, of_date)])),
            }
        }

        // The whole answer, when no file changed since it was merged: a dashboard asking again,
        // or warming's next round, merges nothing.
        let whole = (self.name, Span::All, NaiveDate::MIN);
        let every_date = || months.iter().flat_map(|(_, coverage)| coverage.iter());
        if let Some(rows) = self
            .cache
            .get_if(whole, |kept| kept.iter().eq(every_date()))
        {
            return Ok(MemorySourceConfig::try_new_exec(
                &[rows.into_iter().collect()],
                Arc::clone(&self.schema),
                projection.cloned(),
            )?);
        }
        let whole_coverage: Coverage = every_date().cloned().collect();

        // Each year's months, consecutive in `months`.
        let mut years: Vec<(NaiveDate, std::ops::Range<usize>)> = Vec::new();
        for (i, (month, _)) in months.iter().enumerate() {
            let year = month.with_month(1).unwrap_or(*month);
            match years.last_mut() {
                Some((last, of_year)) if *last == year => of_year.end = i + 1,
                _ => years.push((year, i..i + 1)),
            }
        }
        // A year's coverage is its months' coverages one after the other: compared in place,
        // copied only for the years computed again.
        let year_coverage = |of_year: &std::ops::Range<usize>| {
            months[of_year.clone()]
                .iter()
                .flat_map(|(_, coverage)| coverage.iter())
        };
        let mut year_parts: Vec<Option<Vec<RecordBatch>>> = years
            .iter()
            .map(|(year, of_year)| {
                self.cache
                    .get_if((self.name, Span::Year, *year), |kept| {
                        kept.iter().eq(year_coverage(of_year))
                    })
                    .map(|rows| rows.into_iter().collect())
            })
            .collect();
        let mut year_coverages: Vec<Option<Coverage>> = years
            .iter()
            .zip(&year_parts)
            .map(|((_, of_year), kept)| {
                kept.is_none()
                    .then(|| year_coverage(of_year).cloned().collect())
            })
            .collect();

        // A year never kept is computed at once (a change later splits it into months);
        // the months of the other years not kept as they are.
        let mut whole_years: Vec<usize> = Vec::new();
        let mut month_parts: Vec<Option<RecordBatch>> = vec![None; months.len()];
        let mut missing: Vec<usize> = Vec::new();
        for (y, ((year, of_year), kept)) in years.iter().zip(&year_parts).enumerate() {
            if kept.is_some() {
                continue;
            }
            if !self.cache.holds((self.name, Span::Year, *year)) {
                whole_years.push(y);
                continue;
            }
            for i in of_year.clone() {
                let (month, coverage) = &months[i];
                match self.cache.get((self.name, Span::Month, *month), coverage) {
                    Some(rows) => month_parts[i] = rows,
                    None => missing.push(i),
                }
            }
        }
        debug!(
            view = self.name,
            years = years.len(),
            years_kept = year_parts.iter().flatten().count(),
            years_computed = whole_years.len(),
            months = months.len(),
            months_computed = missing.len(),
            "Answering a view from its parts kept per month and year."
        );
        for block in missing.chunks(MONTHS_PER_BLOCK) {
            let block_months: Vec<NaiveDate> = block.iter().map(|&i| months[i].0).collect();
            let mut computed = compute(
                state,
                &self.part_plan,
                &self.part_schema,
                MONTH,
                &block_months,
            )
            .await?;
            for &i in block {
                let (month, coverage) = &mut months[i];
                let rows = computed.remove(month);
                self.cache.put(
                    (self.name, Span::Month, *month),
                    std::mem::take(coverage),
                    rows.clone(),
                );
                month_parts[i] = rows;
            }
        }
        for &y in &whole_years {
            let year = years[y].0;
            let mut computed = compute(
                state,
                &self.year_part_plan,
                &self.part_schema,
                MONTH,
                &[year],
            )
            .await?;
            let rows = computed.remove(&year);
            self.cache.put(
                (self.name, Span::Year, year),
                year_coverages[y].take().unwrap_or_default(),
                rows.clone(),
            );
            year_parts[y] = Some(rows.into_iter().collect());
        }
        for (((year, of_year), kept), coverage) in
            years.into_iter().zip(&mut year_parts).zip(year_coverages)
        {
            let (None, Some(coverage)) = (kept.as_ref(), coverage) else {
                continue;
            };
            let of_months: Vec<RecordBatch> = month_parts[of_year]
                .iter_mut()
                .filter_map(Option::take)
                .collect();
            let combined = self
                .over_parts(state, &self.combine_plan, of_months, &self.part_schema)
                .await?;
            let rows = compact_dictionaries(concat_batches(&self.part_schema, &combined)?)?;
            let rows = (rows.num_rows() > 0).then_some(rows);
            self.cache
                .put((self.name, Span::Year, year), coverage, rows.clone());
            *kept = Some(rows.into_iter().collect());
        }

        let parts: Vec<RecordBatch> = year_parts.into_iter().flatten().flatten().collect();
        let rows = self
            .over_parts(state, &self.merge_plan, parts, &self.schema)
            .await?;
        let rows = concat_batches(&self.schema, &rows)?;
        let rows = (rows.num_rows() > 0).then_some(rows);
        self.cache.put(whole, whole_coverage, rows.clone());
        Ok(MemorySourceConfig::try_new_exec(
            &[rows.into_iter().collect()],
            Arc::clone(&self.schema),
            projection.cloned(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, AsArray, DictionaryArray, Int32Array, RecordBatch, StringArray};
    use arrow::datatypes::Int32Type;

    use super::compact_dictionaries;

    #[test]
    fn a_dates_dictionary_keeps_only_the_values_its_rows_use_once_each() {
        // Two emitted batches' dictionaries concatenated: "b" twice, "c" and "d" unused.
        let values = StringArray::from(vec!["a", "b", "c", "b", "d"]);
        let keys = Int32Array::from(vec![Some(1), Some(3), None, Some(0)]);
        let column = DictionaryArray::<Int32Type>::try_new(keys, Arc::new(values)).unwrap();
        let batch =
            RecordBatch::try_from_iter([("organization_name", Arc::new(column) as _)]).unwrap();

        let compacted = compact_dictionaries(batch).unwrap();
        let column = compacted.column(0).as_dictionary::<Int32Type>();
        let names: Vec<Option<&str>> = column
            .downcast_dict::<StringArray>()
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(names, [Some("b"), Some("b"), None, Some("a")]);
        assert_eq!(column.values().len(), 2);
        assert_eq!(column.null_count(), 1);
    }
}
