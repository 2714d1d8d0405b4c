//! The alert engine scored end to end on a small provider history: reports generated with
//! injected incidents, put through the real pipeline (bus, transformer, Parquet) with their
//! simulated arrival times, read back by the alerting's reader, and replayed in one pass
//! hour by hour, as hourly passes would have run live. The alerts are then scored against
//! the ground truth (`tlsrpt_benches::scoring`): the targets are those of the full bench
//! (`tlsrpt-alerts-bench`, 10,000 domains × 90 days), on a history small enough for a
//! debug build.

use chrono::Duration;
use tlsrpt_alerts::{AlertConfig, AlertState, Detector, EventState, evaluate_on};
use tlsrpt_benches::history::{History, HistoryConfig};
use tlsrpt_benches::pipeline::write_tables;
use tlsrpt_benches::scoring::{replay, score};

/// The targets: 48 of 50 incidents found within 6 hours of their first evidence, at most
/// one false alert per 10,000 domain-days.
const RECALL_MISSES_PER_50: usize = 2;
const WITHIN_HOURS: i64 = 6;
const FALSE_ALERTS_PER_10K_DOMAIN_DAYS: u64 = 1;

#[test]
fn alerts_find_the_injected_incidents_in_time_and_little_else() {
    let config = HistoryConfig {
        domains: 400,
        days: 60,
        incidents: 25,
        warmup_days: 28,
        ..HistoryConfig::default()
    };
    let history = History::new(config.clone(), 1);
    let dir = tempfile::tempdir().unwrap();

    let started = std::time::Instant::now();
    let written = write_tables(dir.path(), history.reports()).unwrap();
    let write_seconds = started.elapsed().as_secs_f64();
    let run = replay(dir.path(), &config, &AlertConfig::default()).unwrap();
    let score = score(
        history.incidents(),
        &run.events,
        history.domain_days(),
        Duration::hours(WITHIN_HOURS),
    );
    println!(
        "{written} reports written in {write_seconds:.1} s; {} parts loaded in {:.1} s, \
         {} steps evaluated in {:.1} s\n{score}",
        run.parts, run.load_seconds, run.steps, run.evaluate_seconds
    );

    // Alerts read as alerts: the title names the domain, a failure alert says what to do.
    let firing: Vec<_> = run
        .events
        .iter()
        .filter(|e| e.state == EventState::Firing)
        .collect();
    assert!(!firing.is_empty());
    for event in &firing {
        assert!(
            event.title.contains(&event.policy_domain),
            "{:?}: {}",
            event.detector,
            event.title
        );
        if matches!(
            event.detector,
            Detector::NewResultType | Detector::FailureSpike
        ) {
            assert!(event.text.contains("What to do"), "{}", event.text);
        }
    }

    // Enough incidents to score: one not shown by any report does not count.
    assert!(score.scored >= 20, "{} incidents scored", score.scored);
    // The target is 48 of 50 (96%) within 6 h; this sample reaches 24 of 25 (96%),
    // the full bench 48, 48 and 47 of 50 on three seeds (BENCHMARKS.md, "Anomaly alerts").
    // The fleet's heavy-report rule does not act on a sample this small (a fleet of 67,000
    // reports in four weeks cannot call one report a one-in-a-million event); the detector
    // tests cover it. What is out of reach: an incident whose first 6
    // hours of reports show no more than the background does, a few failed sessions in one
    // report (an incident that starts in the last hours of a small domain's day, a
    // secondary MX host of a small domain): `tlsrpt-alerts-bench --look-alikes` counts the
    // background that looks as bad. This asserts the level reached, so that a change that
    // loses recall fails here.
    const RECALL_REACHED_PERCENT: usize = 96;
    assert!(
        score.detected_in_time * 100 >= score.scored * RECALL_REACHED_PERCENT,
        "{} of {} incidents detected within {WITHIN_HOURS} h, below the {RECALL_REACHED_PERCENT}% \
         reached before (the issue asks {}%):\n{score}",
        score.detected_in_time,
        score.scored,
        100 - RECALL_MISSES_PER_50 * 2,
    );
    // The threads a pass runs on change nothing: the same alerts, the same state.
    let now = run.now;
    let observations = &run.observations;
    let on = |threads| {
        let mut state = AlertState::default();
        let outcome = evaluate_on(
            &AlertConfig::default(),
            observations,
            &mut state,
            now,
            threads,
        );
        (outcome.events, state)
    };
    let (one, one_state) = on(1);
    let (three, three_state) = on(3);
    assert_eq!(one.len(), run.events.len());
    assert!(one == three, "one thread and three disagree");
    assert!(
        one_state == three_state,
        "one thread and three leave different states"
    );

    let allowed_false =
        history.domain_days().div_ceil(10_000).max(1) * FALSE_ALERTS_PER_10K_DOMAIN_DAYS;
    assert!(
        score.false_alerts.len() as u64 <= allowed_false,
        "{} false alerts over {} domain-days (at most {allowed_false} allowed):\n{score}",
        score.false_alerts.len(),
        history.domain_days()
    );
}
