//! Custom rules: a query over the tables and views that returns the rows to alert on.
//!
//! ```toml
//! [[rule]]
//! name = "dane-failures"
//! severity = "critical"
//! description = "A DANE domain had TLSA failures today."
//! sql = """
//! SELECT policy_domain, receiving_mx_hostname, sum(failed_session_count) AS failed
//! FROM failures WHERE result_type = 'tlsa-invalid' AND date >= current_date - INTERVAL '1' DAY
//! GROUP BY 1, 2 HAVING sum(failed_session_count) >= 10
//! """
//! ```
//! Every row is an incident, keyed by its text columns (here the MX host; numbers change
//! from pass to pass and are not part of the key) within its `policy_domain`: it fires the
//! first time the row appears, stays open while it keeps appearing, and ends when a pass no
//! longer returns it. A rule runs at each pass (at most every `every_minutes` when that is
//! set), at the pass's time, not replayed hour by hour as the built-in detectors are.

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::DataType;
use arrow::util::display::array_value_to_string;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use tlsrpt_query::QueryEngine;

use crate::alert::{AlertEvent, AlertState as EventState, Detector, Severity};
use crate::state::{AlertState, Cooldown, OpenIncident, Subject};
use crate::{Error, Result};

/// One `[[rule]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    /// The query; it must return a `policy_domain` column.
    pub sql: String,
    #[serde(default = "warning")]
    pub severity: Severity,
    /// What the rule means and what to do, put in each alert.
    #[serde(default)]
    pub description: String,
    /// Run it at most this often; unset, at every pass. A rule's incidents stay as they were
    /// between its runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_minutes: Option<u32>,
}

fn warning() -> Severity {
    Severity::Warning
}

/// One row's incident key and its words.
struct Row {
    domain: String,
    key: String,
    lines: Vec<String>,
}

/// Runs every rule once, at `now`; returns the alerts of incidents that started or ended,
/// and the errors of rules that could not run (a broken rule does not stop the others, nor
/// the built-in detectors; its incidents stay as they were).
pub async fn run(
    engine: &QueryEngine,
    rules: &[RuleConfig],
    state: &mut AlertState,
    now: DateTime<Utc>,
    cooldown: Duration,
) -> (Vec<AlertEvent>, Vec<Error>) {
    let mut events = Vec::new();
    let mut errors = Vec::new();
    for rule in rules {
        if let (Some(every), Some(last)) = (rule.every_minutes, state.rule_runs.get(&rule.name))
            && now < *last + Duration::minutes(i64::from(every))
        {
            continue;
        }
        state.rule_runs.insert(rule.name.clone(), now);
        let result = engine.sql(&rule.sql).await.map_err(|source| Error::Rule {
            rule: rule.name.clone(),
            message: source.to_string(),
        });
        let rows = match result.and_then(|result| rows(rule, result.batches())) {
            Ok(rows) => rows,
            Err(err) => {
                errors.push(err);
                continue;
            }
        };
        // Fire the new rows.
        for row in &rows {
            let subject = Subject::Rule {
                rule: rule.name.clone(),
                key: row.key.clone(),
            };
            if state.open_incident(&row.domain, &subject).is_some()
                || state.cooling(&row.domain, &subject, now)
            {
                continue;
            }
            let id = state.next_incident_id;
            state.next_incident_id += 1;
            let what = if row.key.is_empty() {
                String::new()
            } else {
                format!(" ({})", row.key)
            };
            let mut text = format!(
                "Rule {} returned a row for {}{what}:\n{}",
                rule.name,
                row.domain,
                row.lines.join("\n")
            );
            if !rule.description.is_empty() {
                text.push_str("\n\n");
                text.push_str(&rule.description);
            }
            let mut event = AlertEvent::new(
                id,
                EventState::Firing,
                now,
                Detector::Rule,
                rule.severity,
                &row.domain,
                now.date_naive(),
            );
            event.title = format!("{}: {}{what}", row.domain, rule.name);
            event.text = text;
            event.sql = rule.sql.trim().to_owned();
            events.push(event);
            state
                .open
                .entry(row.domain.clone())
                .or_default()
                .push(OpenIncident {
                    id,
                    domain: row.domain.clone(),
                    subject,
                    detector: Detector::Rule,
                    severity: rule.severity,
                    opened_at: now,
                    first_day: now.date_naive(),
                    last_day: now.date_naive(),
                    mxs: Vec::new(),
                    resolve_below: 0.0,
                    usual_sessions: 0,
                });
        }
        // End the rule's incidents whose rows are gone.
        let mut gone = Vec::new();
        for (domain, open) in &state.open {
            for incident in open {
                if let Subject::Rule { rule: name, key } = &incident.subject
                    && name == &rule.name
                    && !rows.iter().any(|r| &r.domain == domain && &r.key == key)
                {
                    gone.push((domain.clone(), incident.subject.clone()));
                }
            }
        }
        for (domain, subject) in gone {
            if let Some(incident) = state.close(&domain, &subject) {
                let mut event = AlertEvent::new(
                    incident.id,
                    EventState::Resolved,
                    now,
                    Detector::Rule,
                    incident.severity,
                    &domain,
                    now.date_naive(),
                );
                event.since = incident.first_day;
                event.title = format!("Resolved: {}: {}", domain, rule.name);
                event.text = format!(
                    "Rule {} no longer returns the row for {domain} it returned since {}.",
                    rule.name,
                    incident.opened_at.format("%Y-%m-%d %H:%M UTC")
                );
                event.sql = rule.sql.trim().to_owned();
                events.push(event);
                state.cooldowns.push(Cooldown {
                    domain,
                    subject,
                    until: now + cooldown,
                });
            }
        }
    }
    (events, errors)
}

fn rows(rule: &RuleConfig, batches: &[RecordBatch]) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for batch in batches {
        let schema = batch.schema();
        let Some(domain_column) = schema.index_of("policy_domain").ok() else {
            return Err(Error::Rule {
                rule: rule.name.clone(),
                message:
                    "the query must return a `policy_domain` column (the domain an alert is about, \
                          which routes it)"
                        .into(),
            });
        };
        for row in 0..batch.num_rows() {
            let value = |column: usize| {
                let array = batch.column(column);
                if array.is_null(row) {
                    "null".to_owned()
                } else {
                    array_value_to_string(array, row).unwrap_or_default()
                }
            };
            let mut key = Vec::new();
            let mut lines = Vec::new();
            for (column, field) in schema.fields().iter().enumerate() {
                let text = value(column);
                lines.push(format!("  {}: {text}", field.name()));
                let textual = matches!(
                    field.data_type(),
                    DataType::Utf8
                        | DataType::LargeUtf8
                        | DataType::Utf8View
                        | DataType::Dictionary(..)
                );
                if column != domain_column && textual {
                    key.push(format!("{}={text}", field.name()));
                }
            }
            rows.push(Row {
                domain: value(domain_column),
                key: key.join(", "),
                lines,
            });
        }
    }
    Ok(rows)
}
