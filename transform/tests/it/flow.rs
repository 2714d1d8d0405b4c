//! Reports from the bus into Parquet: tables, dates, names, values, row order, file settings;
//! duplicates; restarts; unreadable messages.

use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Date32Type;
use parquet::basic::{Compression, Encoding, PageType};
use parquet::file::reader::{FileReader, SerializedFileReader};
use tlsrpt_bus::{Message, partition_for_key};
use tlsrpt_schemas::layout::FileRange;
use tlsrpt_schemas::message::{WireEnvelope, header};
use tlsrpt_schemas::tables::{failures_schema, policies_schema, reports_schema};
use tlsrpt_transform::{TransformOptions, existing_report_uids};

use crate::{
    Env, ids, list, message, nth_report, options, read_file, read_table, report_ids, report_json,
    row_texts, rows, texts, visible,
};

#[tokio::test]
async fn reports_land_in_one_file_per_table_date_and_flush_named_by_offsets() {
    let env = Env::new(2);
    env.send_reports(0..30).await;
    let stats = env.drain(options()).await;
    let ends = env.log.end_offsets();
    assert_eq!(ends.iter().sum::<u64>(), 30);

    assert_eq!(rows(&env.root, "reports"), 30);
    assert_eq!(rows(&env.root, "policies"), 30);
    assert_eq!(rows(&env.root, "failures"), 60);
    assert_eq!(report_ids(&env.root), ids(0..30));
    assert_eq!(stats.reports_written(), 30);

    let (files, stray) = list(&env.root);
    assert!(stray.is_empty(), "{stray:?}");
    assert!(crate::staged(&env.root).is_empty(), "staging left behind");
    // One flush per partition (everything was read in one pass): every file of a partition
    // accounts for all of its offsets, and there is one per table, date and partition.
    for file in &files {
        let p = file.range.partition as usize;
        assert_eq!(
            file.range,
            FileRange {
                partition: file.range.partition,
                first: 0,
                last: ends[p] - 1
            }
        );
    }
    assert_eq!(stats.files_written(), files.len() as u64);
    let dirs: std::collections::BTreeSet<(usize, u32)> = (0..30)
        .map(|n| (n % 3, partition_for_key(&message(&nth_report(n)).key, 2)))
        .collect();
    assert_eq!(files.len(), 6 * dirs.len(), "{files:#?}");

    // Rows sit in the directory of their date, and read back with the tables' schemas
    // (dictionary columns included).
    for file in &files {
        let batch = read_file(&file.path);
        let expected_schema = match file.table.as_str() {
            "reports" => reports_schema(),
            "policies" => policies_schema(),
            "failures" => failures_schema(),
            rollup => tlsrpt_schemas::rollup::schema_of(rollup).unwrap(),
        };
        assert_eq!(batch.schema().fields(), expected_schema.fields());
        let dates = batch
            .column_by_name("date")
            .unwrap()
            .as_primitive::<Date32Type>();
        for days in dates.values() {
            let date = Date32Type::to_naive_date_opt(*days).unwrap();
            assert_eq!(format!("date={date}"), file.date);
        }
    }

    // A few values, report 4: Microsoft, 2026-01-02, d4.example.
    let reports = read_table(&env.root, "reports");
    let ids_column = texts(&reports, "report_id");
    let row = ids_column
        .iter()
        .position(|id| id.as_deref() == Some("r4"))
        .unwrap();
    assert_eq!(
        texts(&reports, "organization_name")[row].as_deref(),
        Some("Microsoft")
    );
    assert_eq!(texts(&reports, "transport")[row].as_deref(), Some("https"));
    assert_eq!(
        texts(&reports, "raw_json")[row].as_deref(),
        Some(nth_report(4).as_str())
    );
    let policies = read_table(&env.root, "policies");
    let uids = texts(&policies, "report_uid");
    let report_uid = texts(&reports, "report_uid")[row].clone();
    let policy_row = uids.iter().position(|u| *u == report_uid).unwrap();
    assert_eq!(
        texts(&policies, "policy_domain")[policy_row].as_deref(),
        Some("d4.example")
    );
    assert_eq!(
        texts(&policies, "sts_mode")[policy_row].as_deref(),
        Some("enforce")
    );
    let failures = read_table(&env.root, "failures");
    let mut mxs: Vec<String> = texts(&failures, "report_uid")
        .iter()
        .zip(texts(&failures, "receiving_mx_hostname"))
        .filter(|(u, _)| **u == report_uid)
        .map(|(_, mx)| mx.unwrap())
        .collect();
    mxs.sort();
    assert_eq!(mxs, ["mx1.d4.example", "mx2.shared.example"]);
}

#[tokio::test]
async fn files_are_sorted_zstd_with_a_page_index_and_declare_their_order() {
    let env = Env::new(1);
    env.send_reports(0..40).await;
    env.drain(options()).await;
    for file in visible(&env.root) {
        let batch = read_file(&file.path);
        let keys: Vec<&str> = match file.table.as_str() {
            "failures" | "failures_daily" => vec!["policy_domain", "receiving_mx_hostname"],
            "policies" => vec!["policy_domain"],
            "policies_daily" => vec!["policy_domain", "organization_name"],
            "reports_daily" => vec!["organization_name", "policy_domain"],
            _ => vec!["organization_name"],
        };
        let columns: Vec<Vec<Option<String>>> = keys
            .iter()
            .map(|k| texts(std::slice::from_ref(&batch), k))
            .collect();
        let tuples: Vec<Vec<Option<String>>> = (0..batch.num_rows())
            .map(|i| columns.iter().map(|c| c[i].clone()).collect())
            .collect();
        assert!(
            tuples.windows(2).all(|w| w[0] <= w[1]),
            "{} not sorted by {keys:?}",
            file.path.display()
        );

        let reader = SerializedFileReader::new(std::fs::File::open(&file.path).unwrap()).unwrap();
        let metadata = reader.metadata();
        let row_group = metadata.row_group(0);
        let sorting = row_group
            .sorting_columns()
            .expect("sorting columns declared");
        let declared: Vec<String> = sorting
            .iter()
            .map(|s| {
                assert!(!s.descending && s.nulls_first);
                row_group
                    .column(s.column_idx as usize)
                    .column_path()
                    .string()
            })
            .collect();
        let mut expected: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        expected.push("date".into());
        assert_eq!(declared, expected);
        // zstd, except where dictionary and run-length encoding leave it nothing to gain.
        let uncompressed: &[&str] = match file.table.as_str() {
            "reports" => &[
                "start_datetime",
                "end_datetime",
                "date",
                "transport",
                "dkim",
                "policy_count",
            ],
            "policies" => &[
                "policy_index",
                "date",
                "start_datetime",
                "policy_type",
                "sts_mode",
                "sts_max_age",
            ],
            "failures" => &[
                "policy_index",
                "date",
                "start_datetime",
                "policy_type",
                "failure_reason_code",
            ],
            "policies_daily" => &["date", "policy_type", "sts_mode"],
            "failures_daily" => &["date", "result_type"],
            _ => &["date"],
        };
        for column in row_group.columns() {
            let name = column.column_path().string();
            if uncompressed.contains(&name.as_str()) {
                assert_eq!(column.compression(), Compression::UNCOMPRESSED, "{name}");
            } else {
                assert!(
                    matches!(column.compression(), Compression::ZSTD(_)),
                    "{name}: {:?}",
                    column.compression()
                );
            }
            // The page index: an offset index for every column chunk.
            assert!(column.offset_index_offset().is_some());
        }
        // Page-level statistics (the column index) on the sort columns.
        let domain = if file.table == "reports" {
            "organization_name"
        } else {
            "policy_domain"
        };
        let index = row_group
            .columns()
            .iter()
            .position(|c| c.column_path().string() == domain)
            .unwrap();
        assert!(row_group.column(index).column_index_offset().is_some());
        assert!(row_group.column(index).statistics().is_some());
        // Text no reader prunes by is written without min/max; what readers filter on keeps
        // them.
        let unfiltered: &[&str] = match file.table.as_str() {
            "reports" => &[
                "report_uid",
                "contact_info",
                "report_id",
                "warnings.list.item",
            ],
            "policies" => &["report_uid", "policy_string.list.item", "mx_host.list.item"],
            "failures" => &[
                "report_uid",
                "receiving_mx_helo",
                "additional_information",
                "failure_reason_code",
            ],
            _ => &[],
        };
        let mut without_statistics = Vec::new();
        for column in row_group.columns() {
            let name = column.column_path().string();
            if column.statistics().is_none() && name != "raw_json" {
                without_statistics.push(name);
            }
        }
        assert_eq!(without_statistics, unfiltered, "{}", file.table);
        // Data pages of version 2 (the writer compresses their values without copying them
        // first), values plain where there is no dictionary.
        let row_group_reader = reader.get_row_group(0).unwrap();
        for (index, column) in row_group.columns().iter().enumerate() {
            let mut pages = row_group_reader.get_column_page_reader(index).unwrap();
            while let Some(page) = pages.get_next_page().unwrap() {
                let name = column.column_path().string();
                match page.page_type() {
                    PageType::DICTIONARY_PAGE => {}
                    PageType::DATA_PAGE_V2 => assert!(
                        matches!(page.encoding(), Encoding::PLAIN | Encoding::RLE_DICTIONARY),
                        "{name}: {:?}",
                        page.encoding()
                    ),
                    other => panic!("{name}: a {other:?}"),
                }
            }
        }
        // The Arrow schema travels with the file: dictionary columns come back as such.
        let dictionary = batch
            .column_by_name("organization_name")
            .or_else(|| batch.column_by_name("result_type"))
            .unwrap();
        assert!(matches!(
            dictionary.data_type(),
            arrow::datatypes::DataType::Dictionary(_, _)
        ));
    }
}

#[tokio::test]
async fn report_files_carry_a_report_id_bloom_filter_sized_for_their_rows() {
    use parquet::file::properties::ReaderProperties;
    use parquet::file::serialized_reader::ReadOptionsBuilder;

    let env = Env::new(1);
    env.send_reports(0..40).await;
    env.drain(options()).await;
    let reports: Vec<_> = visible(&env.root)
        .into_iter()
        .filter(|f| f.table == "reports")
        .collect();
    assert!(!reports.is_empty());
    for file in reports {
        let ids = texts(std::slice::from_ref(&read_file(&file.path)), "report_id");
        let options = ReadOptionsBuilder::new()
            .with_reader_properties(
                ReaderProperties::builder()
                    .set_read_bloom_filter(true)
                    .build(),
            )
            .build();
        let reader = SerializedFileReader::new_with_options(
            std::fs::File::open(&file.path).unwrap(),
            options,
        )
        .unwrap();
        let row_group = reader.get_row_group(0).unwrap();
        let index = row_group
            .metadata()
            .columns()
            .iter()
            .position(|c| c.column_path().string() == "report_id")
            .unwrap();
        let bloom = row_group
            .get_column_bloom_filter(index)
            .unwrap_or_else(|| panic!("no report_id bloom filter in {}", file.path.display()));
        for id in ids.iter().flatten() {
            assert!(
                bloom.check(&id.as_str()),
                "{id} missing from the bloom filter"
            );
        }
        // Ids not in the file: at 1% false positives, nearly all are ruled out.
        let outside = (1000..1200)
            .filter(|n| bloom.check(&format!("r{n}").as_str()))
            .count();
        assert!(outside <= 20, "{outside} of 200 absent ids pass the filter");
        // Sized for the rows, not the writer's default of a million values (1 MiB).
        let bytes = row_group.metadata().column(index).bloom_filter_length();
        assert!(
            bytes.is_some_and(|b| b < 4096),
            "bloom filter of {bytes:?} bytes for {} rows",
            ids.len()
        );
    }
}

#[tokio::test]
async fn a_backfill_writes_its_last_batches_once_caught_up_not_a_flush_interval_later() {
    let env = Env::new(2);
    env.send_reports(0..3000).await;
    let transformer = env.open(TransformOptions {
        flush_interval: Duration::from_secs(3600),
        flush_when_caught_up: true,
        ..TransformOptions::default()
    });
    let stats = transformer.stats();
    let targets = env.log.end_offsets();
    let done = {
        let stats = std::sync::Arc::clone(&stats);
        async move { stats.wait_for_committed(&targets).await }
    };
    // More than one fetch per partition: the batches are only written after the pass that
    // finds nothing new, an hour before their interval would write them.
    tokio::time::timeout(Duration::from_secs(30), transformer.run(done))
        .await
        .expect("the batches were written once the transformer caught up")
        .unwrap();
    assert_eq!(rows(&env.root, "reports"), 3000);
    assert_eq!(stats.committed_offsets(), env.log.end_offsets());
}

#[tokio::test]
async fn batches_roll_by_message_count() {
    let env = Env::new(1);
    for n in 0..10 {
        // One day, so each flush writes one file per table.
        env.send(message(&report_json(
            "Google",
            &format!("r{n}"),
            "2026-02-01",
            "a.example",
            &[("mx.a.example", 1)],
        )))
        .await;
    }
    let stats = env
        .drain(TransformOptions {
            max_batch_reports: 3,
            ..options()
        })
        .await;
    let ranges: Vec<(u64, u64)> = list(&env.root)
        .0
        .iter()
        .filter(|f| f.table == "reports")
        .map(|f| (f.range.first, f.range.last))
        .collect();
    assert_eq!(ranges, [(0, 2), (3, 5), (6, 8), (9, 9)]);
    assert_eq!(stats.flushes(), 4);
    assert_eq!(report_ids(&env.root), ids(0..10));
}

#[tokio::test]
async fn a_running_transformer_writes_what_arrives_and_flushes_at_shutdown() {
    let env = Env::new(2);
    let transformer = env.open(options());
    let stats = transformer.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(transformer.run(async move {
        let _ = stopped.await;
    }));
    // A guard against a hang, not a timing assertion.
    let guard = Duration::from_secs(60);
    env.send_reports(0..5).await;
    tokio::time::timeout(guard, stats.wait_for_committed(&env.log.end_offsets()))
        .await
        .expect("the reports were written");
    assert_eq!(report_ids(&env.root), ids(0..5));
    for n in 5..12 {
        env.send(message(&nth_report(n))).await;
    }
    tokio::time::timeout(guard, stats.wait_for_committed(&env.log.end_offsets()))
        .await
        .expect("the reports were written");
    assert_eq!(report_ids(&env.root), ids(0..12));
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    assert_eq!(stats.committed_offsets(), env.log.end_offsets());
    let mut text = String::new();
    stats.render_prometheus(&mut text);
    assert!(
        text.contains("tlsrpt_transform_reports_written_total 12"),
        "{text}"
    );
}

#[tokio::test]
async fn a_report_sent_three_times_is_one_row_also_across_runs() {
    let env = Env::new(2);
    let twice_told = nth_report(0);
    for _ in 0..3 {
        env.send(message(&twice_told)).await;
    }
    env.send(message(&nth_report(1))).await;
    let stats = env.drain(options()).await;
    assert_eq!(report_ids(&env.root), ids(0..2));
    assert_eq!(stats.duplicates_skipped(), 2);
    assert_eq!(rows(&env.root, "failures"), 4);
    assert_eq!(existing_report_uids(&env.root).unwrap().len(), 2);

    // The same reports again, by mail this time, and a new one: only the new one is added.
    let by_mail = |json: &str| {
        let mut m: Message = message(json);
        let mut envelope = WireEnvelope::of(&m.headers).unwrap();
        envelope.transport = Some("smtp".into());
        m.headers = vec![(header::ENVELOPE.into(), envelope.to_header_value())];
        m
    };
    env.send(by_mail(&twice_told)).await;
    env.send(by_mail(&nth_report(1))).await;
    env.send(message(&nth_report(2))).await;
    let transformer = env.open(options());
    assert_eq!(transformer.known_reports(), 2);
    drop(transformer);
    let stats = env.drain(options()).await;
    assert_eq!(stats.duplicates_skipped(), 2);
    assert_eq!(stats.reports_written(), 1);
    assert_eq!(report_ids(&env.root), ids(0..3));
    assert_eq!(
        texts(&read_table(&env.root, "reports"), "transport"),
        vec![Some("https".to_owned()); 3]
    );
}

#[tokio::test]
async fn a_restart_resumes_where_the_files_end() {
    let env = Env::new(2);
    env.send_reports(0..10).await;
    env.drain(options()).await;
    let first_ends = env.log.end_offsets();
    for n in 10..25 {
        env.send(message(&nth_report(n))).await;
    }
    let transformer = env.open(options());
    assert_eq!(transformer.resume_offsets(), first_ends.as_slice());
    drop(transformer);
    let stats = env.drain(options()).await;
    assert_eq!(stats.duplicates_skipped(), 0);
    assert_eq!(stats.reports_written(), 15);
    assert_eq!(report_ids(&env.root), ids(0..25));

    // Per partition, the files' ranges tile the offsets read: no gap, no overlap.
    for (partition, end) in env.log.end_offsets().into_iter().enumerate() {
        let mut ranges: Vec<(u64, u64)> = list(&env.root)
            .0
            .iter()
            .filter(|f| f.table == "reports" && f.range.partition as usize == partition)
            .map(|f| (f.range.first, f.range.last))
            .collect();
        ranges.sort();
        ranges.dedup();
        let mut next = 0;
        for (first, last) in ranges {
            assert_eq!(first, next);
            next = last + 1;
        }
        assert_eq!(next, end);
        assert_eq!(
            env.log.committed("transform", partition as u32).unwrap(),
            Some(end)
        );
    }

    // Nothing new: a restart reads nothing and writes nothing.
    let stats = env.drain(options()).await;
    assert_eq!(stats.flushes(), 0);
    assert_eq!(report_ids(&env.root), ids(0..25));
}

#[tokio::test]
async fn an_unreadable_message_is_set_aside_and_later_ones_are_written() {
    let env = Env::new(1);
    env.send(message(&nth_report(0))).await;
    let mut broken = message(&nth_report(1));
    broken.value = b"{\"organization-name\": \"half a report".to_vec();
    env.send(broken).await;
    let mut bare = message(&nth_report(2));
    bare.headers.clear();
    env.send(bare).await;
    env.send(message(&nth_report(3))).await;

    let stats = env.drain(options()).await;
    assert_eq!(stats.dead_lettered(), 2);
    let mut written = report_ids(&env.root);
    written.sort();
    assert_eq!(written, ["r0", "r3"]);

    let kept = env.dead_letters.list().unwrap();
    assert_eq!(kept.len(), 2);
    let (id, first) = &kept
        .iter()
        .find(|(_, r)| r.message.contains("offset 1"))
        .unwrap();
    assert_eq!(first.code, "undecodable_message");
    assert_eq!(first.transport, "https");
    assert!(
        first.message.contains("partition 0 offset 1"),
        "{}",
        first.message
    );
    assert!(first.message.contains("JSON"), "{}", first.message);
    assert_eq!(
        env.dead_letters.bytes(id).unwrap(),
        b"{\"organization-name\": \"half a report"
    );
    let (second_id, second) = &kept
        .iter()
        .find(|(_, r)| r.message.contains("offset 2"))
        .unwrap();
    // Kept whole, also when the headers and not the value were the problem.
    assert_eq!(
        env.dead_letters.bytes(second_id).unwrap(),
        message(&nth_report(2)).value
    );
    assert_eq!(second.transport, "unknown");
    assert!(
        second.message.contains("header transport is missing"),
        "{}",
        second.message
    );
    assert_eq!(env.log.committed("transform", 0).unwrap(), Some(4));
}

#[tokio::test]
async fn corpus_reports_come_back_from_the_files_row_for_row() {
    use tlsrpt_schemas::message::{from_parts, to_parts};
    use tlsrpt_schemas::{Decoder, Envelope, ReceivedReport, Transport};

    let corpus =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/tests/fixtures/corpus");
    let mut paths = Vec::new();
    for source in std::fs::read_dir(&corpus).unwrap() {
        let source = source.unwrap().path();
        if source.is_dir() {
            for file in std::fs::read_dir(&source).unwrap() {
                paths.push(file.unwrap().path());
            }
        }
    }
    paths.sort();
    let env = Env::new(3);
    let mut decoder = Decoder::default();
    let mut expected = Vec::new();
    for path in &paths {
        let Ok(input) = decoder.decode_any(&std::fs::read(path).unwrap()) else {
            continue;
        };
        let mut envelope = Envelope::now(Transport::Import);
        if let Some(mail) = &input.email {
            envelope.transport = Transport::Smtp;
            envelope.submitter_header = mail.report_submitter.clone();
        }
        let received = ReceivedReport {
            report: input.decoded.report,
            envelope,
            raw_json: input.decoded.raw_json.into(),
        };
        let parts = to_parts(&received, None, None);
        // What the transformer will see: the report as the bus carries it.
        expected.push(from_parts(parts.value.clone(), &parts.headers).unwrap());
        env.send(Message {
            key: parts.key,
            value: parts.value,
            headers: parts.headers,
        })
        .await;
    }
    // Some fixtures repeat a report (one sender's mail and JSON of the same report): the
    // tables hold each once.
    let mut uids = std::collections::HashSet::new();
    expected.retain(|r| uids.insert(r.report.report_uid()));
    assert!(
        expected.len() >= 10,
        "only {} corpus reports decoded",
        expected.len()
    );

    env.drain(options()).await;
    let tables = tlsrpt_schemas::tables::flatten(&expected).unwrap();
    for (name, batch) in [
        ("reports", &tables.reports),
        ("policies", &tables.policies),
        ("failures", &tables.failures),
    ] {
        let written = read_table(&env.root, name);
        assert_eq!(
            row_texts(&written),
            row_texts(std::slice::from_ref(batch)),
            "{name} differ"
        );
    }
}
