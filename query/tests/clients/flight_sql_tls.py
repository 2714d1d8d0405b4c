"""A real Flight SQL client against a service with TLS and bearer tokens, through the ADBC
Flight SQL driver: the server's certificate checked against the given CA file, the token
sent as a header or as a password (the driver's handshake), and connections without a token
or with a wrong one refused.

    python flight_sql_tls.py grpc+tls://127.0.0.1:PORT CA.pem TOKEN LIMITED_TOKEN

Prints one JSON object with what it saw; the Rust test (query/tests/it/access.rs) checks it.
"""

import json
import sys

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager

DOMAINS = "SELECT DISTINCT policy_domain FROM failures ORDER BY policy_domain"


def domains(uri: str, options: dict) -> object:
    """The domains the connection sees, or the error message it got."""
    try:
        with flight_sql.connect(uri, db_kwargs=options) as conn:
            with conn.cursor() as cur:
                cur.execute(DOMAINS)
                return [row["policy_domain"] for row in cur.fetch_arrow_table().to_pylist()]
    except adbc_driver_manager.Error as error:
        return {"error": str(error)}


def main() -> None:
    uri, ca_file, token, limited = sys.argv[1:5]
    with open(ca_file, encoding="ascii") as f:
        tls = {"adbc.flight.sql.client_option.tls_root_certs": f.read()}
    bearer = "adbc.flight.sql.authorization_header"
    seen = {
        "header": domains(uri, {**tls, bearer: f"Bearer {token}"}),
        "password": domains(uri, {**tls, "username": "dbeaver", "password": token}),
        "limited": domains(uri, {**tls, bearer: f"Bearer {limited}"}),
        "no_token": domains(uri, tls),
        "wrong_token": domains(uri, {**tls, bearer: "Bearer tlsrpt_guess"}),
        # Without the CA the server's certificate is not trusted.
        "untrusted": domains(uri, {bearer: f"Bearer {token}"}),
    }
    print(json.dumps(seen, sort_keys=True))


if __name__ == "__main__":
    main()
