//! `tlsrpt-alerts-bench`: the alert engine scored on a provider's history, and timed.
//!
//! Setup (once per data directory): a seeded [`History`] (`--domains`, `--days`,
//! `--incidents`, `--seed`) is put through the real pipeline into `DATA_DIR/tables`, each
//! report with its simulated arrival time, and its ground truth written to
//! `DATA_DIR/truth.json` (written last: a directory without it is an interrupted setup).
//! An existing directory is used as it is, with the history its `truth.json` describes.
//!
//! Measured: the observations of the whole history loaded from the tables (timed), and one
//! evaluation pass from an empty state up to four days after the history (timed), which
//! replays it hour by hour as hourly passes would; the alerts scored against the ground
//! truth ([`tlsrpt_benches::scoring`]). Prints one JSON object on standard output (the
//! score, the times, the parts and steps, peak memory) and the readable score on standard
//! error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use serde::{Deserialize, Serialize};
use tlsrpt_alerts::AlertConfig;
use tlsrpt_benches::history::{History, HistoryConfig, TruthIncident};
use tlsrpt_benches::lookalikes::look_alikes;
use tlsrpt_benches::pipeline::write_tables;
use tlsrpt_benches::scoring::{replay, score};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Score and time the alert engine on a seeded provider history.
#[derive(Debug, Parser)]
#[command(name = "tlsrpt-alerts-bench", about, long_about)]
struct Args {
    /// The data directory: generated (tables and truth.json) if it does not exist.
    #[arg(long)]
    data_dir: PathBuf,
    /// Policy domains of a generated history.
    #[arg(long, default_value_t = 10_000)]
    domains: usize,
    /// Days of a generated history.
    #[arg(long, default_value_t = 90)]
    days: u32,
    /// Incidents injected into a generated history.
    #[arg(long, default_value_t = 50)]
    incidents: usize,
    /// Seed of a generated history.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Hours after first evidence within which a detection counts as in time.
    #[arg(long, default_value_t = 6)]
    within_hours: i64,
    /// Write the alerts here, one JSON object a line.
    #[arg(long)]
    json_events: Option<PathBuf>,
    /// The alert settings (TOML, as `tlsrpt alerts run --config`); the defaults without.
    #[arg(long)]
    config: Option<PathBuf>,
    /// For each failure incident not found in time, count the cells of domains without an
    /// incident that look at least as bad as what the incident had shown by then (more
    /// reports showing it, more failed sessions, a larger share of the day's sessions, a
    /// usual rate no higher): each is a false alert for any detector that would have found
    /// the incident in time (`tlsrpt_benches::lookalikes`).
    #[arg(long)]
    look_alikes: bool,
}

/// `DATA_DIR/truth.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Truth {
    config: HistoryConfig,
    seed: u64,
    reports: u64,
    domain_days: u64,
    incidents: Vec<TruthIncident>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let truth_path = args.data_dir.join("truth.json");
    let mut generated = None;
    if !args.data_dir.exists() {
        generated = Some(generate(&args)?);
    }
    let truth: Truth = serde_json::from_slice(&std::fs::read(&truth_path).with_context(|| {
        format!(
            "cannot read {}: an interrupted setup? remove {} to generate it again",
            truth_path.display(),
            args.data_dir.display()
        )
    })?)
    .with_context(|| format!("{} is not a ground truth", truth_path.display()))?;
    // The peak from here on is the alerting's, not the generator's or the transformer's.
    reset_peak_rss();

    eprintln!("tlsrpt-alerts-bench: loading the observations and replaying the history");
    let config = match &args.config {
        Some(path) => AlertConfig::from_file(path)?,
        None => AlertConfig::default(),
    };
    let run = replay(&args.data_dir, &truth.config, &config)?;
    let score = score(
        &truth.incidents,
        &run.events,
        truth.domain_days,
        chrono::Duration::hours(args.within_hours),
    );
    eprint!("{score}");
    if let Some(path) = &args.json_events {
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot write {}", path.display()))?,
        );
        for event in &run.events {
            serde_json::to_writer(&mut out, event)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
    }
    // The pass's peak, before the look-alikes' own ledger.
    let peak_rss = peak_rss_bytes();
    let look_alikes = if args.look_alikes {
        let within = chrono::Duration::hours(args.within_hours);
        let not_in_time: Vec<usize> = score
            .detected_late
            .iter()
            .map(|d| d.incident)
            .chain(score.missed.iter().map(|m| m.incident))
            .collect();
        let found = look_alikes(
            &run.observations,
            &truth.incidents,
            &not_in_time,
            within,
            config.evaluation.baseline_days,
            config.evaluation.min_baseline_days,
        );
        let allowed = truth.domain_days / 10_000;
        eprintln!(
            "look-alikes: background cells at least as bad as each incident's evidence {} h \
             after its first (false alerts allowed: {allowed})",
            args.within_hours
        );
        for look in &found {
            let e = &look.evidence;
            eprintln!(
                "  #{} {} {} on {}: {} report(s), {} failed of {} sessions, usual rate {:.3}% \
                 -> {} domains ({} domain-days); of the same type {} domains ({} domain-days); \
                 as unlikely from as many reports {} domains ({} domain-days)",
                look.incident,
                look.day,
                look.result_type,
                look.mx.as_deref().unwrap_or("(no MX)"),
                e.reports,
                e.failed,
                e.sessions,
                e.usual_rate * 100.0,
                look.domains,
                look.domain_days,
                look.same_type_domains,
                look.same_type_domain_days,
                look.as_unlikely_domains,
                look.as_unlikely_domain_days,
            );
        }
        Some(found)
    } else {
        None
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "history": {
                "config": truth.config,
                "seed": truth.seed,
                "reports": truth.reports,
                "domain_days": truth.domain_days,
                "generate_seconds": generated,
            },
            "load_seconds": run.load_seconds,
            "evaluate_seconds": run.evaluate_seconds,
            "parts": run.parts,
            "steps": run.steps,
            "events": run.events.len(),
            "peak_rss_bytes": peak_rss,
            "score": score,
            "look_alikes": look_alikes,
        }))?
    );
    Ok(())
}

/// Generates the history into the data directory; returns the seconds it took.
fn generate(args: &Args) -> anyhow::Result<f64> {
    let started = Instant::now();
    let config = HistoryConfig {
        domains: args.domains,
        days: args.days,
        incidents: args.incidents,
        ..HistoryConfig::default()
    };
    eprintln!(
        "tlsrpt-alerts-bench: generating {} domains × {} days into {}",
        config.domains,
        config.days,
        args.data_dir.display()
    );
    let history = History::new(config.clone(), args.seed);
    std::fs::create_dir_all(&args.data_dir)?;
    let reports = write_tables(&args.data_dir, history.reports())?;
    let truth = Truth {
        config,
        seed: args.seed,
        reports,
        domain_days: history.domain_days(),
        incidents: history.incidents().to_vec(),
    };
    write_atomically(
        &args.data_dir.join("truth.json"),
        &serde_json::to_vec_pretty(&truth)?,
    )?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("tlsrpt-alerts-bench: {reports} reports written in {seconds:.0} s");
    Ok(seconds)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let temporary = path.with_extension("json.tmp");
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, path)?;
    Ok(())
}

/// Resets the kernel's peak resident set size of this process (`VmHWM`; Linux 4.0+).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The peak resident set size (`VmHWM` of `/proc/self/status`), if known.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
