//! The query engine: one DataFusion session over the three tables, the daily rollups and
//! the built-in views, read-only, with limits; and one more session per set of domains a
//! token is limited to, in which each table is a filter over the shared one.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::ScalarValue;
use datafusion::datasource::{TableProvider, ViewTable};
use datafusion::execution::context::{SessionConfig, SessionContext};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::{Expr, LogicalPlan, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use futures::StreamExt;
use tlsrpt_schemas::alerts_table::{ALERTS, alerts_schema};
use tlsrpt_schemas::layout::TABLES;
use tlsrpt_schemas::rollup::{
    ROLLUPS, failures_daily_schema, policies_daily_schema, reports_daily_schema,
};
use tlsrpt_schemas::tables::{failures_schema, policies_schema, reports_schema};
use tokio::sync::Semaphore;
use tracing::debug;

use crate::access::Scope;
use crate::catalog::{TableSource, VisibleFilesTable};
use crate::error::{QueryError, Result};
use crate::location::TablesLocation;
use crate::metrics::{InGauge, QueryMetrics, StatementCount};
use crate::read_only;
use crate::view_cache::{CachedDatedView, MonthlyPartsView, ViewCache, ViewCacheStats};
use crate::views::{VIEWS, View};

/// The catalog and schema the tables are in (DataFusion's defaults): `SELECT … FROM failures`
/// and `FROM datafusion.public.failures` name the same table.
pub const CATALOG: &str = "datafusion";
pub const SCHEMA: &str = "public";

/// Limits of the query engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryOptions {
    /// The most rows a result may have; a query with more is refused
    /// ([`QueryError::TooManyRows`]) rather than cut short, so no answer is silently partial.
    pub max_rows: usize,
    /// How long a query may take, waiting for its turn included.
    pub timeout: Duration,
    /// Queries run at once; more wait for a turn (within their timeout).
    pub max_concurrent: usize,
    /// The memory DataFusion's operators may hold across all running queries, in bytes;
    /// sorts and aggregations spill to temporary files beyond it, others fail
    /// ([`QueryError::ResourcesExhausted`]). `None`: no limit.
    pub memory_limit_bytes: Option<usize>,
    /// The memory the per-day views may keep their answers in between queries, by date
    /// ([`crate::view_cache`]), in bytes; `None`: views are computed afresh at each query.
    pub view_cache_bytes: Option<usize>,
    /// How many of the latest dates the SQL services compute the views for in the
    /// background, when they start and then every [`Self::view_warm_every`]
    /// ([`crate::warm`]), so that the first dashboard is answered from the cache; 0: none.
    pub view_warm_days: u32,
    /// How often the views are computed again in the background (the dates whose files
    /// changed since); `None`: only when the service starts.
    pub view_warm_every: Option<Duration>,
    /// Whether warming also computes every older date for the per-day views whose answers
    /// over all time, estimated from the latest dates', fit together in
    /// [`crate::warm::ALL_TIME_SHARE`] of [`Self::view_cache_bytes`] with what warming keeps
    /// anyway, smallest first, so that their all-time questions are answered from memory.
    pub view_warm_all_time: bool,
}

impl Default for QueryOptions {
    fn default() -> Self {
        Self {
            max_rows: 1_000_000,
            timeout: Duration::from_secs(60),
            max_concurrent: 8,
            memory_limit_bytes: Some(2 << 30),
            // Every view over all time of the bench's 100 million failure rows (14 years of a
            // 1,000-domain provider) takes 1.12 GiB, which fits in three quarters of this, so
            // warming keeps them all (BENCHMARKS.md, issue 5, session 30). It is a bound, not
            // a reservation: smaller tables keep less.
            view_cache_bytes: Some(2 << 30),
            view_warm_days: 92,
            view_warm_every: Some(Duration::from_secs(60)),
            view_warm_all_time: true,
        }
    }
}

/// The answer to one statement: its schema and rows.
#[derive(Debug, Clone)]
pub struct QueryResult {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
}

impl QueryResult {
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub fn batches(&self) -> &[RecordBatch] {
        &self.batches
    }

    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Answers SQL over `<root>/{reports,policies,failures}`.
///
/// One DataFusion session serves every query: the tables are providers that list their files
/// at each scan (module `catalog`), so files written after the engine started are seen by
/// the next query, and the session's caches (Parquet footers, file statistics) outlive a
/// query. No statement can change the session: all but queries are refused.
///
/// A client limited to some policy domains ([`Scope::Domains`]) gets a session of its own,
/// made at its first query and kept: the same names, each table a filter over the shared
/// provider (so caches and the memory limit are shared), the views planned over those.
pub struct QueryEngine {
    location: TablesLocation,
    options: QueryOptions,
    context: SessionContext,
    /// The sessions of domain-limited clients, by their domains.
    scoped: tokio::sync::Mutex<HashMap<Arc<BTreeSet<String>>, SessionContext>>,
    turns: Semaphore,
    /// The per-day views' answers kept between queries, for clients that see every domain.
    view_cache: Option<Arc<ViewCache>>,
    /// The tables' files, by table name.
    sources: BTreeMap<String, TableSource>,
    /// What the service has done, for `GET /metrics`.
    pub(crate) metrics: QueryMetrics,
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine")
            .field("location", &self.location)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl QueryEngine {
    /// An engine over the tables under `root` (`DATA_DIR/tables`). The directory need not
    /// exist yet: tables without files answer with no rows.
    pub fn new(root: impl Into<PathBuf>, options: QueryOptions) -> Result<Self> {
        Self::at(TablesLocation::Local(root.into()), options)
    }

    /// An engine over the tables at `location`: a directory, or a prefix in an object store
    /// (`tlsrpt query --store s3://bucket/prefix`).
    pub fn at(location: TablesLocation, options: QueryOptions) -> Result<Self> {
        let location = match location {
            // File URLs need an absolute path; resolving it now also pins a relative root to
            // the working directory at start.
            TablesLocation::Local(root) => {
                TablesLocation::Local(std::path::absolute(&root).map_err(|e| {
                    QueryError::Internal {
                        message: format!("resolving {}: {e}", root.display()),
                    }
                })?)
            }
            object => object,
        };
        let setup = |e: datafusion::error::DataFusionError| QueryError::Internal {
            message: crate::error::bounded(&e),
        };
        let mut runtime = RuntimeEnvBuilder::new();
        if let Some(limit) = options.memory_limit_bytes {
            runtime = runtime.with_memory_limit(limit, 1.0);
        }
        let context = new_session(runtime.build_arc().map_err(setup)?);
        if let TablesLocation::Object { store, base, .. } = &location {
            context.register_object_store(base, Arc::clone(store));
        }
        let mut sources = BTreeMap::new();
        for (name, schema) in all_tables() {
            let source = match &location {
                TablesLocation::Local(root) => TableSource::Local(root.join(name)),
                TablesLocation::Object {
                    store,
                    base,
                    prefix,
                } => TableSource::Object {
                    store: Arc::clone(store),
                    base: base.clone(),
                    dir: prefix.clone().join(name),
                },
            };
            sources.insert(name.to_owned(), source.clone());
            let table = VisibleFilesTable::new(source, schema);
            context
                .register_table(name, Arc::new(table))
                .map_err(setup)?;
        }
        let view_cache = options
            .view_cache_bytes
            .map(|bytes| Arc::new(ViewCache::new(bytes)));
        let cached = view_cache.as_ref().map(|cache| (&sources, cache));
        // Planning over these providers awaits nothing (they are in memory and their schemas
        // fixed), so it completes in place; `at` stays a plain function.
        futures::executor::block_on(register_views(&context, cached))?;
        Ok(Self {
            view_cache,
            sources,
            location,
            turns: Semaphore::new(options.max_concurrent.max(1)),
            options,
            context,
            scoped: tokio::sync::Mutex::new(HashMap::new()),
            metrics: QueryMetrics::default(),
        })
    }

    /// Where the tables live.
    pub fn location(&self) -> &TablesLocation {
        &self.location
    }

    pub fn options(&self) -> &QueryOptions {
        &self.options
    }

    /// What the per-day views keep between queries; `None` when they keep nothing.
    pub fn view_cache_stats(&self) -> Option<ViewCacheStats> {
        self.view_cache.as_ref().map(|cache| cache.stats())
    }

    /// Where the views keep their answers; `None` when they keep nothing.
    pub(crate) fn view_cache(&self) -> Option<&ViewCache> {
        self.view_cache.as_deref()
    }

    /// The tables' files, by table name.
    pub(crate) fn sources(&self) -> &BTreeMap<String, TableSource> {
        &self.sources
    }

    /// Plans and runs one read-only statement over the files present when it starts.
    pub async fn sql(&self, sql: &str) -> Result<QueryResult> {
        self.sql_with_params(sql, Vec::new()).await
    }

    /// [`Self::sql`] for a statement with parameters, `$1`, `$2`, ... (or `?`, numbered from
    /// the left, as JDBC and ODBC clients write them), bound to `params` in order.
    pub async fn sql_with_params(
        &self,
        sql: &str,
        params: Vec<ScalarValue>,
    ) -> Result<QueryResult> {
        self.sql_in(&Scope::All, sql, params).await
    }

    /// [`Self::sql_with_params`] for a client that sees `scope`.
    pub async fn sql_in(
        &self,
        scope: &Scope,
        sql: &str,
        params: Vec<ScalarValue>,
    ) -> Result<QueryResult> {
        let count = StatementCount::start(&self.metrics);
        let answer = self.answer(scope, sql, params).await;
        let outcome = answer.as_ref().map_or_else(QueryError::code, |_| "ok");
        let elapsed = count.ended(outcome);
        match &answer {
            Ok(result) => debug!(
                rows = result.num_rows(),
                elapsed_ms = elapsed.as_millis() as u64,
                "Query answered."
            ),
            Err(error) => debug!(
                code = error.code(),
                elapsed_ms = elapsed.as_millis() as u64,
                "Query refused or failed."
            ),
        }
        answer
    }

    /// [`Self::sql_in`] neither logged nor counted as a client's: the service's own
    /// statements (warming the views).
    pub(crate) async fn answer(
        &self,
        scope: &Scope,
        sql: &str,
        params: Vec<ScalarValue>,
    ) -> Result<QueryResult> {
        self.within_limits(async {
            let context = self.context_for(scope).await?;
            let mut plan = plan(&context, sql).await?;
            if !params.is_empty()
                || !plan
                    .get_parameter_types()
                    .map_err(QueryError::planning)?
                    .is_empty()
            {
                plan = plan
                    .with_param_values(params)
                    .map_err(QueryError::planning)?;
            }
            self.run(&context, plan).await
        })
        .await
    }

    /// Appends the service's metrics in Prometheus text format: statements, turns, the view
    /// cache and warming (module `metrics`).
    pub fn render_metrics(&self, out: &mut String) {
        let cache = self
            .view_cache
            .as_ref()
            .map(|cache| crate::metrics::CacheMemory {
                stats: cache.stats(),
                by_view: cache.bytes_by_view(crate::views::VIEWS.iter().map(|view| view.name)),
            });
        self.metrics
            .render(out, self.options.max_concurrent.max(1), cache.as_ref());
    }

    /// What a statement would answer, without running it: the columns of its result and
    /// the parameters it takes (`$1`, `$2`, ... in order; a type DataFusion cannot infer
    /// from the statement is `Null`). Refuses what [`Self::sql`] refuses.
    pub async fn describe(&self, sql: &str) -> Result<StatementShape> {
        self.describe_in(&Scope::All, sql).await
    }

    /// [`Self::describe`] for a client that sees `scope` (the same columns; what it may
    /// refer to is the same too).
    pub async fn describe_in(&self, scope: &Scope, sql: &str) -> Result<StatementShape> {
        self.within_limits(async {
            let context = self.context_for(scope).await?;
            let plan = plan(&context, sql).await?;
            let mut parameters: Vec<(usize, String, DataType)> = plan
                .get_parameter_types()
                .map_err(QueryError::planning)?
                .into_iter()
                .map(|(name, data_type)| {
                    let index = name
                        .strip_prefix('$')
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(usize::MAX);
                    (index, name, data_type.unwrap_or(DataType::Null))
                })
                .collect();
            parameters.sort();
            let parameters = Schema::new(
                parameters
                    .into_iter()
                    .map(|(_, name, data_type)| Field::new(name, data_type, true))
                    .collect::<Vec<_>>(),
            );
            Ok(StatementShape {
                columns: Arc::new(plan.schema().as_arrow().clone()),
                parameters: Arc::new(parameters),
            })
        })
        .await
    }

    /// The tables and views of the catalog, by name.
    pub async fn tables(&self) -> Result<Vec<TableEntry>> {
        let internal = |message: String| QueryError::Internal { message };
        let schema = self
            .context
            .catalog(CATALOG)
            .and_then(|catalog| catalog.schema(SCHEMA))
            .ok_or_else(|| internal(format!("the schema {CATALOG}.{SCHEMA} is missing")))?;
        let mut names = schema.table_names();
        names.sort();
        let mut entries = Vec::with_capacity(names.len());
        for name in names {
            let table = schema
                .table(&name)
                .await
                .map_err(|e| internal(crate::error::bounded(&e)))?
                .ok_or_else(|| internal(format!("the table {name} went away")))?;
            let kind = match table.table_type() {
                TableType::View => TableKind::View,
                TableType::Base | TableType::Temporary => TableKind::Table,
            };
            entries.push(TableEntry {
                name,
                kind,
                columns: table.schema(),
            });
        }
        Ok(entries)
    }

    /// Runs `work` in a turn (at most `max_concurrent` at once) and within the time limit,
    /// waiting for the turn included.
    async fn within_limits<T>(&self, work: impl Future<Output = Result<T>>) -> Result<T> {
        tokio::time::timeout(self.options.timeout, async {
            let waiting = InGauge::enter(self.metrics.waiting());
            let _turn = self
                .turns
                .acquire()
                .await
                .map_err(|_| QueryError::Internal {
                    message: "the engine is shutting down".to_owned(),
                })?;
            drop(waiting);
            let _running = InGauge::enter(self.metrics.running());
            work.await
        })
        .await
        .unwrap_or(Err(QueryError::Timeout {
            timeout: self.options.timeout,
        }))
    }

    /// The session of a client that sees `scope`.
    async fn context_for(&self, scope: &Scope) -> Result<SessionContext> {
        let domains = match scope {
            Scope::All => return Ok(self.context.clone()),
            Scope::Domains(domains) => domains,
        };
        let mut scoped = self.scoped.lock().await;
        if let Some(context) = scoped.get(domains) {
            return Ok(context.clone());
        }
        let context = self.limited_to(domains).await?;
        scoped.insert(Arc::clone(domains), context.clone());
        Ok(context)
    }

    /// A session in which every table shows only the rows of `domains` (see
    /// [`crate::access`] for which rows those are) and the views are planned over them.
    async fn limited_to(&self, domains: &BTreeSet<String>) -> Result<SessionContext> {
        let internal = |e: datafusion::error::DataFusionError| QueryError::Internal {
            message: crate::error::bounded(&e),
        };
        let list = domains
            .iter()
            .map(|d| format!("'{}'", d.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(", ");
        let context = new_session(self.context.runtime_env());
        for (name, _) in all_tables() {
            let table = self.context.table_provider(name).await.map_err(internal)?;
            let filter = if table.schema().column_with_name("policy_domain").is_some() {
                format!("SELECT * FROM {name} WHERE policy_domain IN ({list})")
            } else if name == "reports" {
                // A report is shown when every policy it has is for one of the domains.
                format!(
                    "SELECT * FROM reports \
                     WHERE report_uid IN \
                       (SELECT report_uid FROM policies WHERE policy_domain IN ({list})) \
                     AND report_uid NOT IN \
                       (SELECT report_uid FROM policies \
                        WHERE policy_domain IS NULL OR policy_domain NOT IN ({list}))"
                )
            } else {
                // A table with no way to tell whose rows are whose is not shown at all.
                return Err(QueryError::Internal {
                    message: format!("the table {name} has no rule for domain-limited clients"),
                });
            };
            // Planned in the shared session, so the plan reads the shared providers, which the
            // limited session itself has no name for.
            let plan = self
                .context
                .state()
                .create_logical_plan(&filter)
                .await
                .map_err(internal)?;
            context
                .register_table(name, Arc::new(RowFilteredTable(ViewTable::new(plan, None))))
                .map_err(internal)?;
        }
        // Not cached: the shared cache holds every domain's rows.
        register_views(&context, None).await?;
        Ok(context)
    }

    async fn run(&self, context: &SessionContext, plan: LogicalPlan) -> Result<QueryResult> {
        let frame = context
            .execute_logical_plan(plan)
            .await
            .map_err(QueryError::planning)?;
        let mut stream = frame
            .execute_stream()
            .await
            .map_err(QueryError::execution)?;
        let schema = stream.schema();
        let mut batches = Vec::new();
        let mut rows = 0usize;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(QueryError::execution)?;
            rows += batch.num_rows();
            // Stop reading as soon as the limit is passed: dropping the stream cancels the
            // rest of the plan.
            if rows > self.options.max_rows {
                return Err(QueryError::TooManyRows {
                    max_rows: self.options.max_rows,
                });
            }
            if batch.num_rows() > 0 {
                batches.push(batch);
            }
        }
        Ok(QueryResult { schema, batches })
    }
}

/// The raw tables, the daily rollups and the alerts the anomaly jobs fired, with their
/// schemas.
fn all_tables() -> impl Iterator<Item = (&'static str, SchemaRef)> {
    TABLES
        .into_iter()
        .zip([reports_schema(), policies_schema(), failures_schema()])
        .chain(ROLLUPS.into_iter().zip([
            policies_daily_schema(),
            failures_daily_schema(),
            reports_daily_schema(),
        ]))
        .chain([(ALERTS, alerts_schema())])
}

/// A session over `runtime` (memory limit, object stores) with the catalog an analyst can
/// browse: `SHOW TABLES`, `SHOW COLUMNS` and `information_schema` help them find their way;
/// URL tables (`FROM 'file.parquet'`) stay off, as by default.
fn new_session(runtime: Arc<RuntimeEnv>) -> SessionContext {
    let mut config = SessionConfig::new().with_information_schema(true);
    // The tables' scans declare ranges of dates (`catalog::partitioned_by_date`); let such a
    // range satisfy a grouping by `date` and more columns at any partition count, so that a
    // trend question aggregates once per partition without hashing its groups across them.
    config.options_mut().optimizer.subset_repartition_threshold = 1;
    SessionContext::new_with_config_rt(config, runtime)
}

/// Registers the built-in views in `context`, over the tables registered there; with
/// `cached` (the tables' sources by name, and the cache), the per-day views answer from the
/// cache.
async fn register_views(
    context: &SessionContext,
    cached: Option<(&BTreeMap<String, TableSource>, &Arc<ViewCache>)>,
) -> Result<()> {
    for view in VIEWS {
        let plan = plan_view_sql(context, view, view.sql).await?;
        // The cached forms, where the view has one and the cache is on; the plain view
        // otherwise, or when a cached form cannot be built over these tables.
        let cached_provider: Option<Arc<dyn TableProvider>> = match (cached, view.parts) {
            (Some((sources, cache)), Some(parts)) => {
                let part_plans = [
                    plan_view_sql(context, view, parts.part_sql).await?,
                    plan_view_sql(context, view, parts.year_part_sql).await?,
                ];
                MonthlyPartsView::new(view, &plan, part_plans, sources, Arc::clone(cache))
                    .await
                    .map(|cached| Arc::new(cached) as Arc<dyn TableProvider>)
            }
            (Some((sources, cache)), None) => {
                CachedDatedView::new(view, plan.clone(), sources, Arc::clone(cache))
                    .map(|cached| Arc::new(cached) as Arc<dyn TableProvider>)
            }
            (None, _) => None,
        };
        let provider = cached_provider
            .unwrap_or_else(|| Arc::new(ViewTable::new(plan, Some(view.sql.to_owned()))));
        context
            .register_table(view.name, provider)
            .map_err(|e| QueryError::Internal {
                message: crate::error::bounded(&e),
            })?;
    }
    Ok(())
}

/// The plan of `sql`, one of `view`'s statements, over the tables of `context`.
async fn plan_view_sql(context: &SessionContext, view: &View, sql: &str) -> Result<LogicalPlan> {
    async {
        let state = context.state();
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state.sql_to_statement(sql, &dialect)?;
        state.statement_to_plan(statement).await
    }
    .await
    .map_err(|e| QueryError::Internal {
        message: format!("the view {}: {}", view.name, crate::error::bounded(&e)),
    })
}

/// Parses, checks and plans one read-only statement.
async fn plan(context: &SessionContext, sql: &str) -> Result<LogicalPlan> {
    let state = context.state();
    let dialect = state.config().options().sql_parser.dialect;
    let sql = numbered_placeholders(sql);
    let statement = state
        .sql_to_statement(&sql, &dialect)
        .map_err(QueryError::planning)?;
    read_only::refuse_non_queries(&statement, &sql)?;
    let plan = state
        .statement_to_plan(statement)
        .await
        .map_err(QueryError::planning)?;
    read_only::plan_options()
        .verify_plan(&plan)
        .map_err(QueryError::planning)?;
    Ok(plan)
}

/// A table of a domain-limited session: a filter over the shared table, which is what
/// [`ViewTable`] does, but listed as a table, as it is to the client.
#[derive(Debug)]
struct RowFilteredTable(ViewTable);

#[async_trait::async_trait]
impl TableProvider for RowFilteredTable {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn get_logical_plan(&self) -> Option<Cow<'_, LogicalPlan>> {
        self.0.get_logical_plan()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        self.0.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        self.0.scan(state, projection, filters, limit).await
    }
}

/// Whether a name in the catalog is a table or a view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    Table,
    View,
}

impl TableKind {
    /// As catalogs write it (`information_schema`, Flight SQL, JDBC).
    pub fn as_str(self) -> &'static str {
        match self {
            TableKind::Table => "TABLE",
            TableKind::View => "VIEW",
        }
    }
}

/// A table or view an analyst can query, with its columns.
#[derive(Debug, Clone)]
pub struct TableEntry {
    pub name: String,
    pub kind: TableKind,
    pub columns: SchemaRef,
}

/// What a statement answers and takes, from [`QueryEngine::describe`].
#[derive(Debug, Clone)]
pub struct StatementShape {
    /// The columns of its result.
    pub columns: SchemaRef,
    /// Its parameters in order, one field each, named `$1`, `$2`, ...
    pub parameters: SchemaRef,
}

/// `sql` with each `?` placeholder replaced by `$1`, `$2`, ... from the left. JDBC, ODBC and
/// ADBC clients write `?`; DataFusion numbers its placeholders. Only placeholder tokens are
/// replaced (a `?` inside a string literal or a comment stays), the rest of the text is kept
/// byte for byte, and text that does not tokenize is passed on unchanged for the parser to
/// explain.
fn numbered_placeholders(sql: &str) -> Cow<'_, str> {
    if !sql.contains('?') {
        return Cow::Borrowed(sql);
    }
    let dialect = GenericDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize_with_location() else {
        return Cow::Borrowed(sql);
    };
    // The tokenizer places tokens by line and character column, both from 1.
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(at, _)| at + 1))
        .collect();
    let offset_of = |line: u64, column: u64| -> Option<usize> {
        let start = *line_starts.get(usize::try_from(line).ok()?.checked_sub(1)?)?;
        let skip = usize::try_from(column).ok()?.checked_sub(1)?;
        sql[start..]
            .char_indices()
            .nth(skip)
            .map(|(at, _)| start + at)
    };
    let mut numbered = String::with_capacity(sql.len() + 8);
    let mut copied = 0;
    let mut next = 0;
    for token in tokens {
        if !matches!(&token.token, Token::Placeholder(p) if p == "?") {
            continue;
        }
        let Some(at) = offset_of(token.span.start.line, token.span.start.column) else {
            return Cow::Borrowed(sql);
        };
        next += 1;
        numbered.push_str(&sql[copied..at]);
        numbered.push_str(&format!("${next}"));
        copied = at + 1;
    }
    if next == 0 {
        return Cow::Borrowed(sql);
    }
    numbered.push_str(&sql[copied..]);
    Cow::Owned(numbered)
}

#[cfg(test)]
mod tests {
    use super::numbered_placeholders;

    #[test]
    fn question_marks_become_numbered_placeholders_outside_literals() {
        assert_eq!(
            numbered_placeholders("SELECT 'why?' AS q -- and?\nFROM t WHERE a = ? AND é = ?"),
            "SELECT 'why?' AS q -- and?\nFROM t WHERE a = $1 AND é = $2"
        );
        assert_eq!(numbered_placeholders("SELECT $1"), "SELECT $1");
        assert_eq!(numbered_placeholders("SELECT '?"), "SELECT '?");
    }
}
