//! The common questions, answered by name: views over the daily rollup tables
//! (`tlsrpt_schemas::rollup`), so a trend over a whole provider sums thousands of rows
//! instead of scanning millions.
//!
//! Each view has a stable name and documented columns; its SQL is here and in the README,
//! so an analyst can read what it counts and start from it, together with the same question
//! asked of the raw tables (`raw_sql`: slower, same answer; the tests hold them to that).
//! Every view keeps `date` (the day the report covers, UTC) so a time window is a
//! `WHERE date >= …` on the view (`policy_overview` spans all days).
//!
//! Counting rules, the same in every view:
//! - sessions come from the reports' own counts: successful and failed sessions from each
//!   policy's summary, failed sessions per MX, IP or result type from its failure details;
//! - a count a sender left out adds nothing (SQL `sum` skips nulls);
//! - `failure_rate` is failed / (successful + failed) sessions, null when there were none.
//!
//! The views are registered when the engine starts, beside the tables; statements still
//! cannot create, change or drop anything. The per-day ones keep their answers by date
//! between queries (`crate::view_cache`), so a question asked again reads only the dates whose
//! files changed; `policy_overview` keeps parts by month ([`MonthlyParts`]).
//!
//! Why some views join subqueries instead of counting several `DISTINCT`s in one
//! `GROUP BY`: DataFusion rewrites one distinct aggregate into a second grouping (fast, a hash
//! table), but runs two or more with an accumulator object per group. Where a join key may be
//! null (an MX, a domain), every key is compared with `IS NOT DISTINCT FROM`: a join takes
//! keys with one null rule only, and one `=` beside it left the other key as a filter over
//! each date's cross product (8 s instead of 44 ms). On 300,000
//! `failures_daily` rows (30 days of a 1,000-domain provider) `failure_trend_by_mx` took 1.0 s
//! written the plain way and 0.2 s as a join of one-distinct subqueries (BENCHMARKS.md,
//! issue 5). `raw_sql` keeps the plain form, which says the same thing more simply.

/// One view: its name, what it answers, and its SQL.
#[derive(Debug, Clone, Copy)]
pub struct View {
    pub name: &'static str,
    /// What it answers and what each column holds, for docs and catalogs.
    pub description: &'static str,
    pub sql: &'static str,
    /// The same answer from the raw tables.
    pub raw_sql: &'static str,
    /// For a view whose rows span every date: how to answer it from parts kept per month
    /// (`crate::view_cache`), so that only the months whose files changed are read again.
    pub parts: Option<MonthlyParts>,
}

/// A view over all dates answered in steps: `part_sql` reduces each month's rollup rows to a
/// few per key, `combine_sql` reduces a year's months' parts the same way, and `merge_sql`
/// gives the view's rows from the parts of every year. This holds when every column of the
/// view is a sum, a minimum, a maximum or a distinct count or set of the parts' columns, all
/// of which a step over the parts gives unchanged.
#[derive(Debug, Clone, Copy)]
pub struct MonthlyParts {
    /// The parts: a `month` column (the first day of the month of the rows' `date`), then
    /// the columns `merge_sql` reads.
    pub part_sql: &'static str,
    /// The same as `part_sql` for whole years (its `month` the first day of the year): a year
    /// not seen before is computed at once, far fewer keys than its months'.
    pub year_part_sql: &'static str,
    /// Several months' parts as one part of the same columns, from the table `parts` (its
    /// `month` the first of them).
    pub combine_sql: &'static str,
    /// The view's rows, from the table `parts` (`part_sql`'s columns, every year's rows).
    pub merge_sql: &'static str,
}

/// `policy_overview`'s parts: the rollup's rows summed per domain, policy type, reporter and
/// mode over each `$span` (`"month"` or `"year"`), named by its first day.
macro_rules! policy_overview_part {
    ($span:literal) => {
        concat!(
            "SELECT CAST(date_trunc('",
            $span,
            "', date) AS DATE) AS month,
       policy_domain, policy_type, organization_name, sts_mode,
       sum(successful_sessions) AS successful_sessions,
       sum(failed_sessions) AS failed_sessions,
       min(date) AS first_date,
       max(date) AS last_date
FROM policies_daily
GROUP BY CAST(date_trunc('",
            $span,
            "', date) AS DATE),
         policy_domain, policy_type, organization_name, sts_mode"
        )
    };
}

/// `policy_overview`'s columns from rows summed per domain, policy type, reporter and mode:
/// the same over the rollup's sums and over the months' parts, so written once.
macro_rules! policy_overview_last_step {
    () => {
        "SELECT policy_domain, policy_type,
       array_sort(array_agg(DISTINCT CAST(sts_mode AS VARCHAR))
                  FILTER (WHERE sts_mode IS NOT NULL)) AS sts_modes,
       sum(successful_sessions) AS successful_sessions,
       sum(failed_sessions) AS failed_sessions,
       CAST(sum(successful_sessions) AS DOUBLE)
         / nullif(sum(successful_sessions) + sum(failed_sessions), 0) AS success_rate,
       min(first_date) AS first_date,
       max(last_date) AS last_date,
       count(DISTINCT organization_name) AS reporters
"
    };
}

/// The views, in the order they are registered (a view may read those before it).
pub const VIEWS: &[View] = &[
    View {
        name: "failure_trend_by_domain",
        description: "Per day and policy domain: date, policy_domain, successful_sessions, \
                      failed_sessions, failure_rate, reports (reports covering the domain), \
                      reporters (distinct reporting organisations).",
        sql: "SELECT date, policy_domain,
       sum(successful_sessions) AS successful_sessions,
       sum(failed_sessions) AS failed_sessions,
       CAST(sum(failed_sessions) AS DOUBLE)
         / nullif(sum(successful_sessions) + sum(failed_sessions), 0) AS failure_rate,
       sum(reports) AS reports,
       count(DISTINCT organization_name) AS reporters
FROM policies_daily
GROUP BY date, policy_domain",
        raw_sql: "SELECT date, policy_domain,
       sum(total_successful_session_count) AS successful_sessions,
       sum(total_failure_session_count) AS failed_sessions,
       CAST(sum(total_failure_session_count) AS DOUBLE)
         / nullif(sum(total_successful_session_count) + sum(total_failure_session_count), 0)
         AS failure_rate,
       count(DISTINCT report_uid) AS reports,
       count(DISTINCT organization_name) AS reporters
FROM policies
GROUP BY date, policy_domain",
        parts: None,
    },
    View {
        name: "failure_trend_by_reporter",
        description: "Per day and reporting organisation (the sending source): date, \
                      organization_name, successful_sessions, failed_sessions, failure_rate, \
                      policy_domains (distinct domains it reported on).",
        sql: "SELECT date, organization_name,
       sum(successful_sessions) AS successful_sessions,
       sum(failed_sessions) AS failed_sessions,
       CAST(sum(failed_sessions) AS DOUBLE)
         / nullif(sum(successful_sessions) + sum(failed_sessions), 0) AS failure_rate,
       count(DISTINCT policy_domain) AS policy_domains
FROM policies_daily
GROUP BY date, organization_name",
        raw_sql: "SELECT date, organization_name,
       sum(total_successful_session_count) AS successful_sessions,
       sum(total_failure_session_count) AS failed_sessions,
       CAST(sum(total_failure_session_count) AS DOUBLE)
         / nullif(sum(total_successful_session_count) + sum(total_failure_session_count), 0)
         AS failure_rate,
       count(DISTINCT policy_domain) AS policy_domains
FROM policies
GROUP BY date, organization_name",
        parts: None,
    },
    View {
        name: "failure_trend_by_mx",
        description: "Per day and receiving MX host (as the sender saw it): date, \
                      receiving_mx_hostname, failed_sessions, policy_domains, result_types \
                      (distinct result types seen).",
        sql: "SELECT d.date, d.receiving_mx_hostname, d.failed_sessions, d.policy_domains,
       t.result_types
FROM (SELECT date, receiving_mx_hostname,
             sum(failed_sessions) AS failed_sessions,
             count(DISTINCT policy_domain) AS policy_domains
      FROM failures_daily GROUP BY date, receiving_mx_hostname) d
JOIN (SELECT date, receiving_mx_hostname, count(DISTINCT result_type) AS result_types
      FROM failures_daily GROUP BY date, receiving_mx_hostname) t
  ON (t.date IS NOT DISTINCT FROM d.date)
 AND (t.receiving_mx_hostname IS NOT DISTINCT FROM d.receiving_mx_hostname)",
        raw_sql: "SELECT date, receiving_mx_hostname,
       sum(failed_session_count) AS failed_sessions,
       count(DISTINCT policy_domain) AS policy_domains,
       count(DISTINCT result_type) AS result_types
FROM failures
GROUP BY date, receiving_mx_hostname",
        parts: None,
    },
    View {
        name: "failure_trend_by_result_type",
        description: "Per day and result type (`certificate-expired`, `starttls-not-supported`, \
                      ...): date, result_type, failed_sessions, policy_domains, receiving_mxes \
                      (distinct receiving MX hosts).",
        sql: "SELECT d.date, d.result_type, d.failed_sessions, d.policy_domains, m.receiving_mxes
FROM (SELECT date, result_type,
             sum(failed_sessions) AS failed_sessions,
             count(DISTINCT policy_domain) AS policy_domains
      FROM failures_daily GROUP BY date, result_type) d
JOIN (SELECT date, result_type, count(DISTINCT receiving_mx_hostname) AS receiving_mxes
      FROM failures_daily GROUP BY date, result_type) m
  ON m.date = d.date AND m.result_type = d.result_type",
        raw_sql: "SELECT date, result_type,
       sum(failed_session_count) AS failed_sessions,
       count(DISTINCT policy_domain) AS policy_domains,
       count(DISTINCT receiving_mx_hostname) AS receiving_mxes
FROM failures
GROUP BY date, result_type",
        parts: None,
    },
    View {
        name: "top_failing_sending_ips",
        description: "Per day and sending MTA IP: date, sending_mta_ip, failed_sessions, \
                      policy_domains, receiving_mxes, reporters. Order by failed_sessions to \
                      find the top ones for a window.",
        sql: "SELECT d.date, d.sending_mta_ip, d.failed_sessions, d.policy_domains,
       m.receiving_mxes, r.reporters
FROM (SELECT date, sending_mta_ip,
             sum(failed_session_count) AS failed_sessions,
             count(DISTINCT policy_domain) AS policy_domains
      FROM failures WHERE sending_mta_ip IS NOT NULL GROUP BY date, sending_mta_ip) d
JOIN (SELECT date, sending_mta_ip, count(DISTINCT receiving_mx_hostname) AS receiving_mxes
      FROM failures WHERE sending_mta_ip IS NOT NULL GROUP BY date, sending_mta_ip) m
  ON m.date = d.date AND m.sending_mta_ip = d.sending_mta_ip
JOIN (SELECT date, sending_mta_ip, count(DISTINCT organization_name) AS reporters
      FROM failures WHERE sending_mta_ip IS NOT NULL GROUP BY date, sending_mta_ip) r
  ON r.date = d.date AND r.sending_mta_ip = d.sending_mta_ip",
        raw_sql: "SELECT date, sending_mta_ip,
       sum(failed_session_count) AS failed_sessions,
       count(DISTINCT policy_domain) AS policy_domains,
       count(DISTINCT receiving_mx_hostname) AS receiving_mxes,
       count(DISTINCT organization_name) AS reporters
FROM failures
WHERE sending_mta_ip IS NOT NULL
GROUP BY date, sending_mta_ip",
        parts: None,
    },
    View {
        name: "policy_overview",
        description: "Per policy domain and policy type, over all days: policy_domain, \
                      policy_type, sts_modes (the STS modes seen, sorted; null when none), successful_sessions, \
                      failed_sessions, success_rate, first_date, last_date (days covered by \
                      reports), reporters.",
        // Two steps: the rollup rows are first summed per domain, type, reporter and mode
        // (55,000 groups for the bench's 17 million rows, however many days they span; each
        // partition of the scan reduces its own dates to them), then the few rows left give
        // the distinct reporters and modes. Counting distinct reporters straight from the rollup's
        // millions of rows kept a hash set per domain and hashed every row's name into it.
        sql: concat!(
            policy_overview_last_step!(),
            "FROM (SELECT policy_domain, policy_type, organization_name, sts_mode,
             sum(successful_sessions) AS successful_sessions,
             sum(failed_sessions) AS failed_sessions,
             min(date) AS first_date,
             max(date) AS last_date
      FROM policies_daily
      GROUP BY policy_domain, policy_type, organization_name, sts_mode)
GROUP BY policy_domain, policy_type"
        ),
        raw_sql: "SELECT policy_domain, policy_type,
       array_sort(array_agg(DISTINCT CAST(sts_mode AS VARCHAR))
                  FILTER (WHERE sts_mode IS NOT NULL)) AS sts_modes,
       sum(total_successful_session_count) AS successful_sessions,
       sum(total_failure_session_count) AS failed_sessions,
       CAST(sum(total_successful_session_count) AS DOUBLE)
         / nullif(sum(total_successful_session_count) + sum(total_failure_session_count), 0)
         AS success_rate,
       min(date) AS first_date,
       max(date) AS last_date,
       count(DISTINCT organization_name) AS reporters
FROM policies
GROUP BY policy_domain, policy_type",
        parts: Some(MonthlyParts {
            part_sql: policy_overview_part!("month"),
            year_part_sql: policy_overview_part!("year"),
            combine_sql: "SELECT min(month) AS month,
       policy_domain, policy_type, organization_name, sts_mode,
       sum(successful_sessions) AS successful_sessions,
       sum(failed_sessions) AS failed_sessions,
       min(first_date) AS first_date,
       max(last_date) AS last_date
FROM parts
GROUP BY policy_domain, policy_type, organization_name, sts_mode",
            merge_sql: concat!(
                policy_overview_last_step!(),
                "FROM parts
GROUP BY policy_domain, policy_type"
            ),
        }),
    },
    View {
        name: "report_delivery",
        description: "Per day and reporting organisation: date, organization_name, reports, \
                      policy_domains, last_received_at. A reporter whose count drops to \
                      nothing has gone quiet.",
        sql: "SELECT r.date, r.organization_name, r.reports,
       coalesce(d.policy_domains, 0) AS policy_domains, r.last_received_at
FROM (SELECT date, organization_name, sum(reports) AS reports,
             max(last_received_at) AS last_received_at
      FROM reports_daily GROUP BY date, organization_name) r
LEFT JOIN (SELECT date, organization_name, count(DISTINCT policy_domain) AS policy_domains
           FROM policies_daily GROUP BY date, organization_name) d
  ON d.date = r.date AND d.organization_name = r.organization_name",
        raw_sql: "SELECT r.date, r.organization_name,
       count(DISTINCT r.report_uid) AS reports,
       count(DISTINCT p.policy_domain) AS policy_domains,
       max(r.received_at) AS last_received_at
FROM reports r LEFT JOIN policies p ON p.report_uid = r.report_uid AND p.date = r.date
GROUP BY r.date, r.organization_name",
        parts: None,
    },
];
