//! `tlsrpt-gen`: write a seeded stream of realistic TLS-RPT reports to a directory.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use chrono::NaiveDate;
use clap::{Parser, ValueEnum};
use tlsrpt_benches::generator::{Generator, GeneratorConfig, Incident, IncidentKind, gzip, to_eml};

/// Generate realistic TLS-RPT reports, deterministically from a seed.
///
/// A few big reporters and a long tail report daily on many policy domains; most sessions
/// succeed; a small share of reports carry the quirks real senders produce; incidents can be
/// injected. `manifest.json` in the output directory records the configuration, the seed
/// and the incidents (the ground truth for alert tests).
#[derive(Debug, Parser)]
#[command(name = "tlsrpt-gen", version, about, long_about)]
struct Args {
    /// How many reports to write.
    #[arg(long, default_value_t = 1000)]
    reports: usize,
    /// The seed: the same seed and options give the same bytes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output directory (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// One file per report (`json`, `json.gz`, `eml`) or one `reports.jsonl`.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
    /// `bench`: every report has failures, 4-8 failure details, about 2 KB of JSON.
    #[arg(long, value_enum, default_value_t = Profile::Default)]
    profile: Profile,
    /// Policy domains.
    #[arg(long)]
    domains: Option<usize>,
    /// Days over which random incidents are placed.
    #[arg(long)]
    days: Option<u32>,
    /// The first report day, YYYY-MM-DD.
    #[arg(long)]
    start_date: Option<NaiveDate>,
    /// Share of reports with failures (0 to 1).
    #[arg(long)]
    failure_rate: Option<f64>,
    /// Share of reports with a real-world quirk (0 to 1).
    #[arg(long)]
    quirk_rate: Option<f64>,
    /// Incidents to place at random (with the seed).
    #[arg(long, default_value_t = 0)]
    incidents: usize,
    /// An incident KIND:DOMAIN_INDEX:DAY; KIND is cert-expired, starttls-stopped,
    /// sts-fetch-error or mode-change. Repeatable.
    #[arg(long = "incident", value_name = "KIND:DOMAIN:DAY")]
    incident: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Json,
    #[value(name = "json.gz")]
    JsonGz,
    Eml,
    Jsonl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Profile {
    Default,
    Bench,
}

fn parse_incident(text: &str) -> anyhow::Result<Incident> {
    let parts: Vec<&str> = text.split(':').collect();
    let [kind, domain, day] = parts[..] else {
        bail!("--incident {text}: expected KIND:DOMAIN_INDEX:DAY");
    };
    Ok(Incident {
        kind: IncidentKind::parse(kind)
            .with_context(|| format!("--incident {text}: unknown kind {kind}"))?,
        domain_index: domain
            .parse()
            .with_context(|| format!("--incident {text}: DOMAIN_INDEX"))?,
        start_day: day
            .parse()
            .with_context(|| format!("--incident {text}: DAY"))?,
        domain: String::new(),
        mx: String::new(),
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = match args.profile {
        Profile::Default => GeneratorConfig::default(),
        Profile::Bench => GeneratorConfig::bench(),
    };
    if let Some(v) = args.domains {
        config.domains = v.max(1);
    }
    if let Some(v) = args.days {
        config.days = v.max(1);
    }
    if let Some(v) = args.start_date {
        config.start_date = v;
    }
    if let Some(v) = args.failure_rate {
        config.failure_rate = v;
    }
    if let Some(v) = args.quirk_rate {
        config.quirk_rate = v;
    }
    config.random_incidents = args.incidents;
    config.incidents = args
        .incident
        .iter()
        .map(|i| parse_incident(i))
        .collect::<anyhow::Result<_>>()?;

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let generator = Generator::new(config.clone(), args.seed);
    let incidents = generator.incidents().to_vec();
    let mut jsonl = match args.format {
        Format::Jsonl => Some(std::io::BufWriter::new(std::fs::File::create(
            args.out.join("reports.jsonl"),
        )?)),
        _ => None,
    };
    let (mut bytes, mut quirked) = (0usize, 0usize);
    for (n, report) in generator.take(args.reports).enumerate() {
        bytes += report.json.len();
        quirked += usize::from(report.quirk.is_some());
        let name = format!("{n:08}");
        match args.format {
            Format::Json => std::fs::write(args.out.join(format!("{name}.json")), &report.json)?,
            Format::JsonGz => std::fs::write(
                args.out.join(format!("{name}.json.gz")),
                gzip(report.json.as_bytes()),
            )?,
            Format::Eml => std::fs::write(args.out.join(format!("{name}.eml")), to_eml(&report))?,
            Format::Jsonl => {
                let out = jsonl.as_mut().expect("opened for jsonl");
                out.write_all(report.json.as_bytes())?;
                out.write_all(b"\n")?;
            }
        }
    }
    if let Some(mut out) = jsonl {
        out.flush()?;
    }
    let manifest = serde_json::json!({
        "seed": args.seed,
        "reports": args.reports,
        "format": format!("{:?}", args.format).to_lowercase(),
        "json_bytes": bytes,
        "quirked_reports": quirked,
        "config": config,
        "incidents": incidents,
    });
    std::fs::write(
        args.out.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)?,
    )?;
    eprintln!(
        "wrote {} reports ({:.0} bytes of JSON each on average, {quirked} with quirks) to {}",
        args.reports,
        bytes as f64 / args.reports.max(1) as f64,
        args.out.display()
    );
    Ok(())
}
