"""tlsrpt's SQL engine against DuckDB on the same `failures` Parquet files: the ad-hoc question
"failure trend per receiving MX" (per day and receiving_mx_hostname, sum(failed_session_count)),
over the last 30 days of data and over all time. Run by duckdb-failures.sh, which starts
`tlsrpt query` over the tables and passes its URL:

    python duckdb_failures.py TABLES_DIR PAIRS --url http://127.0.0.1:PORT/v1/sql [--accept TYPE]

What is timed, per run:
- tlsrpt: one `POST /v1/sql` on a persistent HTTP/1.1 connection (http.client), from sending
  the request to the last byte of the answer (JSON rows by default, `--accept text/csv` for
  CSV); decoding the answer into Python tuples afterwards is not timed, but its median is
  printed beside the runs (DuckDB's fetchall() includes making its tuples). This is what a client of
  `tlsrpt query` sees: planning, listing the date directories, reading, aggregating, sorting
  and serialising, plus the local HTTP round trip.
- DuckDB: `con.execute(SQL).fetchall()` in this process, on a connection opened before (an
  in-memory database with a view `failures` over read_parquet(...), so the SQL text is the
  same for both; the view is bound again, and the files globbed again, at every query, as
  tlsrpt lists its directories at every query).

Runs alternate tlsrpt, DuckDB, tlsrpt, DuckDB, ... after one untimed warm-up each, so drift
on a shared machine hits both alike. Both answers are compared row by row (sorted) at the
warm-up, and the row count and the sum of failed sessions at every run: a mismatch exits 1.
"""

import argparse
import csv
import datetime
import hashlib
import http.client
import io
import json
import os
import re
import statistics
import sys
import time
import urllib.parse

import duckdb

FILE_NAME = re.compile(r"^p(\d+)-(\d+)-(\d+)\.parquet$")


def data_files(failures_dir):
    """The Parquet files of the table as DuckDB's glob sees them, and those a tlsrpt reader
    must read (schemas/src/layout.rs: names starting with `.` or `_` are not data; a file
    whose offset range lies inside another's of the same partition and directory is
    superseded by a compaction)."""
    globbed, visible = [], []
    for entry in sorted(os.listdir(failures_dir)):
        if not entry.startswith("date="):
            continue
        directory = os.path.join(failures_dir, entry)
        ranges = []
        for name in sorted(os.listdir(directory)):
            if not name.endswith(".parquet"):
                continue
            globbed.append(os.path.join(directory, name))
            match = FILE_NAME.match(name)
            if match:
                ranges.append((tuple(int(g) for g in match.groups()), name))
        for (part, first, last), name in ranges:
            within = any(
                p == part and f <= first and last <= l and (f, l) != (first, last)
                for (p, f, l), _ in ranges
            )
            if not within:
                visible.append(os.path.join(directory, name))
    return globbed, visible


def queries(max_date):
    select = (
        "SELECT date, receiving_mx_hostname, sum(failed_session_count) AS failed_sessions "
        "FROM failures {where}GROUP BY date, receiving_mx_hostname "
        "ORDER BY date, receiving_mx_hostname"
    )
    full = [
        ("last 30 days", select.format(
            where=f"WHERE date >= DATE '{max_date - datetime.timedelta(days=29)}' ")),
        ("all time", select.format(where="")),
    ]
    # The same work without shipping the answer: a one-row result (rows, sum), to tell the
    # engines' scan and aggregation from the cost of handing over many rows.
    counted = [
        (f"{name}, count", "SELECT count(*) AS answer_rows, sum(failed_sessions) AS failed_sessions "
                           f"FROM ({sql}) AS t")
        for name, sql in full
    ]
    chosen = os.environ.get("QUERIES")
    return [(name, sql) for name, sql in full + counted
            if chosen is None or re.search(chosen, name)]


class Tlsrpt:
    def __init__(self, url, accept):
        parsed = urllib.parse.urlsplit(url)
        self.path = parsed.path or "/v1/sql"
        self.accept = accept
        self.conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=600)

    def run(self, sql):
        """The answer's bytes; the time is that of this call."""
        self.conn.request("POST", self.path, body=sql.encode(),
                          headers={"Content-Type": "text/plain", "Accept": self.accept})
        response = self.conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise SystemExit(f"tlsrpt answered {response.status}: {body[:500]!r}")
        return body

    def rows(self, body):
        """The answer as tuples of the columns' values (text, or None for null)."""
        if self.accept == "text/csv":
            reader = csv.reader(io.StringIO(body.decode()))
            next(reader)  # the header
            # CSV writes null as an empty field; no column here holds an empty string.
            return [tuple(v if v != "" else None for v in row) for row in reader]
        return [tuple(row.values()) for row in json.loads(body)]


def normalise(rows):
    """Each value as text (dates, big integers), None for null: the two engines' answers
    compare equal when they hold the same values."""
    return [tuple(v if v is None else str(v) for v in row) for row in rows]


def digest(rows):
    """A hash of the rows in a canonical order."""
    key = lambda row: tuple((v is None, v or "") for v in row)
    return hashlib.sha256(repr(sorted(rows, key=key)).encode()).hexdigest()[:16]


def summary(rows):
    """(groups, failed sessions) of a normalised answer: counted from the (date, MX, sum)
    rows, or read from a count variant's one (groups, sum) row."""
    if rows and len(rows[0]) == 2:
        return int(rows[0][0]), int(rows[0][1])
    return len(rows), sum(int(r[2]) for r in rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tables")
    parser.add_argument("pairs", type=int)
    parser.add_argument("--url", required=True, help="tlsrpt query's POST /v1/sql URL")
    parser.add_argument("--accept", default="application/json",
                        choices=["application/json", "text/csv"])
    args = parser.parse_args()

    failures_dir = os.path.join(args.tables, "failures")
    globbed, visible = data_files(failures_dir)
    if not visible:
        raise SystemExit(f"no Parquet files under {failures_dir}/date=*/")
    con = duckdb.connect()
    if globbed == visible:
        source = f"read_parquet('{failures_dir}/**/*.parquet', hive_partitioning=true)"
    else:
        # Superseded or non-data files are there (a compaction in progress): DuckDB is given
        # the files a tlsrpt reader reads, or it would count rows twice.
        print(f"note: {len(globbed) - len(visible)} superseded files; DuckDB reads the "
              f"{len(visible)} visible ones by name", file=sys.stderr)
        source = f"read_parquet({visible!r}, hive_partitioning=true)"
    con.execute(f"CREATE VIEW failures AS SELECT * FROM {source}")
    max_date = datetime.date.fromisoformat(
        max(e[len("date="):] for e in os.listdir(failures_dir) if e.startswith("date=")))
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    tlsrpt = Tlsrpt(args.url, args.accept)
    print(f"failures: {len(visible)} files in {failures_dir}, latest date {max_date}; "
          f"duckdb {duckdb.__version__} ({threads} threads); tlsrpt answers as {args.accept}; "
          f"{args.pairs} pairs after one warm-up each")

    results = []
    failed = False
    for name, sql in queries(max_date):
        body = tlsrpt.run(sql)
        ours = normalise(tlsrpt.rows(body))
        theirs = normalise(con.execute(sql).fetchall())
        same = digest(ours) == digest(theirs)
        rows, failed_sessions = summary(ours)
        if not same:
            failed = True
            print(f"MISMATCH on {name}: tlsrpt {summary(ours)} {digest(ours)}, "
                  f"duckdb {summary(theirs)} {digest(theirs)}", file=sys.stderr)
        times = {"tlsrpt": [], "duckdb": []}
        decoding = []
        for _ in range(args.pairs):
            started = time.perf_counter()
            body = tlsrpt.run(sql)
            times["tlsrpt"].append(time.perf_counter() - started)
            started = time.perf_counter()
            answer = con.execute(sql).fetchall()
            times["duckdb"].append(time.perf_counter() - started)
            started = time.perf_counter()
            decoded = tlsrpt.rows(body)
            decoding.append(time.perf_counter() - started)
            for engine, got in (("tlsrpt", decoded), ("duckdb", answer)):
                if summary(normalise(got)) != (rows, failed_sessions):
                    failed = True
                    print(f"MISMATCH on {name}: {engine} gave {summary(normalise(got))}",
                          file=sys.stderr)
        medians = {e: statistics.median(t) for e, t in times.items()}
        results.append({
            "query": name, "sql": sql, "rows": rows, "failed_sessions": failed_sessions,
            "same_rows": same, "digest": digest(ours),
            "tlsrpt_median_s": medians["tlsrpt"], "duckdb_median_s": medians["duckdb"],
            "ratio_tlsrpt_over_duckdb": medians["tlsrpt"] / medians["duckdb"],
            "tlsrpt_s": times["tlsrpt"], "duckdb_s": times["duckdb"],
            "answer_bytes": len(body), "tlsrpt_decode_median_s": statistics.median(decoding),
        })

    print()
    print(f"{'query':<20} {'rows':>9} {'failed sessions':>16} {'same rows':>9} "
          f"{'tlsrpt median':>14} {'duckdb median':>14} {'tlsrpt/duckdb':>14}")
    for r in results:
        print(f"{r['query']:<20} {r['rows']:>9,} {r['failed_sessions']:>16,} "
              f"{'yes' if r['same_rows'] else 'NO':>9} {r['tlsrpt_median_s'] * 1e3:>11.1f} ms "
              f"{r['duckdb_median_s'] * 1e3:>11.1f} ms {r['ratio_tlsrpt_over_duckdb']:>14.2f}")
    for r in results:
        print(f"  {r['query']}: tlsrpt runs (ms) "
              + " ".join(f"{t * 1e3:.0f}" for t in r["tlsrpt_s"])
              + "; duckdb runs (ms) " + " ".join(f"{t * 1e3:.0f}" for t in r["duckdb_s"])
              + f"; tlsrpt answer {r['answer_bytes']:,} bytes, decoded into Python tuples"
              f" in {r['tlsrpt_decode_median_s'] * 1e3:.0f} ms (median, not timed above)")
    print(json.dumps({"files": len(visible), "max_date": str(max_date), "accept": args.accept,
                      "duckdb": duckdb.__version__, "results": results}))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
