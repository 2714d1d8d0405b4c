#!/usr/bin/env bash
# What the views would read with one file per month instead of one per date (issue 5's
# bytes target): rewrites the rollups and the raw columns top_failing_sending_ips reads from
# TABLES_DIR into OUT_DIR (must not exist) and prints the bytes per failure row of each
# layout. Details: layout_bytes.py. Uses pyarrow from the Flight SQL clients' virtualenv
# (scripts/flight-client.sh installs it).
#
#   benches/compare/layout-bytes.sh TABLES_DIR OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -eq 2 ] || { sed -n '2,8p' "$0" >&2; exit 2; }
[ ! -e "$2" ] || { echo "layout-bytes: $2 exists" >&2; exit 2; }
scripts/flight-client.sh install >/dev/null
exec "$(scripts/flight-client.sh python)" benches/compare/layout_bytes.py "$1" "$2"
