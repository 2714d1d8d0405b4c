//! Why a statement got no answer, classified once for HTTP and the terminal.

use std::time::Duration;

use arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use thiserror::Error;

use crate::catalog::ListingError;

pub type Result<T, E = QueryError> = std::result::Result<T, E>;

/// The longest error text passed on from DataFusion: its messages can quote the statement,
/// and a statement can be a megabyte.
const MAX_MESSAGE_CHARS: usize = 2_000;

/// The statements that are answered, for messages.
const ANSWERED: &str = "only queries (SELECT, WITH, VALUES, EXPLAIN, DESCRIBE, SHOW) over the \
                        tables reports, policies and failures are answered";

/// Why a statement got no answer.
#[derive(Debug, Error)]
pub enum QueryError {
    /// Not valid SQL, or it names a table, column or function that does not exist, or mixes
    /// types: DataFusion's message, which says where.
    #[error("{message}")]
    Invalid { message: String },
    /// The statement would write, create, copy, change a setting or read something other than
    /// the tables. `statement` names it by its leading keywords (`INSERT INTO`, `COPY`).
    #[error("the SQL service is read-only: {statement} is refused; {ANSWERED}")]
    ReadOnly { statement: String },
    /// The result has more rows than the configured limit.
    #[error(
        "the result has more than {max_rows} rows (the limit of this service); \
         aggregate, filter, or add a LIMIT"
    )]
    TooManyRows { max_rows: usize },
    /// The statement ran, or waited for its turn, longer than the configured limit.
    #[error("the query did not finish within {} s (the limit of this service)", .timeout.as_secs_f64())]
    Timeout { timeout: Duration },
    /// The query needed more memory than the engine's pool allows.
    #[error("the query needs more memory than this service allows: {message}")]
    ResourcesExhausted { message: String },
    /// Running the query failed on the data itself (a failing cast, a division by zero).
    #[error("running the query: {message}")]
    Execution { message: String },
    /// The tables could not be read (an I/O error, a damaged file): the service's problem,
    /// not the statement's.
    #[error("reading the tables: {message}")]
    Storage { message: String },
    /// The engine could not be set up, or failed in a way that is a bug.
    #[error("query engine: {message}")]
    Internal { message: String },
    /// The result could not be encoded in the format asked for.
    #[error("writing the result as {format}: {source}")]
    Output {
        format: &'static str,
        #[source]
        source: ArrowError,
    },
    /// The result could not be written out.
    #[error("writing the result: {0}")]
    Io(#[from] std::io::Error),
}

/// DataFusion's message (with its context chain, without a backtrace), cut to a bounded
/// length.
pub(crate) fn bounded(error: &DataFusionError) -> String {
    let message = error.strip_backtrace();
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &message[..cut]),
        None => message,
    }
}

impl QueryError {
    /// An error from parsing or planning: the statement's fault, unless DataFusion's own
    /// read-only check refused it (a `SELECT … INTO` that creates a table is a query to the
    /// parser and DDL to the planner).
    pub(crate) fn planning(error: DataFusionError) -> Self {
        if let DataFusionError::Plan(message) = error.find_root() {
            for refusal in [
                "DDL not supported: ",
                "DML not supported: ",
                "Statement not supported: ",
            ] {
                if let Some(what) = message.strip_prefix(refusal) {
                    let statement = match what {
                        // The only way past the statement check to a new table.
                        "CreateMemoryTable" => "SELECT INTO".to_owned(),
                        other => other.chars().take(100).collect(),
                    };
                    return QueryError::ReadOnly { statement };
                }
            }
        }
        let mut message = bounded(&error);
        if matches!(error.find_root(), DataFusionError::Plan(m) if m.contains("not found")) {
            message.push_str(" (the tables are reports, policies and failures)");
        }
        QueryError::Invalid { message }
    }

    /// An error while running a planned query, classified by its innermost cause.
    pub(crate) fn execution(error: DataFusionError) -> Self {
        let message = bounded(&error);
        match error.find_root() {
            DataFusionError::ResourcesExhausted(_) => QueryError::ResourcesExhausted { message },
            DataFusionError::IoError(_)
            | DataFusionError::ObjectStore(_)
            | DataFusionError::ParquetError(_) => QueryError::Storage { message },
            DataFusionError::External(e) if e.is::<ListingError>() || e.is::<std::io::Error>() => {
                QueryError::Storage { message }
            }
            DataFusionError::ArrowError(e, _)
                if matches!(**e, ArrowError::IoError(..) | ArrowError::ExternalError(_)) =>
            {
                QueryError::Storage { message }
            }
            DataFusionError::Internal(_) | DataFusionError::NotImplemented(_) => {
                QueryError::Internal { message }
            }
            _ => QueryError::Execution { message },
        }
    }

    /// A short, stable name for the kind of error (the `code` of an HTTP error body).
    pub fn code(&self) -> &'static str {
        match self {
            QueryError::Invalid { .. } => "invalid",
            QueryError::ReadOnly { .. } => "read_only",
            QueryError::TooManyRows { .. } => "too_many_rows",
            QueryError::Timeout { .. } => "timeout",
            QueryError::ResourcesExhausted { .. } => "resources_exhausted",
            QueryError::Execution { .. } => "execution",
            QueryError::Storage { .. } => "storage",
            QueryError::Internal { .. } | QueryError::Output { .. } | QueryError::Io(_) => {
                "internal"
            }
        }
    }
}
