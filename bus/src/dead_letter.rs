//! The dead-letter area: every refused input, byte for byte, with the reason.
//!
//! It lives beside the log because both ends of the log use it: the receivers keep what
//! they refuse, and the transformer keeps a message it cannot read rather than stall its
//! partition (the Kafka deployment's dead-letter topic is the same idea).
//!
//! A refused report is a sender's bug or ours; either way an operator needs the bytes to look
//! at and, after a fix, to replay. Each rejection is two files in `DIR`: `ID.bin` (the bytes as
//! they arrived, before any decompression) and `ID.json` (when, from where, which transport,
//! the error code, message and JSON path). Both are written to a temporary name, synced and
//! renamed, so a listing never shows half a rejection. The ID sorts by arrival time.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Record;

/// Where the transformer keeps a message it cannot turn into rows, so that its partition
/// keeps moving: the dead-letter area ([`DeadLetters`]) beside the embedded log, the
/// dead-letter topic ([`crate::kafka::DeadLetterTopic`]) on Kafka.
pub trait DeadLetterSink: Send + Sync + std::fmt::Debug + 'static {
    /// Keeps `record` with the reason; returns where it went, for the logs. Blocking:
    /// call it from a blocking context. Only once it returns `Ok` may the record's offset
    /// be committed.
    fn keep_record(&self, record: &Record, rejection: &Rejection) -> Result<String, String>;
}

impl DeadLetterSink for DeadLetters {
    fn keep_record(&self, record: &Record, rejection: &Rejection) -> Result<String, String> {
        self.keep(&record.message.value, rejection)
            .map(|id| format!("{} ({id})", self.dir.display()))
            .map_err(|e| format!("cannot keep it in {}: {e}", self.dir.display()))
    }
}

/// Why and how an input was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub received_at: DateTime<Utc>,
    /// `https`, `smtp` or `import`.
    pub transport: String,
    pub remote_addr: Option<String>,
    /// A stable code (`json_syntax`, `invalid`, `too_large`, `not_a_report`, ...).
    pub code: String,
    pub message: String,
    /// The JSON path of the problem, when there is one.
    pub path: Option<String>,
    /// Bytes received (the whole body, even when only a part was kept).
    pub bytes: usize,
    /// Whether `ID.bin` holds all of them: a body over the size cap is not read to the end.
    pub complete: bool,
    pub sha256: String,
}

/// The dead-letter directory.
#[derive(Debug)]
pub struct DeadLetters {
    dir: PathBuf,
    /// Disambiguates rejections within one microsecond.
    sequence: AtomicU64,
}

impl DeadLetters {
    /// Opens (creating) the directory.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            sequence: AtomicU64::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keeps `bytes` and `rejection`; returns the ID. Blocking file I/O: call it from a
    /// blocking context.
    pub fn keep(&self, bytes: &[u8], rejection: &Rejection) -> std::io::Result<String> {
        let id = format!(
            "{}-{:06}-{}",
            rejection.received_at.format("%Y%m%dT%H%M%S%.6fZ"),
            self.sequence.fetch_add(1, Ordering::Relaxed) % 1_000_000,
            &rejection.sha256[..12.min(rejection.sha256.len())]
        );
        let meta = serde_json::to_vec_pretty(rejection).map_err(std::io::Error::other)?;
        // The bytes first: a `.json` without its `.bin` would promise what is not there.
        self.write_synced(&format!("{id}.bin"), bytes)?;
        self.write_synced(&format!("{id}.json"), &meta)?;
        Ok(id)
    }

    fn write_synced(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, self.dir.join(name))?;
        Ok(())
    }

    /// Every rejection kept, oldest first: (ID, what was recorded).
    pub fn list(&self) -> std::io::Result<Vec<(String, Rejection)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let rejection: Rejection = serde_json::from_slice(&std::fs::read(&path)?)
                .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
            out.push((id.to_owned(), rejection));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The bytes kept for `id`.
    pub fn bytes(&self, id: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.dir.join(format!("{id}.bin")))
    }
}
