//! Reading a report file given on the command line (`-` is standard input).

use std::io::Read;
use std::path::Path;

use anyhow::Context;
use tlsrpt_schemas::{DecodeOptions, Decoder};

/// Decoder options shared by the commands that read reports.
#[derive(Debug, clap::Args)]
pub(crate) struct DecodeArgs {
    /// The largest decompressed report accepted, in bytes.
    #[arg(long, default_value_t = DecodeOptions::default().max_decompressed_bytes, value_name = "BYTES")]
    max_decompressed_bytes: usize,
}

impl DecodeArgs {
    pub(crate) fn decoder(&self) -> Decoder {
        Decoder::new(DecodeOptions {
            max_decompressed_bytes: self.max_decompressed_bytes,
        })
    }
}

/// The largest file read from disk or stdin: well above the decoder's decompressed cap for
/// compressed input, and a guard against `tlsrpt validate /dev/zero`.
const MAX_INPUT_BYTES: u64 = 64 * 1024 * 1024;

/// Reads `path`, or standard input for `-`.
pub(crate) fn read_input(path: &str) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if path == "-" {
        std::io::stdin()
            .lock()
            .take(MAX_INPUT_BYTES + 1)
            .read_to_end(&mut bytes)
            .context("cannot read standard input")?;
    } else {
        let file =
            std::fs::File::open(Path::new(path)).with_context(|| format!("cannot open {path}"))?;
        file.take(MAX_INPUT_BYTES + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read {path}"))?;
    }
    anyhow::ensure!(
        bytes.len() as u64 <= MAX_INPUT_BYTES,
        "{path} is larger than {} MiB; a TLS-RPT report is never that large",
        MAX_INPUT_BYTES >> 20
    );
    Ok(bytes)
}

/// The files to read for the paths given on the command line: a directory stands for every
/// file under it (recursively, sorted, hidden files skipped); `-` and files stand for
/// themselves. A path that does not exist is kept, so that reading it reports the error.
pub(crate) fn expand_paths(paths: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for path in paths {
        if path != "-" && Path::new(path).is_dir() {
            let mut found = Vec::new();
            collect_files(Path::new(path), &mut found);
            found.sort();
            out.extend(found);
        } else {
            out.push(path.clone());
        }
    }
    out
}

fn collect_files(dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        // Unreadable: keep the directory itself, so that reading it names the problem.
        out.push(dir.display().to_string());
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path.display().to_string());
        }
    }
}
