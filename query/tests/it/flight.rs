//! Arrow Flight SQL over a real socket, with a real client: the ADBC Flight SQL driver from
//! PyPI (`scripts/flight-client.sh`, which the test command installs), run as its own
//! process against the service on port 0.

use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use tlsrpt_query::QueryEngine;

use crate::support::{Root, Running};

/// The client virtualenv's python, or a failure that says how to install it.
pub(crate) fn client_python() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/flight-client.sh");
    let output = std::process::Command::new("bash")
        .arg(&script)
        .arg("python")
        .output()
        .expect("bash runs scripts/flight-client.sh");
    assert!(
        output.status.success(),
        "the Flight SQL client (ADBC driver, pyarrow) is not installed: run \
         `scripts/flight-client.sh install` (the test command does) and try again\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Serves `engine` over Flight SQL on port 0, runs the ADBC client session against it, and
/// returns what the client printed.
async fn adbc_session(engine: Arc<QueryEngine>) -> Value {
    let python = client_python();
    let running = Running::open(engine).await;
    let address = running.flight;
    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/flight_sql_adbc.py");
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        tokio::process::Command::new(python)
            .arg(&client)
            .arg(format!("grpc://{address}"))
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
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "the client printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adbc_client_lists_the_tables_and_runs_queries_with_parameters() {
    let root = Root::with_corpus();
    let seen = adbc_session(root.engine()).await;

    // Introspection: the three tables, in catalog `datafusion`, schema `public`, with their
    // columns; dictionary columns are announced as the strings they arrive as.
    let tables = &seen["tables"];
    for table in ["reports", "policies", "failures"] {
        let entry = &tables[format!("datafusion.public.{table}")];
        assert_eq!(entry["type"], "TABLE", "{table}: {entry}");
        assert!(
            entry["columns"]
                .as_array()
                .is_some_and(|c| c.contains(&json!("report_uid"))),
            "{table}: {entry}"
        );
    }
    let failure_columns: Vec<&str> = tables["datafusion.public.failures"]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(failure_columns.contains(&"receiving_mx_hostname"));
    assert!(failure_columns.contains(&"failed_session_count"));
    assert_eq!(seen["failures_schema"]["failed_session_count"], "int64");
    assert_eq!(seen["failures_schema"]["result_type"], "string");
    assert_eq!(seen["failures_schema"]["date"], "date32[day]");

    // A bound parameter selects one domain's failures (RFC 8460's example: 100 + 200 + 3).
    assert_eq!(
        seen["bound"]["rows"],
        json!([
            {"policy_domain": "company-y.example", "result_type": "certificate-expired", "failed": 100},
            {"policy_domain": "company-y.example", "result_type": "starttls-not-supported", "failed": 200},
            {"policy_domain": "company-y.example", "result_type": "validation-failure", "failed": 3},
        ])
    );
    assert_eq!(seen["bound"]["columns"]["result_type"], "string");
    // Bound again with another value: mail.ru's two fetch errors for example.com.
    assert_eq!(
        seen["rebound"],
        json!([{"policy_domain": "example.com", "result_type": "sts-policy-fetch-error", "failed": 2}])
    );
    // `$1` with a number: the details of 100 and 200 failed sessions.
    assert_eq!(seen["numbered"], json!([{"n": 2}]));
    assert_eq!(seen["plain"], json!([{"n": 3}]));

    // A write is refused with the service's own words, and the next query is answered.
    let refused = seen["refused"]
        .as_str()
        .expect("the CREATE TABLE was refused");
    assert!(refused.contains("read-only"), "{refused}");
    assert_eq!(seen["after_refusal"], json!([{"one": 1}]));
}

/// Serves `engine` over Flight SQL on port 0; the client connected to it, the stop signal
/// and the server task.
async fn rust_client(
    engine: Arc<QueryEngine>,
) -> (
    arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>,
    Running,
) {
    let running = Running::open(engine).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", running.flight))
        .unwrap()
        .connect()
        .await
        .unwrap();
    (
        arrow_flight::sql::client::FlightSqlServiceClient::new(channel),
        running,
    )
}

/// Runs `sql` through the client: flight info, then the data of its one endpoint.
async fn run(
    client: &mut arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>,
    sql: &str,
) -> Result<Vec<arrow::array::RecordBatch>, String> {
    use futures::TryStreamExt;
    let info = client
        .execute(sql.to_owned(), None)
        .await
        .map_err(|e| e.to_string())?;
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    client
        .do_get(ticket)
        .await
        .map_err(|e| e.to_string())?
        .try_collect()
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn limits_and_refusals_have_clear_messages_and_the_service_keeps_answering() {
    let root = Root::with_corpus();
    let (mut client, running) = rust_client(root.engine_with(tlsrpt_query::QueryOptions {
        timeout: std::time::Duration::from_millis(300),
        max_rows: 2,
        ..tlsrpt_query::QueryOptions::default()
    }))
    .await;

    let slow = run(
        &mut client,
        "SELECT sum(value) FROM generate_series(1, 10000000000)",
    )
    .await
    .unwrap_err();
    assert!(
        slow.contains("Deadline expired") && slow.contains("did not finish within 0.3 s"),
        "{slow}"
    );
    let large = run(&mut client, "SELECT * FROM failures")
        .await
        .unwrap_err();
    assert!(
        large.contains("more than 2 rows") && large.contains("add a LIMIT"),
        "{large}"
    );
    let write = run(&mut client, "INSERT INTO reports SELECT * FROM reports")
        .await
        .unwrap_err();
    assert!(
        write.contains("permission") && write.contains("read-only: INSERT INTO"),
        "{write}"
    );
    let unknown = run(&mut client, "SELECT * FROM nothing").await.unwrap_err();
    assert!(
        unknown.contains("invalid argument") && unknown.contains("nothing"),
        "{unknown}"
    );

    // Still answering, with dictionaries expanded to the strings the flight info announced.
    let batches = run(
        &mut client,
        "SELECT organization_name FROM reports ORDER BY organization_name LIMIT 1",
    )
    .await
    .unwrap();
    assert_eq!(
        batches[0].schema().field(0).data_type(),
        &arrow::datatypes::DataType::Utf8
    );
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);

    running.stop().await;
}
