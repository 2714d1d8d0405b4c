//! Decode (gunzip + parse + validate + normalise), flatten to Arrow and sum the daily
//! rollups, on generator data of the benches' shape (about 2 KB of JSON and 6 failure
//! details per report) and on the real corpus. Throughput is in reports; bytes per report
//! are printed at setup so MB/s can be derived. Run:
//! `cargo bench -p tlsrpt-benches --bench decode`.

/// The allocator the `tlsrpt` binary uses, so the figures are the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;

use chrono::{TimeZone, Utc};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tlsrpt_benches::generator::{Generator, GeneratorConfig, gzip};
use tlsrpt_schemas::rollup::Rollups;
use tlsrpt_schemas::tables::{TablesBuilder, flatten};
use tlsrpt_schemas::{Decoder, Envelope, ReceivedReport, Transport, parse_report};

const REPORTS: usize = 10_000;
/// Rows per Arrow batch while flattening, as a transformer would batch.
const BATCH: usize = 4096;

struct Data {
    json: Vec<String>,
    gz: Vec<Vec<u8>>,
}

fn generated() -> Data {
    let json: Vec<String> = Generator::new(GeneratorConfig::bench(), 1)
        .take(REPORTS)
        .map(|g| g.json)
        .collect();
    let gz: Vec<Vec<u8>> = json.iter().map(|j| gzip(j.as_bytes())).collect();
    let json_bytes: usize = json.iter().map(String::len).sum();
    let gz_bytes: usize = gz.iter().map(Vec::len).sum();
    eprintln!(
        "generated {REPORTS} reports: {:.0} bytes of JSON and {:.0} bytes gzipped per report",
        json_bytes as f64 / REPORTS as f64,
        gz_bytes as f64 / REPORTS as f64
    );
    Data { json, gz }
}

fn envelope() -> Envelope {
    Envelope {
        transport: Transport::Https,
        received_at: Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap(),
        submitter_header: None,
        dkim: None,
    }
}

fn bench_generated(c: &mut Criterion) {
    let data = generated();
    let mut group = c.benchmark_group("generated");
    group.throughput(Throughput::Elements(REPORTS as u64));
    group.sample_size(20);

    group.bench_function(format!("parse_json_{REPORTS}_reports"), |b| {
        b.iter(|| {
            for json in &data.json {
                black_box(parse_report(json).unwrap());
            }
        })
    });

    group.bench_function(format!("gunzip_parse_{REPORTS}_reports"), |b| {
        let mut decoder = Decoder::default();
        b.iter(|| {
            for gz in &data.gz {
                black_box(decoder.decode(gz).unwrap());
            }
        })
    });

    // The same, with the report's text borrowed from the JSON, as the HTTP receiver decodes.
    group.bench_function(format!("gunzip_parse_in_place_{REPORTS}_reports"), |b| {
        let mut decoder = Decoder::default();
        b.iter(|| {
            for gz in &data.gz {
                black_box(
                    decoder
                        .decode_with(gz, |decoded| black_box(decoded.report.policies.len()))
                        .unwrap(),
                );
            }
        })
    });

    let received: Vec<ReceivedReport<'_>> = data
        .gz
        .iter()
        .map(|gz| {
            let decoded = Decoder::default().decode(gz).unwrap();
            ReceivedReport {
                report: decoded.report,
                envelope: envelope(),
                raw_json: decoded.raw_json.into(),
            }
        })
        .collect();
    group.bench_function(format!("flatten_{REPORTS}_reports"), |b| {
        // One builder for the run, as a transformer keeps one: it sizes each batch like the
        // last.
        let mut tables = TablesBuilder::new();
        b.iter(|| {
            for chunk in received.chunks(BATCH) {
                for report in chunk {
                    tables.append(report).unwrap();
                }
                black_box(tables.finish().unwrap());
            }
        })
    });

    // What a transformer adds to each flush since the daily rollups (issue 5): summing the
    // flushed rows per key.
    group.bench_function(format!("rollups_{REPORTS}_reports"), |b| {
        let mut tables = TablesBuilder::new();
        let batches: Vec<_> = received
            .chunks(BATCH)
            .map(|chunk| {
                for report in chunk {
                    tables.append(report).unwrap();
                }
                tables.finish().unwrap()
            })
            .collect();
        b.iter(|| {
            for batch in &batches {
                black_box(Rollups::of(batch).unwrap());
            }
        })
    });

    // The figure the target is about: bytes as received to Arrow batches, on one core, the
    // report decoded in place (its text borrowed from the JSON until it is flattened).
    group.bench_function(format!("gunzip_parse_flatten_{REPORTS}_reports"), |b| {
        let mut decoder = Decoder::default();
        let mut tables = TablesBuilder::new();
        b.iter_batched(
            || (),
            |()| {
                for gz in &data.gz {
                    decoder
                        .decode_with(gz, |decoded| {
                            let received = ReceivedReport {
                                report: decoded.report,
                                envelope: envelope(),
                                raw_json: decoded.raw_json.into(),
                            };
                            tables.append(&received).unwrap();
                        })
                        .unwrap();
                    if tables.len() >= BATCH {
                        black_box(tables.finish().expect("flatten"));
                    }
                }
                black_box(tables.finish().expect("flatten"));
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// The real corpus (vendored MIT/Apache fixtures; JSON ones), decoded and flattened.
fn bench_corpus(c: &mut Criterion) {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/tests/fixtures/corpus");
    let mut files = Vec::new();
    for owner in std::fs::read_dir(&dir).unwrap() {
        let owner = owner.unwrap().path();
        if owner.is_dir() {
            for file in std::fs::read_dir(owner).unwrap() {
                let path = file.unwrap().path();
                if path.extension().is_some_and(|e| e == "json") {
                    files.push(gzip(&std::fs::read(path).unwrap()));
                }
            }
        }
    }
    let mut group = c.benchmark_group("corpus");
    group.throughput(Throughput::Elements(files.len() as u64));
    group.bench_function(
        format!("gunzip_parse_flatten_{}_real_reports", files.len()),
        |b| {
            let mut decoder = Decoder::default();
            b.iter(|| {
                let received: Vec<ReceivedReport<'_>> = files
                    .iter()
                    .map(|gz| {
                        let decoded = decoder.decode(gz).unwrap();
                        ReceivedReport {
                            report: decoded.report,
                            envelope: envelope(),
                            raw_json: decoded.raw_json.into(),
                        }
                    })
                    .collect();
                black_box(flatten(&received).unwrap())
            })
        },
    );
    group.finish();
}

criterion_group!(benches, bench_generated, bench_corpus);
criterion_main!(benches);
