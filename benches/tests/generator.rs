//! The generator: deterministic, realistic, accepted by the decoder; and the round-trip
//! properties of the report model on its output (JSON → model → JSON, model → Arrow → model).

use proptest::prelude::*;
use tlsrpt_benches::generator::{Generator, GeneratorConfig, Incident, IncidentKind, gzip, to_eml};
use tlsrpt_schemas::tables::{flatten, unflatten};
use tlsrpt_schemas::{Decoder, Envelope, ReceivedReport, ResultType, Transport, parse_report};

#[test]
fn the_same_seed_gives_the_same_stream() {
    let a: Vec<String> = Generator::new(GeneratorConfig::default(), 7)
        .take(500)
        .map(|g| g.json)
        .collect();
    let b: Vec<String> = Generator::new(GeneratorConfig::default(), 7)
        .take(500)
        .map(|g| g.json)
        .collect();
    let c: Vec<String> = Generator::new(GeneratorConfig::default(), 8)
        .take(500)
        .map(|g| g.json)
        .collect();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn every_form_is_accepted_and_quirks_are_recorded() {
    let config = GeneratorConfig {
        quirk_rate: 0.2,
        ..GeneratorConfig::default()
    };
    let mut decoder = Decoder::default();
    let (mut quirked, mut total) = (0, 0);
    for generated in Generator::new(config, 3).take(400) {
        total += 1;
        let from_json = decoder.decode(generated.json.as_bytes()).unwrap();
        let from_gz = decoder.decode(&gzip(generated.json.as_bytes())).unwrap();
        let from_eml = decoder.decode_email(&to_eml(&generated)).unwrap();
        assert_eq!(from_gz.report, from_json.report);
        assert_eq!(from_eml.decoded.report, from_json.report);
        assert_eq!(
            from_eml.headers.report_domain.as_deref(),
            Some(generated.policy_domain.as_str())
        );
        assert_eq!(
            from_eml.headers.report_submitter.as_deref(),
            Some(generated.submitter.as_str())
        );
        match generated.quirk {
            None => assert!(
                from_json.report.warnings.is_empty(),
                "{:?}",
                from_json.report.warnings
            ),
            Some(_) => quirked += 1,
        }
    }
    // 20% of 400, give or take sampling noise.
    assert!(
        (40..=120).contains(&quirked),
        "{quirked} of {total} quirked"
    );
}

#[test]
fn the_bench_profile_has_the_benches_shape() {
    let reports: Vec<_> = Generator::new(GeneratorConfig::bench(), 1)
        .take(2000)
        .collect();
    let bytes: usize = reports.iter().map(|g| g.json.len()).sum();
    let details: usize = reports
        .iter()
        .map(|g| {
            g.report
                .policies
                .iter()
                .map(|p| p.failure_details.len())
                .sum::<usize>()
        })
        .sum();
    let mean_bytes = bytes as f64 / 2000.0;
    let mean_details = details as f64 / 2000.0;
    assert!(
        (1700.0..2600.0).contains(&mean_bytes),
        "{mean_bytes} bytes per report"
    );
    assert!(
        (5.0..7.5).contains(&mean_details),
        "{mean_details} failure details per report"
    );
}

#[test]
fn failure_counts_add_up_outside_quirks() {
    for generated in Generator::new(GeneratorConfig::bench(), 2).take(500) {
        for policy in &generated.report.policies {
            let sum: u64 = policy
                .failure_details
                .iter()
                .filter_map(|d| d.failed_session_count)
                .sum();
            assert_eq!(Some(sum), policy.summary.total_failure_session_count);
        }
    }
}

#[test]
fn an_injected_incident_shows_from_its_day() {
    let config = GeneratorConfig {
        domains: 20,
        incidents: vec![Incident {
            kind: IncidentKind::CertExpired,
            domain_index: 3,
            start_day: 2,
            domain: String::new(),
            mx: String::new(),
        }],
        ..GeneratorConfig::default()
    };
    let generator = Generator::new(config, 5);
    let domain = generator.incidents()[0].domain.clone();
    let mx = generator.incidents()[0].mx.clone();
    let start = chrono::NaiveDate::from_ymd_opt(2025, 1, 3).unwrap();
    let (mut before, mut after) = (0, 0);
    for generated in generator.take(3000).filter(|g| g.policy_domain == domain) {
        let expired = generated.report.policies[0]
            .failure_details
            .iter()
            .any(|d| {
                d.result_type == ResultType::CertificateExpired
                    && d.receiving_mx_hostname.as_deref() == Some(mx.as_str())
            });
        if generated.report.date_range.start_datetime.date_naive() >= start {
            assert!(expired, "report after the incident without it");
            after += 1;
        } else {
            before += usize::from(expired);
        }
    }
    assert!(after > 0);
    assert!(
        before < 3,
        "{before} expired-certificate reports before the incident"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// JSON → model → JSON gives the same bytes, and the model equals the generated one.
    #[test]
    fn generated_reports_survive_json_round_trips(seed in any::<u64>()) {
        let config = GeneratorConfig { quirk_rate: 0.0, ..GeneratorConfig::bench() };
        for generated in Generator::new(config, seed).take(100) {
            let parsed = parse_report(&generated.json).unwrap();
            prop_assert_eq!(&parsed, &generated.report);
            prop_assert_eq!(parsed.to_json(), generated.json);
        }
    }

    /// model → Arrow → model gives the same reports.
    #[test]
    fn generated_reports_survive_arrow_round_trips(seed in any::<u64>()) {
        let config = GeneratorConfig { quirk_rate: 0.1, ..GeneratorConfig::default() };
        let received: Vec<ReceivedReport<'static>> = Generator::new(config, seed)
            .take(100)
            .map(|g| {
                let report = parse_report(&g.json).unwrap().into_owned();
                ReceivedReport {
                    report,
                    envelope: Envelope { transport: Transport::Import, received_at: g.received_at, submitter_header: Some(g.submitter), dkim: None },
                    raw_json: g.json.into(),
                }
            })
            .collect();
        let back = unflatten(&flatten(&received).unwrap()).unwrap();
        prop_assert_eq!(back.len(), received.len());
        for (original, back) in received.iter().zip(&back) {
            let codes = |r: &ReceivedReport<'_>| r.report.warnings.iter().map(|w| w.code).fold(Vec::new(), |mut v, c| { if !v.contains(&c) { v.push(c) } v });
            prop_assert_eq!(&back.report.policies, &original.report.policies);
            prop_assert_eq!(&back.report.report_id, &original.report.report_id);
            prop_assert_eq!(&back.report.date_range, &original.report.date_range);
            prop_assert_eq!(codes(back), codes(original));
            prop_assert_eq!(&back.raw_json, &original.raw_json);
        }
    }
}
