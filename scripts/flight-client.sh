#!/usr/bin/env bash
# Real Arrow Flight SQL clients for the tests of `tlsrpt query`'s Flight SQL service: the ADBC
# Flight SQL driver (the one Python, R and Go analysts use; the same protocol the JDBC driver in
# DBeaver speaks) and pyarrow, from PyPI, in a virtualenv.
#
#   scripts/flight-client.sh install   installs them into ~/.cache/tlsrpt/flight-venv when
#                                      missing (seconds; about 150 MB)
#   scripts/flight-client.sh python    prints the virtualenv's python (for the tests)
set -euo pipefail

PACKAGES=("adbc-driver-flightsql==1.13.0" "adbc-driver-manager==1.13.0" "pyarrow==26.0.1")
venv_dir() { echo "${TLSRPT_FLIGHT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/tlsrpt/flight-venv}"; }

CHECK="
import sys, adbc_driver_flightsql, adbc_driver_manager, pyarrow
sys.exit(adbc_driver_flightsql.__version__ != '1.13.0' or pyarrow.__version__ != '26.0.1')"
# shellcheck source=scripts/venv.sh
. "$(dirname "$0")/venv.sh"
installed() { venv_ready "$(venv_dir)" "$CHECK"; }

case "${1:-}" in
  install)
    venv_install flight-client "$(venv_dir)" "$CHECK" "${PACKAGES[@]}"
    ;;
  python)
    installed || { echo "flight-client: not installed; run scripts/flight-client.sh install" >&2; exit 2; }
    echo "$(venv_dir)/bin/python"
    ;;
  *)
    sed -n '2,8p' "$0" >&2
    exit 2
    ;;
esac
