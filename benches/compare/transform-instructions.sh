#!/usr/bin/env bash
# Instructions the transformer executes per report, counted by valgrind's callgrind: a
# figure that does not move with the machine's other tenants, for changes too small for
# timed runs to resolve on this shared host (their medians move by 5 to 10% between runs).
#
#   benches/compare/transform-instructions.sh BUILD [BUILD...]
#   REPORTS=50000 benches/compare/transform-instructions.sh /tmp/before target/release/tlsrpt-transform-bench
#
# Each BUILD is a copy of target/release/tlsrpt-transform-bench. Only the transformer's
# passes are counted (reading the embedded log, parsing, flattening, the flush with its
# sort, rollups and Parquet writing), not the generator filling the log. A flush interval
# of an hour makes every flush a full batch (valgrind runs 50 times slower, and the default
# 1 s interval would cut batches wherever the slowdown put them).
#
# What it does not see: time spent waiting on memory (a copy counts its instructions, not
# its cache misses), the kernel, and librdkafka (the embedded log is read). SHA-256 runs
# in software under valgrind (it hides the CPU's SHA extensions), so the report_uid's hash
# counts about 8,000 instructions per report where on this machine it takes about 1% of the
# time: compare builds with each other, not with timings.
#
# Builds from before the bench had --flush-interval (before 7a8d716): FLUSH_INTERVAL= (empty)
# leaves the flag out, and their batches are then cut by the 1 s interval under valgrind's
# slowdown, so two runs differ by about 1%; compare such builds in the same mode
# (REPORTS=30000 FLUSH_INTERVAL= ... is how session 22 compared a1f355a).
#
# It also prints the calls to the allocator per report (alloc, alloc_zeroed and realloc, as
# their callers made them). KEEP=DIR keeps each callgrind file there, for the breakdown by
# function: `callgrind_annotate --inclusive=yes DIR/FILE | head -60`.
set -euo pipefail
reports=${REPORTS:-50000}
flush_interval=${FLUSH_INTERVAL-3600}
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
for build in "$@"; do
  out=$(mktemp /tmp/transform-instructions.XXXXXX)
  flags=(--reports "$reports" --profile default)
  [ -n "$flush_interval" ] && flags+=(--flush-interval "$flush_interval")
  if ! valgrind --tool=callgrind --callgrind-out-file="$out" --toggle-collect='*Core*pass*' \
    "$build" "${flags[@]}" >"$out.log" 2>&1; then
    echo "$build failed under valgrind; its output:" >&2
    tail -20 "$out.log" >&2
    rm -f "$out" "$out.log"
    exit 1
  fi
  total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  # Blocks of the caller tree list a function's callers with their call counts, then the
  # function (`*`): sum the callers of Rust's allocation entry points.
  allocations=$(callgrind_annotate --tree=caller --inclusive=yes --threshold=100 "$out" 2>/dev/null | awk '
    /^[[:space:]]*$/ { block = 0; next }
    /\*  .*:__rustc::__rust_(alloc|alloc_zeroed|realloc)( \[|$)/ { total += block; block = 0; next }
    /  < / { if (match($0, /\([0-9,]+x\)/)) { n = substr($0, RSTART + 1, RLENGTH - 3); gsub(",", "", n); block += n } }
    END { print total + 0 }')
  if [ -n "${KEEP:-}" ]; then
    mkdir -p "$KEEP"
    mv "$out" "$KEEP/$(basename "$build").callgrind"
  fi
  rm -f "$out" "$out.log"
  echo "$build: $((total / reports)) instructions per report ($total for $reports reports)," \
    "$(awk -v a="$allocations" -v r="$reports" 'BEGIN { printf "%.1f", a / r }') allocator calls per report"
done
