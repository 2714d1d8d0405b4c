#!/usr/bin/env bash
# The Kafka-protocol broker the tests and benches use: tansu (crates.io, Apache-2.0), since
# Apache Kafka's own distribution cannot be downloaded on these machines.
#
#   scripts/kafka-broker.sh install      installs tansu 0.6.0 into ~/.cargo/bin when missing
#                                        (about 20 minutes to compile on 2 cores)
#   scripts/kafka-broker.sh start DIR    starts one on a free loopback port with in-memory
#                                        storage, creates the topic tlsrpt.reports (6 partitions)
#                                        and its dead-letter topic, writes the address to
#                                        DIR/brokers and prints it
#   scripts/kafka-broker.sh stop DIR     stops the broker started with DIR
#
# The tests start brokers of their own (each on its own port) and need only `install`.
set -euo pipefail

TANSU_VERSION=0.6.0
tansu_bin() {
  if [ -n "${TLSRPT_TANSU:-}" ]; then echo "$TLSRPT_TANSU"; return; fi
  if command -v tansu >/dev/null 2>&1; then command -v tansu; return; fi
  echo "${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
}

case "${1:-}" in
  install)
    bin=$(tansu_bin)
    if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
      echo "kafka-broker: tansu $TANSU_VERSION is installed ($bin)"
      exit 0
    fi
    echo "kafka-broker: installing tansu $TANSU_VERSION (cargo install; about 20 minutes on 2 cores)"
    cargo install tansu --locked --version "$TANSU_VERSION" --features dynostore,libsql
    ;;
  start)
    dir=${2:?usage: scripts/kafka-broker.sh start DIR}
    mkdir -p "$dir"
    bin=$(tansu_bin)
    [ -x "$bin" ] || { echo "kafka-broker: tansu not found; run scripts/kafka-broker.sh install" >&2; exit 2; }
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    url="tcp://127.0.0.1:$port"
    "$bin" broker --listener-url "$url" --advertised-listener-url "$url" \
      --storage-engine memory://tansu/ >"$dir/broker.log" 2>&1 &
    echo $! >"$dir/broker.pid"
    for _ in $(seq 1 300); do
      (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
      kill -0 "$(cat "$dir/broker.pid")" 2>/dev/null || { cat "$dir/broker.log" >&2; exit 1; }
      sleep 0.1
    done
    "$bin" topic create --broker "$url" --partitions 6 tlsrpt.reports >/dev/null
    "$bin" topic create --broker "$url" --partitions 1 tlsrpt.reports.dlq >/dev/null
    echo "127.0.0.1:$port" | tee "$dir/brokers"
    ;;
  stop)
    dir=${2:?usage: scripts/kafka-broker.sh stop DIR}
    if [ -f "$dir/broker.pid" ]; then
      kill "$(cat "$dir/broker.pid")" 2>/dev/null || true
      rm -f "$dir/broker.pid"
    fi
    ;;
  *)
    sed -n '2,14p' "$0" >&2
    exit 2
    ;;
esac
