"""A real Flight SQL client session against `tlsrpt query`'s Flight SQL service, through the ADBC
Flight SQL driver (what Python, R and Go analysts use) and its DB-API layer.

    python flight_sql_adbc.py grpc://127.0.0.1:PORT

Prints one JSON object with what it saw; the Rust test (query/tests/it/flight.rs) checks it.
Run by that test with the interpreter of scripts/flight-client.sh.
"""

import json
import sys

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager


def main() -> None:
    uri = sys.argv[1]
    seen = {}
    with flight_sql.connect(uri) as conn:
        # Catalog introspection: every catalog, schema, table and column, as DBeaver's tree
        # and notebooks' autocompletion ask for it.
        objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
        tables = {}
        for catalog in objects:
            for schema in catalog["catalog_db_schemas"] or []:
                for table in schema["db_schema_tables"] or []:
                    name = f'{catalog["catalog_name"]}.{schema["db_schema_name"]}.{table["table_name"]}'
                    tables[name] = {
                        "type": table["table_type"],
                        "columns": [c["column_name"] for c in table["table_columns"] or []],
                    }
        seen["tables"] = tables
        seen["failures_schema"] = {
            field.name: str(field.type) for field in conn.adbc_get_table_schema("failures")
        }

        with conn.cursor() as cur:
            # A query with a bound parameter (`?`, as JDBC and DB-API clients write it).
            cur.execute(
                "SELECT policy_domain, result_type, sum(failed_session_count) AS failed "
                "FROM failures WHERE policy_domain = ? "
                "GROUP BY policy_domain, result_type ORDER BY result_type",
                parameters=("company-y.example",),
            )
            table = cur.fetch_arrow_table()
            seen["bound"] = {
                "columns": {f.name: str(f.type) for f in table.schema},
                "rows": table.to_pylist(),
            }
            # The same statement again with another value: a prepared statement re-bound.
            cur.execute(
                "SELECT policy_domain, result_type, sum(failed_session_count) AS failed "
                "FROM failures WHERE policy_domain = ? "
                "GROUP BY policy_domain, result_type ORDER BY result_type",
                parameters=("example.com",),
            )
            seen["rebound"] = cur.fetch_arrow_table().to_pylist()
            # `$1` placeholders, DataFusion's own spelling, with a number.
            cur.execute(
                "SELECT count(*) AS n FROM failures WHERE failed_session_count >= $1",
                parameters=(100,),
            )
            seen["numbered"] = cur.fetch_arrow_table().to_pylist()
            # A plain query without parameters.
            cur.execute("SELECT count(*) AS n FROM reports")
            seen["plain"] = cur.fetch_arrow_table().to_pylist()
            # Refused: the service is read-only; the message must say so.
            try:
                cur.execute("CREATE TABLE t AS SELECT 1")
                cur.fetch_arrow_table()
                seen["refused"] = None
            except adbc_driver_manager.Error as error:
                seen["refused"] = str(error)
            # And it keeps answering.
            cur.execute("SELECT 1 AS one")
            seen["after_refusal"] = cur.fetch_arrow_table().to_pylist()
    print(json.dumps(seen, sort_keys=True))


if __name__ == "__main__":
    main()
