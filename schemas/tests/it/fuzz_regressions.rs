//! Inputs the fuzzer found (`schemas/fuzz`), each kept under a name saying what it broke.
//! Every one must decode or be refused without panicking, with a short message, and an
//! accepted one must survive a round trip through its own JSON.

use std::path::Path;

use tlsrpt_schemas::{DecodeOptions, Decoder, parse_report};

#[test]
fn fuzz_findings_stay_fixed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz-regressions");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let mut decoder = Decoder::new(DecodeOptions {
            max_decompressed_bytes: 1 << 20,
        });
        match decoder.decode_any(&bytes) {
            Ok(input) => {
                let report = input.decoded.report;
                let json = report.to_json();
                let again = parse_report(&json).unwrap();
                assert_eq!(again.policies, report.policies, "{}", path.display());
            }
            Err(err) => {
                let message = err.to_string();
                assert!(
                    message.len() < 600,
                    "{}: {} bytes: {message}",
                    path.display(),
                    message.len()
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 1, "no regression inputs in {}", dir.display());
}
