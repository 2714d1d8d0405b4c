//! The words of an alert: built from a finding (or an ended incident) and the catalogue of
//! result types, for a person who runs mail, not for a statistician.

use std::fmt::Write;

use chrono::{DateTime, Utc};
use tlsrpt_schemas::catalogue::result_type_entry;
use tlsrpt_schemas::model::ResultType;

use crate::alert::{AlertEvent, AlertState, Detector, Severity, percent, quote};
use crate::detect::{Finding, HeavyReport};
use crate::ledger::Ledger;
use crate::observations::{Day, Names, date_of};
use crate::state::{OpenIncident, Subject};

/// The alert for a finding that opens incident `id`.
pub(crate) fn fired(
    names: &Names,
    ledger: &Ledger,
    finding: &Finding,
    id: u64,
    at: DateTime<Utc>,
    severity: Severity,
    baseline_days: u32,
) -> AlertEvent {
    let domain = names.name(finding.domain());
    let mut event = AlertEvent::new(
        id,
        AlertState::Firing,
        at,
        Detector::Rule,
        severity,
        domain,
        date_of(0),
    );
    let mut text = String::new();
    match finding {
        Finding::NewResultType {
            day,
            result_type,
            mxs,
            failed,
            sessions,
            new_on_mx,
            reports,
            day_reports,
            fleet_new_rate,
            heavy,
            ..
        } => {
            let result_type = names.name(*result_type);
            let mxs: Vec<String> = mxs.iter().map(|m| names.name(*m).to_owned()).collect();
            set_day(&mut event, *day);
            event.detector = Detector::NewResultType;
            event.result_type = Some(result_type.to_owned());
            event.receiving_mx_hostnames = mxs.clone();
            event.rate = Some(*failed as f64 / *sessions as f64);
            event.failed_sessions = Some(*failed);
            event.sessions = Some(*sessions);
            let (before, had) = if *new_on_mx {
                ("none there", "These MX hosts had")
            } else {
                ("none", "The domain had")
            };
            event.title = format!(
                "{domain}: {result_type} failures{}, {before} in the {baseline_days} days before",
                on_mxs(&mxs)
            );
            let _ = write!(
                text,
                "Reports for {} show {failed} of {sessions} sessions ({}) to {domain} failing with \
                 {result_type}{}. {had} no {result_type} failure in the {baseline_days} days \
                 before.",
                date_of(*day),
                percent(*failed as f64 / *sessions as f64),
                on_mxs(&mxs),
            );
            // Why a few failed sessions can matter: how rarely senders' odd sessions bring
            // this type anywhere in the fleet.
            let _ = write!(
                text,
                " {reports} of the day's {day_reports} reports so far show it; across all \
                 domains, {} of the reports of the four weeks before showed {result_type} \
                 where there had been none the week before.",
                percent(*fleet_new_rate),
            );
            heavy_line(&mut text, heavy.as_ref());
            reporters_line(&mut text, ledger, finding.domain(), *day, names);
            explain(&mut text, result_type);
            event.sql = failures_sql(domain, result_type, *day - 7);
        }
        Finding::FailureSpike {
            day,
            mx,
            result_type,
            failed,
            sessions,
            baseline,
            heavy,
            ..
        } => {
            let result_type = names.name(*result_type);
            let mxs: Vec<String> = names.name_opt(*mx).map(str::to_owned).into_iter().collect();
            let rate = *failed as f64 / *sessions as f64;
            set_day(&mut event, *day);
            event.detector = Detector::FailureSpike;
            event.result_type = Some(result_type.to_owned());
            event.receiving_mx_hostnames = mxs.clone();
            event.rate = Some(rate);
            event.baseline_rate = Some(baseline.median);
            event.threshold_rate = Some(baseline.threshold);
            event.failed_sessions = Some(*failed);
            event.sessions = Some(*sessions);
            event.title = format!(
                "{domain}: {result_type} failures at {}{} (usually {})",
                percent(rate),
                on_mxs(&mxs),
                percent(baseline.median)
            );
            let _ = write!(
                text,
                "Reports for {} show {failed} of {sessions} sessions ({}) to {domain} failing with \
                 {result_type}{}. On a usual day of the {} before it was {} (alerting above {}).",
                date_of(*day),
                percent(rate),
                on_mxs(&mxs),
                baseline.days,
                percent(baseline.median),
                percent(baseline.threshold),
            );
            heavy_line(&mut text, heavy.as_ref());
            reporters_line(&mut text, ledger, finding.domain(), *day, names);
            explain(&mut text, result_type);
            event.sql = failures_sql(domain, result_type, *day - 7);
        }
        Finding::ReporterSpike {
            day,
            reporter,
            failed,
            sessions,
            baseline,
            ..
        } => {
            let reporter = names.name(*reporter);
            let rate = *failed as f64 / *sessions as f64;
            set_day(&mut event, *day);
            event.detector = Detector::ReporterSpike;
            event.reporter = Some(reporter.to_owned());
            event.rate = Some(rate);
            event.baseline_rate = Some(baseline.median);
            event.threshold_rate = Some(baseline.threshold);
            event.failed_sessions = Some(*failed);
            event.sessions = Some(*sessions);
            event.title = format!(
                "{domain}: {reporter} sees {} of its sessions fail (usually {})",
                percent(rate),
                percent(baseline.median)
            );
            let _ = write!(
                text,
                "{reporter} reports {failed} of {sessions} sessions ({}) to {domain} failed on {}; \
                 on a usual day of the {} before it was {}. When one sender alone sees this, the \
                 cause is often on its side (its trust store, its DNS resolver, its network path) \
                 or on the MX hosts and addresses it reaches; the query below shows which result \
                 types, MX hosts and sending addresses are involved.",
                percent(rate),
                date_of(*day),
                baseline.days,
                percent(baseline.median),
            );
            event.sql = format!(
                "SELECT date, result_type, receiving_mx_hostname, sending_mta_ip, \
                 sum(failed_session_count) AS failed_sessions FROM failures \
                 WHERE policy_domain = {} AND organization_name = {} AND date >= DATE '{}' \
                 GROUP BY 1, 2, 3, 4 ORDER BY 1 DESC, 5 DESC",
                quote(domain),
                quote(reporter),
                date_of(*day - 7)
            );
        }
        Finding::ModeChange {
            day,
            old,
            new,
            sessions,
            ..
        } => {
            let (old, new) = (names.name(*old), names.name(*new));
            set_day(&mut event, *day);
            event.detector = Detector::ModeChange;
            event.old_mode = Some(old.to_owned());
            event.new_mode = Some(new.to_owned());
            event.sessions = Some(*sessions);
            event.title = format!("{domain}: MTA-STS policy mode {old} -> {new}");
            let _ = write!(
                text,
                "Reports for {} show senders applying {domain}'s MTA-STS policy in mode `{new}` \
                 ({sessions} sessions); in the {baseline_days} days before they saw `{old}`. ",
                date_of(*day),
            );
            text.push_str(match new {
                "enforce" => {
                    "From now on senders that honour MTA-STS refuse to deliver to an MX that fails \
                     validation: watch for failures in the next reports. If nobody meant to \
                     enforce, publish the previous policy with a new id in the _mta-sts TXT \
                     record."
                }
                "testing" => {
                    "Senders now deliver even when validation fails and only report it: the \
                     domain is no longer protected against downgrade. If that was not meant, \
                     restore `mode: enforce` and change the id in the _mta-sts TXT record."
                }
                "none" => {
                    "The policy has been withdrawn: senders no longer require TLS to your MX \
                     hosts. If that was not meant, restore the policy file and change the id in \
                     the _mta-sts TXT record."
                }
                _ => "The mode is not one RFC 8461 defines; check the policy file.",
            });
            event.sql = format!(
                "SELECT date, organization_name, sts_mode, sum(total_successful_session_count + \
                 total_failure_session_count) AS sessions FROM policies WHERE policy_domain = {} \
                 AND date >= DATE '{}' GROUP BY 1, 2, 3 ORDER BY 1 DESC, 2",
                quote(domain),
                date_of(*day - 7)
            );
        }
        Finding::ReporterQuiet {
            reporter,
            since,
            usual_sessions,
            ..
        } => {
            let reporter = names.name(*reporter);
            set_day(&mut event, *since);
            event.detector = Detector::ReporterQuiet;
            event.reporter = Some(reporter.to_owned());
            event.sessions = Some(*usual_sessions);
            event.title = format!(
                "{domain}: no report from {reporter} since {}",
                date_of(*since)
            );
            let _ = write!(
                text,
                "{reporter} sent a report for {domain} every day, for about {usual_sessions} \
                 sessions a day, and has sent none for the days since {} (their reports can \
                 no longer be late). Either it stopped sending mail to the domain, or its \
                 reports no longer reach you: check the rua addresses of the _smtp._tls TXT \
                 record, that the HTTPS endpoint or mailbox accepts them (see `tlsrpt \
                 rejected list`), and the domain's MX records.",
                date_of(*since),
            );
            event.sql = format!(
                "SELECT date, sum(reports) AS reports, max(last_received_at) AS last_received \
                 FROM reports_daily WHERE policy_domain = {} AND organization_name = {} AND date >= \
                 DATE '{}' GROUP BY 1 ORDER BY 1 DESC",
                quote(domain),
                quote(reporter),
                date_of(*since - 14)
            );
        }
    }
    event.text = text;
    event
}

/// The alert that ends an incident.
pub(crate) fn resolved(incident: &OpenIncident, at: DateTime<Utc>, day: Day) -> AlertEvent {
    let domain = &incident.domain;
    let (what, result_type, reporter) = match &incident.subject {
        Subject::Failure { result_type } => (
            format!("{result_type} failures{}", on_mxs(&incident.mxs)),
            Some(result_type.clone()),
            None,
        ),
        Subject::Reporter { reporter } => (
            format!("{reporter}'s failure rate"),
            None,
            Some(reporter.clone()),
        ),
        Subject::Quiet { reporter } => (
            format!("the silence of {reporter}"),
            None,
            Some(reporter.clone()),
        ),
        Subject::Mode => ("the mode change".to_owned(), None, None),
        Subject::Rule { rule, key } => (format!("rule {rule} ({key})"), None, None),
    };
    let back = match incident.subject {
        Subject::Quiet { .. } => "its reports arrive again".to_owned(),
        _ => format!(
            "reports for {} are back to normal (at or below {})",
            date_of(day),
            percent(incident.resolve_below)
        ),
    };
    let mut event = AlertEvent::new(
        incident.id,
        AlertState::Resolved,
        at,
        incident.detector,
        incident.severity,
        domain,
        date_of(day),
    );
    event.since = incident.first_day;
    event.result_type = result_type;
    event.receiving_mx_hostnames = incident.mxs.clone();
    event.reporter = reporter;
    event.title = format!("Resolved: {domain}: {what}");
    event.text = format!(
        "The incident opened at {} ({what} on {domain} since {}) has ended: {back}.",
        incident.opened_at.format("%Y-%m-%d %H:%M UTC"),
        incident.first_day,
    );
    event
}

fn set_day(event: &mut AlertEvent, day: Day) {
    event.day = date_of(day);
    event.since = date_of(day);
}

fn on_mxs(mxs: &[String]) -> String {
    match mxs {
        [] => String::new(),
        [one] => format!(" on {one}"),
        many => format!(" on {}", many.join(", ")),
    }
}

/// Which reporters saw failures that day.
fn reporters_line(
    text: &mut String,
    ledger: &Ledger,
    domain: crate::observations::Sym,
    day: Day,
    names: &Names,
) {
    let mut reporters: Vec<_> = ledger
        .day(domain, day)
        .reporters
        .iter()
        .filter(|r| r.failed > 0)
        .collect();
    reporters.sort_by(|a, b| b.failed.cmp(&a.failed).then(a.reporter.cmp(&b.reporter)));
    if reporters.is_empty() {
        return;
    }
    let listed: Vec<String> = reporters
        .iter()
        .take(5)
        .map(|r| format!("{} ({} failed)", names.name(r.reporter), r.failed))
        .collect();
    let _ = write!(text, " Reported by {}.", listed.join(", "));
}

/// The catalogue's meaning, likely cause and fix.
fn explain(text: &mut String, result_type: &str) {
    let entry = result_type_entry(&ResultType::parse(result_type));
    let _ = write!(text, "\n\nWhat it means: {}", entry.meaning);
    if let Some(cause) = entry.likely_causes.first() {
        let _ = write!(text, "\nLikely cause: {cause}");
    }
    text.push_str("\nWhat to do:");
    for (i, step) in entry.fix.iter().enumerate() {
        let _ = write!(text, "\n  {}. {step}", i + 1);
    }
    let _ = write!(text, "\nImpact: {}", entry.impact_note);
}

fn failures_sql(domain: &str, result_type: &str, from: Day) -> String {
    format!(
        "SELECT date, receiving_mx_hostname, organization_name, sending_mta_ip, \
         sum(failed_session_count) AS failed_sessions FROM failures WHERE policy_domain = {} \
         AND result_type = {} AND date >= DATE '{}' GROUP BY 1, 2, 3, 4 ORDER BY 1 DESC, 5 DESC",
        quote(domain),
        quote(result_type),
        date_of(from)
    )
}

/// Why few reports can matter: how heavy the heaviest was, against the fleet.
fn heavy_line(text: &mut String, heavy: Option<&HeavyReport>) {
    if let Some(heavy) = heavy {
        let _ = write!(
            text,
            " One report alone has {} failed sessions where the host's usual rate predicts {:.2} \
             for its sessions; across all domains, {} of the reports of the four weeks before \
             were as heavy.",
            heavy.failed,
            heavy.expected,
            percent(heavy.fleet_rate),
        );
    }
}
