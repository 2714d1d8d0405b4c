#!/usr/bin/env bash
# tlsrpt's decoder against parsedmarc's parse_smtp_tls_report_json, side by side in one run
# on the same JSON documents (the generator's bench profile), single-threaded each.
#
#   benches/compare/parsedmarc.sh [REPORTS] [RUNS]     (defaults: 20000 reports, 5 runs)
#
# Installs parsedmarc (pinned) into benches/.venv on first use. Prints one JSON line per
# tool and scenario, then a table of the ratios.
set -euo pipefail
cd "$(dirname "$0")/../.."
reports=${1:-20000}
runs=${2:-5}
source benches/compare/parsedmarc-venv.sh

cargo build --quiet --release -p tlsrpt-benches --bin tlsrpt-gen --bin tlsrpt-throughput
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
target/release/tlsrpt-gen --profile bench --reports "$reports" --seed 8460 --format jsonl --out "$work" >/dev/null

out="$work/results.jsonl"
target/release/tlsrpt-throughput "$work/reports.jsonl" "$runs" | tee "$out"
benches/.venv/bin/python benches/compare/parsedmarc_throughput.py "$work/reports.jsonl" --runs "$runs" | tee -a "$out"

python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {(r["tool"].split()[0], r["scenario"]): r for r in rows}
print()
print(f"{'scenario':<22} {'tlsrpt reports/s':>17} {'parsedmarc reports/s':>21} {'ratio':>7}")
for scenario in ("parse_json", "gunzip_parse"):
    t, p = by[("tlsrpt", scenario)], by[("parsedmarc", scenario)]
    print(f"{scenario:<22} {t['reports_per_second']:>17,.0f} {p['reports_per_second']:>21,.0f} "
          f"{t['reports_per_second'] / p['reports_per_second']:>6.1f}x")
t = by[("tlsrpt", "gunzip_parse_flatten")]
print(f"{'gunzip_parse_flatten':<22} {t['reports_per_second']:>17,.0f} {'(no equivalent)':>21}")
PY
