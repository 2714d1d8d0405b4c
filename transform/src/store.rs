//! Where the tables are written: a local directory or a prefix in an object store, behind
//! the few operations the commit protocol (`staging`) and compaction need.
//!
//! The two differ where the protocol cares:
//! - **Local**: a file is written, then made durable by `fsync` of the file and of the
//!   directories whose entries changed; moving a file into place is a `rename`; a claim is a
//!   file created with `O_EXCL` (`create_new`).
//! - **Object store** (S3 and compatible): a PUT is atomic and durable when it returns, there
//!   is no rename (moving is a server-side copy), and a claim is a conditional PUT
//!   (`PutMode::Create`, S3's `If-None-Match: *`), which fails for all writers but one.
//!
//! Keys are relative `/`-separated paths under the root (`failures/date=2026-01-01/p….parquet`).
//! The transformer is synchronous (its own thread, see `transformer`); object store calls
//! run on a small runtime owned by the store, so they work whatever runtime (if any) the
//! caller has.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arrow::array::RecordBatch;
use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use crate::error::{Result, TransformError, io};
use crate::files;

/// Where a transformer writes its tables: a directory, or a prefix in an object store.
/// A `PathBuf` converts into the local kind.
pub struct TableStore {
    kind: Kind,
}

enum Kind {
    Local {
        root: PathBuf,
    },
    Object {
        store: Arc<dyn ObjectStore>,
        prefix: ObjectPath,
        description: String,
        runtime: IoRuntime,
    },
}

impl std::fmt::Debug for TableStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl From<PathBuf> for TableStore {
    fn from(root: PathBuf) -> Self {
        Self::local(root)
    }
}

impl From<&Path> for TableStore {
    fn from(root: &Path) -> Self {
        Self::local(root)
    }
}

/// Numbers the temporary files of [`TableStore::create_new`] within the process.
static NEXT_TEMPORARY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// One entry of a listing: a name (the last segment of its key), its size and when it was
/// last written.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) bytes: u64,
    pub(crate) modified: SystemTime,
}

/// What one level of a directory (or prefix) holds.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// The names of the sub-directories (common prefixes).
    pub(crate) dirs: Vec<String>,
    pub(crate) files: Vec<Entry>,
}

/// A file being written ([`TableStore::create`]), closed with [`TableStore::close`].
pub(crate) enum Sink {
    File(File),
    Memory(Vec<u8>),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::File(file) => file.write(buf),
            Sink::Memory(bytes) => bytes.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::File(file) => file.flush(),
            Sink::Memory(_) => Ok(()),
        }
    }
}

/// A Parquet file to read ([`TableStore::open_parquet`]): a local file, or an object fetched
/// whole (a `reports` file for its `report_uid`s, or a merge's inputs, at most
/// `compact_max_file_bytes` together).
pub(crate) enum ParquetSource {
    File(File),
    Bytes(Bytes),
}

impl parquet::file::reader::Length for ParquetSource {
    fn len(&self) -> u64 {
        match self {
            ParquetSource::File(file) => file.len(),
            ParquetSource::Bytes(bytes) => bytes.len() as u64,
        }
    }
}

impl parquet::file::reader::ChunkReader for ParquetSource {
    type T = Box<dyn Read + Send>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(match self {
            ParquetSource::File(file) => {
                let mut file = file.try_clone()?;
                file.seek(SeekFrom::Start(start))?;
                Box::new(std::io::BufReader::new(file))
            }
            ParquetSource::Bytes(bytes) => Box::new(bytes.get_read(start)?),
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        match self {
            ParquetSource::File(file) => file.get_bytes(start, length),
            ParquetSource::Bytes(bytes) => bytes.get_bytes(start, length),
        }
    }
}

impl TableStore {
    /// Tables in a local directory (created at open if missing).
    pub fn local(root: impl Into<PathBuf>) -> Self {
        Self {
            kind: Kind::Local { root: root.into() },
        }
    }

    /// Tables under `prefix` (may be empty) in an object store; `description` names it in
    /// logs and errors (`s3://bucket/prefix`, without credentials). The store must support
    /// conditional creation (`PutMode::Create`): S3 does, and so do MinIO and the other
    /// S3-compatible stores that implement `If-None-Match`.
    pub fn object(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        description: impl Into<String>,
    ) -> Result<Self> {
        Ok(Self {
            kind: Kind::Object {
                store,
                prefix: ObjectPath::from(prefix.trim_matches('/')),
                description: description.into(),
                runtime: IoRuntime::start()?,
            },
        })
    }

    /// The directory, for a local store.
    pub fn local_root(&self) -> Option<&Path> {
        match &self.kind {
            Kind::Local { root } => Some(root),
            Kind::Object { .. } => None,
        }
    }

    /// Where the tables are, as a user would write it.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Local { root } => root.display().to_string(),
            Kind::Object { description, .. } => description.clone(),
        }
    }

    /// A key as it appears in errors: the local path, or the store's URL and the key.
    pub(crate) fn display_key(&self, key: &str) -> PathBuf {
        match &self.kind {
            Kind::Local { root } => root.join(key),
            Kind::Object { description, .. } => {
                PathBuf::from(format!("{}/{key}", description.trim_end_matches('/')))
            }
        }
    }

    /// Makes sure the root exists (local only: an object store has no directories).
    pub(crate) fn prepare(&self) -> Result<()> {
        if let Kind::Local { root } = &self.kind {
            std::fs::create_dir_all(root).map_err(io("create", root))?;
        }
        Ok(())
    }

    /// One level of `dir` (`""` for the root): sub-directories and files. A directory that
    /// does not exist lists as empty.
    pub(crate) fn list(&self, dir: &str) -> Result<Listing> {
        match &self.kind {
            Kind::Local { root } => {
                let path = root.join(dir);
                let mut listing = Listing::default();
                let entries = match std::fs::read_dir(&path) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(listing),
                    Err(e) => return Err(io("list", &path)(e)),
                };
                for entry in entries {
                    let entry = entry.map_err(io("list", &path))?;
                    let Ok(name) = entry.file_name().into_string() else {
                        continue;
                    };
                    let meta = match entry.metadata() {
                        Ok(meta) => meta,
                        // Removed since the directory was read (another writer's temporary).
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(io("stat", entry.path())(e)),
                    };
                    if meta.is_dir() {
                        listing.dirs.push(name);
                    } else {
                        listing.files.push(Entry {
                            name,
                            bytes: meta.len(),
                            modified: meta.modified().map_err(io("stat", entry.path()))?,
                        });
                    }
                }
                Ok(listing)
            }
            Kind::Object { store, .. } => {
                let store = Arc::clone(store);
                let prefix = self.object_path(dir);
                let result = self
                    .run(async move { store.list_with_delimiter(Some(&prefix)).await })
                    .map_err(self.object_error("list", dir))?;
                Ok(Listing {
                    dirs: result
                        .common_prefixes
                        .iter()
                        .filter_map(|p| p.filename().map(str::to_owned))
                        .collect(),
                    files: result
                        .objects
                        .into_iter()
                        .filter_map(|meta| {
                            Some(Entry {
                                name: meta.location.filename()?.to_owned(),
                                bytes: meta.size,
                                modified: SystemTime::from(meta.last_modified),
                            })
                        })
                        .collect(),
                })
            }
        }
    }

    /// Starts writing the file `key` (replacing any); its parent directories are created.
    pub(crate) fn create(&self, key: &str) -> Result<Sink> {
        match &self.kind {
            Kind::Local { root } => {
                let path = root.join(key);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(io("create", parent))?;
                }
                Ok(Sink::File(
                    File::create(&path).map_err(io("create", &path))?,
                ))
            }
            Kind::Object { .. } => Ok(Sink::Memory(Vec::new())),
        }
    }

    /// Finishes a file begun with [`create`](Self::create) and returns its size. An object
    /// is durable when this returns; a local file is not until [`sync`](Self::sync) (so that
    /// a flush syncs its files together).
    pub(crate) fn close(&self, key: &str, sink: Sink) -> Result<u64> {
        match (&self.kind, sink) {
            (Kind::Local { root }, Sink::File(mut file)) => {
                let path = root.join(key);
                file.flush().map_err(io("write", &path))?;
                Ok(file.metadata().map_err(io("stat", &path))?.len())
            }
            (Kind::Object { store, .. }, Sink::Memory(bytes)) => {
                let size = bytes.len() as u64;
                let store = Arc::clone(store);
                let path = self.object_path(key);
                self.run(async move { store.put(&path, PutPayload::from(bytes)).await })
                    .map_err(self.object_error("write", key))?;
                Ok(size)
            }
            _ => unreachable!("a sink is closed by the store that made it"),
        }
    }

    /// [`close`](Self::close) for several files; on an object store their PUTs run
    /// concurrently (a flush's files, one round trip instead of one per file).
    pub(crate) fn close_all(&self, files: Vec<(String, Sink)>) -> Result<Vec<u64>> {
        let Kind::Object { store, .. } = &self.kind else {
            return files
                .into_iter()
                .map(|(key, sink)| self.close(&key, sink))
                .collect();
        };
        let mut sizes = Vec::with_capacity(files.len());
        let mut puts = Vec::with_capacity(files.len());
        for (key, sink) in files {
            let Sink::Memory(bytes) = sink else {
                unreachable!("a sink is closed by the store that made it")
            };
            sizes.push(bytes.len() as u64);
            let store = Arc::clone(store);
            let path = self.object_path(&key);
            puts.push(async move {
                store
                    .put(&path, PutPayload::from(bytes))
                    .await
                    .map_err(|e| (key, e))
            });
        }
        match self.run_keyed(async move { futures::future::try_join_all(puts).await }) {
            Ok(_) => Ok(sizes),
            Err((key, e)) => Err(self.object_error("write", &key)(e)),
        }
    }

    /// Makes the local files and directories `keys` durable (contents, and the names in a
    /// directory); nothing to do on an object store.
    pub(crate) fn sync(&self, keys: &[String]) -> Result<()> {
        match &self.kind {
            Kind::Local { root } => {
                let paths: Vec<PathBuf> = keys.iter().map(|k| root.join(k)).collect();
                files::sync_paths(&paths)
            }
            Kind::Object { .. } => Ok(()),
        }
    }

    /// Creates `key` holding `bytes` if and only if no such file exists, durably. Returns
    /// whether this call created it: among writers racing for one key, exactly one gets
    /// `true`. Local: `O_EXCL`, then `fsync` of the file and its directory. Object store: a
    /// conditional PUT (`PutMode::Create`).
    pub(crate) fn create_new(&self, key: &str, bytes: Vec<u8>) -> Result<bool> {
        match &self.kind {
            Kind::Local { root } => {
                // Written whole under a name of its own, then hard-linked to `key`: `link`
                // fails if `key` exists, and a reader never sees the file half-written (as
                // it could between `O_EXCL` and the write).
                let path = root.join(key);
                let parent = path.parent().expect("a key has a directory");
                std::fs::create_dir_all(parent).map_err(io("create", parent))?;
                let tmp = parent.join(format!(
                    ".new-{}-{}",
                    std::process::id(),
                    NEXT_TEMPORARY.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                ));
                let mut file = File::create(&tmp).map_err(io("create", &tmp))?;
                file.write_all(&bytes).map_err(io("write", &tmp))?;
                file.sync_all().map_err(io("sync", &tmp))?;
                drop(file);
                let linked = std::fs::hard_link(&tmp, &path);
                std::fs::remove_file(&tmp).map_err(io("remove", &tmp))?;
                match linked {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
                    Err(e) => return Err(io("link", &path)(e)),
                }
                files::sync_path(parent)?;
                Ok(true)
            }
            Kind::Object { store, .. } => {
                let store = Arc::clone(store);
                let path = self.object_path(key);
                let options = PutOptions {
                    mode: PutMode::Create,
                    ..PutOptions::default()
                };
                match self.run(async move {
                    store
                        .put_opts(&path, PutPayload::from(bytes), options)
                        .await
                }) {
                    Ok(_) => Ok(true),
                    Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
                    Err(e) => Err(self.object_error("create", key)(e)),
                }
            }
        }
    }

    /// The whole file `key`, or `None` if there is none.
    pub(crate) fn read(&self, key: &str) -> Result<Option<Bytes>> {
        match &self.kind {
            Kind::Local { root } => {
                let path = root.join(key);
                match std::fs::read(&path) {
                    Ok(bytes) => Ok(Some(Bytes::from(bytes))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(io("read", &path)(e)),
                }
            }
            Kind::Object { store, .. } => {
                let store = Arc::clone(store);
                let path = self.object_path(key);
                match self.run(async move { store.get(&path).await?.bytes().await }) {
                    Ok(bytes) => Ok(Some(bytes)),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(self.object_error("read", key)(e)),
                }
            }
        }
    }

    /// The Parquet file `key`, to read.
    pub(crate) fn open_parquet(&self, key: &str) -> Result<ParquetSource> {
        match &self.kind {
            Kind::Local { root } => {
                let path = root.join(key);
                Ok(ParquetSource::File(
                    File::open(&path).map_err(io("open", &path))?,
                ))
            }
            Kind::Object { .. } => match self.read(key)? {
                Some(bytes) => Ok(ParquetSource::Bytes(bytes)),
                None => Err(TransformError::Unexpected {
                    path: self.display_key(key),
                    message: "listed, then not found".into(),
                }),
            },
        }
    }

    /// The column `name` of every row of the Parquet file `key` (of `size` bytes), in
    /// batches. On an object store only the footer and that column's byte ranges are
    /// fetched: a take-over reads the `report_uid`s of a partition's whole history, and a
    /// `reports` file is mostly `raw_json`.
    pub(crate) fn read_column(&self, key: &str, size: u64, name: &str) -> Result<Vec<RecordBatch>> {
        let path = self.display_key(key);
        let parquet = |source| TransformError::Parquet {
            path: path.clone(),
            source,
        };
        let missing = || TransformError::Unexpected {
            path: path.clone(),
            message: format!("no {name} column"),
        };
        match &self.kind {
            Kind::Local { .. } => {
                let builder = ParquetRecordBatchReaderBuilder::try_new(self.open_parquet(key)?)
                    .map_err(parquet)?;
                let index = builder.schema().index_of(name).map_err(|_| missing())?;
                let mask = ProjectionMask::roots(builder.parquet_schema(), [index]);
                let reader = builder
                    .with_projection(mask)
                    .with_batch_size(64 * 1024)
                    .build()
                    .map_err(parquet)?;
                reader
                    .map(|batch| batch.map_err(|e| parquet(e.into())))
                    .collect()
            }
            Kind::Object { store, runtime, .. } => {
                let reader = RangeReader {
                    store: Arc::clone(store),
                    path: self.object_path(key),
                    size,
                };
                let name = name.to_owned();
                let read = runtime.run(async move {
                    let builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
                    let Ok(index) = builder.schema().index_of(&name) else {
                        return Ok(None);
                    };
                    let mask = ProjectionMask::roots(builder.parquet_schema(), [index]);
                    let stream = builder
                        .with_projection(mask)
                        .with_batch_size(64 * 1024)
                        .build()?;
                    let batches: Vec<_> = stream.collect().await;
                    batches
                        .into_iter()
                        .collect::<parquet::errors::Result<Vec<_>>>()
                        .map(Some)
                });
                read.map_err(parquet)?.ok_or_else(missing)
            }
        }
    }

    /// Whether the file `key` exists.
    pub(crate) fn exists(&self, key: &str) -> Result<bool> {
        match &self.kind {
            Kind::Local { root } => Ok(root.join(key).exists()),
            Kind::Object { store, .. } => {
                let store = Arc::clone(store);
                let path = self.object_path(key);
                match self.run(async move { store.head(&path).await }) {
                    Ok(_) => Ok(true),
                    Err(object_store::Error::NotFound { .. }) => Ok(false),
                    Err(e) => Err(self.object_error("stat", key)(e)),
                }
            }
        }
    }

    /// Moves the files `(from, to)` into place, one by one, skipping those already moved (no
    /// source, target present: a second attempt after a crash). `before_each(i)` runs before
    /// the `i`-th move (the tests stop there). Local: `rename`, then one `fsync` per
    /// directory whose entries changed, including new date and table directories' parents.
    /// Object store: a server-side copy (the source is deleted with the staging area).
    pub(crate) fn move_into_place(
        &self,
        moves: &[(String, String)],
        mut before_each: impl FnMut(usize) -> Result<()>,
    ) -> Result<()> {
        let mut to_sync: Vec<String> = Vec::new();
        let mut stopped = None;
        for (i, (from, to)) in moves.iter().enumerate() {
            if let Err(stop) = before_each(i) {
                stopped = Some((i, stop));
                break;
            }
            match &self.kind {
                Kind::Local { root } => {
                    let source = root.join(from);
                    let target = root.join(to);
                    if !source.exists() {
                        if target.exists() {
                            continue;
                        }
                        return Err(missing_staged(self.display_key(from), to));
                    }
                    let target_dir = target.parent().expect("a key has a directory");
                    if !target_dir.exists() {
                        // A new date directory (and maybe table directory): their parents'
                        // entries must be durable too, or the renamed file could vanish
                        // with them.
                        let mut dir = parent_key(to);
                        while let Some(parent) = dir.map(parent_key) {
                            let parent = parent.unwrap_or("");
                            push_once(&mut to_sync, parent);
                            if parent.is_empty() || root.join(parent).exists() {
                                break;
                            }
                            dir = Some(parent);
                        }
                        std::fs::create_dir_all(target_dir).map_err(io("create", target_dir))?;
                    }
                    match std::fs::rename(&source, &target) {
                        Ok(()) => {}
                        // Moved by another writer finishing the same claim meanwhile.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound && target.exists() => {}
                        Err(e) => return Err(io("rename", &source)(e)),
                    }
                    push_once(&mut to_sync, parent_key(to).unwrap_or(""));
                }
                Kind::Object { .. } => {}
            }
        }
        if let Kind::Object { store, .. } = &self.kind {
            // Server-side copies, all at once (those before a stop, if `before_each` stopped).
            let count = stopped.as_ref().map_or(moves.len(), |(i, _)| *i);
            let copies: Vec<_> = moves[..count]
                .iter()
                .map(|(from, to)| {
                    let store = Arc::clone(store);
                    let (source, target) = (self.object_path(from), self.object_path(to));
                    async move { store.copy(&source, &target).await }
                })
                .collect();
            let first = moves.first().map_or("", |(from, _)| from.as_str());
            let results = self
                .run(async move {
                    Ok::<_, object_store::Error>(futures::future::join_all(copies).await)
                })
                .map_err(self.object_error("copy", first))?;
            for ((from, to), result) in moves.iter().zip(results) {
                match result {
                    Ok(()) => {}
                    Err(object_store::Error::NotFound { .. }) => {
                        if !self.exists(to)? {
                            return Err(missing_staged(self.display_key(from), to));
                        }
                    }
                    Err(e) => return Err(self.object_error("copy", from)(e)),
                }
            }
        }
        self.sync(&to_sync)?;
        match stopped {
            Some((_, stop)) => Err(stop),
            None => Ok(()),
        }
    }

    /// Moves one file to a new name in place of any there (compaction's output; local only,
    /// an object store writes the output under its final key directly).
    pub(crate) fn rename(&self, from: &str, to: &str) -> Result<()> {
        match &self.kind {
            Kind::Local { root } => {
                let source = root.join(from);
                std::fs::rename(&source, root.join(to)).map_err(io("rename", &source))?;
                files::sync_path(&root.join(parent_key(to).unwrap_or("")))
            }
            Kind::Object { .. } => unreachable!("object stores write in place"),
        }
    }

    /// Whether files are written under a temporary name and renamed (local), rather than
    /// written in place by one atomic PUT (object store).
    pub(crate) fn renames(&self) -> bool {
        matches!(self.kind, Kind::Local { .. })
    }

    /// Deletes the file `key`; returns whether it was there.
    pub(crate) fn delete(&self, key: &str) -> Result<bool> {
        match &self.kind {
            Kind::Local { root } => {
                let path = root.join(key);
                match std::fs::remove_file(&path) {
                    Ok(()) => Ok(true),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                    Err(e) => Err(io("remove", &path)(e)),
                }
            }
            Kind::Object { store, .. } => {
                let store = Arc::clone(store);
                let path = self.object_path(key);
                // S3 answers a DELETE of a missing key with success: "was there" is unknown,
                // and reported as true.
                match self.run(async move { store.delete(&path).await }) {
                    Ok(()) => Ok(true),
                    Err(object_store::Error::NotFound { .. }) => Ok(false),
                    Err(e) => Err(self.object_error("delete", key)(e)),
                }
            }
        }
    }

    /// Deletes the directory `dir` and everything under it, durably (local: `fsync` of its
    /// parent).
    pub(crate) fn delete_dir(&self, dir: &str) -> Result<()> {
        match &self.kind {
            Kind::Local { root } => {
                let path = root.join(dir);
                match std::fs::remove_dir_all(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                    // Another writer removing the same directory (a claim both finished).
                    Err(_) if !path.exists() => return Ok(()),
                    Err(e) => return Err(io("remove", &path)(e)),
                }
                files::sync_path(&root.join(parent_key(dir).unwrap_or("")))
            }
            Kind::Object { store, .. } => {
                let store = Arc::clone(store);
                let prefix = self.object_path(dir);
                self.run(async move {
                    let objects: Vec<_> = store.list(Some(&prefix)).collect().await;
                    let locations: Vec<ObjectPath> = objects
                        .into_iter()
                        .map(|meta| meta.map(|m| m.location))
                        .collect::<object_store::Result<_>>()?;
                    // Concurrently: a flush's staging is up to a few dozen objects.
                    let deletes = locations.iter().map(|location| store.delete(location));
                    futures::future::try_join_all(deletes).await?;
                    Ok(())
                })
                .map_err(self.object_error("delete", dir))
            }
        }
    }

    fn object_path(&self, key: &str) -> ObjectPath {
        match &self.kind {
            Kind::Object { prefix, .. } => key
                .split('/')
                .filter(|part| !part.is_empty())
                .fold(prefix.clone(), |path, part| path.join(part)),
            Kind::Local { .. } => unreachable!("local stores have paths"),
        }
    }

    fn object_error(
        &self,
        action: &'static str,
        key: &str,
    ) -> impl FnOnce(object_store::Error) -> TransformError {
        let path = self.display_key(key);
        move |source| TransformError::ObjectStore {
            action,
            path,
            source,
        }
    }

    /// [`run`](Self::run) for work whose error names the key it failed on.
    fn run_keyed<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, (String, object_store::Error)>> + Send + 'static,
    ) -> Result<T, (String, object_store::Error)> {
        match &self.kind {
            Kind::Object { runtime, .. } => runtime.run(work),
            Kind::Local { .. } => unreachable!("local stores do not use the runtime"),
        }
    }

    fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = object_store::Result<T>> + Send + 'static,
    ) -> object_store::Result<T> {
        match &self.kind {
            Kind::Object { runtime, .. } => runtime.run(work),
            Kind::Local { .. } => unreachable!("local stores do not use the runtime"),
        }
    }
}

fn missing_staged(source: PathBuf, to: &str) -> TransformError {
    TransformError::Unexpected {
        path: source,
        message: format!("staged file missing, and {to} is not in place"),
    }
}

/// Reads byte ranges of one object for parquet's async reader: the footer, then the column
/// chunks a projection needs.
struct RangeReader {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    size: u64,
}

fn external(error: object_store::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(error))
}

impl AsyncFileReader for RangeReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<Bytes>> {
        Box::pin(async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(external)
        })
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        Box::pin(async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(external)
        })
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> futures::future::BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        Box::pin(async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        })
    }
}

/// The directory part of a key (`None` at the root).
pub(crate) fn parent_key(key: &str) -> Option<&str> {
    key.rsplit_once('/').map(|(dir, _)| dir)
}

fn push_once(keys: &mut Vec<String>, key: &str) {
    if !keys.iter().any(|k| k == key) {
        keys.push(key.to_owned());
    }
}

/// The object store's own runtime: one worker thread drives its HTTP connections, and the
/// transformer's thread waits for each call. Owning it (rather than borrowing the caller's)
/// keeps the store usable from any thread, with or without a runtime, and of any flavour.
struct IoRuntime {
    runtime: Option<tokio::runtime::Runtime>,
}

impl IoRuntime {
    fn start() -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tlsrpt-store-io")
            .enable_all()
            .build()
            .map_err(|e| TransformError::Thread {
                message: format!("object store runtime: {e}"),
            })?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    /// Runs `work` on the runtime and blocks this thread until it is done.
    fn run<T: Send + 'static>(&self, work: impl Future<Output = T> + Send + 'static) -> T {
        let (done, answer) = std::sync::mpsc::sync_channel(1);
        self.runtime
            .as_ref()
            .expect("the runtime lives as long as the store")
            .spawn(async move {
                let _ = done.send(work.await);
            });
        answer
            .recv()
            .expect("the store's runtime runs every task it is given to the end")
    }
}

impl Drop for IoRuntime {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside another runtime's task; the store
        // may be dropped there (the transformer's state returns to `run` at shutdown).
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
