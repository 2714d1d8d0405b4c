#!/usr/bin/env bash
# Where the transformer's CPU goes, from the timed part of the Kafka transform bench only (the
# generation and the filling of the topic before it are left out): the profile behind
# BENCHMARKS.md's "where the transformer's last 5% goes here" (issue 4, session 29).
#
#   benches/compare/transform-profile.sh OUT.data [REPORTS]
#
# Runs `tlsrpt-transform-bench --kafka --reports REPORTS --profile default` (REPORTS default
# 300,000; target/release, built unless NO_BUILD=1; BIN_DIR=DIR takes another build), starts
# `perf record -e cpu-clock -F 499 --call-graph dwarf,16384` on it at its "timing the
# transformer" line, and prints the bench's CPU per report and the top symbols. Then, e.g.:
#   perf report -i OUT.data --no-children -S ZSTD_createDCtx,ZSTD_createCCtx -G --stdio
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: transform-profile.sh OUT.data [REPORTS]}
reports=${2:-300000}
bin=${BIN_DIR:-target/release}
[ "${NO_BUILD:-0}" = 1 ] || [ -n "${BIN_DIR:-}" ] || cargo build --quiet --release -p tlsrpt --bin tlsrpt -p tlsrpt-benches --bin tlsrpt-transform-bench
command -v perf >/dev/null || { echo "transform-profile: perf is not installed (Debian: linux-perf)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin/tlsrpt-transform-bench" --kafka --reports "$reports" --profile default >"$work/out" 2>"$work/err" &
bench=$!
until grep -q "timing the transformer" "$work/err"; do
  kill -0 "$bench" 2>/dev/null || { cat "$work/err" >&2; exit 1; }
  sleep 0.1
done
perf record -e cpu-clock -F 499 --call-graph dwarf,16384 -o "$out" -p "$bench" 2>/dev/null &
perf=$!
wait "$bench"
kill -INT "$perf" 2>/dev/null || true
wait "$perf" 2>/dev/null || true
grep -o '"cpu_us_per_report":[0-9.]*' "$work/out"
perf report -i "$out" --no-children --sort symbol 2>/dev/null | grep -E '^ +[0-9.]+%' | head -25
