//! A local S3-compatible server for tests (moto's, through `scripts/s3-server.sh`, which
//! the test command installs): for this crate's tests and the binary's end-to-end tests. Not
//! for production use.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::TablesLocation;

/// A moto S3 server with the bucket `tlsrpt`, stopped when dropped.
#[derive(Debug)]
pub struct S3Server {
    dir: tempfile::TempDir,
    endpoint: String,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/s3-server.sh")
}

impl S3Server {
    /// Starts a server with the bucket `tlsrpt` on a free loopback port; panics, saying how
    /// to install it, when it cannot.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(dir.path())
            .output()
            .expect("bash runs scripts/s3-server.sh");
        assert!(
            output.status.success(),
            "the S3 tests need a local S3 server and could not start one: {}\nrun \
             `scripts/s3-server.sh install` (the test command does) and try again",
            String::from_utf8_lossy(&output.stderr)
        );
        let endpoint = std::fs::read_to_string(dir.path().join("endpoint"))
            .unwrap()
            .trim()
            .to_owned();
        Self { dir, endpoint }
    }

    /// `s3://tlsrpt/<prefix>` on this server.
    pub fn location(&self, prefix: &str) -> TablesLocation {
        TablesLocation::parse_with(
            &format!("s3://tlsrpt/{prefix}"),
            &[
                ("aws_endpoint", &self.endpoint),
                ("aws_allow_http", "true"),
                ("aws_access_key_id", "test"),
                ("aws_secret_access_key", "test"),
                ("aws_region", "us-east-1"),
            ],
        )
        .unwrap()
    }

    /// The `AWS_*` environment a `tlsrpt` process needs to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
            ("AWS_ACCESS_KEY_ID", "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}
