//! Why the transformer stopped.
//!
//! Every variant is fatal for a run: the transformer never skips data it could not write, so
//! an error ends [`crate::Transformer::run`] with the offsets of the unwritten data still
//! uncommitted, and the next start reads them again. A message that cannot be read is not an
//! error: it goes to the dead-letter area and counts as consumed.

use std::path::PathBuf;

use arrow::error::ArrowError;
use parquet::errors::ParquetError;
use thiserror::Error;
use tlsrpt_bus::BusError;
use tlsrpt_schemas::tables::TablesError;

use crate::CrashPoint;

/// An error of the transformer.
#[derive(Debug, Error)]
pub enum TransformError {
    /// A file system operation failed (disk full, permissions, I/O error).
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done: "create", "sync", "rename", ...
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// An object store refused or failed a request (the store unreachable, credentials
    /// refused, a bucket missing).
    #[error("cannot {action} {}: {source}", path.display())]
    ObjectStore {
        action: &'static str,
        path: PathBuf,
        source: object_store::Error,
    },
    /// Writing or reading a Parquet file failed.
    #[error("Parquet file {}: {source}", path.display())]
    Parquet { path: PathBuf, source: ParquetError },
    /// The bus refused a fetch or a commit.
    #[error("the bus: {0}")]
    Bus(#[from] BusError),
    /// Sorting, splitting or merging record batches failed (a file of another schema).
    #[error("Arrow: {0}")]
    Arrow(#[from] ArrowError),
    /// The reports could not be put into the tables.
    #[error("flattening reports: {0}")]
    Tables(#[from] TablesError),
    /// A file under the tables' root is not what the transformer writes (a damaged
    /// claim, a `report_uid` that is not 32 hex digits).
    #[error("{}: {message}", path.display())]
    Unexpected { path: PathBuf, message: String },
    /// A message could not be read and could not be kept as a dead letter either; it is not
    /// consumed.
    #[error("cannot keep an unreadable message as a dead letter: {0}")]
    DeadLetter(String),
    /// A step on the transformer's thread panicked.
    #[error("the transformer's thread panicked")]
    Panicked,
    /// The transformer's thread could not be started.
    #[error("cannot start the transformer's thread: {message}")]
    Thread { message: String },
    /// A crash simulated by a test ([`crate::Transformer::crash_at`]).
    #[doc(hidden)]
    #[error("simulated crash at {0:?}")]
    SimulatedCrash(CrashPoint),
}

/// `Result` with [`TransformError`].
pub type Result<T, E = TransformError> = std::result::Result<T, E>;

/// Maps an I/O error to [`TransformError::Io`] naming the action and path.
pub(crate) fn io(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> TransformError {
    let path = path.into();
    move |source| TransformError::Io {
        action,
        path,
        source,
    }
}
