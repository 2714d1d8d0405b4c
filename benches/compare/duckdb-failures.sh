#!/usr/bin/env bash
# tlsrpt's SQL engine against DuckDB on the same Parquet files: the ad-hoc question "failure
# trend per receiving MX" (per day and receiving_mx_hostname, sum(failed_session_count),
# ordered) on the raw `failures` table, over the last 30 days of data (date >= the latest
# date - 29, a literal) and over all time; then each again as SELECT count(*), sum(...) FROM
# (that query), the same scan and aggregation with a one-row answer, to tell the engines' work
# from the cost of handing over 10^5 to 10^6 rows.
#
#   benches/compare/duckdb-failures.sh generate DATA_DIR REPORTS [SEED]
#       writes DATA_DIR/tables (reports, policies, failures) from REPORTS generated reports
#       of the bench profile (about 6 failure rows each: 170,000 reports ~ 1 million failure
#       rows) with the real transformer (tlsrpt-transform-bench --keep), deletes the
#       embedded log it went through (DATA_DIR/bus; KEEP_BUS=1 keeps it), and prints the
#       time taken, the rows and the bytes on disk of each table. DATA_DIR must not exist.
#       DOMAINS=N sets the generated provider's policy domains (default 1,000, about 3,300
#       reports a day: 17 million reports span 14 years; 56,000 domains put them in 90 days).
#   benches/compare/duckdb-failures.sh TABLES_DIR [PAIRS]
#       the comparison (PAIRS default 5) over TABLES_DIR (= DATA_DIR/tables).
#       ACCEPT=text/csv asks tlsrpt for CSV instead of JSON rows. QUERIES=REGEX runs only the
#       questions whose names match (`last 30 days`, `all time`, `last 30 days, count`,
#       `all time, count`): over millions of groups the all-time answer in full is mostly
#       Python decoding a gigabyte of rows (QUERIES='30 days|count' leaves it out).
#
# tlsrpt side: `tlsrpt query --store TABLES_DIR` (a fresh process, default limits but for
# the row limit, memory and timeout, lifted as DuckDB has none) on a free port; each run is one POST /v1/sql on a persistent HTTP
# connection, timed from the request to the last byte of the answer (decoding it into Python
# tuples is not timed; its median is printed beside). DuckDB side: in-process `con.execute(SQL).fetchall()` on an open connection
# whose view `failures` is read_parquet('TABLES_DIR/failures/**/*.parquet',
# hive_partitioning=true), so both get the same SQL text. Runs alternate (tlsrpt, DuckDB, ...)
# after one warm-up each; medians per engine and the ratio tlsrpt/DuckDB are printed, and
# the script exits 1 unless both return the same rows (compared row by row at the warm-up,
# row count and sum of failed sessions at every run). Details: duckdb_failures.py.
# DuckDB (pinned) goes into a virtualenv on first use: duckdb-venv.sh. NO_BUILD=1 skips the
# cargo builds (use the binaries in target/release as they are); BIN_DIR=DIR (absolute)
# takes tlsrpt and tlsrpt-transform-bench from DIR instead, unbuilt (another checkout's).
# On a shared machine run it as `nice -n 19 benches/compare/duckdb-failures.sh ...`: both
# engines inherit the same priority.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=benches/compare/common.sh
. benches/compare/common.sh

usage() { sed -n '2,34p' "$0" >&2; exit 2; }

bin=${BIN_DIR:-target/release}
build() {
  [ "${NO_BUILD:-0}" = 1 ] || [ -n "${BIN_DIR:-}" ] || cargo build --quiet --release "$@"
}

if [ "${1:-}" = generate ]; then
  [ $# -ge 3 ] || usage
  data=$2 reports=$3 seed=${4:-8460}
  [ ! -e "$data" ] || { echo "duckdb-failures: $data exists" >&2; exit 2; }
  build -p tlsrpt-benches --bin tlsrpt-transform-bench
  build -p tlsrpt --bin tlsrpt
  mkdir -p "$(dirname "$data")"
  echo "generating $reports reports (bench profile, seed $seed) into $data/tables"
  started=$(date +%s.%N)
  "$bin/tlsrpt-transform-bench" --reports "$reports" --seed "$seed" --keep "$data" \
    ${DOMAINS:+--domains "$DOMAINS"}
  ended=$(date +%s.%N)
  echo "generation: $(awk "BEGIN {printf \"%.1f\", $ended - $started}") s wall (generating, appending to the log, transforming)"
  echo "embedded log (DATA_DIR/bus): $(du -sb "$data/bus" | cut -f1) bytes"
  [ "${KEEP_BUS:-0}" = 1 ] || rm -rf "$data/bus"
  counts=$("$bin/tlsrpt" sql --data-dir "$data" --format csv \
    "SELECT (SELECT count(*) FROM reports) AS reports, (SELECT count(*) FROM policies) AS policies,
            (SELECT count(*) FROM failures) AS failures,
            (SELECT count(DISTINCT date) FROM failures) AS dates,
            (SELECT min(date) FROM failures) AS first_date, (SELECT max(date) FROM failures) AS last_date" | tail -1)
  IFS=, read -r n_reports n_policies n_failures n_dates first last <<<"$counts"
  echo "rows: $n_reports reports, $n_policies policies, $n_failures failures; $n_dates dates, $first to $last"
  for table in reports policies failures policies_daily failures_daily reports_daily; do
    [ -d "$data/tables/$table" ] || continue
    bytes=$(du -sb "$data/tables/$table" | cut -f1)
    files=$(find "$data/tables/$table" -name '*.parquet' | wc -l)
    echo "$table: $bytes bytes in $files files, $(awk "BEGIN {printf \"%.1f\", $bytes / $n_reports}") bytes per report, $(awk "BEGIN {printf \"%.2f\", $bytes / $n_failures}") per failure row"
  done
  echo "all tables: $(du -sb "$data/tables" | cut -f1) bytes"
  # Column by column (compressed, from the files' footers): raw_json apart, and what the
  # views read (the rollups whole, and the raw columns of top_failing_sending_ips).
  benches/compare/duckdb-venv.sh install
  "$(benches/compare/duckdb-venv.sh python)" - "$data/tables" "$n_reports" "$n_failures" <<'PY'
import sys, duckdb
tables, reports, failures = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
con = duckdb.connect()
def columns(table):
    return dict(con.execute(
        f"SELECT path_in_schema, sum(total_compressed_size) FROM "
        f"parquet_metadata('{tables}/{table}/**/*.parquet') GROUP BY 1").fetchall())
raw_json = columns("reports").get("raw_json", 0)
print(f"reports.raw_json: {raw_json} bytes, {raw_json / reports:.1f} per report")
failure_columns = columns("failures")
print("failures, column chunks per failure row: " + ", ".join(
    f"{name} {size / failures:.2f}" for name, size in sorted(failure_columns.items(), key=lambda x: -x[1])))
ips_view = ["date", "sending_mta_ip", "failed_session_count", "policy_domain",
            "receiving_mx_hostname", "organization_name"]
read = sum(failure_columns.get(c, 0) for c in ips_view)
for rollup in ["policies_daily", "failures_daily", "reports_daily"]:
    try:
        read += sum(columns(rollup).values())
    except duckdb.Error:
        pass
print(f"read by the views (rollups, and failures' columns of top_failing_sending_ips): "
      f"{read} bytes, {read / failures:.2f} per failure row")
PY
  exit 0
fi

[ $# -ge 1 ] || usage
tables=$(realpath "$1")
pairs=${2:-5}
[ -d "$tables/failures" ] || { echo "duckdb-failures: no $tables/failures" >&2; exit 2; }

benches/compare/duckdb-venv.sh install
python=$(benches/compare/duckdb-venv.sh python)
build -p tlsrpt --bin tlsrpt

echo "machine: $(nproc) CPUs; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
# DuckDB runs in-process with its defaults (memory up to 80% of RAM, no time limit): tlsrpt's
# limits are lifted the same way, or the all-time question (millions of groups) stops at the
# service's 2 GiB and 60 s.
start_query_service "$bin" "$tables"
echo "tlsrpt query: pid $server, $sql_url"

"$python" benches/compare/duckdb_failures.py "$tables" "$pairs" --url "$sql_url" \
  --accept "${ACCEPT:-application/json}"
echo "tlsrpt query peak RSS (VmHWM): $(awk '/VmHWM/ {printf "%.0f MB", $2/1024}' /proc/$server/status)"
