#!/usr/bin/env bash
# A local S3-compatible server for tests of the object-store (S3) sink: moto's S3 (PyPI, Apache-2.0)
# run in a virtualenv, since MinIO, Garage and the like cannot be downloaded on these machines and
# no container engine is there.
#
#   scripts/s3-server.sh install      installs moto $MOTO_VERSION (its S3 part and the Flask it
#                                     serves with) into a virtualenv under ~/.cache/tlsrpt/s3-venv
#                                     when missing (10-20 seconds, 140 MB)
#   scripts/s3-server.sh start DIR    starts one on a free loopback port, creates the bucket
#                                     `tlsrpt`, writes the endpoint URL (http://127.0.0.1:PORT) to
#                                     DIR/endpoint and prints it; pid in DIR/server.pid, log in
#                                     DIR/server.log
#   scripts/s3-server.sh stop DIR     stops the server started with DIR
#
# Clients: object_store 0.13 AmazonS3Builder with_endpoint(URL), with_allow_http(true),
# with_virtual_hosted_style_request(false), region us-east-1, any access key / secret.
#
# Why moto: it installs in seconds from PyPI and answers everything object_store 0.13 uses (PUT,
# GET and ranges, HEAD, LIST v2 with prefix/delimiter/pagination, DELETE, multipart upload and
# abort, copy). PutMode::Create works with object_store's default config (S3ConditionalPut::
# ETagMatch): PutObject with `If-None-Match: *` on an existing key answers 412, which object_store
# turns into Error::AlreadyExists; PutMode::Update (If-Match) answers 412 -> Error::Precondition.
# s3s-fs 0.14.1 (crates.io; 0.17 needs rustc 1.96) was tried too: 4.5 minutes to build, keeps
# data on disk, but its If-None-Match check is not atomic: 16 racing creates of one small key let
# 2-3 writers "win" (the last rename's body stays), which breaks an exactly-once commit.
#
# Limits found:
# - moto checks If-None-Match and then stores, with no lock: under its threaded server, racing
#   creates of one key with large bodies (12 MB) let 2-3 writers "win". This script therefore runs
#   moto's WSGI app behind one global lock (every request is served one at a time), which makes
#   conditional create atomic; the price is no parallelism inside the server.
# - State is in memory only (bodies over ~5 MB spill to unlinked temp files under DIR/tmp):
#   a restarted server is empty, so a test cannot restart the store and find its data.
# - Like real S3 it rejects (400 EntityTooSmall) a multipart upload whose non-final parts are under
#   5 MiB; object_store's put_multipart has no PutMode::Create (only copy_if_not_exists uses a
#   conditional CompleteMultipartUpload). copy_if_not_exists needs
#   with_copy_if_not_exists(S3CopyIfNotExists::Multipart), which moto supports; the default
#   config answers NotSupported, and the `Header` variant with If-None-Match is ignored by moto.
# - No authentication is checked: any credentials are accepted. moto's settings come from the
#   environment of `start`, e.g. MOTO_S3_DEFAULT_MAX_KEYS=5 makes LIST pages of 5 keys.
# - DIR/server.log gets one line per request.
set -euo pipefail

MOTO_VERSION=5.2.5
# moto[server] would add cfn-lint, sympy, docker, ... (317 MB): S3 needs only these.
PACKAGES=("moto[s3]==$MOTO_VERSION" "flask==3.1.3" "flask-cors==6.0.5" "werkzeug==3.1.9")
BUCKET=tlsrpt
venv_dir() { echo "${TLSRPT_S3_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/tlsrpt/s3-venv}"; }

# Runs moto's app behind one lock, on a port the kernel picks, and writes that port to $1/.port.
LAUNCHER='
import os, sys, threading
from werkzeug.serving import make_server
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication, MotoRequestHandler, create_backend_app)

state_dir = sys.argv[1]
app = DomainDispatcherApplication(create_backend_app)
lock = threading.Lock()

def serialized(environ, start_response):
    # The whole request, body included, is handled under the lock: moto tests If-None-Match
    # and then stores in two steps.
    with lock:
        result = app(environ, start_response)
        try:
            body = b"".join(result)
        finally:
            if hasattr(result, "close"):
                result.close()
    return [body]

server = make_server("127.0.0.1", 0, serialized, threaded=True,
                     request_handler=MotoRequestHandler)
os.environ["MOTO_PORT"] = str(server.server_port)
tmp = os.path.join(state_dir, ".port.tmp")
with open(tmp, "w") as f:
    f.write(str(server.server_port))
os.replace(tmp, os.path.join(state_dir, ".port"))
server.serve_forever()
'

CHECK="import moto, flask, werkzeug, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')"
# shellcheck source=scripts/venv.sh
. "$(dirname "$0")/venv.sh"
installed() { venv_ready "$(venv_dir)" "$CHECK"; }

case "${1:-}" in
  install)
    venv_install s3-server "$(venv_dir)" "$CHECK" "${PACKAGES[@]}"
    ;;
  start)
    dir=${2:?usage: scripts/s3-server.sh start DIR}
    mkdir -p "$dir/tmp"
    installed || { echo "s3-server: moto not found; run scripts/s3-server.sh install" >&2; exit 2; }
    if [ -f "$dir/server.pid" ] && kill -0 "$(cat "$dir/server.pid")" 2>/dev/null; then
      echo "s3-server: already running for $dir (pid $(cat "$dir/server.pid"))" >&2
      exit 1
    fi
    rm -f "$dir/.port" "$dir/endpoint" "$dir/server.pid"
    py="$(venv_dir)/bin/python"
    TMPDIR="$dir/tmp" "$py" -c "$LAUNCHER" "$dir" >"$dir/server.log" 2>&1 &
    echo $! >"$dir/server.pid"
    for _ in $(seq 1 300); do
      [ -s "$dir/.port" ] && break
      kill -0 "$(cat "$dir/server.pid")" 2>/dev/null || { cat "$dir/server.log" >&2; exit 1; }
      sleep 0.1
    done
    [ -s "$dir/.port" ] || { echo "s3-server: no port after 30 s" >&2; cat "$dir/server.log" >&2; exit 1; }
    url="http://127.0.0.1:$(cat "$dir/.port")"
    # Waits until it answers, then creates the bucket (an unsigned PUT /bucket is enough for moto).
    if "$py" - "$url" "$BUCKET" <<'PY'
import sys, time, urllib.request
url, bucket = sys.argv[1], sys.argv[2]
for _ in range(300):
    try:
        urllib.request.urlopen(url + "/", timeout=2).read()
        break
    except Exception:
        time.sleep(0.1)
req = urllib.request.Request(f"{url}/{bucket}", method="PUT", data=b"")
urllib.request.urlopen(req, timeout=10).read()
PY
    then :; else
      kill "$(cat "$dir/server.pid")" 2>/dev/null || true
      echo "s3-server: server did not answer or bucket creation failed" >&2; cat "$dir/server.log" >&2; exit 1
    fi
    echo "$url" | tee "$dir/endpoint"
    ;;
  stop)
    dir=${2:?usage: scripts/s3-server.sh stop DIR}
    if [ -f "$dir/server.pid" ]; then
      pid=$(cat "$dir/server.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      rm -f "$dir/server.pid" "$dir/endpoint" "$dir/.port"
    fi
    ;;
  *)
    sed -n '2,14p' "$0" >&2
    exit 2
    ;;
esac
