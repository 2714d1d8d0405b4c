//! A seeded generator of realistic TLS-RPT report streams.
//!
//! The stream walks day by day; each day every policy domain gets a report from each
//! reporter that sends it mail that day. A few big reporters (Google, Microsoft, Yahoo,
//! Mail.ru, Comcast) report on most domains, and a long tail of small ones on few (weights
//! fall as 1/rank). Most sessions succeed; failures use result types in rough proportion to
//! what providers see (validation failures and name mismatches common, DANE problems rare).
//! Real-world quirks are applied to a small share of reports, and incidents (a certificate
//! expiring, STARTTLS disappearing, an MTA-STS policy becoming unfetchable, a policy mode
//! change) are injected from a given day on, as ground truth for alerting.
//!
//! Everything is derived from the seed (ChaCha8): the same seed and configuration give the
//! same bytes, on any machine.

use std::borrow::Cow;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::Value;
use tlsrpt_schemas::{
    DateRange, FailureDetails, Policy, PolicyResult, PolicyType, Report, ResultType, Summary,
};

/// What to generate. Every field has a documented default ([`GeneratorConfig::default`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GeneratorConfig {
    /// Policy domains receiving mail (default 1,000).
    pub domains: usize,
    /// Days over which random incidents are placed (default 30). The stream itself goes on
    /// day after day for as many reports as are asked for.
    pub days: u32,
    /// The first report day (default 2025-01-01).
    pub start_date: NaiveDate,
    /// Small reporters in the long tail, besides the five big ones (default 40).
    pub tail_reporters: usize,
    /// Share of reports with failed sessions, outside incidents (default 0.1).
    pub failure_rate: f64,
    /// Failure-details entries in a report that has failures: uniform in this range
    /// (default 1 to 3).
    pub failure_details: (usize, usize),
    /// Share of reports with one real-world quirk (default 0.02).
    pub quirk_rate: f64,
    /// Incidents placed with the seed, in addition to `incidents` (default 0).
    pub random_incidents: usize,
    /// Incidents given explicitly.
    pub incidents: Vec<Incident>,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            domains: 1000,
            days: 30,
            start_date: NaiveDate::from_ymd_opt(2025, 1, 1).expect("valid date"),
            tail_reporters: 40,
            failure_rate: 0.1,
            failure_details: (1, 3),
            quirk_rate: 0.02,
            random_incidents: 0,
            incidents: Vec::new(),
        }
    }
}

impl GeneratorConfig {
    /// The benches' shape: every report has failures, 4 to 8 failure details (about 6), about
    /// 2 KB of compact JSON per report.
    pub fn bench() -> Self {
        Self {
            failure_rate: 1.0,
            failure_details: (4, 8),
            ..Self::default()
        }
    }
}

/// Kinds of injected incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IncidentKind {
    /// The certificate of one MX expires: `certificate-expired` from every reporter.
    CertExpired,
    /// One MX stops offering STARTTLS: `starttls-not-supported`.
    StarttlsStopped,
    /// The MTA-STS policy can no longer be fetched: `sts-policy-fetch-error`.
    StsFetchError,
    /// The MTA-STS policy changes from `testing` to `enforce`.
    ModeChange,
}

impl IncidentKind {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "cert-expired" => Some(Self::CertExpired),
            "starttls-stopped" => Some(Self::StarttlsStopped),
            "sts-fetch-error" => Some(Self::StsFetchError),
            "mode-change" => Some(Self::ModeChange),
            _ => None,
        }
    }
    const ALL: [IncidentKind; 4] = [
        Self::CertExpired,
        Self::StarttlsStopped,
        Self::StsFetchError,
        Self::ModeChange,
    ];
}

/// One injected incident: from `start_day` (0-based from the start date) on, for ever.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Incident {
    pub kind: IncidentKind,
    /// Index of the policy domain.
    pub domain_index: usize,
    pub start_day: u32,
    /// Filled in by the generator: the domain's name and the MX concerned.
    pub domain: String,
    pub mx: String,
}

/// One generated report.
#[derive(Debug, Clone)]
pub struct GeneratedReport {
    /// The report as generated, before any quirk was applied to its JSON.
    pub report: Report<'static>,
    /// The JSON as a sender would send it (compact; quirks applied).
    pub json: String,
    /// Simulated arrival: 0 to 2 days after the report's day, as real senders retry.
    pub received_at: DateTime<Utc>,
    /// The policy domain the report is about (the `TLS-Report-Domain`).
    pub policy_domain: String,
    /// The reporter's domain (the `TLS-Report-Submitter`).
    pub submitter: String,
    /// The incident this report shows, if any.
    pub incident: Option<IncidentKind>,
    /// The quirk applied to the JSON, if any.
    pub quirk: Option<&'static str>,
}

/// The quirks that can be applied, by name.
pub const QUIRKS: &[&str] = &[
    "contact_info_null",
    "datetime_without_zone",
    "mx_host_string",
    "mx_host_prefixed",
    "tlsa_policy_string_json_encoded",
    "failure_sum_mismatch",
    "unknown_result_type",
    "policy_domain_missing",
    "failure_details_missing",
    "end_datetime_next_day_midnight",
];

#[derive(Debug, Clone)]
struct Reporter {
    organization: String,
    contact: String,
    submitter: String,
    style: IdStyle,
    /// Chance of reporting on a given domain on a given day.
    weight: f64,
    sending_ips: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdStyle {
    Google,
    Microsoft,
    Uuid,
}

#[derive(Debug, Clone)]
struct Domain {
    name: String,
    mx: Vec<String>,
    mx_ips: Vec<String>,
    policy: DomainPolicy,
    dane: Vec<String>,
    max_age: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DomainPolicy {
    StsEnforce,
    StsTesting,
    Tlsa,
    None,
}

/// The generator: an endless iterator of reports.
#[derive(Debug)]
pub struct Generator {
    config: GeneratorConfig,
    rng: ChaCha8Rng,
    reporters: Vec<Reporter>,
    domains: Vec<Domain>,
    incidents: Vec<Incident>,
    day: u32,
    domain: usize,
    reporter: usize,
    serial: u64,
}

/// Result types with relative weights, for failures outside incidents.
const RESULT_WEIGHTS: &[(ResultType, u32)] = &[
    (ResultType::ValidationFailure, 30),
    (ResultType::CertificateHostMismatch, 25),
    (ResultType::CertificateNotTrusted, 12),
    (ResultType::StarttlsNotSupported, 10),
    (ResultType::CertificateExpired, 8),
    (ResultType::StsPolicyFetchError, 6),
    (ResultType::StsWebpkiInvalid, 3),
    (ResultType::StsPolicyInvalid, 2),
    (ResultType::DnssecInvalid, 2),
    (ResultType::TlsaInvalid, 1),
    (ResultType::DaneRequired, 1),
];

const WORDS: &[&str] = &[
    "acme",
    "globex",
    "initech",
    "umbrella",
    "hooli",
    "vandelay",
    "stark",
    "wayne",
    "wonka",
    "tyrell",
    "cyberdyne",
    "soylent",
    "oscorp",
    "monarch",
    "gringotts",
    "nakatomi",
];

fn ipv4(rng: &mut ChaCha8Rng, net: [u8; 3]) -> String {
    format!(
        "{}.{}.{}.{}",
        net[0],
        net[1],
        net[2],
        rng.random_range(1..255)
    )
}

fn ipv6(rng: &mut ChaCha8Rng) -> String {
    format!(
        "2001:db8:{:x}::{:x}",
        rng.random_range(1..0xffff),
        rng.random_range(1..0xffff)
    )
}

fn hex64(rng: &mut ChaCha8Rng) -> String {
    (0..32)
        .map(|_| format!("{:02X}", rng.random::<u8>()))
        .collect()
}

impl Generator {
    pub fn new(config: GeneratorConfig, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let big = [
            (
                "Google Inc.",
                "smtp-tls-reporting@google.com",
                "google.com",
                IdStyle::Google,
                0.9,
            ),
            (
                "Microsoft Corporation",
                "tlsrpt-noreply@microsoft.com",
                "microsoft.com",
                IdStyle::Microsoft,
                0.75,
            ),
            (
                "Yahoo",
                "smtp-tls-reporting@yahooinc.com",
                "yahoo.com",
                IdStyle::Uuid,
                0.35,
            ),
            (
                "Mail.ru",
                "tls_support@corp.mail.ru",
                "mail.ru",
                IdStyle::Uuid,
                0.2,
            ),
            (
                "Comcast",
                "tlsrpt@comcast.net",
                "comcast.net",
                IdStyle::Uuid,
                0.15,
            ),
        ];
        let mut reporters: Vec<Reporter> = big
            .iter()
            .map(
                |&(organization, contact, submitter, style, weight)| Reporter {
                    organization: organization.into(),
                    contact: contact.into(),
                    submitter: submitter.into(),
                    style,
                    weight,
                    sending_ips: Vec::new(),
                },
            )
            .collect();
        for rank in 0..config.tail_reporters {
            let name = format!("mx{rank}.{}-mail.example", WORDS[rank % WORDS.len()]);
            reporters.push(Reporter {
                organization: name.clone(),
                contact: format!("postmaster@{name}"),
                submitter: name,
                style: IdStyle::Uuid,
                weight: 0.3 / (rank as f64 + 2.0),
                sending_ips: Vec::new(),
            });
        }
        for (i, reporter) in reporters.iter_mut().enumerate() {
            let count = if i < 2 { 16 } else { 4 };
            reporter.sending_ips = (0..count)
                .map(|k| {
                    if k % 3 == 2 {
                        ipv6(&mut rng)
                    } else {
                        ipv4(&mut rng, [198, 51, (i % 200) as u8])
                    }
                })
                .collect();
        }
        let domains: Vec<Domain> = (0..config.domains)
            .map(|i| {
                let name = format!("{}{i}.example", WORDS[i % WORDS.len()]);
                let mx_count = rng.random_range(1..=4);
                let mx: Vec<String> = (1..=mx_count).map(|m| format!("mx{m}.{name}")).collect();
                let mx_ips = (0..mx_count)
                    .map(|_| ipv4(&mut rng, [203, 0, 113]))
                    .collect();
                let policy = match rng.random_range(0..100) {
                    0..60 => DomainPolicy::StsEnforce,
                    60..80 => DomainPolicy::StsTesting,
                    80..90 => DomainPolicy::Tlsa,
                    _ => DomainPolicy::None,
                };
                let dane = if policy == DomainPolicy::Tlsa || rng.random_bool(0.1) {
                    (0..rng.random_range(1..=2))
                        .map(|_| format!("3 1 1 {}", hex64(&mut rng)))
                        .collect()
                } else {
                    Vec::new()
                };
                let max_age = *[86_400u64, 604_800, 2_592_000, 31_557_600]
                    .choose(&mut rng)
                    .expect("non-empty");
                Domain {
                    name,
                    mx,
                    mx_ips,
                    policy,
                    dane,
                    max_age,
                }
            })
            .collect();

        let mut incidents = config.incidents.clone();
        for _ in 0..config.random_incidents {
            let kind = *IncidentKind::ALL.choose(&mut rng).expect("non-empty");
            incidents.push(Incident {
                kind,
                domain_index: rng.random_range(0..config.domains.max(1)),
                start_day: rng.random_range(config.days / 3..config.days.max(1)),
                domain: String::new(),
                mx: String::new(),
            });
        }
        for incident in &mut incidents {
            incident.domain_index %= domains.len().max(1);
            let domain = &domains[incident.domain_index];
            incident.domain = domain.name.clone();
            incident.mx = domain.mx[0].clone();
        }

        Self {
            config,
            rng,
            reporters,
            domains,
            incidents,
            day: 0,
            domain: 0,
            reporter: 0,
            serial: 0,
        }
    }

    /// The incidents of this stream, with their domains and MX hosts filled in.
    pub fn incidents(&self) -> &[Incident] {
        &self.incidents
    }

    pub fn config(&self) -> &GeneratorConfig {
        &self.config
    }

    /// Moves to the next (day, domain, reporter) triple.
    fn advance(&mut self) {
        self.reporter += 1;
        if self.reporter == self.reporters.len() {
            self.reporter = 0;
            self.domain += 1;
            if self.domain >= self.domains.len() {
                self.domain = 0;
                self.day += 1;
            }
        }
    }

    fn make(&mut self, day: u32, d: usize, r: usize) -> GeneratedReport {
        let date = self.config.start_date + Duration::days(i64::from(day));
        let start = Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).expect("midnight"));
        let end = start + Duration::seconds(86_399);
        let reporter = &self.reporters[r];
        let domain = &self.domains[d];
        let rng = &mut self.rng;
        self.serial += 1;
        let report_id = match reporter.style {
            IdStyle::Google => format!("{}_{}", start.format("%Y-%m-%dT%H:%M:%SZ"), domain.name),
            IdStyle::Microsoft => format!(
                "{}+{}",
                133_000_000_000_000_000u64 + self.serial * 7919,
                domain.name
            ),
            IdStyle::Uuid => format!(
                "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}@{}",
                rng.random::<u32>(),
                rng.random::<u16>(),
                rng.random::<u16>(),
                rng.random::<u16>(),
                rng.random::<u64>() & 0xffff_ffff_ffff,
                reporter.submitter
            ),
        };
        let active: Vec<&Incident> = self
            .incidents
            .iter()
            .filter(|i| i.domain_index == d && day >= i.start_day)
            .collect();
        // A domain with a mode-change incident publishes MTA-STS in `testing` until the
        // incident's day and in `enforce` from then on, whatever its policy otherwise.
        let mode_change = self
            .incidents
            .iter()
            .find(|i| i.domain_index == d && i.kind == IncidentKind::ModeChange);

        let mut policies = Vec::new();
        let sts_mode = match (mode_change, domain.policy) {
            (Some(change), _) if day >= change.start_day => Some("enforce"),
            (Some(_), _) | (None, DomainPolicy::StsTesting) => Some("testing"),
            (None, DomainPolicy::StsEnforce) => Some("enforce"),
            (None, _) => None,
        };
        let (policy_type, policy_string, mx_host) = match (sts_mode, domain.policy) {
            (Some(mode), _) => {
                let mut lines = vec!["version: STSv1".to_owned(), format!("mode: {mode}")];
                lines.extend(domain.mx.iter().map(|mx| format!("mx: {mx}")));
                lines.push(format!("max_age: {}", domain.max_age));
                (
                    PolicyType::Sts,
                    owned_texts(lines),
                    owned_texts(domain.mx.iter().cloned()),
                )
            }
            (None, DomainPolicy::Tlsa) => (
                PolicyType::Tlsa,
                owned_texts(domain.dane.iter().cloned()),
                Vec::new(),
            ),
            _ => (PolicyType::NoPolicyFound, Vec::new(), Vec::new()),
        };
        let sessions: u64 =
            1 + (rng.random_range(1.0f64..2000.0).powf(1.3) * reporter.weight) as u64;
        let mut failures = Vec::new();
        let mut incident = None;
        for active in &active {
            let result_type = match active.kind {
                IncidentKind::CertExpired => ResultType::CertificateExpired,
                IncidentKind::StarttlsStopped => ResultType::StarttlsNotSupported,
                IncidentKind::StsFetchError => ResultType::StsPolicyFetchError,
                IncidentKind::ModeChange => continue,
            };
            incident = Some(active.kind);
            failures.push(self_failure(
                rng,
                reporter,
                domain,
                result_type,
                0,
                sessions / 2 + 1,
            ));
        }
        if active.iter().any(|i| i.kind == IncidentKind::ModeChange) && incident.is_none() {
            incident = Some(IncidentKind::ModeChange);
        }
        if rng.random_bool(self.config.failure_rate.clamp(0.0, 1.0)) {
            let (low, high) = self.config.failure_details;
            let count = rng.random_range(low..=high.max(low));
            let total: u64 = rng.random_range(1..=(sessions / 5).max(count as u64));
            for k in 0..count {
                let share = (total / count as u64).max(1);
                let result_type = pick_result_type(rng);
                failures.push(self_failure(rng, reporter, domain, result_type, k, share));
            }
        }
        let failed: u64 = failures
            .iter()
            .filter_map(|f: &FailureDetails<'_>| f.failed_session_count)
            .sum();
        policies.push(PolicyResult {
            policy: Policy {
                policy_type: Some(policy_type.clone()),
                policy_string,
                policy_domain: Some(domain.name.clone().into()),
                mx_host,
            },
            summary: Summary {
                total_successful_session_count: Some(sessions),
                total_failure_session_count: Some(failed),
            },
            failure_details: failures,
        });
        // Microsoft reports the DANE policy beside the MTA-STS one.
        if reporter.style == IdStyle::Microsoft
            && policy_type == PolicyType::Sts
            && !domain.dane.is_empty()
        {
            policies.push(PolicyResult {
                policy: Policy {
                    policy_type: Some(PolicyType::Tlsa),
                    policy_string: owned_texts(domain.dane.iter().cloned()),
                    policy_domain: Some(domain.name.clone().into()),
                    mx_host: Vec::new(),
                },
                summary: Summary {
                    total_successful_session_count: Some(sessions),
                    total_failure_session_count: Some(0),
                },
                failure_details: Vec::new(),
            });
        }
        let report = Report {
            organization_name: reporter.organization.clone().into(),
            date_range: DateRange {
                start_datetime: start,
                end_datetime: end,
            },
            contact_info: Some(reporter.contact.clone().into()),
            report_id: report_id.into(),
            policies,
            warnings: Vec::new(),
        };
        let quirk = if rng.random_bool(self.config.quirk_rate.clamp(0.0, 1.0)) {
            Some(*QUIRKS.choose(rng).expect("non-empty"))
        } else {
            None
        };
        let json = match quirk {
            None => report.to_json(),
            Some(quirk) => {
                let mut value = serde_json::to_value(&report).expect("a report serialises");
                apply_quirk(&mut value, quirk);
                value.to_string()
            }
        };
        let received_at = end + Duration::seconds(rng.random_range(60..2 * 86_400));
        GeneratedReport {
            policy_domain: domain.name.clone(),
            submitter: reporter.submitter.clone(),
            report,
            json,
            received_at,
            incident,
            quirk,
        }
    }
}

fn pick_result_type(rng: &mut ChaCha8Rng) -> ResultType {
    let total: u32 = RESULT_WEIGHTS.iter().map(|(_, w)| w).sum();
    let mut pick = rng.random_range(0..total);
    for (result_type, weight) in RESULT_WEIGHTS {
        if pick < *weight {
            return result_type.clone();
        }
        pick -= weight;
    }
    ResultType::ValidationFailure
}

fn reason_code(result_type: &ResultType) -> Option<&'static str> {
    Some(match result_type {
        ResultType::ValidationFailure => "X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
        ResultType::CertificateHostMismatch => "X509_V_ERR_HOSTNAME_MISMATCH",
        ResultType::CertificateExpired => "X509_V_ERR_CERT_HAS_EXPIRED",
        ResultType::CertificateNotTrusted => "X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN",
        ResultType::StsPolicyFetchError => "bad https response code: 404",
        _ => return None,
    })
}

/// One failure-details entry for an MX of the domain.
fn self_failure(
    rng: &mut ChaCha8Rng,
    reporter: &Reporter,
    domain: &Domain,
    result_type: ResultType,
    k: usize,
    count: u64,
) -> FailureDetails<'static> {
    let policy_level = matches!(
        result_type,
        ResultType::StsPolicyFetchError
            | ResultType::StsPolicyInvalid
            | ResultType::StsWebpkiInvalid
    );
    let m = (k + rng.random_range(0..domain.mx.len())) % domain.mx.len();
    FailureDetails {
        sending_mta_ip: (!policy_level).then(|| {
            reporter
                .sending_ips
                .choose(rng)
                .expect("non-empty")
                .clone()
                .into()
        }),
        receiving_mx_hostname: (!policy_level).then(|| domain.mx[m].clone().into()),
        receiving_mx_helo: (!policy_level && rng.random_bool(0.3))
            .then(|| format!("{}.outbound.example", domain.mx[m]).into()),
        receiving_ip: (!policy_level).then(|| domain.mx_ips[m].clone().into()),
        failed_session_count: Some(count),
        additional_information: rng.random_bool(0.2).then(|| {
            format!(
                "https://{}/tls-report-info#{}",
                reporter.submitter,
                result_type.as_str()
            )
            .into()
        }),
        failure_reason_code: reason_code(&result_type).map(Cow::Borrowed),
        result_type,
    }
}

/// Texts of a generated model, owned: a generated report outlives the generator's call
/// (and a history's the domains it is drawn for).
pub(crate) fn owned_texts(texts: impl IntoIterator<Item = String>) -> Vec<Cow<'static, str>> {
    texts.into_iter().map(Cow::Owned).collect()
}

/// Bends the JSON the way a real sender does.
fn apply_quirk(value: &mut Value, quirk: &str) {
    let policy = &mut value["policies"][0];
    match quirk {
        "contact_info_null" => value["contact-info"] = Value::Null,
        "datetime_without_zone" => {
            for key in ["start-datetime", "end-datetime"] {
                if let Some(text) = value["date-range"][key].as_str() {
                    value["date-range"][key] = Value::String(text.trim_end_matches('Z').to_owned());
                }
            }
        }
        "mx_host_string" => {
            if let Some(first) = policy["policy"]["mx-host"].get(0).cloned() {
                policy["policy"]["mx-host"] = first;
            }
        }
        "mx_host_prefixed" => {
            if let Some(hosts) = policy["policy"]["mx-host"].as_array_mut() {
                for host in hosts {
                    *host = Value::String(format!("mx: {}", host.as_str().unwrap_or_default()));
                }
            }
        }
        "tlsa_policy_string_json_encoded" => {
            if let Some(records) = policy["policy"]["policy-string"].as_array() {
                let encoded = Value::Array(records.clone()).to_string();
                policy["policy"]["policy-type"] = Value::String("tlsa".into());
                policy["policy"]["policy-string"] = Value::Array(vec![Value::String(encoded)]);
            }
        }
        "failure_sum_mismatch" => {
            let total = policy["summary"]["total-failure-session-count"]
                .as_u64()
                .unwrap_or(0);
            policy["summary"]["total-failure-session-count"] = Value::from(total + 1);
        }
        "unknown_result_type" => {
            if let Some(first) = policy["failure-details"].get_mut(0) {
                first["result-type"] = Value::String("tls-version-too-old".into());
            }
        }
        "policy_domain_missing" => {
            if let Some(p) = policy["policy"].as_object_mut() {
                p.remove("policy-domain");
            }
        }
        "failure_details_missing" => {
            if let Some(p) = policy.as_object_mut() {
                p.remove("failure-details");
            }
        }
        "end_datetime_next_day_midnight" => {
            if let Some(start) = value["date-range"]["start-datetime"].as_str()
                && let Ok(start) = DateTime::parse_from_rfc3339(start)
            {
                let end = (start + Duration::days(1)).with_timezone(&Utc);
                value["date-range"]["end-datetime"] =
                    Value::String(end.format("%Y-%m-%dT%H:%M:%SZ").to_string());
            }
        }
        _ => {}
    }
}

impl Iterator for Generator {
    type Item = GeneratedReport;

    fn next(&mut self) -> Option<GeneratedReport> {
        loop {
            let (day, d, r) = (self.day, self.domain, self.reporter);
            self.advance();
            // Whether this reporter sent mail to this domain today; the big ones nearly
            // always do, the tail rarely. Domains with an incident get reports from every
            // big reporter, so the incident is seen.
            let weight = self.reporters[r].weight;
            if self.rng.random_bool(weight.clamp(0.0, 1.0)) {
                return Some(self.make(day, d, r));
            }
        }
    }
}

/// gzip with default settings, as senders compress attachments and POST bodies.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 3),
        flate2::Compression::default(),
    );
    encoder.write_all(data).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

/// The report as a mail from its sender (RFC 8460 §5.3.1), CRLF line endings.
pub fn to_eml(generated: &GeneratedReport) -> Vec<u8> {
    use base64::Engine;
    let report = &generated.report;
    let start = report.date_range.start_datetime.timestamp();
    let end = report.date_range.end_datetime.timestamp();
    let filename = format!(
        "{}!{}!{start}!{end}!{}.json.gz",
        generated.submitter,
        generated.policy_domain,
        report
            .report_id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(16)
            .collect::<String>()
    );
    let boundary = format!("tlsrpt-{}", report.report_uid());
    let encoded = base64::engine::general_purpose::STANDARD.encode(gzip(generated.json.as_bytes()));
    let mut mail = String::with_capacity(encoded.len() + 1200);
    let date = generated.received_at.format("%a, %d %b %Y %H:%M:%S +0000");
    mail.push_str(&format!(
        "From: {contact}\r\nTo: tlsrpt@{domain}\r\nDate: {date}\r\n\
         Message-ID: <{uid}@{submitter}>\r\n\
         Subject: Report Domain: {domain} Submitter: {submitter} Report-ID: <{id}>\r\n\
         TLS-Report-Domain: {domain}\r\nTLS-Report-Submitter: {submitter}\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=\"tlsrpt\"; boundary=\"{boundary}\"\r\n\r\n\
         --{boundary}\r\nContent-Type: text/plain; charset=\"us-ascii\"\r\nContent-Transfer-Encoding: 7bit\r\n\r\n\
         This is an aggregate TLS report from {submitter}\r\n\r\n\
         --{boundary}\r\nContent-Type: application/tlsrpt+gzip\r\nContent-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"{filename}\"\r\n\r\n",
        contact = report.contact_info.as_deref().unwrap_or("noreply@invalid"),
        domain = generated.policy_domain,
        submitter = generated.submitter,
        uid = report.report_uid(),
        id = report.report_id,
    ));
    for line in encoded.as_bytes().chunks(76) {
        mail.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        mail.push_str("\r\n");
    }
    mail.push_str(&format!("\r\n--{boundary}--\r\n"));
    mail.into_bytes()
}
