//! The engine over real Parquet files: what it counts, which files it reads, what it refuses.

use std::time::Duration;

use tlsrpt_query::{QueryError, QueryOptions};

use crate::support::{
    GOOGLE, MAIL_RU, RFC, Root, range, refusal, report, rows, write, write_named,
};

#[tokio::test]
async fn counts_and_sums_per_table() {
    let root = Root::with_corpus();
    let engine = root.engine();
    assert_eq!(
        rows(
            &engine,
            "SELECT count(*), sum(total_successful_session_count), \
             sum(total_failure_session_count), sum(policy_count) FROM reports"
        )
        .await,
        ["3|5327|304|3"]
    );
    assert_eq!(
        rows(
            &engine,
            "SELECT count(*), sum(total_successful_session_count), \
             sum(total_failure_session_count) FROM policies"
        )
        .await,
        ["3|5327|304"]
    );
    assert_eq!(
        rows(
            &engine,
            "SELECT count(*), sum(failed_session_count) FROM failures"
        )
        .await,
        ["5|305"]
    );
}

#[tokio::test]
async fn failures_group_by_policy_domain_and_result_type() {
    let root = Root::with_corpus();
    let engine = root.engine();
    assert_eq!(
        rows(
            &engine,
            "SELECT policy_domain, result_type, sum(failed_session_count) AS sessions \
             FROM failures GROUP BY policy_domain, result_type ORDER BY 1, 2"
        )
        .await,
        [
            "company-y.example|certificate-expired|100",
            "company-y.example|starttls-not-supported|200",
            "company-y.example|validation-failure|3",
            "example.com|sts-policy-fetch-error|2",
        ]
    );
}

#[tokio::test]
async fn date_filters_select_days() {
    let root = Root::with_corpus();
    let engine = root.engine();
    assert_eq!(
        rows(
            &engine,
            "SELECT date, organization_name FROM reports ORDER BY date"
        )
        .await,
        [
            "2016-04-01|Company-X",
            "2024-02-22|Mail.ru",
            "2025-05-22|Google Inc."
        ]
    );
    assert_eq!(
        rows(
            &engine,
            "SELECT count(*) FROM failures WHERE date = DATE '2016-04-01'"
        )
        .await,
        ["3"]
    );
    assert_eq!(
        rows(
            &engine,
            "SELECT count(*) FROM failures WHERE date >= '2020-01-01'"
        )
        .await,
        ["2"]
    );
    assert_eq!(
        rows(
            &engine,
            "SELECT count(*) FROM policies f WHERE f.date BETWEEN '2024-01-01' AND '2025-12-31' \
             AND policy_domain <> 'nothing'"
        )
        .await,
        ["2"]
    );
    assert_eq!(
        rows(
            &engine,
            "SELECT count(*) FROM reports WHERE date > '2030-01-01'"
        )
        .await,
        ["0"]
    );
}

/// Filters on `date` prune whole date directories before any file in them is opened: a
/// damaged file on another day does not stop a query about this one. Without the filter,
/// the damaged file is read and reported as the service's problem, not the statement's.
#[tokio::test]
async fn a_date_filter_keeps_other_days_unread() {
    let root = Root::with_corpus();
    let damaged = root
        .path
        .join("failures/date=2030-01-01")
        .join(range(0, 9, 9).file_name());
    std::fs::create_dir_all(damaged.parent().unwrap()).unwrap();
    std::fs::write(&damaged, b"not parquet at all").unwrap();
    let engine = root.engine();

    assert_eq!(
        rows(
            &engine,
            "SELECT count(*) FROM failures WHERE date < '2030-01-01'"
        )
        .await,
        ["5"]
    );
    let error = refusal(&engine, "SELECT count(*) FROM failures").await;
    assert!(matches!(error, QueryError::Storage { .. }), "{error:?}");
}

#[tokio::test]
async fn failure_details_keep_additional_information_and_reason_codes() {
    let root = Root::with_corpus();
    let engine = root.engine();
    assert_eq!(
        rows(
            &engine,
            "SELECT result_type, receiving_ip, additional_information, failure_reason_code \
             FROM failures WHERE date = '2016-04-01' ORDER BY failed_session_count"
        )
        .await,
        [
            "validation-failure|203.0.113.58||X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED",
            "certificate-expired|||",
            "starttls-not-supported|203.0.113.56|\
             https://reports.company-x.example/report_info?id=5065427c-23d3#StarttlsNotSupported|",
        ]
    );
}

/// Compaction, as layout.rs describes it: a merged file whose range covers its inputs'
/// hides them from the moment it is renamed into place, and temporary names are never data.
#[tokio::test]
async fn superseded_and_temporary_files_are_not_counted() {
    let root = Root::new();
    let a = report(RFC, Some("a"));
    let b = report(RFC, Some("b"));
    write(&root.path, range(0, 0, 0), std::slice::from_ref(&a));
    write(&root.path, range(0, 1, 1), std::slice::from_ref(&b));
    // Another partition's file with the same offsets is not superseded by anything.
    write(&root.path, range(1, 0, 0), &[report(RFC, Some("c"))]);
    // A flush in progress and a staging area: not data.
    let d = report(RFC, Some("d"));
    let temporary = format!(".tmp-{}", range(0, 2, 2).file_name());
    write_named(&root.path, &temporary, std::slice::from_ref(&d));
    write_named(
        &root.path,
        &format!("_{}", range(0, 3, 3).file_name()),
        &[d],
    );
    let engine = root.engine();
    let count = "SELECT count(*), count(DISTINCT report_id) FROM reports";
    let failures = "SELECT count(*) FROM failures";

    assert_eq!(rows(&engine, count).await, ["3|3"], "before compaction");
    write(&root.path, range(0, 0, 1), &[a, b]);
    assert_eq!(
        rows(&engine, count).await,
        ["3|3"],
        "merged file and inputs"
    );
    assert_eq!(rows(&engine, failures).await, ["9"]);
    for table in ["reports", "policies", "failures"] {
        for input in [range(0, 0, 0), range(0, 1, 1)] {
            std::fs::remove_file(
                root.path
                    .join(table)
                    .join("date=2016-04-01")
                    .join(input.file_name()),
            )
            .unwrap();
        }
    }
    assert_eq!(rows(&engine, count).await, ["3|3"], "inputs deleted");
    assert_eq!(rows(&engine, failures).await, ["9"]);
}

#[tokio::test]
async fn files_written_after_start_are_seen_by_the_next_query() {
    let root = Root::new();
    let engine = root.engine();
    let count = "SELECT count(*) FROM failures";
    assert_eq!(rows(&engine, count).await, ["0"]);
    write(&root.path, range(0, 0, 0), &[report(MAIL_RU, None)]);
    assert_eq!(rows(&engine, count).await, ["2"]);
    write(&root.path, range(0, 1, 1), &[report(RFC, None)]);
    assert_eq!(rows(&engine, count).await, ["5"]);
    // A new file in a date directory that was already listed.
    write(&root.path, range(0, 2, 2), &[report(RFC, Some("again"))]);
    assert_eq!(rows(&engine, count).await, ["8"]);
}

#[tokio::test]
async fn tables_without_files_exist_and_are_empty() {
    let root = Root::new();
    let engine = root.engine();
    for table in ["reports", "policies", "failures"] {
        assert_eq!(
            rows(&engine, &format!("SELECT count(*) FROM {table}")).await,
            ["0"],
            "{table}"
        );
    }
    let all = engine.sql("SELECT * FROM failures").await.unwrap();
    assert_eq!(all.num_rows(), 0);
    assert_eq!(
        all.schema().fields().len(),
        tlsrpt_schemas::tables::failures_schema().fields().len()
    );
    // Only one table has files: the others are still empty, not missing.
    write(&root.path, range(0, 0, 0), &[report(GOOGLE, None)]);
    assert_eq!(rows(&engine, "SELECT count(*) FROM failures").await, ["0"]);
    assert_eq!(rows(&engine, "SELECT count(*) FROM policies").await, ["1"]);
}

#[tokio::test]
async fn the_schema_is_the_contract() {
    let root = Root::with_corpus();
    let engine = root.engine();
    for (table, schema) in [
        ("reports", tlsrpt_schemas::tables::reports_schema()),
        ("policies", tlsrpt_schemas::tables::policies_schema()),
        ("failures", tlsrpt_schemas::tables::failures_schema()),
        (
            "policies_daily",
            tlsrpt_schemas::rollup::policies_daily_schema(),
        ),
        (
            "failures_daily",
            tlsrpt_schemas::rollup::failures_daily_schema(),
        ),
        (
            "reports_daily",
            tlsrpt_schemas::rollup::reports_daily_schema(),
        ),
        ("alerts", tlsrpt_schemas::alerts_table::alerts_schema()),
    ] {
        let result = engine.sql(&format!("SELECT * FROM {table}")).await.unwrap();
        let types = |s: &arrow::datatypes::Schema| {
            s.fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(types(result.schema()), types(&schema), "{table}");
    }
    assert_eq!(
        rows(&engine, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1").await,
        [
            "alerts",
            "failures",
            "failures_daily",
            "policies",
            "policies_daily",
            "reports",
            "reports_daily"
        ]
    );
}

#[tokio::test]
async fn statements_that_change_anything_are_refused() {
    let root = Root::with_corpus();
    let engine = root.engine();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("copy.parquet");
    let target = target.display();
    for (sql, named) in [
        ("CREATE TABLE t (a INT)", "CREATE TABLE"),
        ("CREATE VIEW v AS SELECT * FROM reports", "CREATE VIEW"),
        ("DROP TABLE reports", "DROP TABLE"),
        ("INSERT INTO reports SELECT * FROM reports", "INSERT INTO"),
        ("INSERT INTO nowhere VALUES (1)", "INSERT INTO"),
        ("DELETE FROM failures", "DELETE FROM"),
        ("UPDATE failures SET failed_session_count = 0", "UPDATE"),
        ("TRUNCATE failures", "TRUNCATE"),
        (
            &format!("COPY (SELECT * FROM reports) TO '{target}'"),
            "COPY",
        ),
        (
            &format!("COPY reports TO '{target}' STORED AS PARQUET"),
            "COPY",
        ),
        (
            "CREATE EXTERNAL TABLE secrets STORED AS CSV LOCATION '/etc/passwd'",
            "CREATE EXTERNAL TABLE",
        ),
        ("SET datafusion.execution.batch_size = 1", "SET"),
        ("RESET datafusion.execution.batch_size", "RESET"),
        (
            "EXPLAIN ANALYZE INSERT INTO reports SELECT * FROM reports",
            "EXPLAIN ANALYZE INSERT",
        ),
        ("PREPARE q AS SELECT 1", "PREPARE"),
        ("BEGIN TRANSACTION", "BEGIN TRANSACTION"),
        // A query to the parser, a CREATE TABLE to the planner.
        ("SELECT report_id INTO copied FROM reports", "SELECT INTO"),
    ] {
        let error = refusal(&engine, sql).await;
        let QueryError::ReadOnly { statement } = &error else {
            panic!("{sql}: {error:?}");
        };
        assert_eq!(statement, named, "{sql}");
        let message = error.to_string();
        assert!(message.contains("read-only"), "{sql}: {message}");
    }
    assert!(!outside.path().join("copy.parquet").exists());
    // Still answering, with the same data.
    assert_eq!(rows(&engine, "SELECT count(*) FROM reports").await, ["3"]);
    let tables = rows(&engine, "SHOW TABLES").await;
    // The three tables, the three rollups, the alerts and the built-in views, nothing created.
    assert_eq!(
        tables.iter().filter(|t| t.contains("|public|")).count(),
        7 + tlsrpt_query::views::VIEWS.len(),
        "{tables:?}"
    );
}

/// No query reads a file outside the tables: URL tables are off and DataFusion's default
/// table functions read no files.
#[tokio::test]
async fn queries_cannot_read_other_files() {
    let root = Root::with_corpus();
    let engine = root.engine();
    let outside = tempfile::tempdir().unwrap();
    let file = outside.path().join("x.parquet");
    crate::support::write_parquet(
        &file,
        &tlsrpt_schemas::tables::flatten(&[report(RFC, None)])
            .unwrap()
            .reports,
    );
    for sql in [
        format!("SELECT * FROM '{}'", file.display()),
        format!("SELECT * FROM read_parquet('{}')", file.display()),
        format!("SELECT * FROM parquet_metadata('{}')", file.display()),
    ] {
        let error = refusal(&engine, &sql).await;
        assert!(
            matches!(error, QueryError::Invalid { .. }),
            "{sql}: {error:?}"
        );
        assert!(error.to_string().contains("not found"), "{sql}: {error}");
    }
    // Table functions that exist read no files.
    assert_eq!(
        rows(&engine, "SELECT count(*) FROM generate_series(1, 10)").await,
        ["10"]
    );
}

#[tokio::test]
async fn syntax_errors_say_where() {
    let root = Root::with_corpus();
    let engine = root.engine();
    let error = refusal(&engine, "SELEC count(*) FROM reports").await;
    assert!(matches!(error, QueryError::Invalid { .. }), "{error:?}");
    assert!(error.to_string().contains("SELEC"), "{error}");
    let error = refusal(&engine, "SELECT nonsense FROM reports").await;
    assert!(error.to_string().contains("nonsense"), "{error}");
    let error = refusal(&engine, "SELECT 1; SELECT 2").await;
    assert!(matches!(error, QueryError::Invalid { .. }), "{error:?}");
}

#[tokio::test]
async fn results_over_the_row_limit_are_refused_not_cut() {
    let root = Root::with_corpus();
    let engine = root.engine_with(QueryOptions {
        max_rows: 3,
        ..QueryOptions::default()
    });
    let error = refusal(&engine, "SELECT * FROM failures").await;
    assert!(
        matches!(error, QueryError::TooManyRows { max_rows: 3 }),
        "{error:?}"
    );
    assert!(error.to_string().contains("more than 3 rows"), "{error}");
    assert_eq!(
        engine
            .sql("SELECT * FROM failures LIMIT 3")
            .await
            .unwrap()
            .num_rows(),
        3
    );
    assert_eq!(rows(&engine, "SELECT count(*) FROM failures").await, ["5"]);
}

#[tokio::test]
async fn a_query_over_the_time_limit_is_stopped() {
    let root = Root::new();
    let engine = root.engine_with(QueryOptions {
        timeout: Duration::from_millis(200),
        ..QueryOptions::default()
    });
    // Ten billion rows: minutes of work, whatever the machine.
    let error = refusal(
        &engine,
        "SELECT sum(value) FROM generate_series(1, 10000000000)",
    )
    .await;
    assert!(matches!(error, QueryError::Timeout { .. }), "{error:?}");
    assert_eq!(rows(&engine, "SELECT 1").await, ["1"]);
}

/// Every file holds one date, so a scan that hands each partition whole dates lets a grouping
/// by date finish within each partition: no partial groups hashed across partitions. The
/// answers stay those of a plain grouping, and joins of tables whose ranges of dates differ
/// still meet every row.
#[tokio::test]
async fn a_trend_by_date_is_grouped_within_ranges_of_dates_and_joins_still_meet_every_row() {
    let root = Root::with_corpus();
    let engine = root.engine();
    let trend = "SELECT date, receiving_mx_hostname, sum(failed_session_count) AS sessions \
                 FROM failures GROUP BY date, receiving_mx_hostname";
    let plan = rows(&engine, &format!("EXPLAIN {trend}")).await.join("\n");
    if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
        assert!(plan.contains("output_partitioning=Range"), "{plan}");
        assert!(plan.contains("mode=SinglePartitioned"), "{plan}");
    }
    assert!(!plan.contains("RepartitionExec"), "{plan}");
    assert_eq!(
        rows(&engine, &format!("{trend} ORDER BY 1, 2")).await,
        [
            "2016-04-01|mx-backup.mail.company-y.example|3",
            "2016-04-01|mx1.mail.company-y.example|100",
            "2016-04-01|mx2.mail.company-y.example|200",
            "2024-02-22||2",
        ]
    );

    // Each table's ranges are cut by its own bytes, so the two sides of a join on `date` need
    // not declare the same ranges; the join must repartition them (or find them equal) and
    // meet every row either way.
    assert_eq!(
        rows(
            &engine,
            "SELECT count(*), sum(f.failed_session_count) FROM failures f \
             JOIN policies p ON f.date = p.date AND f.report_uid = p.report_uid \
             AND f.policy_index = p.policy_index"
        )
        .await,
        ["5|305"]
    );
    assert_eq!(
        rows(
            &engine,
            "SELECT d.day, count(r.report_uid) FROM \
             (VALUES (DATE '2016-04-01'), (DATE '2024-02-22'), (DATE '2025-05-22')) AS d(day) \
             LEFT JOIN reports r ON r.date = d.day GROUP BY d.day ORDER BY 1"
        )
        .await,
        ["2016-04-01|1", "2024-02-22|1", "2025-05-22|1"]
    );
}
