#!/usr/bin/env bash
# bench/profile.sh: where a Samsa workload's broker time goes. Starts the release broker on
# 127.0.0.1 with a scratch data dir under target/bench/profile/, records it with `perf record -g`
# while rdkafka_performance produces (1 KiB, acks=all, linger 5 ms, one partition), then prints
# the top of `perf report` by symbol. It never installs anything but perf (apt, if missing),
# stops the broker it started by its pid, and bounds every wait with `timeout`.
#
# Usage: bench/profile.sh [fsync|interval|none] [MESSAGES]   (after ci/bench.sh installed tools)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
POLICY="${1:-fsync}"
COUNT="${2:-2000000}"
OUT="target/bench/profile"
RDP="$(sed -n 's/^RDKAFKA_PERFORMANCE=//p' target/bench/tools.env)"
PY="$(sed -n 's/^PYTHON=//p' target/bench/tools.env)"
if [[ ! -x "$RDP" ]]; then
  echo "bench/profile.sh: run ci/bench.sh first (no rdkafka_performance)" >&2
  exit 1
fi
command -v perf >/dev/null || timeout 300 apt-get install -y -q linux-perf >/dev/null
rm -rf "$OUT"; mkdir -p "$OUT"
PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')"

BROKER_PID=""
cleanup() {
  if [[ -n "$BROKER_PID" ]] && kill -0 "$BROKER_PID" 2>/dev/null; then
    kill -INT "$BROKER_PID" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 1; done
    kill -KILL "$BROKER_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT INT TERM

# perf is the broker's parent: SIGINT to perf stops the recording and the broker with it.
perf record -g -o "$OUT/perf.data" -- target/release/samsa broker --listen "127.0.0.1:$PORT" \
  --data-dir "$OUT/data" --flush-policy "$POLICY" --log-level warn > "$OUT/broker.out" 2>&1 &
BROKER_PID=$!
for _ in $(seq 1 300); do grep -q "samsa listening on" "$OUT/broker.out" && break; sleep 0.1; done
timeout 120 "$RDP" -P -t prof -p 0 -b "127.0.0.1:$PORT" -s 1024 -c "$COUNT" -a -1 \
  -X linger.ms=5 -X batch.size=1048576 -X queue.buffering.max.messages=2000000 2>&1 \
  | grep '^% .*delivered' | tail -n1 || true
kill -INT "$BROKER_PID"
timeout 60 tail --pid="$BROKER_PID" -f /dev/null || true
BROKER_PID=""
rm -rf "$OUT/data"  # the log it wrote is not needed for the report
perf report -i "$OUT/perf.data" --no-children --sort symbol --stdio 2>/dev/null \
  | grep -E '^ +[0-9]+\.[0-9]+%' | sed -E 's/[ -]+$//' | head -30
