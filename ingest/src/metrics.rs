//! Counters of the receivers, for `GET /metrics` (Prometheus text format 0.0.4).
//!
//! Lock-free counters per transport; refusals are counted per (transport, reason code),
//! a small set, behind a mutex. The bus latency (from "decoded" to "durable") is a
//! histogram with fixed buckets, as Prometheus expects.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tlsrpt_schemas::Transport;
use tlsrpt_serve::metrics::{Histogram, labelled};

const TRANSPORTS: [Transport; 3] = [Transport::Https, Transport::Smtp, Transport::Import];

/// Upper bounds of the bus latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

fn slot(transport: Transport) -> usize {
    match transport {
        Transport::Https => 0,
        Transport::Smtp => 1,
        Transport::Import => 2,
    }
}

#[derive(Debug, Default)]
struct PerTransport([AtomicU64; 3]);

impl PerTransport {
    fn add(&self, transport: Transport, n: u64) {
        self.0[slot(transport)].fetch_add(n, Ordering::Relaxed);
    }

    fn get(&self, transport: Transport) -> u64 {
        self.0[slot(transport)].load(Ordering::Relaxed)
    }
}

/// Something else that writes metrics into the same page (the bus, the transformer).
pub type MetricsSource = Box<dyn Fn(&mut String) + Send + Sync>;

/// The receivers' counters. Share one per process.
pub struct Metrics {
    received: PerTransport,
    accepted: PerTransport,
    bytes_received: PerTransport,
    bytes_decoded: PerTransport,
    refused: Mutex<BTreeMap<(&'static str, String), u64>>,
    bus_latency: Histogram,
    sources: Mutex<Vec<MetricsSource>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            received: PerTransport::default(),
            accepted: PerTransport::default(),
            bytes_received: PerTransport::default(),
            bytes_decoded: PerTransport::default(),
            refused: Mutex::default(),
            bus_latency: Histogram::new(&LATENCY_BUCKETS),
            sources: Mutex::default(),
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("accepted", &self.accepted_total())
            .finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// A request or message arrived with `bytes` of body, before decompression.
    pub fn received(&self, transport: Transport, bytes: usize) {
        self.received.add(transport, 1);
        self.bytes_received.add(transport, bytes as u64);
    }

    /// A report was made durable: `decoded_bytes` of JSON, after `bus_latency` on the bus.
    pub fn accepted(&self, transport: Transport, decoded_bytes: usize, bus_latency: Duration) {
        self.accepted.add(transport, 1);
        self.bytes_decoded.add(transport, decoded_bytes as u64);
        self.bus_latency.observe(bus_latency);
    }

    /// An input was refused with the stable reason `code` (`json_syntax`, `too_large`, ...).
    pub fn refused(&self, transport: Transport, code: &str) {
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        *refused
            .entry((transport.as_str(), code.to_owned()))
            .or_default() += 1;
    }

    /// Reports accepted so far over all transports.
    pub fn accepted_total(&self) -> u64 {
        TRANSPORTS.iter().map(|t| self.accepted.get(*t)).sum()
    }

    /// Adds a source whose lines follow the receivers' in [`Metrics::render`].
    pub fn add_source(&self, source: MetricsSource) {
        self.sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(source);
    }

    /// Appends the counters in Prometheus text format, then the other sources'.
    pub fn render(&self, out: &mut String) {
        let per_transport = |out: &mut String, name: &str, help: &str, counter: &PerTransport| {
            let counts = TRANSPORTS.map(|transport| (transport, counter.get(transport)));
            labelled(out, name, "counter", help, "transport", counts);
        };
        per_transport(
            out,
            "tlsrpt_received_total",
            "Reports received (HTTP requests, mail messages, imported files), before checks.",
            &self.received,
        );
        per_transport(
            out,
            "tlsrpt_accepted_total",
            "Reports accepted and durable on the bus.",
            &self.accepted,
        );
        per_transport(
            out,
            "tlsrpt_received_bytes_total",
            "Bytes received, before decompression.",
            &self.bytes_received,
        );
        per_transport(
            out,
            "tlsrpt_decoded_bytes_total",
            "Bytes of report JSON accepted, after decompression.",
            &self.bytes_decoded,
        );
        let _ = writeln!(
            out,
            "# HELP tlsrpt_refused_total Inputs refused, by reason.\n# TYPE tlsrpt_refused_total counter"
        );
        let refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        for ((transport, reason), count) in refused.iter() {
            let _ = writeln!(
                out,
                "tlsrpt_refused_total{{transport=\"{transport}\",reason=\"{reason}\"}} {count}"
            );
        }
        drop(refused);
        self.bus_latency.render(
            out,
            "tlsrpt_bus_latency_seconds",
            "Time from a decoded report to its durable append on the bus.",
        );
        for source in self
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            source(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_as_prometheus_text() {
        let metrics = Metrics::new();
        metrics.received(Transport::Https, 600);
        metrics.received(Transport::Https, 10);
        metrics.accepted(Transport::Https, 2000, Duration::from_millis(3));
        metrics.refused(Transport::Https, "json_syntax");
        let mut text = String::new();
        metrics.render(&mut text);
        for line in [
            "tlsrpt_received_total{transport=\"https\"} 2",
            "tlsrpt_received_bytes_total{transport=\"https\"} 610",
            "tlsrpt_accepted_total{transport=\"https\"} 1",
            "tlsrpt_accepted_total{transport=\"smtp\"} 0",
            "tlsrpt_decoded_bytes_total{transport=\"https\"} 2000",
            "tlsrpt_refused_total{transport=\"https\",reason=\"json_syntax\"} 1",
            "tlsrpt_bus_latency_seconds_bucket{le=\"0.002\"} 0",
            "tlsrpt_bus_latency_seconds_bucket{le=\"0.005\"} 1",
            "tlsrpt_bus_latency_seconds_bucket{le=\"+Inf\"} 1",
            "tlsrpt_bus_latency_seconds_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
