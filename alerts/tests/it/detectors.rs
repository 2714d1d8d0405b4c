//! The detectors and the pass on crafted series: a spike, a slow drift that must not fire,
//! a missing day, late arrival, a resolution, a restart in the middle of an incident.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use tlsrpt_alerts::state::Subject;
use tlsrpt_alerts::{
    AlertConfig, AlertEvent, AlertState, Detector, EventState, Observations, Severity, evaluate,
};

const DOMAIN: &str = "example.com";
const GOOGLE: &str = "Google Inc.";
const MICROSOFT: &str = "Microsoft Corporation";

fn date(day: i64) -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 1, 1).unwrap() + Duration::days(day)
}

/// The start of a day of the series.
fn midnight(day: i64) -> DateTime<Utc> {
    Utc.from_utc_datetime(&date(day).and_hms_opt(0, 0, 0).unwrap())
}

/// One report for `DOMAIN` of `day`, arriving `hours` after the day ended.
#[derive(Clone)]
struct Report<'a> {
    day: i64,
    hours: i64,
    reporter: &'a str,
    sessions: u64,
    failures: Vec<(Option<&'a str>, &'a str, u64)>,
    mode: Option<&'a str>,
}

impl<'a> Report<'a> {
    fn new(day: i64, reporter: &'a str, sessions: u64) -> Self {
        Self {
            day,
            hours: 3,
            reporter,
            sessions,
            failures: Vec::new(),
            mode: Some("enforce"),
        }
    }

    fn failing(mut self, mx: Option<&'a str>, result_type: &'a str, sessions: u64) -> Self {
        self.failures.push((mx, result_type, sessions));
        self
    }

    fn arriving(mut self, hours: i64) -> Self {
        self.hours = hours;
        self
    }

    fn mode(mut self, mode: Option<&'a str>) -> Self {
        self.mode = mode;
        self
    }

    fn arrival(&self) -> DateTime<Utc> {
        midnight(self.day + 1) + Duration::hours(self.hours)
    }
}

fn observations(reports: &[Report<'_>]) -> Observations {
    let mut observations = Observations::default();
    for r in reports {
        let failed: u64 = r.failures.iter().map(|f| f.2).sum();
        let part = observations.add_part(
            r.arrival(),
            date(r.day),
            r.reporter,
            DOMAIN,
            r.sessions,
            failed,
            r.mode,
        );
        for &(mx, result_type, sessions) in &r.failures {
            observations.add_failure(part, mx, result_type, sessions);
        }
    }
    observations.finish();
    observations
}

/// 30 ordinary days: Google 1,000 sessions a day with a little noise of validation
/// failures on mx1, Microsoft 400 clean ones.
fn ordinary_month() -> Vec<Report<'static>> {
    (0..30)
        .flat_map(|day| {
            [
                Report::new(day, GOOGLE, 1000).failing(
                    Some("mx1.example.com"),
                    "validation-failure",
                    3 + (day as u64 % 4),
                ),
                Report::new(day, MICROSOFT, 400).arriving(8),
            ]
        })
        .collect()
}

fn run(reports: &[Report<'_>], until: DateTime<Utc>) -> (Vec<AlertEvent>, AlertState) {
    let mut state = AlertState::default();
    let outcome = evaluate(
        &AlertConfig::default(),
        &observations(reports),
        &mut state,
        until,
    );
    (outcome.events, state)
}

fn firing(events: &[AlertEvent]) -> Vec<&AlertEvent> {
    events
        .iter()
        .filter(|e| e.state == EventState::Firing)
        .collect()
}

#[test]
fn an_ordinary_month_fires_nothing() {
    let (events, state) = run(&ordinary_month(), midnight(33));
    assert!(events.is_empty(), "{events:#?}");
    assert_eq!(state.watermark, Some(midnight(33)));
}

#[test]
fn an_expired_certificate_fires_once_as_soon_as_the_first_report_shows_it() {
    let mut reports = ordinary_month();
    for day in 30..33 {
        reports.push(
            Report::new(day, GOOGLE, 1000)
                .failing(Some("mx1.example.com"), "certificate-expired", 600)
                .failing(Some("mx1.example.com"), "validation-failure", 4),
        );
        reports.push(Report::new(day, MICROSOFT, 400).arriving(8).failing(
            Some("mx1.example.com"),
            "certificate-expired",
            250,
        ));
    }
    let (events, state) = run(&reports, midnight(34));
    let fired = firing(&events);
    assert_eq!(fired.len(), 1, "one incident, one alert: {fired:#?}");
    let alert = fired[0];
    assert_eq!(alert.detector, Detector::NewResultType);
    assert_eq!(alert.result_type.as_deref(), Some("certificate-expired"));
    assert_eq!(alert.receiving_mx_hostnames, ["mx1.example.com"]);
    assert_eq!(alert.severity, Severity::Critical, "enforced policy");
    // Google's report for day 30 arrives at 03:00 on day 31: the step that ends then fires.
    assert_eq!(alert.at, midnight(31) + Duration::hours(3));
    assert_eq!(alert.day, date(30));
    assert!(
        alert.text.contains("600 of 1000 sessions (60%)"),
        "{}",
        alert.text
    );
    assert!(alert.text.contains("What to do:"), "{}", alert.text);
    assert!(alert.sql.contains("result_type = 'certificate-expired'"));
    assert!(
        state
            .open_incident(
                DOMAIN,
                &Subject::Failure {
                    result_type: "certificate-expired".into()
                }
            )
            .is_some()
    );
}

#[test]
fn a_spike_of_a_type_the_domain_always_has_fires_against_its_baseline() {
    let mut reports = ordinary_month();
    reports.push(Report::new(30, GOOGLE, 1000).failing(
        Some("mx1.example.com"),
        "validation-failure",
        200,
    ));
    let (events, _) = run(&reports, midnight(32));
    let fired = firing(&events);
    assert_eq!(fired.len(), 1, "{fired:#?}");
    assert_eq!(fired[0].detector, Detector::FailureSpike);
    let baseline = fired[0].baseline_rate.unwrap();
    assert!((0.003..0.007).contains(&baseline), "{baseline}");
    assert!(fired[0].text.contains("usual day"), "{}", fired[0].text);
}

#[test]
fn a_slow_drift_does_not_fire() {
    // Validation failures creep from 1% to 14% over two months: a trend to look at in the
    // views, not an incident to page about.
    let reports: Vec<Report<'_>> = (0..60)
        .map(|day| {
            Report::new(day, GOOGLE, 1000).failing(
                Some("mx1.example.com"),
                "validation-failure",
                10 + day as u64 * 2 + (day as u64 * 7 % 5),
            )
        })
        .collect();
    let (events, _) = run(&reports, midnight(62));
    assert!(events.is_empty(), "{events:#?}");
}

#[test]
fn three_failed_sessions_out_of_five_page_nobody() {
    let mut reports = ordinary_month();
    reports.push(Report::new(30, "Small Sender", 5).failing(
        Some("mx2.example.com"),
        "certificate-expired",
        3,
    ));
    let (events, _) = run(&reports, midnight(32));
    assert!(events.is_empty(), "{events:#?}");
}

#[test]
fn a_few_failures_in_one_report_are_that_senders_but_in_three_reports_the_domains() {
    // Four senders, 100 sessions each a day, all clean.
    let senders = [GOOGLE, MICROSOFT, "Yahoo", "Comcast"];
    let mut reports: Vec<Report<'_>> = (0..30)
        .flat_map(|day| senders.map(|sender| Report::new(day, sender, 100)))
        .collect();
    // Day 30: one sender has 8 failed sessions on mx2 (2% of the day's sessions, a type the
    // domain never had): one sender's odd sessions, not the domain's trouble.
    for sender in senders {
        let report = Report::new(30, sender, 100);
        reports.push(if sender == "Yahoo" {
            report.failing(Some("mx2.example.com"), "certificate-not-trusted", 8)
        } else {
            report
        });
    }
    let (events, _) = run(&reports, midnight(32));
    assert!(events.is_empty(), "{events:#?}");

    // Day 31: three senders see 3 each on mx2: fewer sessions than day 30 had, but every
    // sender that reached mx2 saw it.
    for sender in senders {
        let report = Report::new(31, sender, 100);
        reports.push(if sender == "Comcast" {
            report
        } else {
            report.failing(Some("mx2.example.com"), "certificate-not-trusted", 3)
        });
    }
    let (events, _) = run(&reports, midnight(33));
    let fired = firing(&events);
    assert_eq!(fired.len(), 1, "{fired:#?}");
    assert_eq!(fired[0].day, date(31));
    assert_eq!(fired[0].receiving_mx_hostnames, ["mx2.example.com"]);
}

#[test]
fn a_secondary_mx_failing_in_many_reports_of_a_big_domain_counts_whatever_its_share() {
    // Four senders, 2,000 sessions each a day: 8,000 a day, mostly to mx1 and mx2.
    let senders = [GOOGLE, MICROSOFT, "Yahoo", "Comcast"];
    let history = |sporadic: bool| -> Vec<Report<'static>> {
        (0..30)
            .flat_map(|day| {
                senders.map(move |sender| {
                    let report = Report::new(day, sender, 2000);
                    // One odd session on mx3 three weeks before: the type is not new there.
                    if sporadic && day == 9 && sender == "Comcast" {
                        report.failing(Some("mx3.example.com"), "starttls-not-supported", 1)
                    } else {
                        report
                    }
                })
            })
            .collect()
    };
    // Day 30: mx3 stops offering STARTTLS late in the day; three senders see 4 failed
    // sessions each there, 0.15% of the domain's sessions: under every rate floor, but
    // in three reports and far beyond chance.
    let day30 = |failing: &[&'static str]| -> Vec<Report<'static>> {
        senders
            .iter()
            .map(|&sender| {
                let report = Report::new(30, sender, 2000);
                if failing.contains(&sender) {
                    report.failing(Some("mx3.example.com"), "starttls-not-supported", 4)
                } else {
                    report
                }
            })
            .collect()
    };
    for (sporadic, detector) in [
        (false, Detector::NewResultType),
        (true, Detector::FailureSpike),
    ] {
        let mut reports = history(sporadic);
        reports.extend(day30(&[GOOGLE, MICROSOFT, "Yahoo"]));
        let (events, _) = run(&reports, midnight(33));
        let fired = firing(&events);
        assert_eq!(fired.len(), 1, "{fired:#?}");
        assert_eq!(fired[0].detector, detector);
        assert_eq!(fired[0].day, date(30));
        assert_eq!(fired[0].receiving_mx_hostnames, ["mx3.example.com"]);

        // The same share in one sender's report is that sender's.
        let mut reports = history(sporadic);
        reports.extend(day30(&[]).into_iter().map(|r| {
            if r.reporter == MICROSOFT {
                r.failing(Some("mx3.example.com"), "starttls-not-supported", 12)
            } else {
                r
            }
        }));
        let (events, _) = run(&reports, midnight(33));
        assert!(
            firing(&events)
                .iter()
                .all(|e| e.detector == Detector::ReporterSpike),
            "{events:#?}"
        );
    }
}

#[test]
fn one_senders_failures_that_the_others_do_not_see_are_a_reporter_spike() {
    let senders = [GOOGLE, MICROSOFT, "Yahoo", "Comcast"];
    let mut reports: Vec<Report<'_>> = (0..30)
        .flat_map(|day| senders.map(|sender| Report::new(day, sender, 100)))
        .collect();
    // Day 30: Yahoo's report, third in, has 40 of its 100 sessions failing; the others'
    // have none.
    for (hours, sender) in senders.into_iter().enumerate() {
        let report = Report::new(30, sender, 100).arriving(hours as i64 + 1);
        reports.push(if sender == "Yahoo" {
            report.failing(Some("mx1.example.com"), "certificate-not-trusted", 40)
        } else {
            report
        });
    }
    let (events, _) = run(&reports, midnight(32));
    let fired = firing(&events);
    assert_eq!(fired.len(), 1, "{fired:#?}");
    assert_eq!(fired[0].detector, Detector::ReporterSpike);
    assert_eq!(fired[0].reporter.as_deref(), Some("Yahoo"));
}

#[test]
fn a_missing_day_is_not_zero_sessions_and_a_silent_daily_reporter_fires_after_two_days() {
    let mut reports = ordinary_month();
    // Microsoft sends nothing for days 30 and 31; Google goes on.
    reports.retain(|r| !(r.reporter == MICROSOFT && r.day >= 30));
    for day in 30..34 {
        reports.push(Report::new(day, GOOGLE, 1000));
    }
    // A day is complete (its reports can no longer be late) 48 hours after it ends: day 30
    // at day 33 00:00, day 31 at day 34 00:00, the step that fires.
    let (events, _) = run(&reports, midnight(34) - Duration::hours(1));
    assert!(
        events.is_empty(),
        "one silent day is not an incident: {events:#?}"
    );
    let (events, state) = run(&reports, midnight(34));
    let fired = firing(&events);
    assert_eq!(fired.len(), 1, "{fired:#?}");
    assert_eq!(fired[0].detector, Detector::ReporterQuiet);
    assert_eq!(fired[0].reporter.as_deref(), Some(MICROSOFT));
    assert_eq!(fired[0].at, midnight(34));
    assert_eq!(fired[0].since, date(30));

    // Its reports come back: the incident ends, once.
    reports.push(Report::new(34, MICROSOFT, 400).arriving(2));
    let mut state = state;
    let outcome = evaluate(
        &AlertConfig::default(),
        &observations(&reports),
        &mut state,
        midnight(36),
    );
    let resolved: Vec<_> = outcome
        .events
        .iter()
        .filter(|e| e.state == EventState::Resolved)
        .collect();
    assert_eq!(resolved.len(), 1, "{:#?}", outcome.events);
    assert_eq!(resolved[0].incident_id, fired[0].incident_id);
    assert!(firing(&outcome.events).is_empty());
}

#[test]
fn late_reports_of_a_day_already_alerted_do_not_fire_again_and_a_normal_day_resolves() {
    let mut reports = ordinary_month();
    reports.push(Report::new(30, GOOGLE, 1000).failing(
        Some("mx1.example.com"),
        "starttls-not-supported",
        900,
    ));
    // A late report of the same day, then a retry arriving a day later still.
    reports.push(Report::new(30, MICROSOFT, 400).arriving(20).failing(
        Some("mx1.example.com"),
        "starttls-not-supported",
        350,
    ));
    reports.push(Report::new(30, "Yahoo", 100).arriving(40).failing(
        Some("mx1.example.com"),
        "starttls-not-supported",
        90,
    ));
    // Fixed on day 31.
    reports.push(Report::new(31, GOOGLE, 1000).arriving(5));
    reports.push(Report::new(31, MICROSOFT, 400).arriving(9));
    let (events, state) = run(&reports, midnight(34));
    assert_eq!(firing(&events).len(), 1, "{events:#?}");
    let resolved: Vec<_> = events
        .iter()
        .filter(|e| e.state == EventState::Resolved)
        .collect();
    assert_eq!(resolved.len(), 1, "{events:#?}");
    assert_eq!(resolved[0].at, midnight(32) + Duration::hours(5));
    assert!(resolved[0].title.starts_with("Resolved: "));
    assert_eq!(state.open_count(), 0);
}

#[test]
fn a_day_with_too_few_reports_in_does_not_end_an_incident() {
    let mut reports = ordinary_month();
    reports.push(Report::new(30, GOOGLE, 1000).failing(
        Some("mx1.example.com"),
        "certificate-expired",
        900,
    ));
    // Day 31: only a small sender's clean report so far.
    reports.push(Report::new(31, "Small Sender", 30).arriving(1));
    let (events, state) = run(&reports, midnight(32) + Duration::hours(2));
    assert_eq!(firing(&events).len(), 1);
    assert!(events.iter().all(|e| e.state == EventState::Firing));
    assert_eq!(state.open_count(), 1);
}

#[test]
fn a_mode_change_fires_once_and_going_back_does_not_fire_again() {
    let mut reports: Vec<Report<'_>> = (0..30)
        .map(|day| Report::new(day, GOOGLE, 1000).mode(Some("testing")))
        .collect();
    reports.extend((30..33).map(|day| Report::new(day, GOOGLE, 1000).mode(Some("enforce"))));
    reports.extend((33..36).map(|day| Report::new(day, GOOGLE, 1000).mode(Some("testing"))));
    let (events, _) = run(&reports, midnight(37));
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].detector, Detector::ModeChange);
    assert_eq!(events[0].old_mode.as_deref(), Some("testing"));
    assert_eq!(events[0].new_mode.as_deref(), Some("enforce"));
    assert_eq!(events[0].severity, Severity::Info);
}

#[test]
fn a_restart_in_the_middle_of_an_incident_sends_nothing_twice() {
    let mut reports = ordinary_month();
    for day in 30..36 {
        reports.push(Report::new(day, GOOGLE, 1000).failing(None, "sts-policy-fetch-error", 300));
        reports.push(Report::new(day, MICROSOFT, 400).arriving(8));
    }
    reports.push(Report::new(36, GOOGLE, 1000));
    reports.push(Report::new(36, MICROSOFT, 400).arriving(8));
    let observed = observations(&reports);
    let config = AlertConfig::default();

    // In one go.
    let mut once = AlertState::default();
    let all = evaluate(&config, &observed, &mut once, midnight(39)).events;
    assert_eq!(all.len(), 2, "fired and resolved: {all:#?}");

    // Stopped after the alert, state saved and read back, then on.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts").join("state.json");
    let mut state = AlertState::default();
    let first = evaluate(
        &config,
        &observed,
        &mut state,
        midnight(33) + Duration::minutes(30),
    );
    state.save(&path).unwrap();
    let mut state = AlertState::load(&path).unwrap();
    let second = evaluate(&config, &observed, &mut state, midnight(39));
    let mut both = first.events;
    both.extend(second.events);
    assert_eq!(both, all);
}

/// A fleet of 100 other domains, 4 senders × 100 sessions a day each for days 0 to 30,
/// where a tenth of the domains a day get one sender's odd `validation-failure` sessions (1
/// to 3, on one of three MX hosts in turn, as senders' odd sessions land anywhere), and
/// `DOMAIN` beside them, clean until day 30 (but for one odd session of `result_type`
/// on mx2 on day 10 if `odd_before`), when two of its four senders each see 2 failed
/// sessions of `result_type` on mx2: 4 of 400, fewer than `min_failed_sessions` (3 each
/// with `odd_before`: a spike must also be over the 2% minimum rate).
fn fleet_and_two_reports_of(result_type: &str, odd_before: bool) -> Observations {
    fleet_beside_domain(
        100,
        |i, day, k| {
            (k as i64 == i % 4 && (i + day) % 10 == 0).then(|| {
                let mx = format!("mx{}.d{i}.example", day % 3 + 1);
                (mx, "validation-failure", 1 + ((i + day) / 10 % 3) as u64)
            })
        },
        result_type,
        |day, k| match (day, k) {
            (30, 0 | 1) if odd_before => 3,
            (30, 0 | 1) => 2,
            (10, 3) if odd_before => 1,
            _ => 0,
        },
    )
}

/// `domains` other domains named `d{i}.example` and `DOMAIN` beside them, 4 senders × 100
/// sessions a day each for days 0 to 30 (sender `k`'s report arriving `k + 1` hours after
/// the day): `fleet_failure(i, day, k)` is the failure (MX, type, failed sessions) in
/// domain `i`'s report from sender `k`, if any; `domain_failed(day, k)` the failed sessions
/// of `result_type` on mx2 in `DOMAIN`'s.
fn fleet_beside_domain(
    domains: i64,
    fleet_failure: impl Fn(i64, i64, usize) -> Option<(String, &'static str, u64)>,
    result_type: &str,
    domain_failed: impl Fn(i64, usize) -> u64,
) -> Observations {
    let senders = [GOOGLE, MICROSOFT, "Yahoo", "Comcast"];
    let mut observations = Observations::default();
    let mut add = |domain: &str, day: i64, k: usize, failure: Option<(&str, &str, u64)>| {
        let part = observations.add_part(
            midnight(day + 1) + Duration::hours(k as i64 + 1),
            date(day),
            senders[k],
            domain,
            100,
            failure.map_or(0, |f| f.2),
            Some("enforce"),
        );
        if let Some((mx, result_type, failed)) = failure {
            observations.add_failure(part, Some(mx), result_type, failed);
        }
    };
    for day in 0..31 {
        for i in 0..domains {
            let domain = format!("d{i}.example");
            for k in 0..senders.len() {
                let failure = fleet_failure(i, day, k);
                let failure = failure.as_ref().map(|(mx, t, n)| (mx.as_str(), *t, *n));
                add(&domain, day, k, failure);
            }
        }
        for k in 0..senders.len() {
            let failed = domain_failed(day, k);
            let failure = (failed > 0).then_some(("mx2.example.com", result_type, failed));
            add(DOMAIN, day, k, failure);
        }
    }
    observations.finish();
    observations
}

#[test]
fn two_reports_of_a_type_the_fleet_rarely_sees_new_count_and_of_a_common_one_do_not() {
    let run_with = |result_type, odd_before| {
        let mut state = AlertState::default();
        let outcome = evaluate(
            &AlertConfig::default(),
            &fleet_and_two_reports_of(result_type, odd_before),
            &mut state,
            midnight(33),
        );
        outcome.events
    };
    let run = |result_type| run_with(result_type, false);
    // No report of the fleet showed an expired certificate: two senders seeing one on the
    // same host the same day are not two senders' odd sessions.
    let events = run("certificate-expired");
    let fired = firing(&events);
    assert_eq!(fired.len(), 1, "{fired:#?}");
    assert_eq!(fired[0].detector, Detector::NewResultType);
    assert_eq!(fired[0].policy_domain, DOMAIN);
    assert_eq!(fired[0].day, date(30));
    // The alert fires with the first two reports (1 and 2 hours after the day), and says
    // why four failed sessions matter: one report in 11,313 (the fleet's 28 days of 404
    // reports, and one more) showed the type new.
    assert!(
        fired[0].text.contains(
            "2 of the day's 2 reports so far show it; across all domains, 0.0088% of the \
             reports of the four weeks before showed certificate-expired"
        ),
        "{}",
        fired[0].text
    );
    // One report in forty shows an odd validation failure somewhere, and 2 failed sessions
    // in one report are common among them: two of four is chance.
    let events = run("validation-failure");
    assert!(firing(&events).is_empty(), "{events:#?}");

    // One odd session three weeks before does not make the type usual on mx2: two reports
    // of 3 failed sessions are a spike of a cell as good as new (without that, two reports
    // are not breadth enough, and 6 failed sessions are not beyond one in a trillion).
    let events = run_with("certificate-expired", true);
    let fired = firing(&events);
    assert_eq!(fired.len(), 1, "{fired:#?}");
    assert_eq!(fired[0].detector, Detector::FailureSpike);
    assert_eq!(fired[0].day, date(30));
}

/// A fleet of 1,000 other domains, 4 senders × 100 sessions a day each for days 0 to 30,
/// where every day a tenth of the domains get one report with 8 failed sessions of
/// `validation-failure` on a host that had none before (a new one each time), and `DOMAIN`
/// beside them: clean until day 30 but for, if `persistent`, one failed session of
/// `result_type` on mx2 every third day; on day 30 the first of its four reports (the only
/// one in, 1 hour after the day) has 8 failed sessions of `result_type` on mx2.
fn fleet_and_one_heavy_report_of(result_type: &str, persistent: bool) -> Observations {
    fleet_beside_domain(
        1_000,
        |i, day, k| {
            (k as i64 == i % 4 && (i + day) % 10 == 0)
                .then(|| (format!("mx{day}.d{i}.example"), "validation-failure", 8))
        },
        result_type,
        |day, k| match (day, k) {
            (30, 0) => 8,
            (_, 3) if persistent && day % 3 == 0 => 1,
            _ => 0,
        },
    )
}

#[test]
fn one_report_far_heavier_than_the_fleet_ever_sees_counts_and_one_the_fleet_often_sees_does_not() {
    // Until 01:30 of day 31: only the heavy report is in for the day, so neither breadth
    // (three reports) nor numbers (20 failed sessions) can count; only its weight can.
    // The fleet here has 112,000 reports in four weeks, so one report cannot be rarer than
    // one in 112,000; a provider's has millions, for which the default bound is made.
    let mut config = AlertConfig::default();
    config.spike.heavy_report_max_chance = 2e-5;
    let run = |result_type, persistent| {
        let mut state = AlertState::default();
        let outcome = evaluate(
            &config,
            &fleet_and_one_heavy_report_of(result_type, persistent),
            &mut state,
            midnight(31) + Duration::minutes(90),
        );
        outcome
            .events
            .into_iter()
            .filter(|e| e.policy_domain == DOMAIN && e.state == EventState::Firing)
            .collect::<Vec<_>>()
    };
    // No report of the fleet carried 8 failed sessions of `certificate-not-trusted` where
    // one in a hundred was expected: a new type from one report.
    let fired = run("certificate-not-trusted", false);
    assert_eq!(fired.len(), 1, "{fired:#?}");
    assert_eq!(fired[0].detector, Detector::NewResultType);
    assert_eq!(fired[0].day, date(30));
    // The alert says why one report is enough: 8 where (0 + 1) / 11,200 × 100 were
    // expected, and 1 report in 112,001 of the fleet's (none, and one more) as heavy.
    assert!(
        fired[0].text.contains(
            "One report alone has 8 failed sessions where the host's usual rate predicts 0.01 \
             for its sessions; across all domains, 0.00089% of the reports of the four weeks \
             before were as heavy."
        ),
        "{}",
        fired[0].text
    );
    // The same report on a host that fails one session every third day: a spike.
    let fired = run("certificate-not-trusted", true);
    assert_eq!(fired.len(), 1, "{fired:#?}");
    assert_eq!(fired[0].detector, Detector::FailureSpike);
    assert_eq!(fired[0].day, date(30));
    // One report in forty across the fleet carries 8 failed validations on a host that
    // had none: one more is chance.
    let fired = run("validation-failure", false);
    assert!(fired.is_empty(), "{fired:#?}");
    // Without the fleet's weights, one report is one sender's trouble.
    config.spike.heavy_report_max_chance = 0.0;
    let mut state = AlertState::default();
    let outcome = evaluate(
        &config,
        &fleet_and_one_heavy_report_of("certificate-not-trusted", false),
        &mut state,
        midnight(31) + Duration::minutes(90),
    );
    assert!(
        !outcome
            .events
            .iter()
            .any(|e| e.policy_domain == DOMAIN && e.state == EventState::Firing),
        "{:#?}",
        outcome.events
    );
}

#[test]
fn a_small_domains_first_reports_count_in_three_reports_before_the_day_has_min_sessions() {
    // 4 senders × 10 sessions a day; one failed STARTTLS session on mx1 every tenth day.
    let mut reports = Vec::new();
    for day in 0..30 {
        for (k, sender) in [GOOGLE, MICROSOFT, "Yahoo", "Comcast"]
            .into_iter()
            .enumerate()
        {
            let mut report = Report::new(day, sender, 10).arriving(k as i64 + 1);
            if k == 3 && day % 10 == 5 {
                report = report.failing(Some("mx1.example.com"), "starttls-not-supported", 1);
            }
            reports.push(report);
        }
    }
    // Day 30: the first three reports have 6 sessions each, 3, 3 and 2 of them failed.
    for (k, (sender, failed)) in [(GOOGLE, 3), (MICROSOFT, 3), ("Yahoo", 2)]
        .into_iter()
        .enumerate()
    {
        reports.push(Report::new(30, sender, 6).arriving(k as i64 + 1).failing(
            Some("mx1.example.com"),
            "starttls-not-supported",
            failed,
        ));
    }
    // Two reports in (12 sessions, under `min_sessions`): not yet.
    let (events, _) = run(&reports, midnight(31) + Duration::minutes(150));
    assert!(firing(&events).is_empty(), "{events:#?}");
    // Three: 8 of 18 sessions failed in three senders' reports.
    let (events, _) = run(&reports, midnight(31) + Duration::minutes(210));
    let fired = firing(&events);
    assert_eq!(fired.len(), 1, "{fired:#?}");
    assert_eq!(fired[0].detector, Detector::FailureSpike);
    assert_eq!(fired[0].day, date(30));
    assert_eq!(fired[0].sessions, Some(18));
}
