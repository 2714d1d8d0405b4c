#!/usr/bin/env bash
# `tlsrpt ingest` publishing to a Kafka-protocol broker: gzip reports posted by tlsrpt-load,
# each answered 200 only after the broker acknowledged it (acks=all, idempotent producer).
# The broker (tansu, in-memory storage, as the tests use), the receiver and the load client
# share this machine's cores.
#
#   benches/compare/ingest-kafka.sh [SECONDS] [CONNECTIONS] [tlsrpt-load flags...]
#   benches/compare/ingest-kafka.sh 20 256                      keep-alive connections
#   benches/compare/ingest-kafka.sh 20 64 --new-connection-per-report
#
# Prints the load client's JSON (acknowledged reports/s after a 2 s warm-up, latency
# percentiles), the CPU the receiver and the broker used per acknowledged report, and the
# messages on the topic against the 2xx answers.
#
# TLSRPT_BIN=PATH runs that build of `tlsrpt` instead of building target/release/tlsrpt (to
# compare two builds, alternately, in one session). NO_BUILD=1 takes tlsrpt-load and
# tlsrpt-gen from target/release as they are (a cargo build of those two alone unifies
# features differently from the workspace's build, and recompiles most dependencies).
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/compare/common.sh
seconds=${1:-20}
connections=${2:-256}
shift $(( $# < 2 ? $# : 2 ))

scripts/kafka-broker.sh install >/dev/null
tlsrpt=${TLSRPT_BIN:-}
if [ -z "$tlsrpt" ]; then
  cargo build --quiet --release -p tlsrpt --bin tlsrpt
  tlsrpt=target/release/tlsrpt
fi
[ "${NO_BUILD:-0}" = 1 ] || cargo build --quiet --release -p tlsrpt-benches --bin tlsrpt-load --bin tlsrpt-gen

work=$(mktemp -d)
server=
cleanup() {
  if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then kill -9 "$server" 2>/dev/null || true; fi
  scripts/kafka-broker.sh stop "$work/broker" || true
  rm -rf "$work"
}
trap cleanup EXIT

templates "$work/gen"

echo "machine: $(nproc) CPUs; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
brokers=$(scripts/kafka-broker.sh start "$work/broker" | tail -1)
broker=$(cat "$work/broker/broker.pid")
"$tlsrpt" ingest --kafka "$brokers" --data-dir "$work/ingest" \
  --http-listen 127.0.0.1:0 --smtp-listen off \
  >"$work/banner" 2>"$work/log" &
server=$!
for _ in $(seq 1 200); do
  grep -q 'reports over HTTP' "$work/banner" 2>/dev/null && break
  kill -0 "$server" 2>/dev/null || { cat "$work/log" >&2; exit 1; }
  sleep 0.05
done
reports_url=$(sed -n 's/.*reports over HTTP  *POST \(http[^ ]*\).*/\1/p' "$work/banner")
echo "broker: $brokers (pid $broker); ingest: pid $server, $reports_url"

bodies=$(( 80000 * seconds ))
server_before=$(cpu_ticks "$server")
broker_before=$(cpu_ticks "$broker")
status=0
target/release/tlsrpt-load --url "$reports_url" --reports "$work/gen/reports.jsonl" \
  --connections "$connections" --duration "$seconds" --bodies "$bodies" "$@" \
  | tee "$work/load.json" || status=$?

cpu_per_report ingest "$(cpu_ticks "$server")" "$server_before" "$work/load.json"
cpu_per_report broker "$(cpu_ticks "$broker")" "$broker_before" "$work/load.json"
echo "ingest peak RSS (VmHWM): $(awk '/VmHWM/ {printf "%.0f MB", $2/1024}' /proc/$server/status)"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
kill -TERM "$server"
if wait "$server"; then echo "ingest stopped on SIGTERM: exit 0"; else echo "ingest exit $?" >&2; exit 1; fi
server=
exit $status
