#!/usr/bin/env bash
# The Kafka deployment under HTTP load, end to end: a Kafka-protocol broker (tansu, in-memory
# storage), `tlsrpt ingest`, TRANSFORMERS `tlsrpt transform` members of one group over the
# 6-partition topic, and `tlsrpt query`, all on this machine with the load client. Measures
# acknowledged reports/s and freshness: from a report's 2xx to its row visible in SQL (an
# upper bound of the consumer lag in time, which it includes); then waits until the tables
# hold every acknowledged report and compares.
#
#   benches/compare/kafka-load.sh [SECONDS] [CONNECTIONS] [TRANSFORMERS] [STORE]
#   benches/compare/kafka-load.sh 30 64 2          two transformers, tables in a directory
#   benches/compare/kafka-load.sh 30 64 2 s3       tables in a local S3 server (moto)
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/compare/common.sh
seconds=${1:-30}
connections=${2:-64}
transformers=${3:-2}
store_kind=${4:-local}

scripts/kafka-broker.sh install >/dev/null
cargo build --quiet --release -p tlsrpt --bin tlsrpt
cargo build --quiet --release -p tlsrpt-benches --bin tlsrpt-load --bin tlsrpt-gen

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  scripts/kafka-broker.sh stop "$work/broker" || true
  if [ "$store_kind" = s3 ]; then scripts/s3-server.sh stop "$work/s3" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

templates "$work/gen"
echo "machine: $(nproc) CPUs; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
brokers=$(scripts/kafka-broker.sh start "$work/broker" | tail -1)
broker_pid=$(cat "$work/broker/broker.pid")

store="$work/tables"
if [ "$store_kind" = s3 ]; then
  scripts/s3-server.sh install >/dev/null
  scripts/s3-server.sh start "$work/s3" >/dev/null
  export AWS_ENDPOINT_URL AWS_ALLOW_HTTP=true AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
    AWS_REGION=us-east-1
  AWS_ENDPOINT_URL=$(cat "$work/s3/endpoint")
  store=s3://tlsrpt/tables
fi

# Starts `tlsrpt ARGS...` logging to $work/NAME.log, waits for its banner line containing
# PATTERN, and prints the banner's first URL on that line.
start() {
  local name=$1 pattern=$2; shift 2
  target/release/tlsrpt "$@" >"$work/$name.banner" 2>"$work/$name.log" &
  local pid=$!
  pids+=("$pid")
  echo "$pid" >"$work/$name.pid"
  for _ in $(seq 1 400); do
    grep -q "$pattern" "$work/$name.banner" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/$name.log" >&2; exit 1; }
    sleep 0.05
  done
  grep "$pattern" "$work/$name.banner" | grep -o 'http://[^ ]*' | head -1
}

reports_url=$(start ingest 'reports over HTTP' ingest --kafka "$brokers" \
  --data-dir "$work/ingest" --http-listen 127.0.0.1:0 --smtp-listen off)
for n in $(seq 1 "$transformers"); do
  start "transform-$n" metrics transform --kafka "$brokers" --store "$store" \
    --metrics-listen 127.0.0.1:0 >/dev/null
done
sql_url=$(start query 'POST' query --store "$store" --query-listen 127.0.0.1:0 --flight-listen 127.0.0.1:0)
echo "broker $brokers; ingest $reports_url; $transformers transformers; store $store; sql $sql_url"

declare -A before
for name in ingest $(seq -f 'transform-%g' 1 "$transformers") query; do
  before[$name]=$(cpu_ticks "$(cat "$work/$name.pid")")
done
broker_before=$(cpu_ticks "$broker_pid")

bodies=$(( 60000 * seconds ))
status=0
target/release/tlsrpt-load --url "$reports_url" --sql-url "$sql_url" \
  --reports "$work/gen/reports.jsonl" --connections "$connections" --duration "$seconds" \
  --bodies "$bodies" | tee "$work/load.json" || status=$?

for name in ingest $(seq -f 'transform-%g' 1 "$transformers") query; do
  cpu_per_report "$name" "$(cpu_ticks "$(cat "$work/$name.pid")")" "${before[$name]}" "$work/load.json"
done
cpu_per_report broker "$(cpu_ticks "$broker_pid")" "$broker_before" "$work/load.json"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
for pid in "${pids[@]}"; do wait "$pid" || echo "a service exited $? on SIGTERM" >&2; done
pids=()
exit $status
