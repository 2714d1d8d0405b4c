# Sourced by the scripts that keep a Python tool in a virtualenv (scripts/flight-client.sh,
# scripts/s3-server.sh, benches/compare/duckdb-venv.sh): the pinned packages from PyPI,
# installed once into a directory under ~/.cache/tlsrpt, checked by a line of Python.

# venv_ready VENV CHECK: whether VENV's python runs CHECK (Python that exits 0 when the right
# versions are importable).
venv_ready() {
  [ -x "$1/bin/python" ] && "$1/bin/python" -c "$2" 2>/dev/null
}

# venv_install TAG VENV CHECK PACKAGE...: installs the packages into VENV unless CHECK already
# passes; messages go to stderr, prefixed with TAG.
venv_install() {
  local tag=$1 venv=$2 check=$3
  shift 3
  if venv_ready "$venv" "$check"; then
    echo "$tag: $* installed ($venv)" >&2
    return 0
  fi
  echo "$tag: installing $* into $venv (pip)" >&2
  mkdir -p "$(dirname "$venv")"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@" >&2
  venv_ready "$venv" "$check" || {
    echo "$tag: $* did not install into $venv" >&2
    return 1
  }
  echo "$tag: installed" >&2
}
