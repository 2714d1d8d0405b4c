//! Any bytes into the decoder (JSON, gzip, zip, base64, mail): it must never panic, an
//! error must stay short (no echo of the input), and an accepted report must survive a
//! round trip through its own JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tlsrpt_schemas::{DecodeOptions, Decoder};

fuzz_target!(|data: &[u8]| {
    let mut decoder = Decoder::new(DecodeOptions { max_decompressed_bytes: 1 << 20 });
    match decoder.decode_any(data) {
        Ok(input) => {
            let report = input.decoded.report;
            let again = tlsrpt_schemas::parse_report(&report.to_json())
                .expect("a report's own JSON must be accepted");
            assert_eq!(again.policies, report.policies);
            assert_eq!(again.dedup_key(), report.dedup_key());
        }
        Err(err) => assert!(err.to_string().len() < 600, "long message: {err}"),
    }
});
