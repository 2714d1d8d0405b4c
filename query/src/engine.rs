//! The query engine: one DataFusion session over the three tables, read-only, with limits.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::execution::context::{SessionConfig, SessionContext};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use futures::StreamExt;
use tlsrpt_schemas::layout::TABLES;
use tlsrpt_schemas::tables::{failures_schema, policies_schema, reports_schema};
use tokio::sync::Semaphore;
use tracing::debug;

use crate::catalog::{TableSource, VisibleFilesTable};
use crate::error::{QueryError, Result};
use crate::location::TablesLocation;
use crate::read_only;

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
}

impl Default for QueryOptions {
    fn default() -> Self {
        Self {
            max_rows: 1_000_000,
            timeout: Duration::from_secs(60),
            max_concurrent: 8,
            memory_limit_bytes: Some(2 << 30),
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
pub struct QueryEngine {
    location: TablesLocation,
    options: QueryOptions,
    context: SessionContext,
    turns: Semaphore,
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
        // `SHOW TABLES`, `SHOW COLUMNS` and `information_schema` help an analyst find their
        // way; URL tables (`FROM 'file.parquet'`) stay off, as by default.
        let config = SessionConfig::new().with_information_schema(true);
        let context =
            SessionContext::new_with_config_rt(config, runtime.build_arc().map_err(setup)?);
        if let TablesLocation::Object { store, base, .. } = &location {
            context.register_object_store(base, Arc::clone(store));
        }
        for (name, schema) in
            TABLES
                .iter()
                .zip([reports_schema(), policies_schema(), failures_schema()])
        {
            let source = match &location {
                TablesLocation::Local(root) => TableSource::Local(root.join(name)),
                TablesLocation::Object {
                    store,
                    base,
                    prefix,
                } => TableSource::Object {
                    store: Arc::clone(store),
                    base: base.clone(),
                    dir: prefix.clone().join(*name),
                },
            };
            let table = VisibleFilesTable::new(source, schema);
            context
                .register_table(*name, Arc::new(table))
                .map_err(setup)?;
        }
        Ok(Self {
            location,
            turns: Semaphore::new(options.max_concurrent.max(1)),
            options,
            context,
        })
    }

    /// Where the tables live.
    pub fn location(&self) -> &TablesLocation {
        &self.location
    }

    pub fn options(&self) -> &QueryOptions {
        &self.options
    }

    /// Plans and runs one read-only statement over the files present when it starts.
    pub async fn sql(&self, sql: &str) -> Result<QueryResult> {
        let started = Instant::now();
        let answer = tokio::time::timeout(self.options.timeout, async {
            let _turn = self
                .turns
                .acquire()
                .await
                .map_err(|_| QueryError::Internal {
                    message: "the engine is shutting down".to_owned(),
                })?;
            self.run(sql).await
        })
        .await
        .unwrap_or(Err(QueryError::Timeout {
            timeout: self.options.timeout,
        }));
        match &answer {
            Ok(result) => debug!(
                rows = result.num_rows(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "Query answered."
            ),
            Err(error) => debug!(
                code = error.code(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "Query refused or failed."
            ),
        }
        answer
    }

    async fn run(&self, sql: &str) -> Result<QueryResult> {
        let state = self.context.state();
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state
            .sql_to_statement(sql, &dialect)
            .map_err(QueryError::planning)?;
        read_only::refuse_non_queries(&statement, sql)?;
        let plan = state
            .statement_to_plan(statement)
            .await
            .map_err(QueryError::planning)?;
        read_only::plan_options()
            .verify_plan(&plan)
            .map_err(QueryError::planning)?;
        let frame = self
            .context
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
