//! Golden files: each vendored fixture flattened into the three tables, pretty-printed
//! (`tables::pretty`, without `raw_json`), compared with `tests/golden/<dir>__<file>.txt`.
//! A changed row shows up as a diff in review. Regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p tlsrpt-schemas --test it golden`.

use std::path::Path;

use chrono::{TimeZone, Utc};
use tlsrpt_schemas::tables::{flatten, pretty};
use tlsrpt_schemas::{Decoder, Envelope, ReceivedReport, Transport};

use crate::support::{report_files, vendored_corpus};

#[test]
fn flattened_fixtures_match_their_golden_files() {
    let golden_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let corpus = vendored_corpus();
    let mut mismatches = Vec::new();
    let files = report_files(&corpus);
    assert!(!files.is_empty());
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        let input = Decoder::default().decode_any(&bytes).unwrap();
        let received = ReceivedReport {
            envelope: Envelope {
                transport: if input.email.is_some() {
                    Transport::Smtp
                } else {
                    Transport::Import
                },
                received_at: Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap(),
                submitter_header: input.email.and_then(|e| e.report_submitter),
                dkim: None,
            },
            report: input.decoded.report,
            raw_json: input.decoded.raw_json.into(),
        };
        let actual = pretty(&flatten(std::slice::from_ref(&received)).unwrap());
        let relative = path
            .strip_prefix(&corpus)
            .unwrap()
            .to_string_lossy()
            .replace('/', "__");
        let golden = golden_dir.join(format!("{relative}.txt"));
        if update {
            std::fs::write(&golden, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_else(|_| {
            panic!("{} is missing; run with UPDATE_GOLDEN=1", golden.display())
        });
        if expected != actual {
            mismatches.push(format!(
                "{}:\n--- expected\n{expected}\n+++ actual\n{actual}",
                golden.display()
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} golden files differ:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
