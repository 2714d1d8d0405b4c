//! Any bytes into the decoder (JSON, gzip, zip, base64, mail): it must never panic, an
//! error must stay short (no echo of the input), and an accepted report must survive a
//! round trip through its own JSON, flatten into the tables and back, and be explained in
//! every format without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tlsrpt_schemas::explain::Explanation;
use tlsrpt_schemas::tables::{flatten, unflatten};
use tlsrpt_schemas::{DecodeOptions, Decoder, Envelope, ReceivedReport, Transport};

fuzz_target!(|data: &[u8]| {
    let mut decoder = Decoder::new(DecodeOptions { max_decompressed_bytes: 1 << 20 });
    match decoder.decode_any(data) {
        Ok(input) => {
            let report = input.decoded.report;
            let again = tlsrpt_schemas::parse_report(&report.to_json())
                .expect("a report's own JSON must be accepted");
            assert_eq!(again.policies, report.policies);
            assert_eq!(again.dedup_key(), report.dedup_key());

            let submitter = input.email.and_then(|e| e.report_submitter);
            let explanation = Explanation::of(&report, submitter.as_deref());
            assert!(!explanation.to_text().is_empty());
            assert!(!explanation.to_markdown().is_empty());
            serde_json::to_string(&explanation).expect("an explanation serialises");

            let received = ReceivedReport {
                report,
                envelope: Envelope {
                    transport: Transport::Import,
                    received_at: chrono::DateTime::UNIX_EPOCH,
                    submitter_header: submitter,
                    dkim: None,
                },
                raw_json: input.decoded.raw_json,
            };
            // Counts above i64::MAX are refused by flatten (TablesError), not a panic.
            if let Ok(tables) = flatten(std::slice::from_ref(&received)) {
                let back = unflatten(&tables).expect("our own tables read back");
                assert_eq!(back[0].report.policies, received.report.policies);
            }
        }
        Err(err) => assert!(err.to_string().len() < 600, "long message: {err}"),
    }
});
