//! tlsrpt's side of the parsedmarc comparison (`benches/compare/parsedmarc.sh`): the same
//! JSON-lines file, the same scenarios and the same output as `parsedmarc_throughput.py`,
//! single-threaded. `decode_flatten` adds what parsedmarc does not do: flattening to Arrow.

/// The allocator the `tlsrpt` binary uses, so the figures are the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::time::Instant;

use tlsrpt_benches::generator::gzip;
use tlsrpt_schemas::tables::TablesBuilder;
use tlsrpt_schemas::{Decoder, Envelope, ReceivedReport, Transport, parse_report};

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn measure(name: &str, reports: usize, bytes: usize, runs: usize, mut pass: impl FnMut() -> usize) {
    // `TLSRPT_SCENARIO=flatten` runs one scenario only (for profiling).
    if std::env::var("TLSRPT_SCENARIO").is_ok_and(|only| only != name) {
        return;
    }
    let mut times = Vec::with_capacity(runs);
    let mut refused = 0;
    for _ in 0..runs {
        let start = Instant::now();
        refused = pass();
        times.push(start.elapsed().as_secs_f64());
    }
    let seconds = median(times);
    println!(
        "{}",
        serde_json::json!({
            "tool": concat!("tlsrpt ", env!("CARGO_PKG_VERSION")),
            "scenario": name,
            "reports": reports,
            "refused": refused,
            "json_bytes": bytes,
            "median_seconds": (seconds * 1e4).round() / 1e4,
            "reports_per_second": (reports as f64 / seconds).round(),
            "mb_per_second": (bytes as f64 / seconds / 1e5).round() / 10.0,
        })
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: tlsrpt-throughput REPORTS.jsonl [RUNS]");
    let runs: usize = args
        .next()
        .map_or(5, |r| r.parse().expect("RUNS is a number"));
    let text = std::fs::read_to_string(&path).expect("cannot read the JSON-lines file");
    let docs: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let bytes: usize = docs.iter().map(|d| d.len()).sum();
    let gzipped: Vec<Vec<u8>> = docs.iter().map(|d| gzip(d.as_bytes())).collect();
    let envelope = Envelope {
        transport: Transport::Import,
        received_at: chrono::Utc::now(),
        submitter_header: None,
        dkim: None,
    };

    measure("parse_json", docs.len(), bytes, runs, || {
        docs.iter()
            .filter(|d| black_box(parse_report(d)).is_err())
            .count()
    });
    let mut decoder = Decoder::default();
    measure("gunzip_parse", docs.len(), bytes, runs, || {
        gzipped
            .iter()
            .filter(|g| black_box(decoder.decode(g)).is_err())
            .count()
    });
    let received: Vec<ReceivedReport<'_>> = gzipped
        .iter()
        .filter_map(|g| decoder.decode(g).ok())
        .map(|decoded| ReceivedReport {
            report: decoded.report,
            envelope: envelope.clone(),
            raw_json: decoded.raw_json.into(),
        })
        .collect();
    let mut tables = TablesBuilder::new();
    measure("flatten", docs.len(), bytes, runs, || {
        for chunk in received.chunks(4096) {
            for report in chunk {
                tables.append(report).expect("flatten");
            }
            black_box(tables.finish().expect("flatten"));
        }
        0
    });
    measure("gunzip_parse_flatten", docs.len(), bytes, runs, || {
        let mut refused = 0;
        for g in &gzipped {
            match decoder.decode(g) {
                Ok(decoded) => {
                    let received = ReceivedReport {
                        report: decoded.report,
                        envelope: envelope.clone(),
                        raw_json: decoded.raw_json.into(),
                    };
                    tables.append(&received).expect("flatten");
                    if tables.len() >= 4096 {
                        black_box(tables.finish().expect("flatten"));
                    }
                }
                Err(_) => refused += 1,
            }
        }
        black_box(tables.finish().expect("flatten"));
        refused
    });
}
