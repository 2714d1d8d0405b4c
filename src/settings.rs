//! The settings of `tlsrpt up`, `ingest`, `transform` and `query`: flags, their `TLSRPT_*` environment twins, a TOML file, and
//! the defaults, merged in that order of precedence (flag or variable, then file, then
//! default).
//!
//! Each setting is written once, in [`Settings`]: clap reads it from the command line and
//! the environment, serde from the file (same names, kebab-case), so the three cannot drift.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// What `--dkim` asks of mailed reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum DkimMode {
    /// Verify and record the outcome in `reports.dkim`; keep the report whatever it says.
    Record,
    /// Refuse mail whose DKIM signature is missing or does not verify (RFC 8460 §3).
    Enforce,
}

/// Where the SQL service listens over HTTP unless told otherwise.
const DEFAULT_QUERY_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8461);

/// Where the Arrow Flight SQL service listens unless told otherwise (the HTTP SQL port + 1).
const DEFAULT_FLIGHT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8462);

/// The settings of `tlsrpt up`, each optional so that an unset flag lets the file or the
/// default speak.
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct Settings {
    /// Where the embedded log, the Parquet tables and the refused inputs live
    /// [default: ./tlsrpt-data].
    #[arg(long, env = "TLSRPT_DATA_DIR", value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,

    /// Address of the SQL service (`POST /v1/sql`, `GET /healthz`, `GET /metrics`) [default:
    /// 127.0.0.1:8461].
    #[arg(long, env = "TLSRPT_QUERY_LISTEN", value_name = "ADDR")]
    pub(crate) query_listen: Option<SocketAddr>,

    #[command(flatten)]
    #[serde(flatten)]
    pub(crate) sql: SqlSettings,

    /// How often the transformer writes what it has to Parquet, which bounds how soon a
    /// report is visible to SQL (e.g. `1s`, `500ms`) [default: 1s].
    #[arg(long, env = "TLSRPT_FLUSH_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration_from_text")]
    pub(crate) flush_interval: Option<Duration>,

    /// Small Parquet files of one table, date and partition that are merged into one
    /// [default: 8].
    #[arg(long, env = "TLSRPT_COMPACT_MIN_FILES", value_name = "N")]
    pub(crate) compact_min_files: Option<usize>,

    /// Partitions of a new embedded log [default: 1]. Without this flag an existing log keeps its
    /// own count; with it, a log with another count is refused.
    #[arg(long, env = "TLSRPT_PARTITIONS", value_name = "N")]
    pub(crate) partitions: Option<u32>,

    /// Run on Kafka instead of the embedded log: the receivers publish to these bootstrap
    /// brokers, `host:port[,host:port...]`, and the transformer consumes as a member of
    /// --group, writing DIR/tables, which SQL reads. The embedded log is not opened, so the
    /// local socket through which `tlsrpt import` reaches a running `up` is not served:
    /// backfill with `tlsrpt import --kafka` instead [default: none, the embedded log in
    /// DIR/bus].
    #[arg(long, env = "TLSRPT_KAFKA", value_name = "BROKERS")]
    pub(crate) kafka: Option<String>,

    /// With --kafka: the topic reports go to and are read from [default: tlsrpt.reports].
    #[arg(long, env = "TLSRPT_TOPIC", value_name = "NAME")]
    pub(crate) topic: Option<String>,

    /// With --kafka: where messages that cannot become rows go, with the reason in a header
    /// [default: tlsrpt.reports.dlq].
    #[arg(long, env = "TLSRPT_DLQ_TOPIC", value_name = "NAME")]
    pub(crate) dlq_topic: Option<String>,

    /// With --kafka: the transformer's consumer group, shared with any `tlsrpt transform` of
    /// the deployment [default: tlsrpt-transform].
    #[arg(long, env = "TLSRPT_GROUP", value_name = "NAME")]
    pub(crate) group: Option<String>,

    #[command(flatten)]
    #[serde(flatten)]
    pub(crate) receivers: ReceiverSettings,
}

/// The settings of `tlsrpt ingest`: the receivers, publishing to Kafka.
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct IngestSettings {
    /// Kafka bootstrap brokers the receivers publish to, `host:port[,host:port...]`
    /// (required).
    #[arg(long, env = "TLSRPT_KAFKA", value_name = "BROKERS")]
    pub(crate) kafka: Option<String>,

    /// The topic reports go to [default: tlsrpt.reports].
    #[arg(long, env = "TLSRPT_TOPIC", value_name = "NAME")]
    pub(crate) topic: Option<String>,

    /// How long a report may wait for the brokers' acknowledgement before its sender is told
    /// to try again later (HTTP 503, SMTP 451) (e.g. `10s`) [default: 10s].
    #[arg(long, env = "TLSRPT_DELIVERY_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration_from_text")]
    pub(crate) delivery_timeout: Option<Duration>,

    /// Where refused inputs are kept for `tlsrpt rejected list` and `replay`
    /// [default: ./tlsrpt-data].
    #[arg(long, env = "TLSRPT_DATA_DIR", value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,

    #[command(flatten)]
    #[serde(flatten)]
    pub(crate) receivers: ReceiverSettings,
}

/// The SQL services' settings beyond the HTTP address, shared by `tlsrpt up` and `tlsrpt
/// query`: the Flight SQL address and the limits every query runs within.
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct SqlSettings {
    /// Address of the Arrow Flight SQL service, for ADBC, JDBC (DBeaver) and pyarrow clients
    /// [default: 127.0.0.1:8462].
    #[arg(long, env = "TLSRPT_FLIGHT_LISTEN", value_name = "ADDR")]
    pub(crate) flight_listen: Option<SocketAddr>,

    /// How long a query may take, waiting for its turn included; a slower one is stopped
    /// with a message saying so (e.g. `30s`, `2m`) [default: 60s].
    #[arg(long, env = "TLSRPT_QUERY_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration_from_text")]
    pub(crate) query_timeout: Option<Duration>,

    /// The most rows a result may have; a query with more is refused (not cut short) with a
    /// message asking to aggregate, filter or add a LIMIT [default: 1000000].
    #[arg(long, env = "TLSRPT_MAX_RESULT_ROWS", value_name = "N")]
    pub(crate) max_result_rows: Option<usize>,

    /// Queries run at once; more wait for a turn within their timeout [default: 8].
    #[arg(long, env = "TLSRPT_MAX_CONCURRENT_QUERIES", value_name = "N")]
    pub(crate) max_concurrent_queries: Option<usize>,

    /// Memory the running queries may hold together (`512MiB`, `4GiB`, or `off`); sorts and
    /// aggregations spill to temporary files beyond it, other queries stop with a message
    /// saying so [default: 2GiB].
    #[arg(long, env = "TLSRPT_QUERY_MEMORY", value_name = "BYTES")]
    pub(crate) query_memory: Option<String>,

    /// Memory the per-day views may keep their answers in between queries, by date
    /// (`256MiB`, `4GiB`, or `off`): a dashboard asking again over months of data reads only
    /// the dates whose files changed since. Least recently used dates are dropped beyond it.
    /// Every view over all time of 100 million failure rows over 14 years took 1.12 GiB
    /// [default: 2GiB].
    #[arg(long, env = "TLSRPT_VIEW_CACHE_MEMORY", value_name = "BYTES")]
    pub(crate) view_cache_memory: Option<String>,

    /// How many of the latest dates with data the views are computed for in the background,
    /// when the service starts and again at --view-warm-every, so that the first dashboard
    /// is answered from that memory (`policy_overview` is computed whole; older dates too for
    /// the views that fit, see --view-warm-all-time); 0: none. A number at least the days of
    /// data held (100000) computes every date of every view, so that all-time questions are
    /// answered from memory, if --view-cache-memory holds them (every view over 14 years of
    /// 100 million failure rows took 1.12 GiB) [default: 92].
    #[arg(long, env = "TLSRPT_VIEW_WARM_DAYS", value_name = "N")]
    pub(crate) view_warm_days: Option<u32>,

    /// How often the views are computed again in the background, for the dates whose files
    /// changed since (e.g. `1m`), or `off` for only at start [default: 60s; 15m for tables in
    /// an object store, which bills each listing].
    #[arg(long, env = "TLSRPT_VIEW_WARM_EVERY", value_name = "DURATION")]
    pub(crate) view_warm_every: Option<String>,

    /// Whether warming also computes every older date of the per-day views whose answers over
    /// all time fit in three quarters of --view-cache-memory beside the latest dates (`fits`),
    /// smallest first, so that their all-time questions are answered from memory; the log
    /// names the views that did not fit, with their estimated size. `off`: the latest dates
    /// only [default: fits; off for tables in an object store, where it lists every date's
    /// prefix of each such view at every round].
    #[arg(long, env = "TLSRPT_VIEW_WARM_ALL_TIME", value_name = "fits|off")]
    pub(crate) view_warm_all_time: Option<String>,

    /// A TOML file of bearer tokens for the SQL services (HTTP and Flight SQL), kept as
    /// SHA-256 digests, each for every policy domain or only some; `tlsrpt token new` makes
    /// one. Without it anyone who can connect may query everything, which is allowed only
    /// when both SQL addresses are loopback addresses.
    #[arg(long, env = "TLSRPT_SQL_TOKENS", value_name = "FILE")]
    pub(crate) sql_tokens: Option<PathBuf>,

    /// PEM certificate chain for the SQL services; with --sql-tls-key both serve over TLS
    /// (HTTPS, and grpc+tls for Flight SQL).
    #[arg(
        long,
        env = "TLSRPT_SQL_TLS_CERT",
        value_name = "FILE",
        requires = "sql_tls_key"
    )]
    pub(crate) sql_tls_cert: Option<PathBuf>,

    /// PEM private key for --sql-tls-cert.
    #[arg(
        long,
        env = "TLSRPT_SQL_TLS_KEY",
        value_name = "FILE",
        requires = "sql_tls_cert"
    )]
    pub(crate) sql_tls_key: Option<PathBuf>,

    /// Run the anomaly jobs in this service, every `interval_minutes` (15) of the
    /// configuration's `[evaluation]`, with this alert configuration (TOML; see `tlsrpt
    /// alerts run` and "Alerts" in the README; an empty file is the defaults, alerting to the
    /// log). Tables in a local directory only. Without it, no alerts (run `tlsrpt alerts run`
    /// from cron instead).
    #[arg(long, env = "TLSRPT_ALERTS_CONFIG", value_name = "FILE")]
    pub(crate) alerts_config: Option<PathBuf>,
}

/// [`SqlSettings`] with every default applied.
#[derive(Debug, Clone)]
pub(crate) struct SqlResolved {
    pub(crate) flight_listen: SocketAddr,
    pub(crate) limits: tlsrpt_query::QueryOptions,
    pub(crate) access: tlsrpt_query::Access,
    pub(crate) tls: Option<tlsrpt_query::SqlTls>,
    /// The anomaly jobs' configuration, when they run in the service.
    pub(crate) alerts: Option<tlsrpt_alerts::AlertConfig>,
}

impl SqlSettings {
    /// `self` where set, else `file`.
    pub(crate) fn or(self, file: SqlSettings) -> SqlSettings {
        SqlSettings {
            flight_listen: self.flight_listen.or(file.flight_listen),
            query_timeout: self.query_timeout.or(file.query_timeout),
            max_result_rows: self.max_result_rows.or(file.max_result_rows),
            max_concurrent_queries: self.max_concurrent_queries.or(file.max_concurrent_queries),
            query_memory: self.query_memory.or(file.query_memory),
            view_cache_memory: self.view_cache_memory.or(file.view_cache_memory),
            view_warm_days: self.view_warm_days.or(file.view_warm_days),
            view_warm_every: self.view_warm_every.or(file.view_warm_every),
            view_warm_all_time: self.view_warm_all_time.or(file.view_warm_all_time),
            sql_tokens: self.sql_tokens.or(file.sql_tokens),
            sql_tls_cert: self.sql_tls_cert.or(file.sql_tls_cert),
            sql_tls_key: self.sql_tls_key.or(file.sql_tls_key),
            alerts_config: self.alerts_config.or(file.alerts_config),
        }
    }

    /// With every default applied; `query_listen` is the SQL service's HTTP address, which
    /// (with the Flight SQL address) decides whether tokens are required.
    pub(crate) fn resolve(self, query_listen: SocketAddr) -> anyhow::Result<SqlResolved> {
        let defaults = tlsrpt_query::QueryOptions::default();
        let bytes_or_off = |value: &Option<String>, default: Option<usize>, flag: &str| match value
            .as_deref()
            .map(str::trim)
        {
            None => Ok(default),
            Some("off") => Ok(None),
            Some(text) => parse_bytes(text)
                .map(Some)
                .map_err(|e| anyhow::anyhow!("{flag}: {e}")),
        };
        let memory_limit_bytes = bytes_or_off(
            &self.query_memory,
            defaults.memory_limit_bytes,
            "--query-memory",
        )?;
        let view_cache_bytes = bytes_or_off(
            &self.view_cache_memory,
            defaults.view_cache_bytes,
            "--view-cache-memory",
        )?;
        let view_warm_every = match self.view_warm_every.as_deref().map(str::trim) {
            None => defaults.view_warm_every,
            Some("off") => None,
            Some(text) => {
                Some(parse_duration(text).map_err(|e| anyhow::anyhow!("--view-warm-every: {e}"))?)
            }
        };
        let view_warm_all_time = match self.view_warm_all_time.as_deref().map(str::trim) {
            None => defaults.view_warm_all_time,
            Some("fits") => true,
            Some("off") => false,
            Some(other) => bail!("--view-warm-all-time: `{other}` is neither `fits` nor `off`"),
        };
        if self.max_result_rows == Some(0) || self.max_concurrent_queries == Some(0) {
            bail!("--max-result-rows and --max-concurrent-queries must be at least 1");
        }
        let flight_listen = self.flight_listen.unwrap_or(DEFAULT_FLIGHT_LISTEN);
        let access = match &self.sql_tokens {
            Some(path) => tlsrpt_query::Access::from_file(path)
                .map_err(|e| anyhow::anyhow!("--sql-tokens: {e}"))?,
            None => tlsrpt_query::Access::open(),
        };
        if access.is_open() {
            for (address, flag) in [
                (query_listen, "--query-listen"),
                (flight_listen, "--flight-listen"),
            ] {
                if !address.ip().is_loopback() {
                    bail!(
                        "{flag} {address} can be reached from other machines, so the SQL \
                         services need tokens: create one with `tlsrpt token new --name NAME \
                         >> sql-tokens.toml` and give --sql-tokens sql-tokens.toml (or listen \
                         on 127.0.0.1)"
                    );
                }
            }
        }
        let tls = match (&self.sql_tls_cert, &self.sql_tls_key) {
            (Some(cert), Some(key)) => Some(
                tlsrpt_query::SqlTls::load(cert, key)
                    .map_err(|e| anyhow::anyhow!("--sql-tls-cert/--sql-tls-key: {e}"))?,
            ),
            (None, None) => None,
            _ => bail!("--sql-tls-cert and --sql-tls-key go together"),
        };
        let alerts = match &self.alerts_config {
            Some(path) => Some(
                tlsrpt_alerts::AlertConfig::from_file(path)
                    .map_err(|e| anyhow::anyhow!("--alerts-config: {e}"))?,
            ),
            None => None,
        };
        Ok(SqlResolved {
            access,
            tls,
            alerts,
            flight_listen,
            limits: tlsrpt_query::QueryOptions {
                max_rows: self.max_result_rows.unwrap_or(defaults.max_rows),
                timeout: self.query_timeout.unwrap_or(defaults.timeout),
                max_concurrent: self
                    .max_concurrent_queries
                    .unwrap_or(defaults.max_concurrent),
                memory_limit_bytes,
                view_cache_bytes,
                view_warm_days: self.view_warm_days.unwrap_or(defaults.view_warm_days),
                view_warm_every,
                view_warm_all_time,
            },
        })
    }
}

/// Reads a size: a number of bytes, or a number with `KiB`, `MiB` or `GiB` (`512MiB`, `1.5GiB`).
pub(crate) fn parse_bytes(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let (number, unit) = number_and_unit(text, "a size such as 512MiB or 4GiB")?;
    let scale = match unit {
        "" | "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use KiB, MiB or GiB)"
            ));
        }
    };
    let bytes = number * scale;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < usize::MAX as f64) {
        return Err(format!("{text:?} is not a size this machine can have"));
    }
    Ok(bytes as usize)
}

/// The receivers' settings, shared by `tlsrpt up` and `tlsrpt ingest`.
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct ReceiverSettings {
    /// Address of the HTTPS report receiver (`POST /v1/reports`, RFC 8460 §5.3.2)
    /// [default: 127.0.0.1:8460].
    #[arg(long, env = "TLSRPT_HTTP_LISTEN", value_name = "ADDR")]
    pub(crate) http_listen: Option<SocketAddr>,

    /// Address of the mail receiver for `mailto:` reporting addresses, or `off`
    /// [default: 127.0.0.1:2525].
    #[arg(long, env = "TLSRPT_SMTP_LISTEN", value_name = "ADDR|off")]
    pub(crate) smtp_listen: Option<String>,

    /// PEM certificate chain for the report receiver; with --tls-key it serves HTTPS.
    /// Without them it serves plain HTTP, for use behind a TLS-terminating proxy.
    #[arg(
        long,
        env = "TLSRPT_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub(crate) tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(
        long,
        env = "TLSRPT_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub(crate) tls_key: Option<PathBuf>,

    /// Recipient addresses the mail receiver accepts, comma-separated; mail for others is
    /// refused. Default: any address.
    #[arg(
        long,
        env = "TLSRPT_SMTP_RECIPIENTS",
        value_name = "ADDR,...",
        value_delimiter = ','
    )]
    pub(crate) smtp_recipients: Option<Vec<String>>,

    /// The name the mail receiver gives in its greeting [default: this host's name].
    #[arg(long, env = "TLSRPT_SMTP_HOSTNAME", value_name = "NAME")]
    pub(crate) smtp_hostname: Option<String>,

    /// DKIM for mailed reports: `record` the outcome, or `enforce` (refuse unsigned or
    /// failing mail) [default: record].
    #[arg(long, env = "TLSRPT_DKIM", value_enum)]
    pub(crate) dkim: Option<DkimMode>,

    /// Largest HTTP body read, before decompression, in bytes [default: 10485760].
    #[arg(long, env = "TLSRPT_MAX_BODY_BYTES", value_name = "BYTES")]
    pub(crate) max_body_bytes: Option<usize>,

    /// Largest mail message accepted, in bytes [default: 10485760].
    #[arg(long, env = "TLSRPT_MAX_MESSAGE_BYTES", value_name = "BYTES")]
    pub(crate) max_message_bytes: Option<usize>,

    /// Largest report after decompression, in bytes; a gzip bomb stops here
    /// [default: 20971520].
    #[arg(long, env = "TLSRPT_MAX_DECOMPRESSED_BYTES", value_name = "BYTES")]
    pub(crate) max_decompressed_bytes: Option<usize>,

    /// Reports handled at once by the HTTP receiver; more get 503 and retry
    /// [default: 1024].
    #[arg(long, env = "TLSRPT_MAX_CONCURRENT_REQUESTS", value_name = "N")]
    pub(crate) max_concurrent_requests: Option<usize>,

    /// Deadline for a client to send its request headers or body, or an SMTP command
    /// (e.g. `30s`, `2m`) [default: 30s].
    #[arg(long, env = "TLSRPT_CLIENT_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration_from_text")]
    pub(crate) client_timeout: Option<Duration>,
}

/// `tlsrpt up`'s settings with every default applied.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub(crate) data_dir: PathBuf,
    pub(crate) query_listen: SocketAddr,
    pub(crate) sql: SqlResolved,
    pub(crate) flush_interval: Duration,
    pub(crate) compact_min_files: usize,
    /// `None`: an existing log's own count, or the embedded default for a new one.
    pub(crate) partitions: Option<u32>,
    /// `None`: the embedded log.
    pub(crate) kafka: Option<UpKafkaResolved>,
    pub(crate) receivers: ReceiversResolved,
}

/// `tlsrpt up --kafka`'s bus, with every default applied.
#[derive(Debug, Clone)]
pub(crate) struct UpKafkaResolved {
    pub(crate) brokers: String,
    pub(crate) topic: String,
    pub(crate) dlq_topic: String,
    pub(crate) group: String,
    /// As `tlsrpt ingest`'s --delivery-timeout default.
    pub(crate) delivery_timeout: Duration,
    /// As `tlsrpt transform`'s --session-timeout default.
    pub(crate) session_timeout: Duration,
}

/// `tlsrpt ingest`'s settings with every default applied.
#[derive(Debug, Clone)]
pub(crate) struct IngestResolved {
    pub(crate) kafka: String,
    pub(crate) topic: String,
    pub(crate) delivery_timeout: Duration,
    pub(crate) data_dir: PathBuf,
    pub(crate) receivers: ReceiversResolved,
}

/// The receivers' settings with every default applied.
#[derive(Debug, Clone)]
pub(crate) struct ReceiversResolved {
    pub(crate) http_listen: SocketAddr,
    pub(crate) smtp_listen: Option<SocketAddr>,
    pub(crate) tls: Option<(PathBuf, PathBuf)>,
    pub(crate) smtp_recipients: Option<Vec<String>>,
    pub(crate) smtp_hostname: String,
    pub(crate) dkim: DkimMode,
    pub(crate) max_body_bytes: usize,
    pub(crate) max_message_bytes: usize,
    pub(crate) max_decompressed_bytes: usize,
    pub(crate) max_concurrent_requests: usize,
    pub(crate) client_timeout: Duration,
}

/// The settings of `tlsrpt transform`: a consumer-group member writing Parquet.
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct TransformSettings {
    /// Kafka bootstrap brokers to consume from, `host:port[,host:port...]` (required).
    #[arg(long, env = "TLSRPT_KAFKA", value_name = "BROKERS")]
    pub(crate) kafka: Option<String>,

    /// The topic the receivers publish to [default: tlsrpt.reports].
    #[arg(long, env = "TLSRPT_TOPIC", value_name = "NAME")]
    pub(crate) topic: Option<String>,

    /// Where messages that cannot become rows go, with the reason in a header
    /// [default: tlsrpt.reports.dlq].
    #[arg(long, env = "TLSRPT_DLQ_TOPIC", value_name = "NAME")]
    pub(crate) dlq_topic: Option<String>,

    /// The consumer group: transformers of one group share the topic's partitions (run as
    /// many as there are partitions, at most) [default: tlsrpt-transform].
    #[arg(long, env = "TLSRPT_GROUP", value_name = "NAME")]
    pub(crate) group: Option<String>,

    /// Where the tables are written, shared by every transformer of the group and read by
    /// `tlsrpt query --store`: a directory, or `s3://bucket/prefix` (credentials, region
    /// and, for S3-compatible stores, `AWS_ENDPOINT_URL` and `AWS_ALLOW_HTTP` from the usual
    /// `AWS_*` variables; the store must support conditional writes, `If-None-Match`)
    /// [default: ./tlsrpt-data/tables].
    #[arg(long, env = "TLSRPT_STORE", value_name = "URL")]
    pub(crate) store: Option<String>,

    /// Address of `GET /healthz` and `GET /metrics` (Prometheus text) [default:
    /// 127.0.0.1:8463].
    #[arg(long, env = "TLSRPT_METRICS_LISTEN", value_name = "ADDR")]
    pub(crate) metrics_listen: Option<SocketAddr>,

    /// How often the transformer writes what it has to Parquet, which bounds how soon a
    /// report is visible to SQL (e.g. `1s`, `500ms`) [default: 1s].
    #[arg(long, env = "TLSRPT_FLUSH_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration_from_text")]
    pub(crate) flush_interval: Option<Duration>,

    /// Small Parquet files of one table, date and partition that are merged into one
    /// [default: 8].
    #[arg(long, env = "TLSRPT_COMPACT_MIN_FILES", value_name = "N")]
    pub(crate) compact_min_files: Option<usize>,

    /// How long the group waits for a silent transformer before giving its partitions to
    /// the others (a crashed one's partitions move after this long) [default: 10s].
    #[arg(long, env = "TLSRPT_SESSION_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration_from_text")]
    pub(crate) session_timeout: Option<Duration>,
}

/// `tlsrpt transform`'s settings with every default applied.
#[derive(Debug, Clone)]
pub(crate) struct TransformResolved {
    pub(crate) kafka: String,
    pub(crate) topic: String,
    pub(crate) dlq_topic: String,
    pub(crate) group: String,
    pub(crate) store: tlsrpt_query::TablesLocation,
    pub(crate) metrics_listen: SocketAddr,
    pub(crate) flush_interval: Duration,
    pub(crate) compact_min_files: usize,
    pub(crate) session_timeout: Duration,
}

impl TransformSettings {
    /// `self` where set, else `file`.
    pub(crate) fn or(self, file: TransformSettings) -> TransformSettings {
        TransformSettings {
            kafka: self.kafka.or(file.kafka),
            topic: self.topic.or(file.topic),
            dlq_topic: self.dlq_topic.or(file.dlq_topic),
            group: self.group.or(file.group),
            store: self.store.or(file.store),
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
            flush_interval: self.flush_interval.or(file.flush_interval),
            compact_min_files: self.compact_min_files.or(file.compact_min_files),
            session_timeout: self.session_timeout.or(file.session_timeout),
        }
    }

    /// Applies the defaults and checks what cannot be checked per setting.
    pub(crate) fn resolve(self) -> anyhow::Result<TransformResolved> {
        let Some(kafka) = self.kafka.filter(|k| !k.trim().is_empty()) else {
            bail!(
                "tlsrpt transform consumes from Kafka: give the brokers with --kafka HOST:PORT \
                 (or TLSRPT_KAFKA, or `kafka` in the settings file); `tlsrpt up` runs without one"
            );
        };
        Ok(TransformResolved {
            kafka,
            topic: self
                .topic
                .unwrap_or_else(|| tlsrpt_bus::kafka::DEFAULT_TOPIC.to_owned()),
            dlq_topic: self
                .dlq_topic
                .unwrap_or_else(|| tlsrpt_bus::kafka::DEFAULT_DEAD_LETTER_TOPIC.to_owned()),
            group: self.group.unwrap_or_else(|| "tlsrpt-transform".to_owned()),
            store: parse_store(self.store.as_deref())?,
            metrics_listen: self
                .metrics_listen
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8463))),
            flush_interval: self.flush_interval.unwrap_or(Duration::from_secs(1)),
            compact_min_files: self.compact_min_files.unwrap_or(8).max(2),
            session_timeout: self.session_timeout.unwrap_or(Duration::from_secs(10)),
        })
    }
}

/// The settings of `tlsrpt query`: the SQL service over tables others write.
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct QuerySettings {
    /// Where the tables are, as given to `tlsrpt transform --store`: a directory, or
    /// `s3://bucket/prefix` (credentials, region and, for S3-compatible stores,
    /// `AWS_ENDPOINT_URL` and `AWS_ALLOW_HTTP` from the usual `AWS_*` variables)
    /// [default: ./tlsrpt-data/tables].
    #[arg(long, env = "TLSRPT_STORE", value_name = "URL")]
    pub(crate) store: Option<String>,

    /// Address of the SQL service (`POST /v1/sql`, `GET /healthz`, `GET /metrics`)
    /// [default: 127.0.0.1:8461].
    #[arg(long, env = "TLSRPT_QUERY_LISTEN", value_name = "ADDR")]
    pub(crate) query_listen: Option<SocketAddr>,

    #[command(flatten)]
    #[serde(flatten)]
    pub(crate) sql: SqlSettings,
}

/// `tlsrpt query`'s settings with every default applied.
#[derive(Debug, Clone)]
pub(crate) struct QueryResolved {
    pub(crate) store: tlsrpt_query::TablesLocation,
    pub(crate) query_listen: SocketAddr,
    pub(crate) sql: SqlResolved,
}

impl QuerySettings {
    /// `self` where set, else `file`.
    pub(crate) fn or(self, file: QuerySettings) -> QuerySettings {
        QuerySettings {
            store: self.store.or(file.store),
            query_listen: self.query_listen.or(file.query_listen),
            sql: self.sql.or(file.sql),
        }
    }

    pub(crate) fn resolve(self) -> anyhow::Result<QueryResolved> {
        let query_listen = self.query_listen.unwrap_or(DEFAULT_QUERY_LISTEN);
        let store = parse_store(self.store.as_deref())?;
        let warm_every_given = self.sql.view_warm_every.is_some();
        let warm_all_time_given = self.sql.view_warm_all_time.is_some();
        let mut sql = self.sql.resolve(query_listen)?;
        // An object store bills every listing, and a round of warming lists each date's prefix
        // of the tables the views read (`policy_overview`: every date, 5,000 on 14 years of
        // data): once a minute that is millions of requests a day. Every date of five more
        // views at every round would be six times `policy_overview`'s.
        if matches!(store, tlsrpt_query::TablesLocation::Object { .. }) {
            if !warm_every_given {
                sql.limits.view_warm_every = Some(OBJECT_STORE_VIEW_WARM_EVERY);
            }
            if !warm_all_time_given {
                sql.limits.view_warm_all_time = false;
            }
        }
        Ok(QueryResolved {
            store,
            query_listen,
            sql,
        })
    }
}

/// How often the views are computed again over tables in an object store, unless
/// `--view-warm-every` says otherwise.
const OBJECT_STORE_VIEW_WARM_EVERY: Duration = Duration::from_secs(15 * 60);

/// Reads `--store` (`tlsrpt transform`, `tlsrpt query`): a directory, a `file://` URL, or
/// `s3://bucket/prefix` configured from the `AWS_*` environment; `None` is the embedded
/// default, `./tlsrpt-data/tables`.
pub(crate) fn parse_store(text: Option<&str>) -> anyhow::Result<tlsrpt_query::TablesLocation> {
    match text.map(str::trim) {
        Some(text) if !text.is_empty() => {
            tlsrpt_query::TablesLocation::parse(text).map_err(|e| anyhow::anyhow!("--store {e}"))
        }
        _ => Ok(tlsrpt_query::TablesLocation::Local(
            PathBuf::from(crate::data_dir::DEFAULT).join("tables"),
        )),
    }
}

/// `text` (trimmed) as a number and the unit after it (`1.5GiB` -> 1.5, `GiB`); `what` names
/// the expected form in the error.
fn number_and_unit<'a>(text: &'a str, what: &str) -> Result<(f64, &'a str), String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number = number
        .parse()
        .map_err(|_| format!("{text:?} is not {what}"))?;
    Ok((number, unit.trim()))
}

/// Reads `30s`, `500ms`, `2m`, `1h`, or a bare number of seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = number_and_unit(text, "a duration such as 30s, 500ms or 2m")?;
    let seconds = match unit {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use ms, s, m or h)"
            ));
        }
    };
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(format!("{text:?} must be longer than zero"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn duration_from_text<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    let text: Option<String> = Option::deserialize(deserializer)?;
    text.map(|t| parse_duration(&t).map_err(serde::de::Error::custom))
        .transpose()
}

/// Reads a TOML settings file into `T` (names as `T`'s flags, without `--`). A name that is
/// not one of `T`'s flags is refused by name: a misspelt setting must not be ignored.
pub(crate) fn from_file<T: clap::Args + serde::de::DeserializeOwned>(
    path: &Path,
) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the settings file {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .with_context(|| format!("in the settings file {}", path.display()))?;
    let command = T::augment_args(clap::Command::new("settings"));
    let known: Vec<&str> = command
        .get_arguments()
        .filter_map(|a| a.get_long())
        .collect();
    if let Some(unknown) = table.keys().find(|k| !known.contains(&k.as_str())) {
        bail!(
            "in the settings file {}: unknown setting `{unknown}` (known: {})",
            path.display(),
            known.join(", ")
        );
    }
    table
        .try_into()
        .with_context(|| format!("in the settings file {}", path.display()))
}

impl Settings {
    /// `self` where set, else `file`.
    pub(crate) fn or(self, file: Settings) -> Settings {
        Settings {
            data_dir: self.data_dir.or(file.data_dir),
            query_listen: self.query_listen.or(file.query_listen),
            sql: self.sql.or(file.sql),
            flush_interval: self.flush_interval.or(file.flush_interval),
            compact_min_files: self.compact_min_files.or(file.compact_min_files),
            partitions: self.partitions.or(file.partitions),
            kafka: self.kafka.or(file.kafka),
            topic: self.topic.or(file.topic),
            dlq_topic: self.dlq_topic.or(file.dlq_topic),
            group: self.group.or(file.group),
            receivers: self.receivers.or(file.receivers),
        }
    }

    /// Applies the defaults and checks what cannot be checked per setting.
    pub(crate) fn resolve(self) -> anyhow::Result<Resolved> {
        let kafka = match self.kafka.filter(|k| !k.trim().is_empty()) {
            Some(brokers) => {
                if self.partitions.is_some() {
                    bail!(
                        "--partitions is the embedded log's; with --kafka the topic has the \
                         partitions it was created with"
                    );
                }
                Some(UpKafkaResolved {
                    brokers,
                    topic: self
                        .topic
                        .unwrap_or_else(|| tlsrpt_bus::kafka::DEFAULT_TOPIC.to_owned()),
                    dlq_topic: self
                        .dlq_topic
                        .unwrap_or_else(|| tlsrpt_bus::kafka::DEFAULT_DEAD_LETTER_TOPIC.to_owned()),
                    group: self.group.unwrap_or_else(|| "tlsrpt-transform".to_owned()),
                    delivery_timeout: Duration::from_secs(10),
                    session_timeout: Duration::from_secs(10),
                })
            }
            None => {
                // Silently running on the embedded log would surprise whoever set them.
                if self.topic.is_some() || self.dlq_topic.is_some() || self.group.is_some() {
                    bail!(
                        "--topic, --dlq-topic and --group go with --kafka (or TLSRPT_KAFKA, or \
                         `kafka` in the settings file); without it `up` runs on the embedded log"
                    );
                }
                None
            }
        };
        let query_listen = self.query_listen.unwrap_or(DEFAULT_QUERY_LISTEN);
        Ok(Resolved {
            kafka,
            data_dir: self
                .data_dir
                .unwrap_or_else(|| PathBuf::from("tlsrpt-data")),
            query_listen,
            sql: self.sql.resolve(query_listen)?,
            flush_interval: self.flush_interval.unwrap_or(Duration::from_secs(1)),
            compact_min_files: self.compact_min_files.unwrap_or(8).max(2),
            partitions: self.partitions.map(|n| n.max(1)),
            receivers: self.receivers.resolve()?,
        })
    }
}

impl IngestSettings {
    /// `self` where set, else `file`.
    pub(crate) fn or(self, file: IngestSettings) -> IngestSettings {
        IngestSettings {
            kafka: self.kafka.or(file.kafka),
            topic: self.topic.or(file.topic),
            delivery_timeout: self.delivery_timeout.or(file.delivery_timeout),
            data_dir: self.data_dir.or(file.data_dir),
            receivers: self.receivers.or(file.receivers),
        }
    }

    /// Applies the defaults and checks what cannot be checked per setting.
    pub(crate) fn resolve(self) -> anyhow::Result<IngestResolved> {
        let Some(kafka) = self.kafka.filter(|k| !k.trim().is_empty()) else {
            bail!(
                "tlsrpt ingest publishes to Kafka: give the brokers with --kafka HOST:PORT (or \
                 TLSRPT_KAFKA, or `kafka` in the settings file); `tlsrpt up` runs without one"
            );
        };
        Ok(IngestResolved {
            kafka,
            topic: self
                .topic
                .unwrap_or_else(|| tlsrpt_bus::kafka::DEFAULT_TOPIC.to_owned()),
            delivery_timeout: self.delivery_timeout.unwrap_or(Duration::from_secs(10)),
            data_dir: self
                .data_dir
                .unwrap_or_else(|| PathBuf::from("tlsrpt-data")),
            receivers: self.receivers.resolve()?,
        })
    }
}

impl ReceiverSettings {
    /// `self` where set, else `file`.
    pub(crate) fn or(self, file: ReceiverSettings) -> ReceiverSettings {
        ReceiverSettings {
            http_listen: self.http_listen.or(file.http_listen),
            smtp_listen: self.smtp_listen.or(file.smtp_listen),
            tls_cert: self.tls_cert.or(file.tls_cert),
            tls_key: self.tls_key.or(file.tls_key),
            smtp_recipients: self.smtp_recipients.or(file.smtp_recipients),
            smtp_hostname: self.smtp_hostname.or(file.smtp_hostname),
            dkim: self.dkim.or(file.dkim),
            max_body_bytes: self.max_body_bytes.or(file.max_body_bytes),
            max_message_bytes: self.max_message_bytes.or(file.max_message_bytes),
            max_decompressed_bytes: self.max_decompressed_bytes.or(file.max_decompressed_bytes),
            max_concurrent_requests: self
                .max_concurrent_requests
                .or(file.max_concurrent_requests),
            client_timeout: self.client_timeout.or(file.client_timeout),
        }
    }

    /// Applies the defaults and checks what cannot be checked per setting.
    pub(crate) fn resolve(self) -> anyhow::Result<ReceiversResolved> {
        let smtp_listen = match self.smtp_listen.as_deref() {
            None => Some(SocketAddr::from(([127, 0, 0, 1], 2525))),
            Some("off") => None,
            Some(text) => Some(text.parse().with_context(|| {
                format!(
                    "--smtp-listen {text:?} is neither an address such as 127.0.0.1:2525 nor `off`"
                )
            })?),
        };
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => bail!("--tls-cert and --tls-key go together"),
        };
        let recipients = self.smtp_recipients.map(|list| {
            list.into_iter()
                .map(|r| r.trim().to_ascii_lowercase())
                .filter(|r| !r.is_empty())
                .collect::<Vec<_>>()
        });
        Ok(ReceiversResolved {
            http_listen: self
                .http_listen
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8460))),
            smtp_listen,
            tls,
            smtp_recipients: recipients.filter(|r| !r.is_empty()),
            smtp_hostname: self.smtp_hostname.unwrap_or_else(host_name),
            dkim: self.dkim.unwrap_or(DkimMode::Record),
            max_body_bytes: self.max_body_bytes.unwrap_or(10 << 20),
            max_message_bytes: self.max_message_bytes.unwrap_or(10 << 20),
            max_decompressed_bytes: self.max_decompressed_bytes.unwrap_or(20 << 20),
            max_concurrent_requests: self.max_concurrent_requests.unwrap_or(1024),
            client_timeout: self.client_timeout.unwrap_or(Duration::from_secs(30)),
        })
    }
}

/// This machine's host name, for the SMTP greeting.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("2GB").unwrap_err().contains("KiB, MiB or GiB"));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("0").is_err());
    }

    #[test]
    fn views_over_an_object_store_are_warmed_every_15_minutes_unless_told() {
        // The query service's limits for tables at `store`, with `sql`'s flags.
        let limits = |store: &str, sql: SqlSettings| {
            QuerySettings {
                store: Some(store.into()),
                sql,
                ..QuerySettings::default()
            }
            .resolve()
            .map(|resolved| resolved.sql.limits)
        };
        let every = |store: &str, flag: Option<&str>| {
            let sql = SqlSettings {
                view_warm_every: flag.map(Into::into),
                ..SqlSettings::default()
            };
            limits(store, sql).unwrap().view_warm_every
        };
        let minutes = |m: u64| Some(Duration::from_secs(m * 60));
        assert_eq!(every("s3://reports/tables", None), minutes(15));
        assert_eq!(every("s3://reports/tables", Some("2m")), minutes(2));
        assert_eq!(every("s3://reports/tables", Some("off")), None);
        assert_eq!(every("/var/lib/tlsrpt/tables", None), minutes(1));
        // Warming every date of the views that fit lists every date's prefix at each round.
        let all_time = |store: &str, flag: Option<&str>| {
            let sql = SqlSettings {
                view_warm_all_time: flag.map(Into::into),
                ..SqlSettings::default()
            };
            limits(store, sql).map(|limits| limits.view_warm_all_time)
        };
        assert!(!all_time("s3://reports/tables", None).unwrap());
        assert!(all_time("s3://reports/tables", Some("fits")).unwrap());
        assert!(all_time("/var/lib/tlsrpt/tables", None).unwrap());
        assert!(!all_time("/var/lib/tlsrpt/tables", Some("off")).unwrap());
        let error = all_time("/var/lib/tlsrpt/tables", Some("all"))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("--view-warm-all-time: `all` is neither"),
            "{error}"
        );
    }

    #[test]
    fn query_limits_come_from_flags_with_defaults_for_the_rest() {
        let resolved = SqlSettings {
            query_timeout: Some(Duration::from_secs(5)),
            query_memory: Some("off".into()),
            ..SqlSettings::default()
        }
        .resolve(DEFAULT_QUERY_LISTEN)
        .unwrap();
        assert_eq!(resolved.flight_listen, DEFAULT_FLIGHT_LISTEN);
        assert!(resolved.access.is_open() && resolved.tls.is_none());
        assert_eq!(resolved.limits.timeout, Duration::from_secs(5));
        assert_eq!(resolved.limits.memory_limit_bytes, None);
        let defaults = tlsrpt_query::QueryOptions::default();
        assert_eq!(resolved.limits.max_rows, defaults.max_rows);
        assert_eq!(resolved.limits.max_concurrent, defaults.max_concurrent);
        assert_eq!(resolved.limits.view_cache_bytes, Some(2 << 30));
        let cache = |text: &str| {
            SqlSettings {
                view_cache_memory: Some(text.into()),
                ..SqlSettings::default()
            }
            .resolve(DEFAULT_QUERY_LISTEN)
            .map(|resolved| resolved.limits.view_cache_bytes)
        };
        assert_eq!(cache("off").unwrap(), None);
        assert_eq!(cache("256MiB").unwrap(), Some(256 << 20));
        let error = cache("lots").unwrap_err().to_string();
        assert!(error.starts_with("--view-cache-memory: "), "{error}");
        assert_eq!(resolved.limits.view_warm_days, 92);
        assert_eq!(
            resolved.limits.view_warm_every,
            Some(Duration::from_secs(60))
        );
        let warm_every = |text: &str| {
            SqlSettings {
                view_warm_every: Some(text.into()),
                ..SqlSettings::default()
            }
            .resolve(DEFAULT_QUERY_LISTEN)
            .map(|resolved| resolved.limits.view_warm_every)
        };
        assert_eq!(warm_every("off").unwrap(), None);
        assert_eq!(warm_every("5m").unwrap(), Some(Duration::from_secs(300)));
        let error = warm_every("often").unwrap_err().to_string();
        assert!(error.starts_with("--view-warm-every: "), "{error}");
        let zero = SqlSettings {
            max_result_rows: Some(0),
            ..SqlSettings::default()
        };
        assert!(zero.resolve(DEFAULT_QUERY_LISTEN).is_err());
    }

    #[test]
    fn sql_reachable_from_other_machines_needs_tokens() {
        let open = |flight: &str, query: &str| {
            SqlSettings {
                flight_listen: Some(flight.parse().unwrap()),
                ..SqlSettings::default()
            }
            .resolve(query.parse().unwrap())
        };
        let error = open("0.0.0.0:8462", "127.0.0.1:8461")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("--flight-listen 0.0.0.0:8462 can be reached from other machines")
                && error.contains("tlsrpt token new"),
            "{error}"
        );
        let error = open("[::1]:8462", "[::]:8461").unwrap_err().to_string();
        assert!(error.contains("--query-listen [::]:8461"), "{error}");
        assert!(open("[::1]:8462", "127.0.0.2:8461").is_ok(), "all loopback");

        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("sql-tokens.toml");
        let (_, digest) = tlsrpt_query::access::new_token();
        std::fs::write(
            &tokens,
            format!("[[token]]\nname = \"a\"\nsha256 = \"{digest}\"\n"),
        )
        .unwrap();
        let with_tokens = SqlSettings {
            flight_listen: Some("0.0.0.0:8462".parse().unwrap()),
            sql_tokens: Some(tokens.clone()),
            ..SqlSettings::default()
        }
        .resolve("0.0.0.0:8461".parse().unwrap())
        .unwrap();
        assert!(!with_tokens.access.is_open());

        std::fs::write(&tokens, "[[token]]\nname = \"a\"\n").unwrap();
        let error = SqlSettings {
            sql_tokens: Some(tokens),
            ..SqlSettings::default()
        }
        .resolve(DEFAULT_QUERY_LISTEN)
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("--sql-tokens")
                && error.contains("sql-tokens.toml")
                && error.contains("sha256"),
            "{error}"
        );
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0s").is_err());
        assert!(
            parse_duration("ten")
                .unwrap_err()
                .contains("not a duration")
        );
        assert!(parse_duration("3d").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let file: Settings = toml::from_str(
            r#"
            data-dir = "/srv/tlsrpt"
            http-listen = "0.0.0.0:443"
            flush-interval = "5s"
            smtp-listen = "off"
            dkim = "enforce"
            "#,
        )
        .unwrap();
        let flags = Settings {
            receivers: ReceiverSettings {
                http_listen: Some("127.0.0.1:9000".parse().unwrap()),
                ..ReceiverSettings::default()
            },
            ..Settings::default()
        };
        let resolved = flags.or(file).resolve().unwrap();
        assert_eq!(resolved.data_dir, PathBuf::from("/srv/tlsrpt"));
        assert_eq!(
            resolved.receivers.http_listen,
            "127.0.0.1:9000".parse().unwrap()
        );
        assert_eq!(resolved.flush_interval, Duration::from_secs(5));
        assert_eq!(resolved.receivers.smtp_listen, None);
        assert_eq!(resolved.receivers.dkim, DkimMode::Enforce);
        assert_eq!(resolved.query_listen, "127.0.0.1:8461".parse().unwrap());
    }

    #[test]
    fn up_runs_on_kafka_only_when_given_brokers() {
        let resolved = Settings::default().resolve().unwrap();
        assert!(resolved.kafka.is_none());

        let file: Settings = toml::from_str("kafka = \"k1:9092,k2:9092\"\ngroup = \"g\"").unwrap();
        let flags = Settings {
            topic: Some("reports".to_owned()),
            ..Settings::default()
        };
        let kafka = flags.or(file).resolve().unwrap().kafka.unwrap();
        assert_eq!(kafka.brokers, "k1:9092,k2:9092");
        assert_eq!(kafka.topic, "reports");
        assert_eq!(kafka.dlq_topic, "tlsrpt.reports.dlq");
        assert_eq!(kafka.group, "g");

        let topic_alone = Settings {
            topic: Some("reports".to_owned()),
            ..Settings::default()
        };
        let err = topic_alone.resolve().unwrap_err();
        assert!(format!("{err:#}").contains("go with --kafka"), "{err:#}");
        let partitions_on_kafka = Settings {
            kafka: Some("k1:9092".to_owned()),
            partitions: Some(6),
            ..Settings::default()
        };
        let err = partitions_on_kafka.resolve().unwrap_err();
        assert!(format!("{err:#}").contains("--partitions"), "{err:#}");
    }

    #[test]
    fn a_misspelt_setting_in_the_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tlsrpt.toml");
        std::fs::write(&path, "dkim = \"enforce\"\nflush-intervall = \"1s\"\n").unwrap();
        let err = from_file::<Settings>(&path).unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown setting `flush-intervall`"),
            "{err:#}"
        );
        // The receivers' settings are read through the flattened struct.
        std::fs::write(&path, "dkim = \"enforce\"\nflush-interval = \"2s\"\n").unwrap();
        let settings = from_file::<Settings>(&path).unwrap();
        assert_eq!(settings.receivers.dkim, Some(DkimMode::Enforce));
        assert_eq!(settings.flush_interval, Some(Duration::from_secs(2)));
    }
}
