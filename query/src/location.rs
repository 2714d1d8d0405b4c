//! Where the tables are: a local directory, or an S3-compatible object store.
//!
//! `s3://bucket/prefix` is read through the `object_store` crate with the usual AWS
//! environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, and for an
//! S3-compatible store `AWS_ENDPOINT_URL` and `AWS_ALLOW_HTTP`); the layout under the prefix is
//! the one on disk (`tlsrpt_schemas::layout`).

use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;

/// Where the three tables live.
#[derive(Clone)]
pub enum TablesLocation {
    /// A directory (`DATA_DIR/tables`).
    Local(PathBuf),
    /// A prefix in an object store.
    Object {
        store: Arc<dyn ObjectStore>,
        /// The store's URL without the prefix (`s3://bucket`): DataFusion finds the store
        /// by it.
        base: url::Url,
        /// The prefix the tables are under (`tables` in `s3://bucket/tables`); may be empty.
        prefix: ObjectPath,
    },
}

impl std::fmt::Debug for TablesLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl TablesLocation {
    /// Reads `--store`: a path, a `file://` URL, or `s3://bucket/prefix` (configured from the
    /// `AWS_*` environment).
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::parse_with(text, &[])
    }

    /// As [`parse`](Self::parse), with S3 settings that win over the environment: names as
    /// `object_store` spells them (`aws_endpoint`, `aws_allow_http`, `aws_access_key_id`,
    /// ...). For tests and for settings files.
    pub fn parse_with(text: &str, s3_options: &[(&str, &str)]) -> Result<Self, String> {
        let text = text.trim();
        if let Some(path) = text.strip_prefix("file://") {
            return Ok(Self::Local(PathBuf::from(path)));
        }
        let Some((scheme, rest)) = text.split_once("://") else {
            return Ok(Self::Local(PathBuf::from(text)));
        };
        if scheme != "s3" {
            return Err(format!(
                "{text}: {scheme}:// stores are not supported; give a directory or s3://bucket/prefix"
            ));
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("{text}: no bucket (s3://bucket/prefix)"));
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        for (key, value) in s3_options {
            let key: AmazonS3ConfigKey = key
                .parse()
                .map_err(|e| format!("unknown S3 setting {key}: {e}"))?;
            builder = builder.with_config(key, *value);
        }
        let store = builder
            .build()
            .map_err(|e| format!("cannot use the object store {text}: {e}"))?;
        let base = url::Url::parse(&format!("s3://{bucket}"))
            .map_err(|e| format!("{text}: not a URL: {e}"))?;
        Ok(Self::Object {
            store: Arc::new(store),
            base,
            prefix: ObjectPath::from(prefix.trim_matches('/')),
        })
    }

    /// The location as a user wrote it (no credentials).
    pub fn describe(&self) -> String {
        match self {
            Self::Local(path) => path.display().to_string(),
            Self::Object { base, prefix, .. } => {
                format!("{}/{prefix}", base.as_str().trim_end_matches('/'))
            }
        }
    }
}
