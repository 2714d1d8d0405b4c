//! The tables in an S3-compatible object store: `s3://bucket/prefix` answers as the same
//! files on disk do. The store is moto's S3 server, started per test on a loopback port by
//! `scripts/s3-server.sh` (which the test command installs); without it the test fails and
//! says how to get it.

use std::path::Path;
use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use tlsrpt_query::test_store::S3Server;
use tlsrpt_query::{QueryEngine, QueryOptions, TablesLocation};

use crate::support::{GOOGLE, MAIL_RU, RFC, Root, range, report, rows, write, write_named};

fn store(location: &TablesLocation) -> Arc<dyn ObjectStore> {
    match location {
        TablesLocation::Object { store, .. } => Arc::clone(store),
        TablesLocation::Local(_) => unreachable!("an s3:// location"),
    }
}

/// Copies every file under `dir` to `prefix/<relative path>` in the store.
async fn upload(store: &dyn ObjectStore, root: &Path, dir: &Path, prefix: &str) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            Box::pin(upload(store, root, &path, prefix)).await;
            continue;
        }
        let relative = path.strip_prefix(root).unwrap().to_str().unwrap();
        let key = ObjectPath::from(format!("{prefix}/{relative}"));
        let bytes = std::fs::read(&path).unwrap();
        store.put(&key, PutPayload::from(bytes)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_in_an_object_store_answer_as_the_same_files_on_disk() {
    let server = S3Server::start();
    let location = server.location("deployment/tables");
    let store = store(&location);

    // The layout with everything a reader must skip: a merged file and the inputs it
    // supersedes, a temporary file and a staging name.
    let root = Root::with_corpus();
    let a = report(RFC, Some("a"));
    let b = report(RFC, Some("b"));
    write(&root.path, range(2, 0, 0), std::slice::from_ref(&a));
    write(&root.path, range(2, 1, 1), std::slice::from_ref(&b));
    write(&root.path, range(2, 0, 1), &[a, b]);
    let temporary = format!(".tmp-{}", range(2, 2, 2).file_name());
    write_named(&root.path, &temporary, &[report(GOOGLE, Some("tmp"))]);
    write_named(
        &root.path,
        &format!("_{}", range(2, 3, 3).file_name()),
        &[report(GOOGLE, Some("staged"))],
    );
    upload(store.as_ref(), &root.path, &root.path, "deployment/tables").await;

    let local = root.engine();
    let remote = Arc::new(QueryEngine::at(location, QueryOptions::default()).unwrap());
    for sql in [
        "SELECT count(*), count(DISTINCT report_id) FROM reports",
        "SELECT policy_domain, result_type, sum(failed_session_count) AS n FROM failures \
         GROUP BY 1, 2 ORDER BY 1, 2",
        "SELECT date, count(*) FROM policies WHERE date >= DATE '2024-01-01' GROUP BY 1 ORDER BY 1",
        "SELECT organization_name, report_id FROM reports ORDER BY 2",
        // The views, cached by date and month over the objects' listings.
        "SELECT * FROM failure_trend_by_domain ORDER BY 1, 2",
        "SELECT * FROM report_delivery ORDER BY 1, 2",
        "SELECT * FROM policy_overview ORDER BY 1, 2",
    ] {
        let expected = rows(&local, sql).await;
        assert!(!expected.is_empty(), "{sql}");
        assert_eq!(rows(&remote, sql).await, expected, "{sql}");
    }
    assert_eq!(
        rows(&remote, "SELECT count(*) FROM reports").await,
        ["5"],
        "three corpus reports and the merged two, nothing twice"
    );

    // An object put after the engine started is seen by the next query.
    let later = Root::new();
    write(
        &later.path,
        range(3, 0, 0),
        &[report(MAIL_RU, Some("later"))],
    );
    upload(
        store.as_ref(),
        &later.path,
        &later.path,
        "deployment/tables",
    )
    .await;
    assert_eq!(rows(&remote, "SELECT count(*) FROM reports").await, ["6"]);

    // An empty prefix is an empty deployment, not an error.
    let empty = QueryEngine::at(server.location("nothing/here"), QueryOptions::default()).unwrap();
    assert_eq!(rows(&empty, "SELECT count(*) FROM failures").await, ["0"]);
}

#[test]
fn store_urls_are_read_or_refused_by_name() {
    assert!(matches!(
        TablesLocation::parse("/var/lib/tlsrpt/tables"),
        Ok(TablesLocation::Local(p)) if p == Path::new("/var/lib/tlsrpt/tables")
    ));
    assert!(matches!(
        TablesLocation::parse("file:///srv/tables"),
        Ok(TablesLocation::Local(p)) if p == Path::new("/srv/tables")
    ));
    let err = TablesLocation::parse("gs://bucket/tables").unwrap_err();
    assert!(err.contains("gs://"), "{err}");
    let err = TablesLocation::parse("s3:///tables").unwrap_err();
    assert!(err.contains("bucket"), "{err}");
    let s3 =
        TablesLocation::parse_with("s3://bucket/a/b/", &[("aws_region", "eu-west-1")]).unwrap();
    assert_eq!(s3.describe(), "s3://bucket/a/b");
}
