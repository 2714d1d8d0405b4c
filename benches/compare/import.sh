#!/usr/bin/env bash
# `tlsrpt import` against parsedmarc's CLI, side by side in one run on the same generator `.eml`
# files (one mailed report each, as a mailbox export holds them).
#
#   benches/compare/import.sh [FILES] [SAMPLE]     (defaults: 20000 files; SAMPLE = FILES)
#   RUNS=N: tlsrpt runs, the median is compared (default 5); parsedmarc runs once (~20 s)
#
# tlsrpt:     tlsrpt import --quiet --data-dir FRESH DIR   (decode, bus, and Parquet written
#             before it exits; its default --jobs, the number of CPUs)
# parsedmarc: parsedmarc --offline -o OUT FILE...          (its defaults; JSON to /dev/null)
#
# Both are timed from process start to exit, with the files already in the page cache. When
# SAMPLE < FILES, parsedmarc gets only the first SAMPLE files (it is slow) and its rate is
# taken over those; the output says so. Installs parsedmarc (parsedmarc-venv.sh) into
# benches/.venv on first use.
set -euo pipefail
cd "$(dirname "$0")/../.."
files=${1:-20000}
sample=${2:-$files}
if [ "$sample" -gt "$files" ]; then sample=$files; fi
source benches/compare/parsedmarc-venv.sh

cargo build --quiet --release -p tlsrpt -p tlsrpt-benches --bin tlsrpt --bin tlsrpt-gen
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
target/release/tlsrpt-gen --reports "$files" --seed 8460 --format eml --out "$work/eml" >/dev/null
mv "$work/eml/manifest.json" "$work/manifest.json"
mapfile -t all < <(find "$work/eml" -name '*.eml' | sort)
picked=("${all[@]:0:$sample}")
# Warm the page cache for both: neither run pays for the disk, nor for loading its program
# (one file each, into a throwaway directory, before the timed runs).
cat "${all[@]}" >/dev/null
target/release/tlsrpt import --quiet --data-dir "$work/warm" "${all[0]}" >/dev/null 2>&1 || true
benches/.venv/bin/parsedmarc --offline -o "$work/warm-parsedmarc" "${all[0]}" >/dev/null 2>&1 || true

now() { date +%s.%N; }
echo "machine: $(nproc) CPUs; load before: $(cut -d' ' -f1-3 /proc/loadavg)"

# tlsrpt takes well under a second, so one run is at the mercy of the machine's noise: run
# it RUNS times (default 5), each into a fresh data directory, and take the median.
runs=${RUNS:-5}
times=()
for run in $(seq "$runs"); do
  start=$(now)
  status=0
  target/release/tlsrpt import --quiet --data-dir "$work/data$run" "$work/eml" >"$work/tlsrpt.out" 2>"$work/tlsrpt.err" || status=$?
  end=$(now)
  if [ "$status" -ge 2 ]; then
    cat "$work/tlsrpt.err" >&2
    exit 1
  fi
  times+=("$(echo "$end - $start" | bc -l)")
done
tlsrpt_seconds=$(printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo "tlsrpt runs (s): ${times[*]}; median $tlsrpt_seconds"
echo "load after tlsrpt: $(cut -d' ' -f1-3 /proc/loadavg)"

start=$(now)
benches/.venv/bin/parsedmarc --offline -o "$work/parsedmarc" "${picked[@]}" >/dev/null 2>"$work/parsedmarc.err" || true
end=$(now)
parsedmarc_seconds=$(echo "$end - $start" | bc -l)
echo "load after parsedmarc: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$work" "$files" "$sample" "$tlsrpt_seconds" "$parsedmarc_seconds" <<'PY'
import json, os, re, sys
work, files, sample = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t_s, p_s = float(sys.argv[4]), float(sys.argv[5])
summary = open(os.path.join(work, "tlsrpt.out")).read()
first = summary.splitlines()[0]
accepted = int(re.search(r"(\d+) accepted", first).group(1))
parsed_path = os.path.join(work, "parsedmarc", "smtp_tls.json")
parsed = len(json.load(open(parsed_path))) if os.path.exists(parsed_path) else 0
failed = sum(1 for l in open(os.path.join(work, "parsedmarc.err")) if "Failed to parse" in l)
t_rate, p_rate = files / t_s, sample / p_s
print()
print("tlsrpt:    " + first)
print(f"{'tool':<11} {'files':>7} {'reports out':>12} {'seconds':>9} {'files/s':>9}")
print(f"{'tlsrpt':<11} {files:>7} {accepted:>12} {t_s:>9.2f} {t_rate:>9,.0f}")
print(f"{'parsedmarc':<11} {sample:>7} {parsed:>12} {p_s:>9.2f} {p_rate:>9,.0f}"
      + (f"   ({failed} files it could not parse)" if failed else ""))
if sample < files:
    print(f"parsedmarc ran on a sample: the first {sample} of the {files} files")
print(f"tlsrpt is {t_rate / p_rate:.1f}x faster (files/s, process start to exit)")
PY
