//! The alerting's reader (Parquet files read directly, in groups of files that hold the same
//! reports, on several threads) reads what SQL reads: on a generated history put through
//! the real pipeline, and with a cut-off in the middle of a day's arrivals, the sessions,
//! failures and STS modes it finds per domain and day are those of the same question asked
//! in SQL over the same tables.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int64Type};
use chrono::{Duration, TimeZone, Utc};
use tlsrpt_alerts::observations::date_of;
use tlsrpt_benches::history::{History, HistoryConfig};
use tlsrpt_benches::pipeline::write_tables;
use tlsrpt_query::{QueryEngine, QueryOptions};

/// Rows of text keys and one count, as a sorted map.
type Sums = BTreeMap<Vec<String>, u64>;

#[test]
fn the_reader_finds_what_sql_finds() {
    let config = HistoryConfig {
        domains: 60,
        days: 20,
        incidents: 4,
        warmup_days: 8,
        ..HistoryConfig::default()
    };
    let history = History::new(config.clone(), 7);
    let dir = tempfile::tempdir().unwrap();
    write_tables(dir.path(), history.reports()).unwrap();
    let tables = dir.path().join("tables");

    let from = config.start_date;
    let to = from + Duration::days(i64::from(config.days) - 1);
    // Midway through the arrival of day 10's reports: some of them are not known yet.
    let until = Utc.from_utc_datetime(&(from + Duration::days(11)).and_hms_opt(9, 30, 0).unwrap());
    let observations = tlsrpt_alerts::load::observations(&tables, from, to, until).unwrap();

    let mut parts = Sums::new();
    let mut sessions = Sums::new();
    let mut failed = Sums::new();
    let mut failures = Sums::new();
    let mut modes = Sums::new();
    let names = &observations.names;
    for part in observations.parts() {
        assert!(part.received_at <= until.timestamp_micros());
        let key = vec![
            names.name(part.domain).to_owned(),
            date_of(part.day).to_string(),
        ];
        *parts.entry(key.clone()).or_default() += 1;
        *sessions.entry(key.clone()).or_default() += part.sessions;
        *failed.entry(key.clone()).or_default() += part.failed;
        for f in observations.failures_of(part) {
            let mut key = key.clone();
            key.extend([
                names.name(f.mx).to_owned(),
                names.name(f.result_type).to_owned(),
            ]);
            *failures.entry(key).or_default() += f.sessions;
        }
        for &(mode, n) in observations.modes_of(part) {
            let mut key = key.clone();
            key.push(names.name(mode).to_owned());
            *modes.entry(key).or_default() += n;
        }
    }
    assert!(parts.len() > 500, "{} domain-days read", parts.len());
    assert!(!failures.is_empty() && !modes.is_empty());

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let engine = QueryEngine::new(
        tables,
        QueryOptions {
            max_rows: usize::MAX,
            ..QueryOptions::default()
        },
    )
    .unwrap();
    let sql = |query: String| runtime.block_on(sums(&engine, &query));
    let until = until.format("%Y-%m-%dT%H:%M:%S%.6fZ");
    let known = format!(
        "FROM policies p JOIN reports r ON p.report_uid = r.report_uid AND p.date = r.date \
         WHERE r.received_at <= TIMESTAMP '{until}' AND p.policy_domain IS NOT NULL"
    );
    // A part's sessions: the larger of its STS policies' sum and any other policy's.
    let per_part = format!(
        "WITH rows AS (SELECT p.report_uid, p.policy_domain AS domain, p.date, p.policy_type, \
           coalesce(p.total_successful_session_count, 0) \
             + coalesce(p.total_failure_session_count, 0) AS s, \
           coalesce(p.total_failure_session_count, 0) AS f {known}), \
         sts AS (SELECT report_uid, domain, date, sum(s) AS s, sum(f) AS f FROM rows \
           WHERE policy_type = 'sts' GROUP BY 1, 2, 3), \
         other AS (SELECT report_uid, domain, date, s, f FROM (SELECT *, row_number() OVER \
           (PARTITION BY report_uid, domain ORDER BY s DESC, f DESC) AS n FROM rows \
           WHERE policy_type IS DISTINCT FROM 'sts') WHERE n = 1), \
         parts AS (SELECT coalesce(sts.report_uid, other.report_uid) AS report_uid, \
           coalesce(sts.domain, other.domain) AS domain, \
           coalesce(sts.date, other.date) AS date, \
           CASE WHEN coalesce(sts.s, 0) >= coalesce(other.s, 0) THEN coalesce(sts.s, 0) \
             ELSE other.s END AS s, \
           CASE WHEN coalesce(sts.s, 0) >= coalesce(other.s, 0) THEN coalesce(sts.f, 0) \
             ELSE other.f END AS f \
           FROM sts FULL JOIN other ON sts.report_uid = other.report_uid \
             AND sts.domain = other.domain) "
    );
    let day = "CAST(date AS VARCHAR)";
    assert_eq!(
        sql(format!(
            "{per_part} SELECT domain, {day}, count(*) FROM parts GROUP BY 1, 2"
        )),
        parts
    );
    assert_eq!(
        sql(format!(
            "{per_part} SELECT domain, {day}, sum(s) FROM parts GROUP BY 1, 2"
        )),
        sessions
    );
    assert_eq!(
        sql(format!(
            "{per_part} SELECT domain, {day}, sum(f) FROM parts GROUP BY 1, 2"
        )),
        failed
    );
    assert_eq!(
        sql(format!(
            "SELECT f.policy_domain, CAST(f.date AS VARCHAR), \
               coalesce(f.receiving_mx_hostname, ''), CAST(f.result_type AS VARCHAR), \
               sum(coalesce(f.failed_session_count, 0)) \
             FROM failures f JOIN reports r ON f.report_uid = r.report_uid AND f.date = r.date \
             WHERE r.received_at <= TIMESTAMP '{until}' AND f.policy_domain IS NOT NULL \
             GROUP BY 1, 2, 3, 4"
        )),
        failures
    );
    assert_eq!(
        sql(format!(
            "SELECT p.policy_domain, CAST(p.date AS VARCHAR), CAST(p.sts_mode AS VARCHAR), \
               sum(coalesce(p.total_successful_session_count, 0) \
                 + coalesce(p.total_failure_session_count, 0)) \
             {known} AND p.policy_type = 'sts' AND p.sts_mode IS NOT NULL GROUP BY 1, 2, 3"
        )),
        modes
    );
}

/// A query whose last column is a count and the others text, as a map.
async fn sums(engine: &QueryEngine, query: &str) -> Sums {
    let result = engine
        .sql(query)
        .await
        .unwrap_or_else(|e| panic!("{e}: {query}"));
    let mut sums = Sums::new();
    for batch in result.batches() {
        let width = batch.num_columns();
        let keys: Vec<_> = (0..width - 1)
            .map(|i| arrow::compute::cast(batch.column(i), &DataType::Utf8).unwrap())
            .collect();
        let count = arrow::compute::cast(batch.column(width - 1), &DataType::Int64).unwrap();
        let count = count.as_primitive::<Int64Type>();
        for row in 0..batch.num_rows() {
            let key = keys
                .iter()
                .map(|k| {
                    let k = k.as_string::<i32>();
                    if k.is_valid(row) {
                        k.value(row).to_owned()
                    } else {
                        String::new()
                    }
                })
                .collect();
            let value = if count.is_valid(row) {
                count.value(row) as u64
            } else {
                0
            };
            *sums.entry(key).or_default() += value;
        }
    }
    sums
}
