# Sourced by the comparison scripts (from the repository root): installs parsedmarc, at the
# version every figure in BENCHMARKS.md was measured with, into benches/.venv on first use.
PARSEDMARC_VERSION=11.1.0
if [ ! -x benches/.venv/bin/python ] || ! benches/.venv/bin/python -c "import parsedmarc" 2>/dev/null; then
  python3 -m venv benches/.venv
  benches/.venv/bin/pip install --quiet "parsedmarc==${PARSEDMARC_VERSION}"
fi
