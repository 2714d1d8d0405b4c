#!/usr/bin/env python3
"""Throughput of parsedmarc's SMTP TLS report parser on a JSON-lines file of reports.

Used by benches/compare/parsedmarc.sh, side by side with tlsrpt's decoder on the same
documents. Prints one JSON object per scenario: name, reports, bytes, median seconds over the
runs, reports/s and MB/s (of JSON). Single-threaded, like the Rust side.
"""
import argparse
import gzip
import json
import statistics
import sys
import time

import parsedmarc


def measure(name, items, total_bytes, func, runs):
    times = []
    failures = 0
    for _ in range(runs):
        failures = 0
        start = time.perf_counter()
        for item in items:
            try:
                func(item)
            except Exception:  # parsedmarc refuses some quirky reports; count, keep timing
                failures += 1
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(json.dumps({
        "tool": "parsedmarc " + parsedmarc.__version__,
        "scenario": name,
        "reports": len(items),
        "refused": failures,
        "json_bytes": total_bytes,
        "median_seconds": round(median, 4),
        "reports_per_second": round(len(items) / median),
        "mb_per_second": round(total_bytes / median / 1e6, 1),
    }), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("jsonl", help="one report JSON per line (tlsrpt-gen --format jsonl)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with open(args.jsonl, "rb") as f:
        docs = [line.rstrip(b"\n") for line in f if line.strip()]
    total = sum(len(d) for d in docs)
    gzipped = [gzip.compress(d, compresslevel=6) for d in docs]
    measure("parse_json", docs, total, parsedmarc.parse_smtp_tls_report_json, args.runs)
    measure("gunzip_parse", gzipped, total,
            lambda g: parsedmarc.parse_smtp_tls_report_json(gzip.decompress(g)), args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
