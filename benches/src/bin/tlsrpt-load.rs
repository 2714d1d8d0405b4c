//! `tlsrpt-load`: post gzip TLS-RPT reports to a receiver over keep-alive connections and
//! measure acknowledged reports per second, latency, and freshness (the time from a 2xx to
//! the report being visible in SQL).
//!
//! Every request carries a distinct report (its `report-id` rewritten with a run-specific
//! suffix), so the receiver's dedup never hides a lost report: after the run the tables must
//! hold exactly as many rows as there were 2xx answers, and the tool waits for that.
//!
//! Bodies are gzipped before the clock starts, on all cores: the load generator shares the
//! machine with the server, and gzip in the hot loop would take CPU from the thing measured.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use clap::Parser;
use flate2::Compression;
use flate2::write::GzEncoder;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::io::Write;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Post gzip TLS-RPT reports over keep-alive connections; measure acknowledged reports/s,
/// latency and freshness.
///
/// Prints one JSON object: requests per second (2xx only, after the warm-up), errors by
/// status, latency percentiles, freshness percentiles (with --sql-url), and whether the
/// tables ended up holding every acknowledged report.
#[derive(Debug, Parser)]
#[command(name = "tlsrpt-load", version, about, long_about)]
struct Args {
    /// The receiver, e.g. http://127.0.0.1:8460/v1/reports.
    #[arg(long)]
    url: String,
    /// Template reports, one JSON report per line (`tlsrpt-gen --format jsonl`).
    #[arg(long)]
    reports: PathBuf,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds of load, warm-up included. The run also ends when the bodies run out.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Seconds at the start not counted in the rate and latency figures.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Distinct bodies prepared up front (each posted once): enough for the expected rate
    /// times the duration.
    #[arg(long, default_value_t = 800_000)]
    bodies: usize,
    /// The SQL endpoint, e.g. http://127.0.0.1:8461/v1/sql: enables the freshness samples
    /// and the final check that the tables hold every acknowledged report.
    #[arg(long)]
    sql_url: Option<String>,
    /// Milliseconds between freshness samples (one acknowledged report each).
    #[arg(long, default_value_t = 100)]
    sample_every_ms: u64,
    /// Milliseconds between freshness polls (one SQL query covers every pending sample). A
    /// report counts as visible when the answer showing it arrives, so a figure is at most
    /// this much (plus the query's own time) above the true one.
    #[arg(long, default_value_t = 250)]
    poll_every_ms: u64,
    /// Seconds to wait after the load for the tables to hold every acknowledged report.
    #[arg(long, default_value_t = 60.0)]
    settle_timeout: f64,
    /// Worker threads of the client.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Open a new TCP connection for every report (and close it after the answer), as
    /// senders that post one report a day do, instead of keeping connections alive.
    #[arg(long)]
    new_connection_per_report: bool,
    /// The HTTP client: `lean` writes each request head and body in one write and reads
    /// the answer by its Content-Length (as wrk does; about a third less CPU per request
    /// than hyper's client, which is CPU the receiver gets when both share the machine);
    /// `hyper` is hyper's HTTP/1.1 client with its connection task.
    #[arg(long, value_enum, default_value_t = ClientKind::Lean)]
    client: ClientKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ClientKind {
    Lean,
    Hyper,
}

/// Where to send what: host, port and path of a plain `http://` URL.
#[derive(Debug, Clone)]
struct Target {
    addr: SocketAddr,
    host: String,
    path: String,
}

impl Target {
    fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("{url}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(authority)
            .with_context(|| format!("cannot resolve {authority}"))?
            .next()
            .ok_or_else(|| anyhow!("{authority} resolves to no address"))?;
        Ok(Self {
            addr,
            host: authority.to_string(),
            path: path.to_string(),
        })
    }
}

/// The prepared bodies and how to name the report in each.
struct Bodies {
    gzipped: Vec<Bytes>,
    template_ids: Vec<String>,
    run: String,
}

impl Bodies {
    fn report_id(&self, index: usize) -> String {
        let template = &self.template_ids[index % self.template_ids.len()];
        format!("{template}-{}-{index}", self.run)
    }
}

/// Splits a template at its `report-id` value: (before the value, the value, after it).
fn split_at_report_id(line: &str) -> anyhow::Result<(&str, &str, &str)> {
    const KEY: &str = "\"report-id\":\"";
    let start = line.find(KEY).map(|i| i + KEY.len()).ok_or_else(|| {
        anyhow!("a template has no \"report-id\":\"...\" (compact JSON expected)")
    })?;
    let len = line[start..]
        .find('"')
        .ok_or_else(|| anyhow!("a template's report-id is not terminated"))?;
    Ok((
        &line[..start],
        &line[start..start + len],
        &line[start + len..],
    ))
}

fn prepare(path: &PathBuf, count: usize, run: &str) -> anyhow::Result<Bodies> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let templates: Vec<(&str, &str, &str)> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(split_at_report_id)
        .collect::<anyhow::Result<_>>()?;
    if templates.is_empty() {
        bail!("{} holds no reports", path.display());
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = count.div_ceil(threads);
    let mut gzipped = Vec::with_capacity(count);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let templates = &templates;
                scope.spawn(move || {
                    let lo = (t * chunk).min(count);
                    let hi = ((t + 1) * chunk).min(count);
                    let mut out = Vec::with_capacity(hi - lo);
                    let mut json = String::new();
                    for index in lo..hi {
                        let (before, id, after) = templates[index % templates.len()];
                        json.clear();
                        json.push_str(before);
                        json.push_str(id);
                        json.push_str(&format!("-{run}-{index}"));
                        json.push_str(after);
                        let mut gz = GzEncoder::new(
                            Vec::with_capacity(json.len() / 2),
                            Compression::default(),
                        );
                        gz.write_all(json.as_bytes()).expect("write to memory");
                        out.push(Bytes::from(gz.finish().expect("write to memory")));
                    }
                    out
                })
            })
            .collect();
        for handle in handles {
            gzipped.extend(handle.join().expect("a gzip thread panicked"));
        }
    });
    Ok(Bodies {
        gzipped,
        template_ids: templates.iter().map(|(_, id, _)| id.to_string()).collect(),
        run: run.to_string(),
    })
}

/// What one connection saw.
#[derive(Default)]
struct ConnectionTally {
    /// Latencies (microseconds) of the 2xx answers inside the measurement window.
    latencies_us: Vec<u32>,
    /// 2xx answers over the whole run, warm-up included.
    acknowledged: u64,
    /// Non-2xx answers (and connection failures as status 0) by status.
    errors: HashMap<u16, u64>,
}

/// The clock and counters the connections share.
struct Shared {
    bodies: Bodies,
    next: AtomicUsize,
    started: Instant,
    measure_from: Instant,
    stop_at: Instant,
    /// Microseconds since `started` at which the next freshness sample may be taken.
    next_sample_us: AtomicU64,
    sample_every_us: u64,
    samples: Option<mpsc::UnboundedSender<(String, Instant)>>,
    new_connection_per_report: bool,
    client: ClientKind,
}

/// One keep-alive connection of the `lean` client: HTTP/1.1 without pipelining, the
/// request written whole, the answer's head parsed with httparse and its body read by
/// Content-Length (the receiver always sends one).
struct LeanConnection {
    stream: TcpStream,
    /// The request being written, then the answer being read; kept between requests.
    buffer: Vec<u8>,
}

impl LeanConnection {
    async fn connect(target: &Target) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(target.addr)
            .await
            .with_context(|| format!("cannot connect to {}", target.addr))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buffer: Vec::with_capacity(8192),
        })
    }

    /// Posts `body` as a gzip report; the answer's status once its body is read.
    async fn post(&mut self, target: &Target, body: &[u8], close: bool) -> anyhow::Result<u16> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        self.buffer.clear();
        write!(
            self.buffer,
            "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/tlsrpt+gzip\r\ncontent-length: {}\r\n{}\r\n",
            target.path,
            target.host,
            body.len(),
            if close { "connection: close\r\n" } else { "" }
        )?;
        self.buffer.extend_from_slice(body);
        self.stream.write_all(&self.buffer).await?;
        self.buffer.clear();
        loop {
            if self.buffer.capacity() == self.buffer.len() {
                self.buffer.reserve(8192);
            }
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                bail!("the receiver closed the connection before answering");
            }
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            let httparse::Status::Complete(head) = response.parse(&self.buffer)? else {
                continue;
            };
            let status = response
                .code
                .ok_or_else(|| anyhow!("an answer without a status"))?;
            let length = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| {
                    std::str::from_utf8(h.value)
                        .ok()?
                        .trim()
                        .parse::<usize>()
                        .ok()
                })
                .ok_or_else(|| {
                    anyhow!(
                        "an answer without Content-Length (use --client hyper for chunked answers)"
                    )
                })?;
            let end = head + length;
            while self.buffer.len() < end {
                if self.buffer.capacity() == self.buffer.len() {
                    self.buffer.reserve(end - self.buffer.len());
                }
                if self.stream.read_buf(&mut self.buffer).await? == 0 {
                    bail!("the receiver closed the connection inside an answer");
                }
            }
            return Ok(status);
        }
    }
}

/// A connection of either client.
enum Connection {
    Lean(LeanConnection),
    Hyper(http1::SendRequest<Full<Bytes>>),
}

impl Connection {
    async fn open(kind: ClientKind, target: &Target) -> anyhow::Result<Self> {
        Ok(match kind {
            ClientKind::Lean => Self::Lean(LeanConnection::connect(target).await?),
            ClientKind::Hyper => Self::Hyper(connect(target).await?),
        })
    }

    /// Posts one gzip report; the answer's status once its body is read.
    async fn post(&mut self, target: &Target, body: &Bytes, close: bool) -> anyhow::Result<u16> {
        match self {
            Self::Lean(connection) => connection.post(target, body, close).await,
            Self::Hyper(sender) => {
                let mut request = Request::post(target.path.as_str())
                    .header("host", target.host.as_str())
                    .header("content-type", "application/tlsrpt+gzip");
                if close {
                    request = request.header("connection", "close");
                }
                let request = request.body(Full::new(body.clone()))?;
                sender.ready().await?;
                let response = sender.send_request(request).await?;
                let status = response.status().as_u16();
                // Read the body to its end so that the connection can carry the next request.
                response.into_body().collect().await?;
                Ok(status)
            }
        }
    }
}

async fn connect(target: &Target) -> anyhow::Result<http1::SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(target.addr)
        .await
        .with_context(|| format!("cannot connect to {}", target.addr))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

async fn run_connection(shared: Arc<Shared>, target: Arc<Target>) -> ConnectionTally {
    let mut tally = ConnectionTally::default();
    let mut sender = None;
    loop {
        let index = shared.next.fetch_add(1, Ordering::Relaxed);
        if index >= shared.bodies.gzipped.len() || Instant::now() >= shared.stop_at {
            break;
        }
        if sender.is_none() {
            match Connection::open(shared.client, &target).await {
                Ok(s) => sender = Some(s),
                Err(_) => {
                    *tally.errors.entry(0).or_default() += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let sent = Instant::now();
        let answer = sender
            .as_mut()
            .expect("connected above")
            .post(
                &target,
                &shared.bodies.gzipped[index],
                shared.new_connection_per_report,
            )
            .await;
        let done = Instant::now();
        match answer {
            Ok(status) if (200..300).contains(&status) => {
                tally.acknowledged += 1;
                if done >= shared.measure_from {
                    let us = done.duration_since(sent).as_micros();
                    tally
                        .latencies_us
                        .push(u32::try_from(us).unwrap_or(u32::MAX));
                    maybe_sample(&shared, index, done);
                }
            }
            Ok(status) => *tally.errors.entry(status).or_default() += 1,
            Err(_) => {
                *tally.errors.entry(0).or_default() += 1;
                sender = None;
            }
        }
        if shared.new_connection_per_report {
            sender = None;
        }
    }
    tally
}

/// Offers one acknowledged report in every `sample_every` to the freshness poller.
fn maybe_sample(shared: &Shared, index: usize, acked: Instant) {
    let Some(samples) = &shared.samples else {
        return;
    };
    let now_us = acked.duration_since(shared.started).as_micros() as u64;
    let due = shared.next_sample_us.load(Ordering::Relaxed);
    if now_us >= due
        && shared
            .next_sample_us
            .compare_exchange(
                due,
                now_us + shared.sample_every_us,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
    {
        let _ = samples.send((shared.bodies.report_id(index), acked));
    }
}

/// Runs one SQL statement; the rows as JSON objects.
async fn sql(target: &Target, statement: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let stream = TcpStream::connect(target.addr).await?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = Request::post(target.path.as_str())
        .header("host", target.host.as_str())
        .header("content-type", "text/plain")
        .header("accept", "application/json")
        .body(Full::new(Bytes::from(statement.to_string())))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("SQL answered {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(serde_json::from_slice(&body)?)
}

/// Polls SQL for the sampled reports until each is visible; the 2xx-to-visible times (ms).
/// A report counts as visible when the answer that shows it arrives: an upper bound.
async fn poll_freshness(
    target: Target,
    mut samples: mpsc::UnboundedReceiver<(String, Instant)>,
    poll_every: Duration,
    give_up_after: Duration,
) -> (Vec<f64>, usize) {
    let mut pending: HashMap<String, Instant> = HashMap::new();
    let mut fresh_ms = Vec::new();
    let mut open = true;
    let mut closed_at = None;
    let mut tick = tokio::time::interval(poll_every);
    loop {
        tick.tick().await;
        while open {
            match samples.try_recv() {
                Ok((id, acked)) => {
                    pending.insert(id, acked);
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    closed_at = Some(Instant::now());
                }
            }
        }
        if pending.is_empty() {
            if open {
                continue;
            }
            break;
        }
        if closed_at.is_some_and(|t| t.elapsed() > give_up_after) {
            break;
        }
        let list: Vec<String> = pending.keys().map(|id| format!("'{id}'")).collect();
        let statement = format!(
            "SELECT report_id FROM reports WHERE report_id IN ({})",
            list.join(",")
        );
        let Ok(rows) = sql(&target, &statement).await else {
            continue;
        };
        let answered = Instant::now();
        for row in rows {
            if let Some(id) = row.get("report_id").and_then(|v| v.as_str())
                && let Some(acked) = pending.remove(id)
            {
                fresh_ms.push(answered.duration_since(acked).as_secs_f64() * 1000.0);
            }
        }
    }
    (fresh_ms, pending.len())
}

/// CPU seconds this process has used (user + system), from `/proc/self/stat`, whose times
/// are in USER_HZ ticks, 100 per second on Linux. None elsewhere.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces: state is
    // field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i - 3)?.parse::<f64>().ok();
    Some((ticks(14)? + ticks(15)?) / 100.0)
}

fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let target = Arc::new(Target::parse(&args.url)?);
    let sql_target = args.sql_url.as_deref().map(Target::parse).transpose()?;
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }

    let run = format!(
        "L{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    );
    let prepared = Instant::now();
    let bodies = prepare(&args.reports, args.bodies, &run)?;
    let body_bytes: usize = bodies.gzipped.iter().map(Bytes::len).sum();
    eprintln!(
        "tlsrpt-load: {} gzip bodies ready ({:.0} bytes each on average) in {:.1} s",
        bodies.gzipped.len(),
        body_bytes as f64 / bodies.gzipped.len() as f64,
        prepared.elapsed().as_secs_f64()
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let (sample_tx, sample_rx) = mpsc::unbounded_channel();
        let cpu_before = process_cpu_seconds();
        let started = Instant::now();
        let shared = Arc::new(Shared {
            new_connection_per_report: args.new_connection_per_report,
            client: args.client,
            bodies,
            next: AtomicUsize::new(0),
            started,
            measure_from: started + Duration::from_secs_f64(args.warmup),
            stop_at: started + Duration::from_secs_f64(args.duration),
            next_sample_us: AtomicU64::new(0),
            sample_every_us: args.sample_every_ms * 1000,
            samples: sql_target.is_some().then_some(sample_tx),
        });
        let poller = sql_target.clone().map(|t| {
            tokio::spawn(poll_freshness(
                t,
                sample_rx,
                Duration::from_millis(args.poll_every_ms),
                Duration::from_secs_f64(args.settle_timeout),
            ))
        });
        let connections: Vec<_> = (0..args.connections)
            .map(|_| tokio::spawn(run_connection(shared.clone(), target.clone())))
            .collect();
        let mut latencies = Vec::new();
        let mut acknowledged = 0u64;
        let mut errors: HashMap<u16, u64> = HashMap::new();
        for connection in connections {
            let tally = connection.await?;
            latencies.extend(tally.latencies_us);
            acknowledged += tally.acknowledged;
            for (status, n) in tally.errors {
                *errors.entry(status).or_default() += n;
            }
        }
        let ended = Instant::now();
        let client_cpu = process_cpu_seconds().zip(cpu_before).map(|(a, b)| a - b);
        let posted = shared.next.load(Ordering::Relaxed).min(shared.bodies.gzipped.len());
        let ran_out = posted >= shared.bodies.gzipped.len() && ended < shared.stop_at;
        let window = ended.duration_since(shared.measure_from).as_secs_f64();
        drop(shared);
        latencies.sort_unstable();
        let ms = |us: Option<u32>| us.map(|v| f64::from(v) / 1000.0);

        let (freshness, unseen) = match poller {
            Some(p) => {
                let (mut f, unseen) = p.await?;
                f.sort_by(f64::total_cmp);
                (Some(f), unseen)
            }
            None => (None, 0),
        };

        // Every acknowledged report must reach the tables: wait for the transformer.
        let mut rows = None;
        if let Some(t) = &sql_target {
            let deadline = Instant::now() + Duration::from_secs_f64(args.settle_timeout);
            loop {
                let n = sql(t, "SELECT count(*) AS n FROM reports")
                    .await
                    .ok()
                    .and_then(|r| r.first().and_then(|row| row["n"].as_u64()));
                rows = n;
                if n == Some(acknowledged) || Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }

        let mut summary = serde_json::json!({
            "connections": args.connections,
            "new_connection_per_report": args.new_connection_per_report,
            "client_threads": args.threads,
            "client": format!("{:?}", args.client).to_lowercase(),
            "measured_seconds": window,
            "acknowledged_per_second": latencies.len() as f64 / window,
            "acknowledged_total": acknowledged,
            "errors_by_status": errors.iter().map(|(k, v)| (k.to_string(), v)).collect::<HashMap<_, _>>(),
            "bodies_ran_out": ran_out,
            // The client's own CPU while posting (warm-up included), per acknowledged report:
            // it shares the machine with the server.
            "client_cpu_us_per_report": client_cpu.map(|cpu| cpu * 1e6 / acknowledged.max(1) as f64),
            "latency_ms": {
                "p50": ms(percentile(&latencies, 50.0)),
                "p90": ms(percentile(&latencies, 90.0)),
                "p99": ms(percentile(&latencies, 99.0)),
                "p99_9": ms(percentile(&latencies, 99.9)),
                "max": ms(latencies.last().copied()),
            },
        });
        if let Some(f) = &freshness {
            summary["freshness_ms"] = serde_json::json!({
                "samples": f.len(),
                "never_seen": unseen,
                "p50": percentile(f, 50.0),
                "p99": percentile(f, 99.0),
                "max": f.last(),
            });
            summary["rows_in_reports"] = serde_json::json!(rows);
            summary["rows_match_acknowledged"] = serde_json::json!(rows == Some(acknowledged));
        }
        println!("{}", serde_json::to_string_pretty(&summary)?);
        if sql_target.is_some() && rows != Some(acknowledged) {
            bail!(
                "the tables hold {rows:?} reports but {acknowledged} were acknowledged \
                 (after waiting {} s)",
                args.settle_timeout
            );
        }
        Ok(())
    })
}
