# Helpers the load scripts share (sourced, from the repository's root).

# cpu_ticks PID: the process's user plus system CPU time so far, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# templates DIR: 20,000 bench-profile reports (every one with failures, about 2 KB of JSON)
# as DIR/reports.jsonl, the bodies tlsrpt-load posts (each with its report-id made unique).
templates() {
  target/release/tlsrpt-gen --reports 20000 --seed 8460 --profile bench --format jsonl \
    --out "$1" >/dev/null
}

# cpu_per_report NAME TICKS_AFTER TICKS_BEFORE LOAD_JSON: NAME's CPU over the run, in all and
# per report acknowledged (from tlsrpt-load's JSON).
cpu_per_report() {
  python3 - "$1" "$2" "$3" "$(getconf CLK_TCK)" "$4" <<'PY'
import json, sys
name = sys.argv[1]
after, before, hz = (float(x) for x in sys.argv[2:5])
total = json.load(open(sys.argv[5]))["acknowledged_total"]
seconds = (after - before) / hz
print(f"{name} CPU: {seconds:.1f} core-seconds, {seconds / max(total, 1) * 1e6:.1f} us per acknowledged report")
PY
}

# The directory of the `tlsrpt` build a script runs: BIN_DIR when set, else target/release,
# built first unless NO_BUILD=1.
tlsrpt_bin_dir() {
  if [ -n "${BIN_DIR:-}" ]; then
    echo "$BIN_DIR"
    return
  fi
  [ "${NO_BUILD:-0}" = 1 ] || cargo build --quiet --release -p tlsrpt --bin tlsrpt >&2
  echo target/release
}

# The arguments of a script that times a query service, TABLES_DIR [RUNS]: sets `tables`
# (absolute), `runs` (DEFAULT_RUNS when not given) and `bin` (tlsrpt_bin_dir). SCRIPT names the
# script in the usage message.
query_bench_args() {
  local script=$1 default_runs=$2
  shift 2
  tables=$(realpath "${1:?usage: $script TABLES_DIR [RUNS]}")
  runs=${2:-$default_runs}
  bin=$(tlsrpt_bin_dir)
}

# Waits until the server PID has printed its banner (the line with its SQL address) into
# BANNER; if it exits first, prints LOG and fails.
wait_for_banner() {
  local pid=$1 banner=$2 log=$3
  for _ in $(seq 1 200); do
    grep -q 'SQL  *POST' "$banner" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; return 1; }
    sleep 0.05
  done
  echo "no banner from pid $pid after 10 s" >&2
  return 1
}

# The SQL URL in a banner file.
sql_url_of() { sed -n 's/.*SQL  *POST \(http[^ ]*\).*/\1/p' "$1"; }

# Starts `BIN/tlsrpt query --store TABLES` on free loopback ports with the row limit raised to
# 100,000,000 and no memory or time limit (the benches ask for all of a view, or DuckDB's
# unlimited question), plus ARGS, and stops it when the script exits. DEFAULTS=1 keeps every
# limit at its default instead. Sets `server` (its pid), `work` (a temporary directory with
# its `banner` and `log`) and `sql_url`.
start_query_service() {
  local bin=$1 tables=$2
  shift 2
  local limits=(--max-result-rows 100000000 --query-memory off --query-timeout 1h)
  [ "${DEFAULTS:-0}" = 1 ] && limits=()
  work=$(mktemp -d)
  server=
  trap stop_query_service EXIT
  "$bin/tlsrpt" query --store "$tables" --query-listen 127.0.0.1:0 --flight-listen 127.0.0.1:0 \
    "${limits[@]}" "$@" \
    >"$work/banner" 2>"$work/log" &
  server=$!
  wait_for_banner "$server" "$work/banner" "$work/log"
  sql_url=$(sql_url_of "$work/banner")
  [ -n "$sql_url" ] || { echo "tlsrpt query did not start" >&2; cat "$work/log" >&2; return 1; }
}

# Waits until the service started by start_query_service has logged its first round of
# warming (or that it could not list the tables); fails with the log if the service exits.
wait_for_first_warm_round() {
  until grep -q 'Views computed ahead of the questions\|Could not list the tables' "$work/log"; do
    kill -0 "$server" 2>/dev/null || { cat "$work/log" >&2; return 1; }
    sleep 0.1
  done
}

stop_query_service() {
  if [ -n "${server:-}" ] && kill -0 "$server" 2>/dev/null; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  rm -rf "${work:-}"
}
