#!/usr/bin/env bash
# Two builds of tlsrpt-transform-bench, side by side: RUNS interleaved runs of each, with a
# pause before every run, and the medians of their CPU per report.
#
#   benches/compare/transform-ab.sh RUNS BUILD_A BUILD_B [bench flags...]
#   benches/compare/transform-ab.sh 4 /tmp/tb-old target/release/tlsrpt-transform-bench \
#       --kafka --reports 300000 --profile default
#
# B_ARGS are added to build B's flags only: with the same build twice, that compares two
# settings (B_ARGS="--max-batch-reports 100000" against the default batches, say).
#
# Why the pause (PAUSE seconds, default 30): every run deletes its few thousand files at its
# end, and for about 30 s after that creating a file on this disk's ext4 walks past every
# freed inode; a run started at once spent up to 19% of its CPU there (BENCHMARKS.md).
# Interleaving shares what remains of the machine's drift between both builds.
set -euo pipefail
runs=${1:?RUNS}; a=${2:?BUILD_A}; b=${3:?BUILD_B}; shift 3
pause=${PAUSE:-30}
cpu_of() { "$@" 2>/dev/null | grep -o '"cpu_us_per_report":[0-9.]*' | cut -d: -f2; }
for _ in $(seq "$runs"); do
  sleep "$pause"; echo "A $(cpu_of "$a" "$@")"
  # shellcheck disable=SC2086 # B_ARGS splits into words on purpose
  sleep "$pause"; echo "B $(cpu_of "$b" "$@" ${B_ARGS:-})"
done | python3 -c '
import statistics, sys
runs = {}
for line in sys.stdin:
    build, value = line.split()
    runs.setdefault(build, []).append(float(value))
for build in sorted(runs):
    values = sorted(runs[build])
    print(build, "median %.2f us per report;" % statistics.median(values), " ".join("%.2f" % v for v in values))
print("B/A %.3f" % (statistics.median(runs["B"]) / statistics.median(runs["A"])))
'
