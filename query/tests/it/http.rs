//! `POST /v1/sql` over a real socket: formats by `Accept`, status codes by error.

use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::{DataType, Int64Type};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tlsrpt_query::{QueryEngine, QueryOptions};

use crate::support::{Root, Running};

struct Server {
    address: SocketAddr,
    client: reqwest::Client,
    running: Running,
}

impl Server {
    async fn start(engine: Arc<QueryEngine>) -> Self {
        let running = Running::open(engine).await;
        Self {
            address: running.http,
            client: reqwest::Client::new(),
            running,
        }
    }

    fn post(&self, sql: &str, accept: Option<&str>) -> reqwest::RequestBuilder {
        let request = self
            .client
            .post(format!("http://{}/v1/sql", self.address))
            .body(sql.to_owned());
        match accept {
            Some(accept) => request.header("accept", accept),
            None => request,
        }
    }

    async fn json(&self, sql: &str) -> (StatusCode, Value) {
        let response = self
            .post(sql, Some("application/json"))
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    /// Stops accepting and waits for the server task to end.
    async fn stop(self) {
        self.running.stop().await;
    }
}

/// Asserts a 200 whose `Content-Type` starts with `media_type`.
fn assert_ok_of_type(response: &reqwest::Response, media_type: &str) {
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(content_type.starts_with(media_type), "{content_type}");
}

#[tokio::test]
async fn json_rows_are_objects_with_readable_values() {
    let root = Root::with_corpus();
    let server = Server::start(root.engine()).await;
    let sql = "SELECT report_id, organization_name, start_datetime, date, warnings, dkim, \
               total_failure_session_count FROM reports ORDER BY date";
    // No Accept header: JSON.
    let response = server.post(sql, None).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let rows: Value = response.json().await.unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows[0],
        json!({
            "report_id": "5065427c-23d3-47ca-b6e0-946ea0e8c4be",
            "organization_name": "Company-X",
            "start_datetime": "2016-04-01T00:00:00Z",
            "date": "2016-04-01",
            "warnings": ["mx_host_string"],
            "dkim": null,
            "total_failure_session_count": 303,
        })
    );
    assert_eq!(rows[1]["organization_name"], "Mail.ru");

    // The JSON request form, and */*.
    let response = server
        .client
        .post(format!("http://{}/v1/sql", server.address))
        .header("content-type", "application/json")
        .header("accept", "*/*")
        .body(json!({ "sql": "SELECT count(*) AS n FROM failures" }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap(), json!([{ "n": 5 }]));

    let (status, empty) = server.json("SELECT * FROM failures WHERE false").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(empty, json!([]));
    server.stop().await;
}

#[tokio::test]
async fn csv_has_a_header_line() {
    let root = Root::with_corpus();
    let server = Server::start(root.engine()).await;
    let response = server
        .post(
            "SELECT policy_domain, result_type, sum(failed_session_count) AS sessions \
             FROM failures GROUP BY 1, 2 ORDER BY 1, 2",
            Some("text/csv"),
        )
        .send()
        .await
        .unwrap();
    assert_ok_of_type(&response, "text/csv");
    assert_eq!(
        response.text().await.unwrap(),
        "policy_domain,result_type,sessions\n\
         company-y.example,certificate-expired,100\n\
         company-y.example,starttls-not-supported,200\n\
         company-y.example,validation-failure,3\n\
         example.com,sts-policy-fetch-error,2\n"
    );

    // Lists as text, timestamps in RFC 3339; the header even without rows.
    let text = server
        .post(
            "SELECT policy_domain, mx_host, start_datetime FROM policies WHERE date = '2016-04-01'",
            Some("text/csv"),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        text,
        "policy_domain,mx_host,start_datetime\n\
         company-y.example,[*.mail.company-y.example],2016-04-01T00:00:00Z\n"
    );
    let text = server
        .post(
            "SELECT report_id, warnings FROM reports WHERE false",
            Some("text/csv"),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text, "report_id,warnings\n");
    server.stop().await;
}

#[tokio::test]
async fn arrow_streams_keep_the_types() {
    let root = Root::with_corpus();
    let server = Server::start(root.engine()).await;
    let response = server
        .post(
            "SELECT organization_name, date, total_failure_session_count FROM reports ORDER BY date",
            Some("application/vnd.apache.arrow.stream"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/vnd.apache.arrow.stream"
    );
    let bytes = response.bytes().await.unwrap();
    let reader = arrow::ipc::reader::StreamReader::try_new(Cursor::new(bytes), None).unwrap();
    let schema = reader.schema();
    assert_eq!(
        schema.field(0).data_type(),
        &DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
    );
    assert_eq!(schema.field(1).data_type(), &DataType::Date32);
    let batches: Vec<_> = reader.map(Result::unwrap).collect();
    let failures: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(2).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert_eq!(failures, [303, 1, 0]);
    server.stop().await;
}

#[tokio::test]
async fn plain_text_is_a_table_and_unknown_formats_are_not_acceptable() {
    let root = Root::with_corpus();
    let server = Server::start(root.engine()).await;
    let response = server
        .post(
            "SELECT count(*) AS reports FROM reports",
            Some("text/plain"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.text().await.unwrap(),
        "+---------+\n| reports |\n+---------+\n| 3       |\n+---------+\n"
    );
    let response = server
        .post("SELECT 1", Some("image/png"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_ACCEPTABLE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "not_acceptable");

    let health = server
        .client
        .get(format!("http://{}/healthz", server.address))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn the_tables_and_their_columns_are_listed() {
    let root = Root::with_corpus();
    let server = Server::start(root.engine()).await;
    let response = server
        .client
        .get(format!("http://{}/v1/tables", server.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let tables = body["tables"].as_array().unwrap();
    let of_type = |kind: &str| -> Vec<&str> {
        tables
            .iter()
            .filter(|t| t["type"] == kind)
            .map(|t| t["name"].as_str().unwrap())
            .collect()
    };
    assert_eq!(
        of_type("TABLE"),
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
    let views: Vec<&str> = tlsrpt_query::views::VIEWS.iter().map(|v| v.name).collect();
    let mut sorted_views = views.clone();
    sorted_views.sort();
    assert_eq!(of_type("VIEW"), sorted_views);
    let failures = tables.iter().find(|t| t["name"] == "failures").unwrap();
    let column = |name: &str| {
        failures["columns"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no column {name} in {failures}"))
            .clone()
    };
    assert_eq!(column("failed_session_count")["type"], "Int64");
    assert_eq!(column("date")["type"], "Date32");
    // A dictionary column is listed as the strings it is answered as.
    assert_eq!(column("result_type")["type"], "Utf8");
    assert_eq!(column("policy_domain")["nullable"], true);
    server.stop().await;
}

#[tokio::test]
async fn refusals_and_errors_have_status_codes_and_the_service_keeps_answering() {
    let root = Root::with_corpus();
    let server = Server::start(root.engine_with(QueryOptions {
        max_rows: 2,
        ..QueryOptions::default()
    }))
    .await;
    for (sql, status, code) in [
        ("DROP TABLE reports", StatusCode::BAD_REQUEST, "read_only"),
        (
            "INSERT INTO failures SELECT * FROM failures",
            StatusCode::BAD_REQUEST,
            "read_only",
        ),
        (
            "COPY (SELECT 1) TO '/tmp/tlsrpt-query-test.csv'",
            StatusCode::BAD_REQUEST,
            "read_only",
        ),
        (
            "SET datafusion.execution.batch_size = 1",
            StatusCode::BAD_REQUEST,
            "read_only",
        ),
        ("SELECT FROM WHERE", StatusCode::BAD_REQUEST, "invalid"),
        ("SELECT * FROM nowhere", StatusCode::BAD_REQUEST, "invalid"),
        (
            "SELECT * FROM failures",
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_many_rows",
        ),
    ] {
        let (answer, body) = server.json(sql).await;
        assert_eq!(answer, status, "{sql}: {body}");
        assert_eq!(body["code"], code, "{sql}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
        let (answer, body) = server.json("SELECT count(*) AS n FROM reports").await;
        assert_eq!(answer, StatusCode::OK);
        assert_eq!(body, json!([{ "n": 3 }]));
    }
    let (_, body) = server.json("DROP TABLE reports").await;
    assert!(
        body["error"].as_str().unwrap().contains("read-only"),
        "{body}"
    );

    let response = server
        .client
        .post(format!("http://{}/v1/sql", server.address))
        .header("content-type", "application/json")
        .body("{\"query\": \"SELECT 1\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = server
        .post(&"x".repeat(tlsrpt_query::http::MAX_SQL_BYTES + 1), None)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    server.stop().await;
}

#[tokio::test]
async fn a_timeout_is_service_unavailable() {
    let root = Root::new();
    let server = Server::start(root.engine_with(QueryOptions {
        timeout: std::time::Duration::from_millis(200),
        ..QueryOptions::default()
    }))
    .await;
    let (status, body) = server
        .json("SELECT sum(value) FROM generate_series(1, 10000000000)")
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "timeout");
    server.stop().await;
}

/// The value of the metric line `series` (name and labels) on the page `text`.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{series} missing in\n{text}"))
}

/// `GET /metrics` counts the clients' statements by outcome (not warming's), how long they
/// took, the view cache's contents and lookups, and the warming rounds.
#[tokio::test]
async fn metrics_count_statements_the_view_cache_and_warming() {
    let root = Root::with_corpus();
    // The service's own warming is off, so that every count below is known; a round is asked
    // for directly instead.
    let engine = root.engine_with(QueryOptions {
        view_warm_days: 0,
        view_warm_every: None,
        ..QueryOptions::default()
    });
    let warmed = engine.warm_views(100_000).await.unwrap();
    assert!(warmed.failed.is_empty(), "{warmed:?}");
    let server = Server::start(Arc::clone(&engine)).await;
    let page = || async {
        let response = server
            .client
            .get(format!("http://{}/metrics", server.address))
            .send()
            .await
            .unwrap();
        assert_ok_of_type(&response, "text/plain; version=0.0.4");
        response.text().await.unwrap()
    };

    let before = page().await;
    assert_eq!(
        metric(&before, "tlsrpt_query_statements_total{outcome=\"ok\"}"),
        0.0
    );
    assert_eq!(
        metric(
            &before,
            "tlsrpt_query_view_warm_rounds_total{outcome=\"done\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&before, "tlsrpt_query_view_warm_view_failures_total"),
        0.0
    );
    assert!(metric(&before, "tlsrpt_query_view_warm_last_round_seconds") > 0.0);
    assert!(metric(&before, "tlsrpt_query_view_cache_entries") > 0.0);
    assert!(metric(&before, "tlsrpt_query_view_cache_bytes") > 0.0);
    // Each view's memory is listed, and they add up to the whole.
    let by_view: Vec<f64> = tlsrpt_query::views::VIEWS
        .iter()
        .map(|view| {
            metric(
                &before,
                &format!(
                    "tlsrpt_query_view_cache_view_bytes{{view=\"{}\"}}",
                    view.name
                ),
            )
        })
        .collect();
    assert!(by_view.iter().all(|bytes| *bytes > 0.0), "{by_view:?}");
    assert_eq!(
        by_view.iter().sum::<f64>(),
        metric(&before, "tlsrpt_query_view_cache_bytes")
    );
    let hits_before = metric(
        &before,
        "tlsrpt_query_view_cache_lookups_total{result=\"hit\"}",
    );

    let (status, _) = server.json("SELECT count(*) AS n FROM reports").await;
    assert_eq!(status, StatusCode::OK);
    // Every date of the corpus was warmed: answered from memory.
    let (status, _) = server
        .json("SELECT count(*) AS n FROM failure_trend_by_mx")
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server.json("DROP TABLE reports").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let after = page().await;
    assert_eq!(
        metric(&after, "tlsrpt_query_statements_total{outcome=\"ok\"}"),
        2.0
    );
    assert_eq!(
        metric(
            &after,
            "tlsrpt_query_statements_total{outcome=\"read_only\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&after, "tlsrpt_query_statements_total{outcome=\"timeout\"}"),
        0.0
    );
    assert_eq!(
        metric(&after, "tlsrpt_query_statement_duration_seconds_count"),
        3.0
    );
    assert_eq!(
        metric(
            &after,
            "tlsrpt_query_statement_duration_seconds_bucket{le=\"+Inf\"}"
        ),
        3.0
    );
    assert!(
        metric(
            &after,
            "tlsrpt_query_view_cache_lookups_total{result=\"hit\"}"
        ) > hits_before,
        "{after}"
    );
    assert_eq!(metric(&after, "tlsrpt_query_statements_running"), 0.0);
    assert_eq!(metric(&after, "tlsrpt_query_statements_waiting"), 0.0);
    assert_eq!(
        metric(&after, "tlsrpt_query_turns"),
        QueryOptions::default().max_concurrent as f64
    );
    server.stop().await;
}
