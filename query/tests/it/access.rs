//! Who may ask and what they see: tokens over HTTP and Flight SQL (none, wrong, limited to
//! domains), and a domain-limited client seeing exactly the rows of its domains in every
//! table and view, also through joins and subqueries.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tlsrpt_query::{Access, Scope, SqlService};
use tlsrpt_schemas::ReceivedReport;

use crate::support::{RFC, Root, Running, range, report, rows, rows_in, write};
use crate::views::generated;

/// Writes `reports` into `root`, one file per day, as the transformer would.
fn write_by_day(root: &Path, reports: &[ReceivedReport<'static>]) {
    let mut by_day: BTreeMap<chrono::NaiveDate, Vec<ReceivedReport<'static>>> = BTreeMap::new();
    for report in reports {
        by_day
            .entry(report.report.date_range.start_datetime.date_naive())
            .or_default()
            .push(report.clone());
    }
    for (index, day) in by_day.values().enumerate() {
        write(root, range(0, index as u64, index as u64), day);
    }
}

fn domains(names: &[&str]) -> Scope {
    Scope::Domains(Arc::new(names.iter().map(|n| (*n).to_owned()).collect()))
}

/// Every table and view, and queries that join, nest and name tables in full: a client
/// limited to three domains gets from all the data exactly what an unlimited client gets
/// from the data of those three domains alone.
#[tokio::test]
async fn a_domain_limited_client_sees_only_its_domains_everywhere() {
    let reports = generated();
    let mut seen_domains: BTreeSet<String> = BTreeSet::new();
    for received in &reports {
        for policy in &received.report.policies {
            if let Some(domain) = &policy.policy.policy_domain {
                seen_domains.insert(domain.to_string());
            }
        }
    }
    let allowed: Vec<&str> = seen_domains.iter().take(3).map(String::as_str).collect();
    assert_eq!(allowed.len(), 3, "{seen_domains:?}");
    let scope = domains(&allowed);

    let everything = Root::new();
    write_by_day(&everything.path, &reports);
    let theirs: Vec<ReceivedReport<'static>> = reports
        .iter()
        .filter(|received| {
            !received.report.policies.is_empty()
                && received.report.policies.iter().all(|policy| {
                    policy
                        .policy
                        .policy_domain
                        .as_deref()
                        .is_some_and(|d| allowed.contains(&d))
                })
        })
        .cloned()
        .collect();
    assert!(
        !theirs.is_empty() && theirs.len() * 4 < reports.len(),
        "a few of the {} reports: {}",
        reports.len(),
        theirs.len()
    );
    let only_theirs = Root::new();
    write_by_day(&only_theirs.path, &theirs);

    let limited = everything.engine();
    let expected = only_theirs.engine();
    let mut statements: Vec<String> = limited
        .tables()
        .await
        .unwrap()
        .iter()
        .map(|table| format!("SELECT * FROM {}", table.name))
        .collect();
    assert!(statements.len() >= 10, "tables and views: {statements:?}");
    statements.extend(
        [
            "SELECT p.policy_domain, count(*), sum(f.failed_session_count) \
             FROM failures f JOIN policies p \
               ON f.report_uid = p.report_uid AND f.policy_index = p.policy_index \
             GROUP BY 1",
            "SELECT r.organization_name, count(*) FROM reports r \
             JOIN failures f USING (report_uid) GROUP BY 1",
            "SELECT count(*) FROM reports \
             WHERE report_uid IN (SELECT report_uid FROM failures)",
            "SELECT (SELECT count(DISTINCT policy_domain) FROM policies) AS domains, \
                    (SELECT count(*) FROM datafusion.public.failures) AS failures",
            "WITH f AS (SELECT * FROM public.failures) \
             SELECT count(*), sum(failed_session_count) FROM f",
            "SELECT count(*) FROM (SELECT report_uid FROM reports UNION ALL \
             SELECT report_uid FROM policies)",
            "SELECT sum(total_failure_session_count) FROM reports \
             WHERE NOT EXISTS (SELECT 1 FROM policies WHERE policies.report_uid = reports.report_uid \
               AND policy_domain IS NULL)",
        ]
        .map(str::to_owned),
    );
    for sql in &statements {
        let mut got = rows_in(&limited, &scope, sql).await;
        let mut want = rows(&expected, sql).await;
        got.sort();
        want.sort();
        assert_eq!(got, want, "{sql}");
    }

    // Not vacuous: the limited client sees some of the rows, an unlimited one all of them.
    let count = "SELECT count(*) FROM failures";
    let limited_count: u64 = rows_in(&limited, &scope, count).await[0].parse().unwrap();
    let all_count: u64 = rows(&limited, count).await[0].parse().unwrap();
    assert!(
        limited_count > 0 && limited_count * 4 < all_count,
        "{limited_count} of {all_count}"
    );
    // The names are the same, and its tables are tables, not views.
    let catalog = "SELECT table_name, table_type FROM information_schema.tables \
                   WHERE table_schema = 'public' ORDER BY 1";
    assert_eq!(
        rows_in(&limited, &scope, catalog).await,
        rows(&limited, catalog).await
    );
}

/// A report covering two domains: a client limited to one of them sees that domain's policy
/// and failures, but not the report's row (whose totals and raw JSON cover both).
#[tokio::test]
async fn a_report_covering_another_domain_is_not_shown_whole() {
    let root = Root::new();
    let mut mixed = report(RFC, Some("mixed"));
    let mut other = mixed.report.policies[0].clone();
    other.policy.policy_domain = Some("other.example".into());
    mixed.report.policies.push(other);
    write(&root.path, range(0, 0, 0), &[mixed]);
    let engine = root.engine();
    let scope = domains(&["company-y.example"]);
    assert_eq!(
        rows_in(&engine, &scope, "SELECT count(*) FROM reports").await,
        ["0"]
    );
    assert_eq!(
        rows_in(
            &engine,
            &scope,
            "SELECT DISTINCT policy_domain FROM policies"
        )
        .await,
        ["company-y.example"]
    );
    let failures = "SELECT DISTINCT policy_domain FROM failures";
    assert_eq!(
        rows_in(&engine, &scope, failures).await,
        ["company-y.example"]
    );
    let mut all = rows(&engine, failures).await;
    all.sort();
    assert_eq!(all, ["company-y.example", "other.example"]);
}

/// A token file with a token for everything and one limited to the RFC sample's domain.
fn tokens() -> (Access, String, String) {
    let (all, all_hex) = tlsrpt_query::access::new_token();
    let (limited, limited_hex) = tlsrpt_query::access::new_token();
    let access = Access::from_toml(&format!(
        "[[token]]\nname = \"analysts\"\nsha256 = \"{all_hex}\"\n\n\
         [[token]]\nname = \"company-y\"\nsha256 = \"{limited_hex}\"\n\
         domains = [\"company-y.example\"]\n"
    ))
    .unwrap();
    (access, all, limited)
}

#[tokio::test]
async fn http_requires_a_known_token_and_applies_its_domains() {
    let (access, all, limited) = tokens();
    let root = Root::with_corpus();
    let running = Running::start(SqlService {
        engine: root.engine(),
        access,
        tls: None,
    })
    .await;
    let client = reqwest::Client::new();
    let sql = |token: Option<&str>, sql: &str| {
        let request = client
            .post(format!("http://{}/v1/sql", running.http))
            .body(sql.to_owned());
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    };
    let domains = "SELECT DISTINCT policy_domain FROM failures ORDER BY 1";

    let response = sql(None, domains).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"tlsrpt\""
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "unauthenticated");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer"),
        "{body}"
    );

    let response = sql(Some("tlsrpt_guess"), domains).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("not known"),
        "{body}"
    );

    // The catalog needs a token too; the health check (load balancers) and the metrics
    // (scrapers; counts, no rows) do not.
    let tables = client
        .get(format!("http://{}/v1/tables", running.http))
        .send()
        .await
        .unwrap();
    assert_eq!(tables.status(), StatusCode::UNAUTHORIZED);
    for open in ["healthz", "metrics"] {
        let answer = client
            .get(format!("http://{}/{open}", running.http))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{open}");
    }

    let response = sql(Some(&all), domains).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let every: Value = response.json().await.unwrap();
    assert!(every.as_array().unwrap().len() >= 2, "{every}");

    let response = sql(Some(&limited), domains).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!([{ "policy_domain": "company-y.example" }])
    );
    let response = sql(Some(&limited), "SELECT count(*) AS n FROM reports")
        .send()
        .await
        .unwrap();
    assert_eq!(response.json::<Value>().await.unwrap(), json!([{ "n": 1 }]));
    running.stop().await;
}

#[tokio::test]
async fn flight_requires_a_known_token_and_applies_its_domains() {
    use arrow_flight::sql::client::FlightSqlServiceClient;

    let (access, all, limited) = tokens();
    let root = Root::with_corpus();
    let running = Running::start(SqlService {
        engine: root.engine(),
        access,
        tls: None,
    })
    .await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", running.flight))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let domains = "SELECT DISTINCT policy_domain FROM failures ORDER BY 1";

    let mut anonymous = FlightSqlServiceClient::new(channel.clone());
    let refused = anonymous
        .execute(domains.to_owned(), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("valid authentication credentials") && refused.contains("bearer token"),
        "{refused}"
    );
    let catalogs = anonymous.get_catalogs().await.unwrap_err().to_string();
    assert!(catalogs.contains("requires a bearer token"), "{catalogs}");

    let mut wrong = FlightSqlServiceClient::new(channel.clone());
    wrong.set_token("tlsrpt_guess".to_owned());
    let refused = wrong
        .execute(domains.to_owned(), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("not known"), "{refused}");

    // A user name and the token as password, as JDBC and ADBC send them: the handshake
    // answers with the bearer token, which the client then sends.
    let mut analyst = FlightSqlServiceClient::new(channel.clone());
    analyst.handshake("dbeaver", &all).await.unwrap();
    let every = first_column(&mut analyst, domains).await;
    assert!(every.len() >= 2, "{every:?}");

    let mut customer = FlightSqlServiceClient::new(channel.clone());
    customer.set_token(limited.clone());
    assert_eq!(
        first_column(&mut customer, domains).await,
        ["company-y.example"]
    );
    // A statement prepared with one token cannot be run with another.
    let mut prepared = analyst.prepare(domains.to_owned(), None).await.unwrap();
    let info = prepared.execute().await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let refused = match customer.do_get(ticket.clone()).await {
        Ok(_) => panic!("another token's prepared statement ran"),
        Err(error) => error.to_string(),
    };
    assert!(refused.contains("no such prepared statement"), "{refused}");
    assert!(analyst.do_get(ticket).await.is_ok());
    prepared.close().await.unwrap();
    running.stop().await;
}

/// The values of the first column of `sql`'s result, as text.
async fn first_column(
    client: &mut arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>,
    sql: &str,
) -> Vec<String> {
    use futures::TryStreamExt;
    let info = client.execute(sql.to_owned(), None).await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let batches: Vec<arrow::array::RecordBatch> = client
        .do_get(ticket)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let options = arrow::util::display::FormatOptions::default();
    let mut values = Vec::new();
    for batch in batches {
        let formatter =
            arrow::util::display::ArrayFormatter::try_new(batch.column(0), &options).unwrap();
        for row in 0..batch.num_rows() {
            values.push(formatter.value(row).to_string());
        }
    }
    values
}

/// The ADBC Flight SQL driver (a real client) over TLS with tokens: trusted with the CA
/// given, a token as header or as password, a limited token, no token, a wrong one.
#[tokio::test]
async fn a_real_flight_sql_client_connects_over_tls_with_a_token() {
    let python = crate::flight::client_python();
    let dir = tempfile::tempdir().unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let (access, all, limited) = tokens();
    let root = Root::with_corpus();
    let running = Running::start(SqlService {
        engine: root.engine(),
        access,
        tls: Some(tlsrpt_query::SqlTls::load(&cert, &key).unwrap()),
    })
    .await;
    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/flight_sql_tls.py");
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        tokio::process::Command::new(python)
            .arg(&client)
            .arg(format!("grpc+tls://{}", running.flight))
            .arg(&cert)
            .arg(&all)
            .arg(&limited)
            .output(),
    )
    .await
    .expect("the client session ends within two minutes")
    .unwrap();
    running.stop().await;
    assert!(
        output.status.success(),
        "the ADBC client failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap();
    let every = seen["header"]
        .as_array()
        .unwrap_or_else(|| panic!("{seen}"));
    assert!(every.len() >= 2, "{seen}");
    assert_eq!(seen["password"], seen["header"], "{seen}");
    assert_eq!(seen["limited"], json!(["company-y.example"]));
    for refused in ["no_token", "wrong_token"] {
        let error = seen[refused]["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{seen}"));
        assert!(
            error.to_lowercase().contains("unauthenticated"),
            "{refused}: {error}"
        );
    }
    assert!(seen["untrusted"]["error"].is_string(), "{seen}");
}

/// The domain filter reaches the Parquet scan, where row-group statistics and the bloom
/// filters on `policy_domain` skip other domains' data instead of reading and dropping it.
#[tokio::test]
async fn the_domain_filter_is_pushed_into_the_parquet_scan() {
    let root = Root::with_corpus();
    let engine = root.engine();
    let scope = domains(&["company-y.example"]);
    for table in ["failures", "policies", "failure_trend_by_domain"] {
        let plan = rows_in(&engine, &scope, &format!("EXPLAIN SELECT * FROM {table}"))
            .await
            .join("\n");
        let scan = plan
            .lines()
            .find(|line| line.contains("DataSourceExec") && line.contains("parquet"))
            .unwrap_or_else(|| panic!("{table}: no Parquet scan in\n{plan}"));
        assert!(
            scan.contains("predicate=policy_domain@") && scan.contains("company-y.example"),
            "{table}: the scan does not filter by domain:\n{plan}"
        );
    }
}
