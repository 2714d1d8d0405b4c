"""What the views would read if each table were kept in one file per month instead of one
file per date: the measurement behind BENCHMARKS.md's "bytes" figures (issue 5).

    benches/compare/layout-bytes.sh TABLES_DIR OUT_DIR

reads the rollups (policies_daily, failures_daily, reports_daily) and the columns of
`failures` that top_failing_sending_ips reads, from TABLES_DIR as the transformer wrote
them, and writes each again with pyarrow four ways into OUT_DIR: one file per date (the
same layout, pyarrow's writer: a check that the two writers agree), one file per month
sorted as the transformer sorts (`files::Table::sort_columns`), and one per month sorted by
date first, and one per month sorted as the transformer sorts with the dates delta-encoded
(`DELTA_BINARY_PACKED`, no dictionary), then with every integer, date and time column
delta-encoded, at zstd level 1 and at level 9 (what a compaction of closed months could
afford). zstd level 1 for the columns the transformer compresses, dictionaries, version 2
data pages, as `files::writer_properties`. Prints the compressed column-chunk bytes per
failure row of each layout, table by table and column by column (dictionary pages apart),
counted as duckdb-failures.sh counts them.
"""
import collections
import glob
import os
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

SORT = {
    "policies_daily": ["policy_domain", "organization_name", "date"],
    "failures_daily": ["policy_domain", "receiving_mx_hostname", "date"],
    "reports_daily": ["organization_name", "policy_domain", "date"],
    "failures": ["policy_domain", "receiving_mx_hostname", "date"],
}
IPS_VIEW = ["date", "sending_mta_ip", "failed_session_count", "policy_domain",
            "receiving_mx_hostname", "organization_name"]
# As `files::Table::uncompressed_columns`.
UNCOMPRESSED = {"date", "result_type", "policy_type", "sts_mode"}
LAYOUTS = ["daily", "monthly", "monthly, date first", "monthly, dates delta-encoded",
           "monthly, integers delta-encoded", "monthly, integers delta-encoded, zstd 9"]


def delta_columns(table, layout):
    """The columns `layout` writes delta-encoded (`DELTA_BINARY_PACKED`, no dictionary)."""
    if "integers delta-encoded" in layout:
        return [f.name for f in table.schema
                if pa.types.is_integer(f.type) or pa.types.is_date32(f.type)
                or pa.types.is_timestamp(f.type)]
    return ["date"] if "dates delta-encoded" in layout else []


def read(tables, table):
    files = sorted(glob.glob(f"{tables}/{table}/date=*/*.parquet"))
    columns = IPS_VIEW if table == "failures" else None
    return pa.concat_tables(pq.read_table(f, columns=columns) for f in files), files


def write(table, path, delta, level):
    compressed = [c for c in table.column_names if c not in UNCOMPRESSED]
    dictionary = [c for c in table.column_names if c not in delta]
    pq.write_table(
        table, path,
        compression={c: ("zstd" if c in compressed else "none") for c in table.column_names},
        compression_level={c: level for c in compressed},
        use_dictionary=dictionary,
        column_encoding={c: "DELTA_BINARY_PACKED" for c in delta} or None,
        data_page_version="2.0", row_group_size=1 << 20)


def column_bytes(paths):
    """Compressed bytes per column, and of them the dictionary pages'."""
    total, dictionary = collections.Counter(), collections.Counter()
    for path in paths:
        metadata = pq.ParquetFile(path).metadata
        for group in range(metadata.num_row_groups):
            for i in range(metadata.num_columns):
                chunk = metadata.row_group(group).column(i)
                total[chunk.path_in_schema] += chunk.total_compressed_size
                if chunk.has_dictionary_page and chunk.dictionary_page_offset is not None:
                    dictionary[chunk.path_in_schema] += (
                        chunk.data_page_offset - chunk.dictionary_page_offset)
    return total, dictionary


def sorted_by(table, keys):
    plain = pa.table({k: (table[k].cast(pa.string())
                          if pa.types.is_dictionary(table[k].type) else table[k])
                      for k in keys})
    return table.take(pc.sort_indices(plain, sort_keys=[(k, "ascending") for k in keys]))


def rewrite(name, table, layout, out):
    """Table `name`'s rows `table` in one file per date or month, sorted as `layout` says;
    the files' paths."""
    os.makedirs(out, exist_ok=True)
    dates = table["date"]
    keys = (pc.cast(dates, pa.int32()) if layout == "daily"
            else pc.add(pc.multiply(pc.year(dates), 12), pc.month(dates)))
    order = pc.sort_indices(keys)
    table, keys = table.take(order), keys.take(order)
    run_ends = pc.run_end_encode(keys).combine_chunks().run_ends.to_pylist()
    sort = SORT[name] if layout != "monthly, date first" else (
        ["date"] + [k for k in SORT[name] if k != "date"])
    paths, start = [], 0
    for i, end in enumerate(run_ends):
        path = f"{out}/{i:06}.parquet"
        write(sorted_by(table.slice(start, end - start), sort), path,
              delta_columns(table, layout), 9 if layout.endswith("zstd 9") else 1)
        paths.append(path)
        start = end
    return paths


tables, out = sys.argv[1], sys.argv[2]
failures = pq.ParquetDataset(f"{tables}/failures", partitioning=None).read(
    columns=["failed_session_count"]).num_rows
per_row = collections.defaultdict(dict)
for name in ["policies_daily", "failures_daily", "reports_daily", "failures"]:
    table, files = read(tables, name)
    written, _ = column_bytes(files)
    per_row["as written"][name] = sum(
        v for k, v in written.items() if name != "failures" or k in IPS_VIEW) / failures
    for layout in LAYOUTS:
        paths = rewrite(name, table, layout, f"{out}/{layout.replace(', ', '-').replace(' ', '-')}/{name}")
        total, dictionary = column_bytes(paths)
        per_row[layout][name] = sum(total.values()) / failures
        print(f"{name}, {layout}, {len(paths)} files: " + ", ".join(
            f"{column} {size / failures:.2f} (dictionary {dictionary[column] / failures:.2f})"
            for column, size in total.most_common()), flush=True)

print(f"\nread by the views, bytes per failure row ({failures} failure rows):")
for layout in ["as written"] + LAYOUTS:
    parts = per_row[layout]
    print(f"  {layout:28} {sum(parts.values()):5.2f}   " +
          "  ".join(f"{table} {v:.2f}" for table, v in parts.items()))
