//! A report in plain language for the person who runs the domain's mail.
//!
//! [`Explanation::of`] derives, from one normalised [`Report`], everything a domain owner asks
//! first: who reported, for which days, per policy how many sessions succeeded, which failures
//! happened how often and on which MX hosts and sending IPs, what each failure means and what
//! to do about it (from the [`catalogue`](crate::catalogue)), and what tlsrpt had to repair in
//! the report. It serialises as JSON for programs; [`Explanation::to_text`] and
//! [`Explanation::to_markdown`] render it for a terminal and for tickets or mail. Deriving once
//! and rendering three ways keeps the formats from telling different stories.

use std::collections::HashMap;
use std::fmt::Write as _;

use chrono::{DateTime, Duration, Timelike, Utc};
use serde::Serialize;

use crate::catalogue::{Impact, policy_type_entry, result_type_entry};
use crate::model::{FailureDetails, PolicyResult, PolicyType, Report};

/// How many values of a list (MX hosts, IPs, reason codes) the text renderings show before
/// "and N more"; the JSON has them all.
const SHOWN_VALUES: usize = 5;

/// The whole explanation of one report.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub verdict: Verdict,
    pub reporter: Reporter,
    pub period: Period,
    pub policies: Vec<PolicyExplanation>,
    /// What tlsrpt repaired or noticed while reading the report.
    pub notes: Vec<Note>,
}

/// The one-line answer: is anything wrong?
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub status: Status,
    pub headline: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Every reported session succeeded.
    Ok,
    /// Some sessions failed.
    Failures,
    /// The report counts no sessions at all.
    NoSessions,
}

#[derive(Debug, Clone, Serialize)]
pub struct Reporter {
    pub organization_name: String,
    pub contact_info: Option<String>,
    /// The `TLS-Report-Submitter` mail header, when the report came by mail.
    pub submitter: Option<String>,
    pub report_id: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Period {
    pub start: String,
    pub end: String,
    /// Whole days covered, rounded; a day ending at `23:59:59` or next-day midnight is one day.
    pub days: i64,
    /// For people: `2016-04-01 (1 day)` or `2020-01-01 to 2020-01-07 (7 days)`.
    pub label: String,
}

/// One `policies[]` entry of the report.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyExplanation {
    /// The policy type as written (`sts`, `tlsa`, `no-policy-found`, or something else).
    pub policy_type: Option<String>,
    /// `MTA-STS policy`, `DANE (TLSA) policy`, ...
    pub title: &'static str,
    pub meaning: &'static str,
    pub policy_domain: Option<String>,
    /// MTA-STS `mode`, when the policy string carries one.
    pub mode: Option<String>,
    pub max_age: Option<u64>,
    pub mx_host: Vec<String>,
    /// How many lines the policy string has (TLSA records, for DANE).
    pub policy_string_lines: usize,
    pub successful_sessions: Option<u64>,
    pub failed_sessions: Option<u64>,
    /// Successful sessions out of all counted, 0 to 1; absent when no session was counted.
    pub success_rate: Option<f64>,
    /// Failures grouped by result type, most sessions first.
    pub failures: Vec<FailureGroup>,
    /// Set when the failure details do not add up to the summary's failure count.
    pub detail_sum_mismatch: Option<SumMismatch>,
    /// What the domain owner could do next about the policy itself (publish one, move from
    /// testing to enforce), when there is something to say.
    pub advice: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SumMismatch {
    pub sum_of_details: u64,
    pub summary: u64,
}

/// All failure details of one result type within one policy.
#[derive(Debug, Clone, Serialize)]
pub struct FailureGroup {
    pub result_type: String,
    pub title: &'static str,
    /// Whether the type is in the IANA registry.
    pub registered: bool,
    /// Sum of `failed-session-count` (a missing count adds nothing).
    pub sessions: u64,
    pub receiving_mx_hostname: Vec<Counted>,
    pub receiving_ip: Vec<Counted>,
    pub receiving_mx_helo: Vec<Counted>,
    pub sending_mta_ip: Vec<Counted>,
    pub failure_reason_code: Vec<Counted>,
    pub additional_information: Vec<Counted>,
    /// The catalogue's text, with `example.com` and `MX` replaced by this report's policy
    /// domain and busiest receiving MX where known.
    pub meaning: String,
    pub likely_causes: Vec<String>,
    pub fix: Vec<String>,
    pub impact: Impact,
    /// What these failures did to mail under this policy.
    pub consequence: String,
}

/// A value and the failed sessions it took part in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Counted {
    pub value: String,
    pub sessions: u64,
}

/// A quirk of the report, explained.
#[derive(Debug, Clone, Serialize)]
pub struct Note {
    pub code: &'static str,
    /// Where in the report (a JSON path), empty for the whole input.
    pub path: String,
    pub text: &'static str,
}

impl Explanation {
    /// Explains `report`; `submitter` is the `TLS-Report-Submitter` header when there is one.
    pub fn of(report: &Report<'_>, submitter: Option<&str>) -> Self {
        let policies: Vec<PolicyExplanation> = report.policies.iter().map(explain_policy).collect();
        Self {
            verdict: verdict(&policies),
            reporter: Reporter {
                organization_name: report.organization_name.to_string(),
                contact_info: report.contact_info.as_deref().map(str::to_owned),
                submitter: submitter.map(str::to_owned),
                report_id: report.report_id.to_string(),
            },
            period: period(
                report.date_range.start_datetime,
                report.date_range.end_datetime,
            ),
            policies,
            notes: report
                .warnings
                .iter()
                .map(|w| Note {
                    code: w.code.as_str(),
                    path: w.path.clone(),
                    text: w.code.description(),
                })
                .collect(),
        }
    }

    /// For a terminal: plain text, at most about 100 columns wide.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let status = match self.verdict.status {
            Status::Ok => "OK",
            Status::Failures => "FAILURES",
            Status::NoSessions => "EMPTY",
        };
        wrap(&mut out, &format!("{status}: "), "", &self.verdict.headline);
        out.push('\n');
        let r = &self.reporter;
        line(
            &mut out,
            &format!(
                "Reported by  {}{}",
                r.organization_name,
                r.contact_info
                    .as_deref()
                    .map(|c| format!(" <{c}>"))
                    .unwrap_or_default()
            ),
        );
        if let Some(submitter) = &r.submitter {
            line(&mut out, &format!("Submitter    {submitter}"));
        }
        line(&mut out, &format!("Period       {}", self.period.label));
        line(&mut out, &format!("Report ID    {}", r.report_id));

        for (i, policy) in self.policies.iter().enumerate() {
            out.push('\n');
            line(
                &mut out,
                &format!("Policy {}: {}", i + 1, policy_heading(policy)),
            );
            if let Some(details) = policy_details(policy) {
                wrap(&mut out, "  ", "  ", &details);
            }
            wrap(&mut out, "  ", "  ", &sessions_sentence(policy));
            if let Some(m) = &policy.detail_sum_mismatch {
                wrap(&mut out, "  ", "  ", &mismatch_sentence(m));
            }
            if let Some(advice) = &policy.advice {
                wrap(&mut out, "  Advice: ", "  ", advice);
            }
            for group in &policy.failures {
                out.push('\n');
                line(
                    &mut out,
                    &format!(
                        "  {} x {}: {}",
                        thousands(group.sessions),
                        group.result_type,
                        group.title
                    ),
                );
                for (label, values) in group_lists(group) {
                    wrap(
                        &mut out,
                        &format!("    {label:<15}"),
                        &" ".repeat(19),
                        &shown(values),
                    );
                }
                wrap(
                    &mut out,
                    "    What it means  ",
                    &" ".repeat(19),
                    &group.meaning,
                );
                wrap(
                    &mut out,
                    "    Impact         ",
                    &" ".repeat(19),
                    &group.consequence,
                );
                if !group.likely_causes.is_empty() {
                    line(&mut out, "    Likely causes");
                    for cause in &group.likely_causes {
                        wrap(&mut out, "      - ", "        ", cause);
                    }
                }
                if !group.fix.is_empty() {
                    line(&mut out, "    What to do");
                    for (n, step) in group.fix.iter().enumerate() {
                        wrap(&mut out, &format!("      {}. ", n + 1), "         ", step);
                    }
                }
            }
        }
        if !self.notes.is_empty() {
            out.push('\n');
            line(
                &mut out,
                "Notes on this report (accepted; tlsrpt repaired or kept these as written):",
            );
            for note in &self.notes {
                let at = if note.path.is_empty() {
                    String::new()
                } else {
                    format!(" at {}", note.path)
                };
                wrap(
                    &mut out,
                    "  - ",
                    "    ",
                    &format!("{}{at}: {}", note.code, note.text),
                );
            }
        }
        out
    }

    /// For tickets, chat and mail: CommonMark.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let r = &self.reporter;
        let _ = writeln!(
            out,
            "# TLS report from {}: {}\n",
            md(&r.organization_name),
            self.period.label
        );
        let status = match self.verdict.status {
            Status::Ok => "OK",
            Status::Failures => "Failures",
            Status::NoSessions => "Empty",
        };
        let _ = writeln!(out, "**{status}:** {}\n", md(&self.verdict.headline));
        let _ = writeln!(
            out,
            "- Reported by: {}{}",
            md(&r.organization_name),
            r.contact_info
                .as_deref()
                .map(|c| format!(" ({})", code(c)))
                .unwrap_or_default()
        );
        if let Some(submitter) = &r.submitter {
            let _ = writeln!(out, "- Submitter: {}", code(submitter));
        }
        let _ = writeln!(out, "- Period: {}", self.period.label);
        let _ = writeln!(out, "- Report ID: {}", code(&r.report_id));
        for (i, policy) in self.policies.iter().enumerate() {
            let _ = writeln!(
                out,
                "\n## Policy {}: {}\n",
                i + 1,
                md(&policy_heading(policy))
            );
            if let Some(details) = policy_details(policy) {
                let _ = writeln!(out, "{}\n", md(&details));
            }
            let _ = writeln!(out, "{}", md(&sessions_sentence(policy)));
            if let Some(m) = &policy.detail_sum_mismatch {
                let _ = writeln!(out, "\n{}", md(&mismatch_sentence(m)));
            }
            if let Some(advice) = &policy.advice {
                let _ = writeln!(out, "\n**Advice.** {advice}");
            }
            for group in &policy.failures {
                let _ = writeln!(
                    out,
                    "\n### {} × `{}`: {}\n",
                    thousands(group.sessions),
                    group.result_type.replace('`', "'"),
                    group.title
                );
                let _ = writeln!(out, "| | |\n|---|---|");
                for (label, values) in group_lists(group) {
                    let cells: Vec<String> = values
                        .iter()
                        .take(SHOWN_VALUES)
                        .map(|c| format!("{} ({})", code(&c.value), thousands(c.sessions)))
                        .collect();
                    let more = values.len().saturating_sub(SHOWN_VALUES);
                    let more = if more > 0 {
                        format!(", and {more} more")
                    } else {
                        String::new()
                    };
                    let _ = writeln!(
                        out,
                        "| {label} | {}{more} |",
                        cells.join(", ").replace('|', "\\|")
                    );
                }
                let _ = writeln!(out, "\n**What it means.** {}\n", group.meaning);
                let _ = writeln!(out, "**Impact.** {}\n", group.consequence);
                if !group.likely_causes.is_empty() {
                    let _ = writeln!(out, "**Likely causes:**\n");
                    for cause in &group.likely_causes {
                        let _ = writeln!(out, "- {cause}");
                    }
                    out.push('\n');
                }
                if !group.fix.is_empty() {
                    let _ = writeln!(out, "**What to do:**\n");
                    for (n, step) in group.fix.iter().enumerate() {
                        let _ = writeln!(out, "{}. {step}", n + 1);
                    }
                }
            }
        }
        if !self.notes.is_empty() {
            let _ = writeln!(out, "\n## Notes on this report\n");
            let _ = writeln!(out, "Accepted; tlsrpt repaired or kept these as written:\n");
            for note in &self.notes {
                let at = if note.path.is_empty() {
                    String::new()
                } else {
                    format!(" at {}", code(&note.path))
                };
                let _ = writeln!(out, "- `{}`{at}: {}", note.code, note.text);
            }
        }
        out
    }
}

fn explain_policy(result: &PolicyResult<'_>) -> PolicyExplanation {
    let policy = &result.policy;
    let entry = policy_type_entry(policy.policy_type.as_ref());
    let successful = result.summary.total_successful_session_count;
    let failed = result.summary.total_failure_session_count;
    // A rate needs both counts: a missing failure count is unknown, not zero.
    let success_rate = match (successful, failed) {
        (Some(ok), Some(failed)) if ok + failed > 0 => Some(ok as f64 / (ok + failed) as f64),
        _ => None,
    };
    let mode = policy.sts_mode().map(str::to_owned);
    let failures = group_failures(
        &result.failure_details,
        policy.policy_type.as_ref(),
        mode.as_deref(),
        policy.policy_domain.as_deref(),
    );
    let sum_of_details: u64 = result
        .failure_details
        .iter()
        .filter_map(|d| d.failed_session_count)
        .sum();
    let detail_sum_mismatch = match failed {
        Some(summary) if !result.failure_details.is_empty() && summary != sum_of_details => {
            Some(SumMismatch {
                sum_of_details,
                summary,
            })
        }
        _ => None,
    };
    let advice = advice(
        policy.policy_type.as_ref(),
        mode.as_deref(),
        failed.unwrap_or(0) == 0 && failures.is_empty(),
    );
    PolicyExplanation {
        advice,
        policy_type: policy.policy_type.as_ref().map(|t| t.as_str().to_owned()),
        title: if entry.registered {
            entry.title
        } else {
            "Unregistered policy type"
        },
        meaning: entry.meaning,
        policy_domain: policy.policy_domain.as_deref().map(str::to_owned),
        mode,
        max_age: policy.sts_max_age(),
        mx_host: policy.mx_host.iter().map(|host| host.to_string()).collect(),
        policy_string_lines: policy.policy_string.len(),
        successful_sessions: successful,
        failed_sessions: failed,
        success_rate,
        failures,
        detail_sum_mismatch,
    }
}

fn advice(policy_type: Option<&PolicyType>, mode: Option<&str>, clean: bool) -> Option<String> {
    let text = match (policy_type, mode) {
        (Some(PolicyType::NoPolicyFound), _) => {
            "No MTA-STS policy or DANE was found, so senders use TLS only when offered and an \
             attacker on the path could strip it. Publish an MTA-STS policy (start with \
             `mode: testing`) or DANE to make TLS required."
        }
        (Some(PolicyType::Sts), Some("testing")) if clean => {
            "The policy is in testing mode and this report shows no failures. Once reports from \
             all big senders stay clean for a few weeks, switch to `mode: enforce` (and change \
             the `id=` of the `_mta-sts` TXT record so senders fetch the new policy)."
        }
        (Some(PolicyType::Sts), Some("none")) => {
            "The policy is in mode none: MTA-STS is switched off for this domain. If that is not \
             on purpose, publish `mode: testing` or `mode: enforce` again."
        }
        _ => return None,
    };
    Some(text.to_owned())
}

fn group_failures(
    details: &[FailureDetails<'_>],
    policy_type: Option<&PolicyType>,
    mode: Option<&str>,
    policy_domain: Option<&str>,
) -> Vec<FailureGroup> {
    let mut order: Vec<&str> = Vec::new();
    let mut by_type: HashMap<&str, Vec<&FailureDetails<'_>>> = HashMap::new();
    for detail in details {
        let key = detail.result_type.as_str();
        by_type
            .entry(key)
            .or_insert_with(|| {
                order.push(key);
                Vec::new()
            })
            .push(detail);
    }
    let mut groups: Vec<FailureGroup> = order
        .into_iter()
        .map(|key| {
            let members = &by_type[key];
            let entry = result_type_entry(&members[0].result_type);
            let receiving_mx_hostname = tally(members, |d| d.receiving_mx_hostname.as_deref());
            let busiest_mx = receiving_mx_hostname.first().map(|c| c.value.as_str());
            let personal = |text: &str| personalise(text, policy_domain, busiest_mx);
            FailureGroup {
                result_type: key.to_owned(),
                title: if entry.registered {
                    entry.title
                } else {
                    "Result type outside the IANA registry"
                },
                registered: entry.registered,
                sessions: members.iter().filter_map(|d| d.failed_session_count).sum(),
                meaning: personal(entry.meaning),
                likely_causes: entry.likely_causes.iter().map(|t| personal(t)).collect(),
                fix: entry.fix.iter().map(|t| personal(t)).collect(),
                receiving_mx_hostname,
                receiving_ip: tally(members, |d| d.receiving_ip.as_deref()),
                receiving_mx_helo: tally(members, |d| d.receiving_mx_helo.as_deref()),
                sending_mta_ip: tally(members, |d| d.sending_mta_ip.as_deref()),
                failure_reason_code: tally(members, |d| d.failure_reason_code.as_deref()),
                additional_information: tally(members, |d| d.additional_information.as_deref()),
                impact: entry.impact,
                consequence: consequence(entry.impact, entry.impact_note, policy_type, mode),
            }
        })
        .collect();
    // Most sessions first; ties keep report order (the sort is stable).
    groups.sort_by_key(|g| std::cmp::Reverse(g.sessions));
    groups
}

/// Puts the report's names into the catalogue's commands: `example.com` and `<your domain>`
/// become the policy domain, `MX` in `MX:25`, `-servername MX` and `_25._tcp.MX` the busiest
/// receiving MX. Names are only inserted when they look like host names, so report text
/// cannot smuggle shell syntax into a command the reader may paste.
fn personalise(text: &str, domain: Option<&str>, mx: Option<&str>) -> String {
    let mut text = text.to_owned();
    if let Some(domain) = domain.filter(|d| is_host_name(d)) {
        text = text
            .replace("example.com", domain)
            .replace("<your domain>", domain);
    }
    if let Some(mx) = mx.filter(|m| is_host_name(m)) {
        text = text
            .replace(
                " (replace MX with the receiving-mx-hostname of the report)",
                "",
            )
            .replace("-connect MX:25", &format!("-connect {mx}:25"))
            .replace("-servername MX", &format!("-servername {mx}"))
            .replace("_25._tcp.MX", &format!("_25._tcp.{mx}"));
    }
    text
}

fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
}

/// Distinct values of one field with the failed sessions they took part in, most first.
fn tally<'d>(
    members: &[&'d FailureDetails<'d>],
    field: impl Fn(&'d FailureDetails<'d>) -> Option<&'d str>,
) -> Vec<Counted> {
    let mut counted: Vec<Counted> = Vec::new();
    for detail in members {
        let Some(value) = field(detail) else { continue };
        let sessions = detail.failed_session_count.unwrap_or(0);
        match counted.iter_mut().find(|c| c.value == value) {
            Some(c) => c.sessions += sessions,
            None => counted.push(Counted {
                value: value.to_owned(),
                sessions,
            }),
        }
    }
    counted.sort_by_key(|c| std::cmp::Reverse(c.sessions));
    counted
}

/// What a failure did to mail, given the policy it was reported under.
fn consequence(
    impact: Impact,
    note: &'static str,
    policy_type: Option<&PolicyType>,
    mode: Option<&str>,
) -> String {
    if impact != Impact::Delivery {
        return note.to_owned();
    }
    let text = match (policy_type, mode) {
        (Some(PolicyType::Sts), Some("enforce")) => {
            "The MTA-STS policy is in enforce mode: senders that honour it did not deliver these \
             messages to this MX. Mail went to another MX, or waited in the senders' queues and \
             bounces if the failure lasts."
        }
        (Some(PolicyType::Sts), Some("testing")) => {
            "The MTA-STS policy is in testing mode: senders delivered anyway and only reported \
             the failure. Switching to enforce before fixing it would stop this mail."
        }
        (Some(PolicyType::Sts), Some("none")) => {
            "The MTA-STS policy is in mode none (being withdrawn): nothing is enforced, but the \
             connection was not protected."
        }
        (Some(PolicyType::Tlsa), _) => {
            "DANE is always enforced: senders that validate DANE did not deliver to this MX."
        }
        (Some(PolicyType::NoPolicyFound), _) => {
            "No policy applied, so senders delivered anyway, possibly without encryption."
        }
        _ => note,
    };
    text.to_owned()
}

fn verdict(policies: &[PolicyExplanation]) -> Verdict {
    let counted: u64 = policies
        .iter()
        .map(|p| p.successful_sessions.unwrap_or(0) + p.failed_sessions.unwrap_or(0))
        .sum();
    let failing: Vec<&PolicyExplanation> = policies
        .iter()
        .filter(|p| p.failed_sessions.unwrap_or(0) > 0 || !p.failures.is_empty())
        .collect();
    if failing.is_empty() {
        if counted == 0 {
            return Verdict {
                status: Status::NoSessions,
                headline: "the report counts no sessions at all.".to_owned(),
            };
        }
        let parts: Vec<String> = policies
            .iter()
            .map(|p| {
                format!(
                    "{} under {} succeeded",
                    match p.successful_sessions.unwrap_or(0) {
                        1 => "the one session".to_owned(),
                        n => format!("all {} sessions", thousands(n)),
                    },
                    short_policy(p)
                )
            })
            .collect();
        return Verdict {
            status: Status::Ok,
            headline: format!("no TLS failures. {}.", capitalise(&parts.join("; "))),
        };
    }
    let parts: Vec<String> = failing
        .iter()
        .map(|p| {
            let failed = p
                .failed_sessions
                .unwrap_or_else(|| p.failures.iter().map(|g| g.sessions).sum());
            let total = p.successful_sessions.unwrap_or(0) + failed;
            let types: Vec<String> = p
                .failures
                .iter()
                .map(|g| format!("{} {}", thousands(g.sessions), g.result_type))
                .collect();
            let types = if types.is_empty() {
                String::new()
            } else {
                format!(" ({})", types.join(", "))
            };
            format!(
                "{} of {} session{} under {} failed{types}",
                thousands(failed),
                thousands(total),
                if total == 1 { "" } else { "s" },
                short_policy(p)
            )
        })
        .collect();
    Verdict {
        status: Status::Failures,
        headline: format!("{}.", capitalise(&parts.join("; "))),
    }
}

fn period(start: DateTime<Utc>, end: DateTime<Utc>) -> Period {
    // Senders end a day at 23:59:59Z or at the next midnight; both are one day.
    let span = end - start
        + if end.second() == 59 {
            Duration::seconds(1)
        } else {
            Duration::zero()
        };
    let days = (span.num_seconds() as f64 / 86_400.0).round() as i64;
    let whole_days = start.num_seconds_from_midnight() == 0
        && (end.num_seconds_from_midnight() == 0 || end.num_seconds_from_midnight() == 86_399)
        && days >= 1;
    let label = if whole_days {
        let last = start + Duration::days(days - 1);
        if days == 1 {
            format!("{} (1 day)", start.format("%Y-%m-%d"))
        } else {
            format!(
                "{} to {} ({days} days)",
                start.format("%Y-%m-%d"),
                last.format("%Y-%m-%d")
            )
        }
    } else {
        format!(
            "{} to {} UTC",
            start.format("%Y-%m-%d %H:%M:%S"),
            end.format("%Y-%m-%d %H:%M:%S")
        )
    };
    Period {
        start: start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        end: end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        days,
        label,
    }
}

/// `MTA-STS for example.com`, for the verdict.
fn short_policy(p: &PolicyExplanation) -> String {
    let kind = match p.policy_type.as_deref() {
        Some("sts") => "MTA-STS".to_owned(),
        Some("tlsa") => "DANE".to_owned(),
        Some("no-policy-found") => "no policy".to_owned(),
        Some(other) => format!("policy type '{other}'"),
        None => "a policy without type".to_owned(),
    };
    match &p.policy_domain {
        Some(domain) => format!("{kind} for {domain}"),
        None => kind,
    }
}

fn policy_heading(p: &PolicyExplanation) -> String {
    let kind = match p.policy_type.as_deref() {
        Some(t) if t == "sts" || t == "tlsa" || t == "no-policy-found" => p.title.to_owned(),
        Some(other) => format!("{} '{other}'", p.title),
        None => "Policy without a policy-type".to_owned(),
    };
    match &p.policy_domain {
        Some(domain) => format!("{kind} for {domain}"),
        None => format!("{kind} (no policy-domain given)"),
    }
}

/// Mode, max_age, MX patterns or TLSA record count, when the policy has them.
fn policy_details(p: &PolicyExplanation) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(mode) = &p.mode {
        parts.push(format!("mode {mode}"));
    }
    if let Some(max_age) = p.max_age {
        parts.push(format!("max_age {max_age} s ({})", human_seconds(max_age)));
    }
    if !p.mx_host.is_empty() {
        parts.push(format!("MX {}", p.mx_host.join(", ")));
    }
    if p.policy_type.as_deref() == Some("tlsa") && p.policy_string_lines > 0 {
        let n = p.policy_string_lines;
        parts.push(format!("{n} TLSA record{}", if n == 1 { "" } else { "s" }));
    }
    (!parts.is_empty()).then(|| capitalise(&parts.join("; ")))
}

fn sessions_sentence(p: &PolicyExplanation) -> String {
    let ok = p.successful_sessions;
    let failed = p.failed_sessions;
    let counts = format!(
        "{} succeeded, {} failed",
        ok.map_or("? (not reported)".to_owned(), thousands),
        failed.map_or("? (not reported)".to_owned(), thousands)
    );
    match p.success_rate {
        Some(rate) => format!("Sessions: {counts}: {} success.", percent(rate)),
        None => format!("Sessions: {counts}."),
    }
}

fn mismatch_sentence(m: &SumMismatch) -> String {
    format!(
        "The failure details add up to {} failed sessions, but the summary counts {}; the rate \
         above uses the summary, and the counts below are as the details give them.",
        thousands(m.sum_of_details),
        thousands(m.summary)
    )
}

fn group_lists(group: &FailureGroup) -> Vec<(&'static str, &[Counted])> {
    [
        ("Receiving MX", group.receiving_mx_hostname.as_slice()),
        ("MX IP", group.receiving_ip.as_slice()),
        ("MX greeting", group.receiving_mx_helo.as_slice()),
        ("Sending IPs", group.sending_mta_ip.as_slice()),
        ("Reason", group.failure_reason_code.as_slice()),
        ("More at", group.additional_information.as_slice()),
    ]
    .into_iter()
    .filter(|(_, values)| !values.is_empty())
    .collect()
}

/// `a (3), b (1), and 4 more`.
fn shown(values: &[Counted]) -> String {
    let mut parts: Vec<String> = values
        .iter()
        .take(SHOWN_VALUES)
        .map(|c| format!("{} ({})", c.value, thousands(c.sessions)))
        .collect();
    if values.len() > SHOWN_VALUES {
        parts.push(format!("and {} more", values.len() - SHOWN_VALUES));
    }
    parts.join(", ")
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn percent(rate: f64) -> String {
    let p = rate * 100.0;
    // Never round a failure away: 99.996 % is not 100 %.
    if (99.95..100.0).contains(&p) {
        "99.9 %".to_owned()
    } else if p > 0.0 && p < 0.05 {
        "0.1 %".to_owned()
    } else {
        format!("{p:.1} %")
    }
}

fn human_seconds(s: u64) -> String {
    let (n, unit) = match s {
        s if s >= 86_400 && s % 86_400 == 0 => (s / 86_400, "day"),
        s if s >= 3_600 && s % 3_600 == 0 => (s / 3_600, "hour"),
        s => (s, "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn line(out: &mut String, text: &str) {
    out.push_str(text);
    out.push('\n');
}

/// Word-wraps `text` to 100 columns, the first line after `first`, the rest after `rest`.
fn wrap(out: &mut String, first: &str, rest: &str, text: &str) {
    const WIDTH: usize = 100;
    let mut current = first.to_owned();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && current.chars().count() + 1 + word.chars().count() > WIDTH {
            line(out, &current);
            current = rest.to_owned();
            empty = true;
        }
        if !empty {
            current.push(' ');
        }
        current.push_str(word);
        empty = false;
    }
    line(out, &current);
}

/// Report text in Markdown: escape what Markdown would interpret.
fn md(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(
            c,
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '#' | '|'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Report text as inline code, safe whatever backticks it holds.
fn code(text: &str) -> String {
    let text = text.replace(['\n', '\r'], " ");
    if text.contains('`') {
        format!("`` {} ``", text.replace("``", "` `"))
    } else {
        format!("`{text}`")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_for_people() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(percent(0.99999), "99.9 %");
        assert_eq!(percent(1.0), "100.0 %");
        assert_eq!(percent(0.0001), "0.1 %");
        assert_eq!(percent(0.0), "0.0 %");
        assert_eq!(human_seconds(604_800), "7 days");
        assert_eq!(human_seconds(86_400), "1 day");
        assert_eq!(human_seconds(7_200), "2 hours");
        assert_eq!(human_seconds(90), "90 seconds");
    }

    #[test]
    fn periods() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let p = period(t("2016-04-01T00:00:00Z"), t("2016-04-01T23:59:59Z"));
        assert_eq!((p.days, p.label.as_str()), (1, "2016-04-01 (1 day)"));
        let p = period(t("2024-02-22T00:00:00Z"), t("2024-02-23T00:00:00Z"));
        assert_eq!((p.days, p.label.as_str()), (1, "2024-02-22 (1 day)"));
        let p = period(t("2020-01-01T00:00:00Z"), t("2020-01-07T23:59:59Z"));
        assert_eq!(p.label, "2020-01-01 to 2020-01-07 (7 days)");
        let p = period(t("2020-01-01T06:00:00Z"), t("2020-01-02T06:00:00Z"));
        assert_eq!(p.label, "2020-01-01 06:00:00 to 2020-01-02 06:00:00 UTC");
    }

    #[test]
    fn wrapping_keeps_every_word_and_the_width() {
        let mut out = String::new();
        let text = "word ".repeat(60);
        wrap(&mut out, "  - ", "    ", &text);
        assert!(out.lines().all(|l| l.len() <= 100));
        assert_eq!(out.split_whitespace().filter(|w| *w == "word").count(), 60);
        assert!(out.lines().skip(1).all(|l| l.starts_with("    word")));
    }

    #[test]
    fn commands_name_the_reports_hosts_but_only_real_host_names() {
        let fix = "Run `openssl s_client -starttls smtp -connect MX:25 -servername MX` \
                   (replace MX with the receiving-mx-hostname of the report); see mta-sts.example.com.";
        assert_eq!(
            personalise(fix, Some("corp.example"), Some("mx1.corp.example")),
            "Run `openssl s_client -starttls smtp -connect mx1.corp.example:25 -servername \
             mx1.corp.example`; see mta-sts.corp.example."
        );
        // Report text that is not a host name stays out of the command.
        let hostile = personalise(fix, Some("x; rm -rf /"), Some("$(reboot)"));
        assert_eq!(hostile, fix);
    }

    #[test]
    fn markdown_escapes_report_text() {
        assert_eq!(md("a_b*c"), "a\\_b\\*c");
        assert_eq!(code("x`y"), "`` x`y ``");
        assert_eq!(code("plain"), "`plain`");
    }
}
