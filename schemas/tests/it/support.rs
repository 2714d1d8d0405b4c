//! Shared helpers: fixture locations and small encoders.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The vendored MIT/Apache fixtures, always present.
pub(crate) fn vendored_corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus")
}

/// `../shared/corpus` beside the repository, or `$TLSRPT_SHARED_CORPUS`.
pub(crate) fn shared_corpus() -> Option<PathBuf> {
    let dir = match std::env::var_os("TLSRPT_SHARED_CORPUS") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus"),
    };
    dir.is_dir().then_some(dir)
}

/// `shared_corpus()`, but in CI (`CI` set) its absence fails the test: the corpus files that
/// cannot be vendored must be checked there.
pub(crate) fn shared_corpus_checked() -> Option<PathBuf> {
    let dir = shared_corpus();
    if dir.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "../shared/corpus is missing; CI must run with shared/ beside the repository \
             (or set TLSRPT_SHARED_CORPUS)"
        );
        eprintln!("../shared/corpus not found: only the vendored fixtures were checked");
    }
    dir
}

/// Every report file under `dir` (recursively), sorted, skipping notes and checksums.
pub(crate) fn report_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.file_name().unwrap().to_string_lossy().to_string();
                if !(name.ends_with(".md") || name == "SHA256SUMS") {
                    out.push(path);
                }
            }
        }
    }
    out.sort();
    out
}

pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

pub(crate) const RFC_EXAMPLE: &str =
    include_str!("../fixtures/corpus/cry-inc__dmarc-report-viewer/rfc-example.json");
