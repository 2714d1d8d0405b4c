//! The built-in views against generated data whose answers are counted here, in Rust, from
//! the reports themselves (not through SQL): a provider of 40 domains over several days,
//! with the generator's failures and quirks (counts left out among them).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use tlsrpt_benches::generator::{Generator, GeneratorConfig};
use tlsrpt_schemas::{Envelope, ReceivedReport, Transport, parse_report};

use crate::support::{Root, range, rows, write};

/// Generated reports as received: a provider of 40 domains over several days.
pub(crate) fn generated() -> Vec<ReceivedReport<'static>> {
    generated_from(GeneratorConfig::default().start_date)
}

/// [`generated`], its first day `start`.
fn generated_from(start: chrono::NaiveDate) -> Vec<ReceivedReport<'static>> {
    let config = GeneratorConfig {
        domains: 40,
        failure_rate: 0.4,
        quirk_rate: 0.1,
        start_date: start,
        ..GeneratorConfig::default()
    };
    Generator::new(config, 15)
        .take(1_200)
        .map(|generated| ReceivedReport {
            report: parse_report(&generated.json).unwrap().into_owned(),
            envelope: Envelope {
                transport: Transport::Https,
                received_at: generated.received_at,
                submitter_header: None,
                dkim: None,
            },
            raw_json: generated.json.into(),
        })
        .collect()
}

/// A sum that is null when every value was (as SQL's `sum`).
#[derive(Debug, Default, Clone, Copy)]
struct Sum(Option<u64>);

impl Sum {
    fn add(&mut self, value: Option<u64>) {
        if let Some(v) = value {
            self.0 = Some(self.0.unwrap_or(0) + v);
        }
    }
    fn text(self) -> String {
        self.0.map(|v| v.to_string()).unwrap_or_default()
    }
}

/// `part / (ok + failed)` in millionths, rounded, as the test's SQL asks for it; empty when
/// either sum is null or the total is zero.
fn rate(part: Sum, ok: Sum, failed: Sum) -> String {
    match (part.0, ok.0, failed.0) {
        (Some(part), Some(ok), Some(failed)) if ok + failed > 0 => {
            ((part as f64 / (ok + failed) as f64 * 1e6).round() as i64).to_string()
        }
        _ => String::new(),
    }
}

#[derive(Default)]
struct Group {
    ok: Sum,
    failed: Sum,
    reports: BTreeSet<String>,
    names: [BTreeSet<String>; 3],
    dates: BTreeSet<String>,
}

fn set_text(set: &BTreeSet<String>) -> String {
    set.len().to_string()
}

#[tokio::test]
async fn every_view_agrees_with_counts_made_from_the_reports() {
    let reports = generated();
    let root = Root::new();
    let mut by_day: BTreeMap<chrono::NaiveDate, Vec<ReceivedReport<'static>>> = BTreeMap::new();
    for report in &reports {
        by_day
            .entry(report.report.date_range.start_datetime.date_naive())
            .or_default()
            .push(report.clone());
    }
    assert!(by_day.len() >= 5, "several days: {}", by_day.len());
    for (index, day) in by_day.values().enumerate() {
        write(&root.path, range(0, index as u64, index as u64), day);
    }
    let engine = root.engine();

    let mut by_domain: BTreeMap<(String, String), Group> = BTreeMap::new();
    let mut by_reporter: BTreeMap<(String, String), Group> = BTreeMap::new();
    let mut by_mx: BTreeMap<(String, String), Group> = BTreeMap::new();
    let mut by_result: BTreeMap<(String, String), Group> = BTreeMap::new();
    let mut by_ip: BTreeMap<(String, String), Group> = BTreeMap::new();
    let mut overview: BTreeMap<(String, String), Group> = BTreeMap::new();
    let mut delivery: BTreeMap<(String, String), (Group, String)> = BTreeMap::new();
    let mut failure_rows = 0;
    for received in &reports {
        let report = &received.report;
        let date = report.date_range.start_datetime.date_naive().to_string();
        let org = report.organization_name.to_string();
        let uid = report.report_uid();
        let (group, last) = delivery.entry((date.clone(), org.clone())).or_default();
        group.reports.insert(uid.clone());
        let received_at = received
            .envelope
            .received_at
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string();
        if received_at > *last {
            *last = received_at;
        }
        for policy in &report.policies {
            // `count(DISTINCT …)` skips nulls: a policy without a domain adds no domain.
            let named_domain: BTreeSet<String> = policy
                .policy
                .policy_domain
                .iter()
                .map(|d| d.to_string())
                .collect();
            let domain = policy
                .policy
                .policy_domain
                .as_deref()
                .unwrap_or_default()
                .to_owned();
            let summary = &policy.summary;
            delivery
                .get_mut(&(date.clone(), org.clone()))
                .unwrap()
                .0
                .names[0]
                .extend(named_domain.iter().cloned());
            for (map, key) in [
                (&mut by_domain, (date.clone(), domain.clone())),
                (&mut by_reporter, (date.clone(), org.clone())),
                (
                    &mut overview,
                    (
                        domain.clone(),
                        policy
                            .policy
                            .policy_type
                            .as_ref()
                            .map(|t| t.as_str().to_owned())
                            .unwrap_or_default(),
                    ),
                ),
            ] {
                let g = map.entry(key).or_default();
                g.ok.add(summary.total_successful_session_count);
                g.failed.add(summary.total_failure_session_count);
                g.reports.insert(uid.clone());
                g.names[0].insert(org.clone());
                g.names[1].extend(named_domain.iter().cloned());
                g.dates.insert(date.clone());
                if let Some(mode) = policy.policy.sts_mode_and_max_age().0 {
                    g.names[2].insert(mode.to_owned());
                }
            }
            for failure in &policy.failure_details {
                failure_rows += 1;
                let mx = failure
                    .receiving_mx_hostname
                    .as_deref()
                    .unwrap_or_default()
                    .to_owned();
                let result = failure.result_type.as_str().to_owned();
                let g = by_mx.entry((date.clone(), mx.clone())).or_default();
                g.failed.add(failure.failed_session_count);
                g.names[0].extend(named_domain.iter().cloned());
                g.names[2].insert(result.clone());
                let g = by_result.entry((date.clone(), result)).or_default();
                g.failed.add(failure.failed_session_count);
                g.names[0].extend(named_domain.iter().cloned());
                if let Some(mx) = &failure.receiving_mx_hostname {
                    g.names[1].insert(mx.to_string());
                }
                if let Some(ip) = &failure.sending_mta_ip {
                    let g = by_ip.entry((date.clone(), ip.to_string())).or_default();
                    g.failed.add(failure.failed_session_count);
                    g.names[0].extend(named_domain.iter().cloned());
                    if let Some(mx) = &failure.receiving_mx_hostname {
                        g.names[1].insert(mx.to_string());
                    }
                    g.names[2].insert(org.clone());
                }
            }
        }
    }
    assert!(failure_rows > 300, "the data has failures: {failure_rows}");

    let expect = |map: &BTreeMap<(String, String), Group>,
                  line: &dyn Fn(&(String, String), &Group) -> String| {
        map.iter().map(|(k, g)| line(k, g)).collect::<Vec<_>>()
    };
    let check = |name: &str, got: Vec<String>, want: Vec<String>| {
        assert_eq!(got.len(), want.len(), "{name}: row count");
        for (got, want) in got.iter().zip(&want) {
            assert_eq!(got, want, "{name}");
        }
    };

    check(
        "failure_trend_by_domain",
        rows(
            &engine,
            "SELECT date, coalesce(policy_domain, ''), successful_sessions, failed_sessions, \
             CAST(round(failure_rate * 1000000) AS BIGINT), reports, reporters \
             FROM failure_trend_by_domain ORDER BY 1, 2",
        )
        .await,
        expect(&by_domain, &|(d, k), g| {
            format!(
                "{d}|{k}|{}|{}|{}|{}|{}",
                g.ok.text(),
                g.failed.text(),
                rate(g.failed, g.ok, g.failed),
                g.reports.len(),
                set_text(&g.names[0])
            )
        }),
    );
    check(
        "failure_trend_by_reporter",
        rows(
            &engine,
            "SELECT date, organization_name, successful_sessions, failed_sessions, \
             CAST(round(failure_rate * 1000000) AS BIGINT), policy_domains \
             FROM failure_trend_by_reporter ORDER BY 1, 2",
        )
        .await,
        expect(&by_reporter, &|(d, k), g| {
            format!(
                "{d}|{k}|{}|{}|{}|{}",
                g.ok.text(),
                g.failed.text(),
                rate(g.failed, g.ok, g.failed),
                set_text(&g.names[1])
            )
        }),
    );
    check(
        "failure_trend_by_mx",
        rows(
            &engine,
            "SELECT date, coalesce(receiving_mx_hostname, ''), failed_sessions, policy_domains, \
             result_types FROM failure_trend_by_mx ORDER BY 1, 2",
        )
        .await,
        expect(&by_mx, &|(d, k), g| {
            format!(
                "{d}|{k}|{}|{}|{}",
                g.failed.text(),
                set_text(&g.names[0]),
                set_text(&g.names[2])
            )
        }),
    );
    check(
        "failure_trend_by_result_type",
        rows(
            &engine,
            "SELECT date, result_type, failed_sessions, policy_domains, receiving_mxes \
             FROM failure_trend_by_result_type ORDER BY 1, 2",
        )
        .await,
        expect(&by_result, &|(d, k), g| {
            format!(
                "{d}|{k}|{}|{}|{}",
                g.failed.text(),
                set_text(&g.names[0]),
                set_text(&g.names[1])
            )
        }),
    );
    check(
        "top_failing_sending_ips",
        rows(
            &engine,
            "SELECT date, sending_mta_ip, failed_sessions, policy_domains, receiving_mxes, \
             reporters FROM top_failing_sending_ips ORDER BY 1, 2",
        )
        .await,
        expect(&by_ip, &|(d, k), g| {
            format!(
                "{d}|{k}|{}|{}|{}|{}",
                g.failed.text(),
                set_text(&g.names[0]),
                set_text(&g.names[1]),
                set_text(&g.names[2])
            )
        }),
    );
    check(
        "policy_overview",
        rows(
            &engine,
            "SELECT coalesce(policy_domain, ''), coalesce(policy_type, ''), \
             array_to_string(sts_modes, ','), successful_sessions, failed_sessions, \
             CAST(round(success_rate * 1000000) AS BIGINT), first_date, last_date, reporters \
             FROM policy_overview ORDER BY 1, 2",
        )
        .await,
        expect(&overview, &|(k, t), g| {
            let mut modes = String::new();
            for (i, m) in g.names[2].iter().enumerate() {
                let _ = write!(modes, "{}{m}", if i > 0 { "," } else { "" });
            }
            format!(
                "{k}|{t}|{modes}|{}|{}|{}|{}|{}|{}",
                g.ok.text(),
                g.failed.text(),
                rate(g.ok, g.ok, g.failed),
                g.dates.first().unwrap(),
                g.dates.last().unwrap(),
                set_text(&g.names[0])
            )
        }),
    );
    let want_delivery: Vec<String> = delivery
        .iter()
        .map(|((d, org), (g, last))| {
            format!("{d}|{org}|{}|{}|{last}", g.reports.len(), g.names[0].len())
        })
        .collect();
    check(
        "report_delivery",
        rows(&engine, "SELECT date, organization_name, reports, policy_domains, \
             to_char(last_received_at, '%Y-%m-%dT%H:%M:%S%.6fZ') FROM report_delivery ORDER BY 1, 2").await,
        want_delivery,
    );
}

/// Every view read from the rollups gives the answer of its SQL over the raw tables, on
/// generated data written as many small flushes (so the rollups' rows for one key are spread
/// over many files and must add up).
#[tokio::test]
async fn every_view_from_the_rollups_equals_its_sql_over_the_raw_tables() {
    let root = Root::new();
    let by_day = generated_by_day();
    let mut offset = 0;
    for day in by_day.values() {
        for chunk in day.chunks(17) {
            write(&root.path, range(0, offset, offset), chunk);
            offset += 1;
        }
    }
    for engine in [root.engine(), root.uncached_engine()] {
        for (view, from_rollups, from_raw) in views_and_raw(&engine).await {
            assert!(!from_raw.is_empty(), "{view}");
            assert_eq!(from_rollups, from_raw, "{view}");
        }
    }
}

/// [`generated`] by the date the reports cover.
fn generated_by_day() -> BTreeMap<chrono::NaiveDate, Vec<ReceivedReport<'static>>> {
    by_day(generated())
}

/// `reports` by the date they cover.
fn by_day(
    reports: Vec<ReceivedReport<'static>>,
) -> BTreeMap<chrono::NaiveDate, Vec<ReceivedReport<'static>>> {
    let mut by_day: BTreeMap<chrono::NaiveDate, Vec<ReceivedReport<'static>>> = BTreeMap::new();
    for report in reports {
        by_day
            .entry(report.report.date_range.start_datetime.date_naive())
            .or_default()
            .push(report);
    }
    by_day
}

/// Every view's rows, sorted, next to the same question over the raw tables, sorted.
async fn views_and_raw(
    engine: &tlsrpt_query::QueryEngine,
) -> Vec<(String, Vec<String>, Vec<String>)> {
    let mut answers = Vec::new();
    for view in tlsrpt_query::views::VIEWS {
        let mut from_view = rows(engine, &format!("SELECT * FROM {}", view.name)).await;
        let mut from_raw = rows(engine, view.raw_sql).await;
        from_view.sort();
        from_raw.sort();
        answers.push((view.name.to_owned(), from_view, from_raw));
    }
    answers
}

/// The per-day views keep their answers by date between queries and check them against the
/// files at every scan: after new files on some cached dates, a new date, a compaction that
/// replaces a date's files, and a window over a few dates, every view still equals its SQL
/// over the raw tables; dates whose files did not change are answered from memory.
#[tokio::test]
async fn cached_views_follow_new_files_new_dates_and_compactions() {
    let by_day = generated_by_day();
    let days: Vec<&Vec<ReceivedReport<'static>>> = by_day.values().collect();
    assert!(days.len() >= 4, "the generator spans several days");
    let (last_day, earlier) = days.split_last().unwrap();
    let root = Root::new();
    // Partition 0: every earlier day in chunks of 17, without its last 5 reports, which
    // partition 1 brings later on every second day; each day's offsets are consecutive.
    let mut day_offsets = Vec::new();
    let mut offset = 0;
    for day in earlier {
        let first = offset;
        for chunk in day[..day.len() - 5].chunks(17) {
            write(&root.path, range(0, offset, offset), chunk);
            offset += 1;
        }
        day_offsets.push((first, offset - 1));
    }
    let engine = root.engine();
    let dated_views = tlsrpt_query::views::VIEWS
        .iter()
        .filter(|v| v.name != "policy_overview")
        .count();

    let check = |answers: Vec<(String, Vec<String>, Vec<String>)>, step: &str| {
        for (view, from_view, from_raw) in answers {
            assert!(!from_raw.is_empty(), "{step}: {view}");
            assert_eq!(from_view, from_raw, "{step}: {view}");
        }
    };
    check(views_and_raw(&engine).await, "first answers");
    // Cached or not, each view shows its SQL to catalogs.
    for view in tlsrpt_query::views::VIEWS {
        let definition = rows(
            &engine,
            &format!(
                "SELECT definition FROM information_schema.views WHERE table_name = '{}'",
                view.name
            ),
        )
        .await;
        assert_eq!(definition, [view.sql], "{}", view.name);
    }
    let stats = engine.view_cache_stats().unwrap();
    // policy_overview's parts: one per year, and one per month once its year has changed;
    // and its whole answer.
    let spans = |days: &[&Vec<ReceivedReport<'static>>], span: &str| {
        days.iter()
            .map(|day| {
                day[0]
                    .report
                    .date_range
                    .start_datetime
                    .format(span)
                    .to_string()
            })
            .collect::<BTreeSet<_>>()
            .len()
    };
    assert_eq!(
        stats.entries,
        dated_views * earlier.len() + spans(earlier, "%Y") + 1,
        "one entry per view and date, and policy_overview's per year and whole"
    );
    assert!(stats.bytes > 0);

    // New files on every second date, and a new date.
    let mut late = 0;
    for day in earlier.iter().step_by(2) {
        write(&root.path, range(1, late, late), &day[day.len() - 5..]);
        late += 1;
    }
    write(&root.path, range(1, late, late), last_day);
    check(
        views_and_raw(&engine).await,
        "after late files and a new date",
    );
    assert_eq!(
        engine.view_cache_stats().unwrap().entries,
        dated_views * days.len() + spans(&days, "%Y") + spans(&days, "%Y-%m") + 1
    );

    // A compaction of the second date's partition-0 files into one file whose range covers
    // theirs: the old files are superseded (still on disk, no longer visible).
    let (first, last) = day_offsets[1];
    let day = earlier[1];
    write(&root.path, range(0, first, last), &day[..day.len() - 5]);
    check(views_and_raw(&engine).await, "after a compaction");

    // A window of two dates answers as the same window of the raw question.
    let from = days[1][0].report.date_range.start_datetime.date_naive();
    let to = days[2][0].report.date_range.start_datetime.date_naive();
    for view in tlsrpt_query::views::VIEWS
        .iter()
        .filter(|v| v.name != "policy_overview")
    {
        let window = format!("WHERE date BETWEEN DATE '{from}' AND DATE '{to}'");
        let mut from_view = rows(&engine, &format!("SELECT * FROM {} {window}", view.name)).await;
        let mut from_raw = rows(
            &engine,
            &format!("SELECT * FROM ({}) {window}", view.raw_sql),
        )
        .await;
        from_view.sort();
        from_raw.sort();
        assert!(!from_raw.is_empty(), "{}", view.name);
        assert_eq!(from_view, from_raw, "window: {}", view.name);
    }
}

/// The cache answers from memory while a date's files are unchanged: a file changed behind
/// the layout's back (rewritten under the same name, which the transformer never does) is not
/// seen by the cached view, while the raw tables and an engine without the cache see it. This
/// is what makes the cached answers cheap, and why the layout's rule matters.
#[tokio::test]
async fn cached_views_are_answered_from_memory_while_the_files_stay_the_same() {
    let one_day = generated_by_day().into_values().next().unwrap();
    let root = Root::new();
    write(&root.path, range(0, 0, 0), &one_day[..one_day.len() / 2]);
    let cached = root.engine();
    let uncached = root.uncached_engine();
    let question = "SELECT sum(reports) FROM report_delivery";
    let before = rows(&cached, question).await;
    assert_eq!(before, rows(&uncached, question).await);
    // The same name, twice the reports.
    write(&root.path, range(0, 0, 0), &one_day);
    assert_eq!(
        rows(&cached, question).await,
        before,
        "answered from memory"
    );
    assert_ne!(
        rows(&uncached, question).await,
        before,
        "the files did change"
    );
    assert!(uncached.view_cache_stats().is_none());
}

/// [`generated`] from 30 January on, by day: the days of January, then February's.
fn across_two_months() -> Vec<Vec<ReceivedReport<'static>>> {
    let start = chrono::NaiveDate::from_ymd_opt(2025, 1, 30).unwrap();
    by_day(generated_from(start)).into_values().collect()
}

/// Whether the reports of `day` cover a day of January.
fn in_january(day: &[ReceivedReport<'static>]) -> bool {
    day[0]
        .report
        .date_range
        .start_datetime
        .format("%m")
        .to_string()
        == "01"
}

/// `policy_overview` is merged from parts kept per year and, once a year has changed, per
/// month: on data that spans two months, it equals its SQL over the raw tables; a month whose
/// files did not change is answered from memory (a file rewritten there under the same name,
/// which the transformer never does, goes unseen), while new files in the other month are
/// seen at the next question, their year's part combined again from the two months.
#[tokio::test]
async fn policy_overview_is_merged_from_parts_kept_per_month_and_reads_again_the_months_that_changed()
 {
    let days = across_two_months();
    let in_january = days.iter().filter(|day| in_january(day)).count();
    assert!(
        in_january >= 1 && days.len() > in_january + 1,
        "the reports span two months and several days of the second"
    );
    let root = Root::new();
    let cached = root.engine();
    let uncached = root.uncached_engine();
    let view = tlsrpt_query::views::VIEWS
        .iter()
        .find(|v| v.name == "policy_overview")
        .unwrap();
    let sorted = |mut rows: Vec<String>| {
        rows.sort();
        rows
    };
    let overview = "SELECT * FROM policy_overview";
    // Every day but the last, without the last 3 reports of the second month's first day.
    let late_day = in_january;
    let (last_day, earlier) = days.split_last().unwrap();
    for (offset, day) in earlier.iter().enumerate() {
        let upto = if offset == late_day {
            day.len() - 3
        } else {
            day.len()
        };
        write(
            &root.path,
            range(0, offset as u64, offset as u64),
            &day[..upto],
        );
    }
    let first = sorted(rows(&cached, overview).await);
    assert!(!first.is_empty());
    assert_eq!(
        first,
        sorted(rows(&cached, view.raw_sql).await),
        "first answer"
    );
    assert_eq!(first, sorted(rows(&uncached, overview).await), "uncached");
    assert_eq!(
        cached.view_cache_stats().unwrap().entries,
        2,
        "a year seen for the first time is computed at once; the whole answer is kept"
    );

    // The late reports in February: the year is split into its months.
    let late = &days[late_day][days[late_day].len() - 3..];
    write(&root.path, range(1, 0, 0), late);
    let with_late = sorted(rows(&cached, overview).await);
    assert_ne!(with_late, first, "February's new file is seen");
    assert_eq!(with_late, sorted(rows(&cached, view.raw_sql).await));
    assert_eq!(
        cached.view_cache_stats().unwrap().entries,
        4,
        "one entry per month, one for their year, one for the whole answer"
    );

    // The same name in January, fewer reports: unseen through the cache.
    write(&root.path, range(0, 0, 0), &days[0][..days[0].len() / 2]);
    assert_eq!(
        sorted(rows(&cached, overview).await),
        with_late,
        "answered from memory"
    );
    let rewritten = sorted(rows(&uncached, overview).await);
    assert_ne!(rewritten, with_late, "the files did change");

    // A new day in February: seen at once, with January still from memory.
    let offset = earlier.len() as u64;
    write(&root.path, range(0, offset, offset), last_day);
    let after = sorted(rows(&cached, overview).await);
    assert_ne!(after, with_late, "February's new day is seen");
    // Back to January's real files: then the cache, the plain view and the raw SQL agree.
    write(&root.path, range(0, 0, 0), &days[0]);
    let januarys_real = sorted(rows(&uncached, overview).await);
    assert_eq!(
        after, januarys_real,
        "January from memory, February read again"
    );
    assert_eq!(after, sorted(rows(&cached, view.raw_sql).await));
    assert_eq!(cached.view_cache_stats().unwrap().entries, 4);
}

/// With a budget smaller than one date's rows nothing is kept, and the views still answer.
#[tokio::test]
async fn a_view_cache_too_small_for_a_date_keeps_nothing_and_answers_all_the_same() {
    let root = Root::new();
    for (offset, day) in generated_by_day().values().enumerate() {
        write(&root.path, range(0, offset as u64, offset as u64), day);
    }
    let engine = root.engine_with(tlsrpt_query::QueryOptions {
        view_cache_bytes: Some(64),
        ..tlsrpt_query::QueryOptions::default()
    });
    for (view, from_view, from_raw) in views_and_raw(&engine).await {
        assert_eq!(from_view, from_raw, "{view}");
    }
    let stats = engine.view_cache_stats().unwrap();
    assert_eq!((stats.entries, stats.bytes), (0, 0), "{stats:?}");
    assert!(stats.too_large > 0, "{stats:?}");
}

/// Warming computes every view for the latest dates with data, and `policy_overview` whole,
/// before anyone asks: a question about those dates is then answered from memory (a file
/// rewritten there under the same name, which the transformer never does, goes unseen), and
/// older dates are not computed. Kept warm at an interval, a new date is computed without a
/// question. With the cache off, warming does nothing.
#[tokio::test]
async fn warming_computes_the_views_for_the_latest_dates_before_anyone_asks() {
    let by_day = generated_by_day();
    let days: Vec<(chrono::NaiveDate, &Vec<ReceivedReport<'static>>)> =
        by_day.iter().map(|(date, day)| (*date, day)).collect();
    assert!(days.len() >= 4, "the generator spans several days");
    let (&(new_date, new_day), earlier) = days.split_last().unwrap();
    let root = Root::new();
    for (offset, (_, day)) in earlier.iter().enumerate() {
        write(&root.path, range(0, offset as u64, offset as u64), day);
    }
    let engine = root.engine_with(tlsrpt_query::QueryOptions {
        view_warm_all_time: false,
        ..tlsrpt_query::QueryOptions::default()
    });
    let uncached = root.uncached_engine();
    let dated_views = tlsrpt_query::views::VIEWS
        .iter()
        .filter(|v| v.parts.is_none())
        .count();
    let years = |dates: &mut dyn Iterator<Item = chrono::NaiveDate>| {
        dates
            .map(|date| date.format("%Y").to_string())
            .collect::<BTreeSet<_>>()
            .len()
    };

    assert_eq!(
        uncached.warm_views(2).await.unwrap(),
        tlsrpt_query::WarmedViews::default(),
        "nothing to keep the rows in"
    );
    assert_eq!(engine.view_cache_stats().unwrap().entries, 0);
    let last = earlier.last().unwrap().0;
    let first = last.pred_opt().unwrap();
    let warmed = engine.warm_views(2).await.unwrap();
    assert_eq!(warmed.dates, Some((first, last)));
    assert!(warmed.failed.is_empty(), "{:?}", warmed.failed);
    assert!(warmed.all_time.is_empty(), "{:?}", warmed.all_time);
    assert_eq!(
        warmed.views,
        tlsrpt_query::views::VIEWS
            .iter()
            .map(|v| v.name)
            .collect::<Vec<_>>()
    );
    let in_window = earlier.iter().filter(|(date, _)| *date >= first).count();
    assert!(in_window >= 1 && in_window < earlier.len());
    assert_eq!(
        engine.view_cache_stats().unwrap().entries,
        dated_views * in_window + years(&mut earlier.iter().map(|(date, _)| *date)) + 1,
        "each per-day view for the dates warmed, policy_overview per year and whole"
    );

    // What the window holds, before a file there is rewritten behind the layout's back.
    let window = |view: &str| format!("SELECT * FROM {view} WHERE date >= DATE '{first}'");
    let sorted = |mut rows: Vec<String>| {
        rows.sort();
        rows
    };
    let mut before = Vec::new();
    for view in tlsrpt_query::views::VIEWS
        .iter()
        .filter(|v| v.parts.is_none())
    {
        before.push(sorted(rows(&uncached, &window(view.name)).await));
    }
    let overview_before = sorted(rows(&uncached, "SELECT * FROM policy_overview").await);
    let (_, last_day) = earlier.last().unwrap();
    let last_offset = earlier.len() as u64 - 1;
    write(
        &root.path,
        range(0, last_offset, last_offset),
        &last_day[..last_day.len() / 2],
    );
    for (view, expected) in tlsrpt_query::views::VIEWS
        .iter()
        .filter(|v| v.parts.is_none())
        .zip(&before)
    {
        assert!(!expected.is_empty(), "{}", view.name);
        assert_eq!(
            &sorted(rows(&engine, &window(view.name)).await),
            expected,
            "{}: answered from what warming computed",
            view.name
        );
    }
    assert_eq!(
        sorted(rows(&engine, "SELECT * FROM policy_overview").await),
        overview_before,
        "policy_overview answered from what warming computed"
    );
    assert_ne!(
        sorted(rows(&uncached, &window("report_delivery")).await),
        before[tlsrpt_query::views::VIEWS
            .iter()
            .filter(|v| v.parts.is_none())
            .position(|v| v.name == "report_delivery")
            .unwrap()],
        "the files did change"
    );
    assert_eq!(
        engine.view_cache_stats().unwrap().entries,
        dated_views * in_window + years(&mut earlier.iter().map(|(date, _)| *date)) + 1,
        "no question asked about a date warming had not computed"
    );

    // Kept warm every 20 ms: a new date is computed before anyone asks about it.
    let keeping = tokio::spawn(
        std::sync::Arc::clone(&engine)
            .keep_views_warm(2, Some(std::time::Duration::from_millis(20))),
    );
    let new_window = format!("SELECT * FROM report_delivery WHERE date = DATE '{new_date}'");
    let new_offset = earlier.len() as u64;
    write(&root.path, range(0, new_offset, new_offset), new_day);
    let new_answer = sorted(rows(&uncached, &new_window).await);
    assert!(!new_answer.is_empty());
    // Each per-day view gains the new date; policy_overview's year, changed, is split into
    // its months (or a new year is computed whole).
    let months = |year: String| {
        days.iter()
            .filter(|(date, _)| date.format("%Y").to_string() == year)
            .map(|(date, _)| date.format("%Y-%m").to_string())
            .collect::<BTreeSet<_>>()
            .len()
    };
    let new_year = new_date.format("%Y").to_string();
    let split = if earlier
        .iter()
        .any(|(date, _)| date.format("%Y").to_string() == new_year)
    {
        months(new_year)
    } else {
        0
    };
    let expected =
        dated_views * (in_window + 1) + years(&mut days.iter().map(|(date, _)| *date)) + split + 1;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while engine.view_cache_stats().unwrap().entries < expected
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    keeping.abort();
    assert_eq!(
        engine.view_cache_stats().unwrap().entries,
        expected,
        "the new date {new_date} computed in the background"
    );
    write(
        &root.path,
        range(0, new_offset, new_offset),
        &new_day[..new_day.len() / 2],
    );
    assert_eq!(
        sorted(rows(&engine, &new_window).await),
        new_answer,
        "the new date answered from what warming computed"
    );
}

/// When the cache is full, the dates warming computed are dropped last: after all time of
/// `failure_trend_by_mx`, more than the budget holds, every view still answers its warmed
/// window from memory (a file rewritten there under the same name goes unseen), where dropping
/// the least recently used entries first would have dropped the views warmed first.
#[tokio::test]
async fn warmed_dates_are_dropped_last_when_the_cache_is_full() {
    let by_day = generated_by_day();
    let root = Root::new();
    for (offset, day) in by_day.values().enumerate() {
        write(&root.path, range(0, offset as u64, offset as u64), day);
    }
    let all_time = "SELECT * FROM failure_trend_by_mx";
    // What the window takes, and what all time of one view adds, with room for everything.
    let roomy = root.engine_with(tlsrpt_query::QueryOptions {
        view_warm_all_time: false,
        ..tlsrpt_query::QueryOptions::default()
    });
    roomy.warm_views(2).await.unwrap();
    let warmed = roomy.view_cache_stats().unwrap();
    rows(&roomy, all_time).await;
    let with_all_time = roomy.view_cache_stats().unwrap();
    assert!(with_all_time.entries > warmed.entries + 2);

    // Room for the window and a twentieth more: all time does not fit.
    let budget = warmed.bytes + warmed.bytes / 20;
    assert!(with_all_time.bytes > budget);
    let full = root.engine_with(tlsrpt_query::QueryOptions {
        view_cache_bytes: Some(budget),
        ..tlsrpt_query::QueryOptions::default()
    });
    let (first, _) = full.warm_views(2).await.unwrap().dates.unwrap();
    let full_warmed = full.view_cache_stats().unwrap();
    assert_eq!(
        (full_warmed.entries, full_warmed.bytes),
        (warmed.entries, warmed.bytes)
    );
    let uncached = root.uncached_engine();
    let sorted = |mut rows: Vec<String>| {
        rows.sort();
        rows
    };
    let questions: Vec<String> = tlsrpt_query::views::VIEWS
        .iter()
        .map(|view| match view.parts {
            Some(_) => format!("SELECT * FROM {}", view.name),
            None => format!("SELECT * FROM {} WHERE date >= DATE '{first}'", view.name),
        })
        .collect();
    let mut before = Vec::new();
    for question in &questions {
        before.push(sorted(rows(&uncached, question).await));
    }

    rows(&full, all_time).await;
    let after_all_time = full.view_cache_stats().unwrap();
    assert!(after_all_time.bytes <= budget, "{after_all_time:?}");

    let (_, last_day) = by_day.iter().next_back().unwrap();
    let last_offset = by_day.len() as u64 - 1;
    write(
        &root.path,
        range(0, last_offset, last_offset),
        &last_day[..last_day.len() / 2],
    );
    for (question, before) in questions.iter().zip(&before) {
        assert_eq!(
            &sorted(rows(&full, question).await),
            before,
            "{question}: the warmed answer kept"
        );
    }
    assert_ne!(
        sorted(rows(&uncached, &questions[0]).await),
        before[0],
        "the files did change"
    );
}

/// Warming also computes every older date of the per-day views whose answers over all time,
/// estimated from the latest dates', fit in three quarters of the cache beside what warming
/// keeps anyway, smallest first: with room for all, every view's all-time question is then
/// answered from memory, and equals the plain view's; with room for the smallest only, that
/// one is answered from memory and the next is computed when asked.
#[tokio::test]
async fn warming_computes_every_date_of_the_views_whose_all_time_fits_smallest_first() {
    let by_day = generated_by_day();
    assert!(by_day.len() >= 4, "the generator spans several days");
    let root = Root::new();
    for (offset, day) in by_day.values().enumerate() {
        write(&root.path, range(0, offset as u64, offset as u64), day);
    }
    let uncached = root.uncached_engine();
    let dated: Vec<&str> = tlsrpt_query::views::VIEWS
        .iter()
        .filter(|view| view.parts.is_none())
        .map(|view| view.name)
        .collect();
    let sorted = |mut rows: Vec<String>| {
        rows.sort();
        rows
    };
    let misses = |engine: &tlsrpt_query::QueryEngine| engine.view_cache_stats().unwrap().misses;

    // Room for everything (the default 2 GiB): every per-day view over every date.
    let roomy = root.engine();
    let warmed = roomy.warm_views(2).await.unwrap();
    assert!(warmed.failed.is_empty(), "{:?}", warmed.failed);
    let mut named: Vec<&str> = warmed.all_time.iter().map(|view| view.view).collect();
    named.sort_unstable();
    let mut expected = dated.clone();
    expected.sort_unstable();
    assert_eq!(named, expected, "every per-day view estimated");
    assert!(
        warmed
            .all_time
            .windows(2)
            .all(|pair| pair[0].estimated_bytes <= pair[1].estimated_bytes),
        "smallest first: {:?}",
        warmed.all_time
    );
    for view in &warmed.all_time {
        assert!(view.warmed, "{view:?}");
        assert!(view.estimated_bytes > view.latest_bytes, "{view:?}");
    }
    let before = misses(&roomy);
    for view in &dated {
        let question = format!("SELECT * FROM {view}");
        assert_eq!(
            sorted(rows(&roomy, &question).await),
            sorted(rows(&uncached, &question).await),
            "{view}"
        );
    }
    assert_eq!(misses(&roomy), before, "every date answered from memory");

    // What warming keeps anyway: the latest dates of every view, policy_overview's parts.
    let latest_only = root.engine_with(tlsrpt_query::QueryOptions {
        view_warm_all_time: false,
        ..tlsrpt_query::QueryOptions::default()
    });
    latest_only.warm_views(2).await.unwrap();
    let kept_anyway = latest_only.view_cache_stats().unwrap().bytes;
    // Three quarters of the budget hold that and the smallest view's older dates, a few
    // bytes more, not the next view's.
    let smallest = &warmed.all_time[0];
    let next = &warmed.all_time[1];
    let older = |view: &tlsrpt_query::AllTime| view.estimated_bytes - view.latest_bytes;
    assert!(older(next) > 64, "{next:?}");
    let budget = (kept_anyway + older(smallest)) / 3 * 4 + 32;
    let tight = root.engine_with(tlsrpt_query::QueryOptions {
        view_cache_bytes: Some(budget),
        ..tlsrpt_query::QueryOptions::default()
    });
    let tightly = tight.warm_views(2).await.unwrap();
    let fitted: Vec<(&str, bool)> = tightly
        .all_time
        .iter()
        .map(|view| (view.view, view.warmed))
        .collect();
    let mut expected: Vec<(&str, bool)> = warmed
        .all_time
        .iter()
        .map(|view| (view.view, false))
        .collect();
    expected[0].1 = true;
    assert_eq!(fitted, expected, "the smallest only");
    let before = misses(&tight);
    rows(&tight, &format!("SELECT * FROM {}", smallest.view)).await;
    assert_eq!(misses(&tight), before, "{}: from memory", smallest.view);
    rows(&tight, &format!("SELECT * FROM {}", next.view)).await;
    assert!(
        misses(&tight) > before,
        "{}: its older dates computed",
        next.view
    );
}

/// A per-day view with no rows among the latest dates (here every failure predates them) has
/// nothing to be estimated from at the first round, so it is left to the questions; once a
/// question has computed its older dates, the next round estimates it from those and keeps
/// every date of it warm, answering all time from memory.
#[tokio::test]
async fn warming_estimates_a_view_without_recent_rows_from_the_older_dates_a_question_kept() {
    let mut by_day = generated_by_day();
    assert!(by_day.len() >= 4, "the generator spans several days");
    for day in by_day.values_mut().rev().take(2) {
        for received in day.iter_mut() {
            for policy in &mut received.report.policies {
                policy.failure_details.clear();
            }
        }
    }
    let root = Root::new();
    for (offset, day) in by_day.values().enumerate() {
        write(&root.path, range(0, offset as u64, offset as u64), day);
    }
    let engine = root.engine();
    let listed = |warmed: &tlsrpt_query::WarmedViews, view: &str| {
        warmed.all_time.iter().find(|all| all.view == view).cloned()
    };
    let first = engine.warm_views(2).await.unwrap();
    assert!(first.failed.is_empty(), "{:?}", first.failed);
    for view in ["failure_trend_by_mx", "top_failing_sending_ips"] {
        assert_eq!(
            listed(&first, view),
            None,
            "{view}: nothing to estimate from yet"
        );
    }
    let domains = listed(&first, "failure_trend_by_domain").expect("recent rows: estimated");
    assert!(domains.warmed && domains.latest_bytes > 0, "{domains:?}");

    let question = "SELECT * FROM failure_trend_by_mx";
    let asked = rows(&engine, question).await;
    assert!(!asked.is_empty(), "the older dates have failures");
    let second = engine.warm_views(2).await.unwrap();
    let mx = listed(&second, "failure_trend_by_mx").expect("estimated from its older dates");
    assert!(
        mx.warmed && mx.latest_bytes == 0 && mx.estimated_bytes > 0,
        "{mx:?}"
    );
    assert_eq!(
        listed(&second, "top_failing_sending_ips"),
        None,
        "never asked: still nothing to estimate from"
    );
    let misses = engine.view_cache_stats().unwrap().misses;
    let mut again = rows(&engine, question).await;
    let mut plain = rows(&root.uncached_engine(), question).await;
    again.sort();
    plain.sort();
    assert_eq!(again, plain);
    assert_eq!(
        engine.view_cache_stats().unwrap().misses,
        misses,
        "every date answered from memory"
    );
}

/// A month of `policy_overview` computed again reads only that month's files: the filter on
/// the parts' `month` reaches the scan of `policies_daily` as a filter on `date`, which
/// prunes the other months' directories. A January file made unreadable (same name, so the
/// same coverage) fails any question that reads it, yet February's new file is taken in.
#[tokio::test]
async fn a_month_computed_again_reads_only_its_own_files() {
    let days = across_two_months();
    assert!(in_january(&days[0]) && !in_january(days.last().unwrap()));
    let root = Root::new();
    let (last_day, earlier) = days.split_last().unwrap();
    let (late, on_time) = last_day.split_at(3);
    for (offset, day) in earlier.iter().enumerate() {
        write(&root.path, range(0, offset as u64, offset as u64), day);
    }
    let last_offset = earlier.len() as u64;
    write(&root.path, range(0, last_offset, last_offset), on_time);
    let cached = root.engine();
    let overview = "SELECT * FROM policy_overview";
    rows(&cached, overview).await;
    // A first change splits the year into its months, each computed and kept.
    write(&root.path, range(1, 0, 0), &late[..1]);
    rows(&cached, overview).await;

    let january_file = root
        .path
        .join("policies_daily")
        .join(tlsrpt_schemas::layout::date_dir_name(
            days[0][0].report.date_range.start_datetime.date_naive(),
        ))
        .join(range(0, 0, 0).file_name());
    std::fs::write(&january_file, b"not a parquet file").unwrap();
    assert!(
        root.engine().sql(overview).await.is_err(),
        "a question that reads January's files fails"
    );

    write(&root.path, range(1, 1, 1), &late[1..]);
    let after = cached
        .sql(overview)
        .await
        .expect("February computed again without reading January");
    assert!(after.num_rows() > 0);
    write(&root.path, range(0, 0, 0), &days[0]);
    let mut answered = rows(&cached, overview).await;
    let mut fresh = rows(&root.uncached_engine(), overview).await;
    answered.sort();
    fresh.sort();
    assert_eq!(answered, fresh, "with January's file back, the same answer");
}
