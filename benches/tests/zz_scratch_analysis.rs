use std::collections::BTreeMap;
use tlsrpt_benches::history::{History, HistoryConfig};

#[test]
fn scratch() {
    let config = HistoryConfig { domains: 400, days: 60, incidents: 25, warmup_days: 28, ..HistoryConfig::default() };
    let history = History::new(config, 1);
    let ids = [3usize, 15, 9, 7, 4];
    let wanted: Vec<_> = ids.iter().map(|&i| history.incidents()[i].clone()).collect();
    // (incident, day) -> (sessions, failed of type on mx, failed of type anywhere)
    let mut table: BTreeMap<(usize, String), (u64, u64, u64, Vec<String>)> = BTreeMap::new();
    for r in history.reports() {
        for t in &wanted {
            if r.policy_domain != t.domain { continue; }
            let day = r.report.date_range.start_datetime.date_naive().to_string();
            let e = table.entry((t.id, day)).or_default();
            let p = &r.report.policies[0];
            e.0 += p.summary.total_successful_session_count.unwrap() + p.summary.total_failure_session_count.unwrap();
            for pol in &r.report.policies {
                if let Some(m) = pol.policy.sts_mode() { if !e.3.contains(&m.to_string()) { e.3.push(m.to_string()); } }
                for f in &pol.failure_details {
                    if Some(f.result_type.as_str()) == t.result_type.as_deref() {
                        e.2 += f.failed_session_count.unwrap();
                        if f.receiving_mx_hostname == t.mx { e.1 += f.failed_session_count.unwrap(); }
                    }
                }
            }
        }
    }
    for ((id, day), (s, fm, ft, modes)) in table {
        if day.as_str() < "2025-01-20" || day.as_str() > "2025-02-28" { continue; }
        println!("#{id} {day} sessions {s} failed_mx {fm} ({:.2}%) failed_type {ft} modes {modes:?}", fm as f64 * 100.0 / s as f64);
    }
}
