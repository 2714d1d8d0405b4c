#!/usr/bin/env bash
# DuckDB's Python package (pinned: the version the figures of duckdb-failures.sh were measured
# with) from PyPI, in a virtualenv outside the work tree, as scripts/flight-client.sh does.
#
#   benches/compare/duckdb-venv.sh install   installs it into ~/.cache/tlsrpt/duckdb-venv when
#                                            missing (seconds; about 90 MB)
#   benches/compare/duckdb-venv.sh python    prints the virtualenv's python
#
# TLSRPT_DUCKDB_VENV chooses another directory.
set -euo pipefail

DUCKDB_VERSION=2.0.0
venv_dir() { echo "${TLSRPT_DUCKDB_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/tlsrpt/duckdb-venv}"; }

CHECK="
import sys, duckdb
sys.exit(duckdb.__version__ != '${DUCKDB_VERSION}')"
# shellcheck source=scripts/venv.sh
. "$(dirname "$0")/../../scripts/venv.sh"
installed() { venv_ready "$(venv_dir)" "$CHECK"; }

case "${1:-}" in
  install)
    venv_install duckdb-venv "$(venv_dir)" "$CHECK" "duckdb==${DUCKDB_VERSION}"
    ;;
  python)
    installed || { echo "duckdb-venv: not installed; run benches/compare/duckdb-venv.sh install" >&2; exit 2; }
    echo "$(venv_dir)/bin/python"
    ;;
  *)
    sed -n '2,9p' "$0" >&2
    exit 2
    ;;
esac
