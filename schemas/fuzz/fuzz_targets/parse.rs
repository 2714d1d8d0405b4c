//! JSON-shaped text into the parser: structure-aware inputs reach validation faster than
//! raw bytes do. Same properties as `decode`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &str| {
    match tlsrpt_schemas::parse_report(data) {
        Ok(report) => {
            let again = tlsrpt_schemas::parse_report(&report.to_json())
                .expect("a report's own JSON must be accepted");
            assert_eq!(again.policies, report.policies);
            assert_eq!(again.date_range, report.date_range);
        }
        Err(err) => assert!(err.to_string().len() < 600, "long message: {err}"),
    }
});
