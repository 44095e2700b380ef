#!/usr/bin/env bash
# ci/test.sh: the project's test command, the same locally and in CI (.ci/run calls it).
# Runs fmt, clippy, the workspace's Rust tests (unit, property, tidy), builds the release
# broker and runs the real-client tests (kcat, confluent-kafka, kafka-python, aiokafka, kafkajs,
# the SIGKILL crash test) against it on 127.0.0.1. It never installs anything unless given
# --install, never hides a failure and leaves no broker running (the pytest fixtures reap them).
#
# Usage: ci/test.sh [--install] [--quick] [-- PYTEST_ARGS...]
#   --install  install missing clients first (apt kcat, .venv with pip packages, npm kafkajs)
#   --quick    skip fmt and clippy
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

INSTALL=0
QUICK=0
PYTEST_ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --install) INSTALL=1 ;;
    --quick) QUICK=1 ;;
    --) shift; PYTEST_ARGS=("$@"); break ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "ci/test.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

VENV="${SAMSA_VENV:-$ROOT/.venv}"
NODE_DIR="$ROOT/tests/clients/node"
PIP_PACKAGES=(confluent-kafka==2.16.1 kafka-python==3.0.12 aiokafka==0.14.0 pytest==9.2.0 pytest-timeout==2.4.0)
KAFKAJS_VERSION=2.2.4

STAGE_NAMES=()
STAGE_SECS=()
CURRENT_STAGE=""
STAGE_START=$SECONDS
on_exit() {
  local rc=$?
  if [[ $rc -ne 0 && -n "$CURRENT_STAGE" ]]; then
    echo "<== [$CURRENT_STAGE] FAILED (exit $rc) after $((SECONDS - STAGE_START))s" >&2
  fi
}
trap on_exit EXIT
stage() {  # stage NAME CMD...: run CMD under set -e, print its wall time; a failure ends the run.
  CURRENT_STAGE="$1"; shift
  STAGE_START=$SECONDS
  echo "==> [$CURRENT_STAGE] $*"
  "$@"
  STAGE_NAMES+=("$CURRENT_STAGE"); STAGE_SECS+=($((SECONDS - STAGE_START)))
  echo "<== [$CURRENT_STAGE] ok in $((SECONDS - STAGE_START))s"
  CURRENT_STAGE=""
}

install_clients() {
  if ! command -v kcat >/dev/null 2>&1; then
    local sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q kcat
  fi
  if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PIP_PACKAGES[@]}"
  if [[ ! -d "$NODE_DIR/node_modules/kafkajs" ]]; then
    # package.json pins kafkajs $KAFKAJS_VERSION; package-lock.json makes the install exact.
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund)
  fi
}

check_clients() {
  local missing=()
  command -v kcat >/dev/null 2>&1 || missing+=("kcat (apt-get install kcat)")
  if [[ -x "$VENV/bin/python" ]]; then
    "$VENV/bin/python" -c 'import confluent_kafka, kafka, aiokafka, pytest, pytest_timeout' \
      2>/dev/null \
      || missing+=("python packages in $VENV (pip install ${PIP_PACKAGES[*]})")
  else
    missing+=("python venv $VENV (python3 -m venv .venv; pip install ${PIP_PACKAGES[*]})")
  fi
  command -v node >/dev/null 2>&1 || missing+=("node")
  grep -q "\"version\": \"$KAFKAJS_VERSION\"" "$NODE_DIR/node_modules/kafkajs/package.json" \
    2>/dev/null || missing+=("kafkajs $KAFKAJS_VERSION (cd tests/clients/node && npm ci)")
  if [[ ${#missing[@]} -gt 0 ]]; then
    echo "ci/test.sh: missing test clients:" >&2
    printf '  - %s\n' "${missing[@]}" >&2
    echo "run 'ci/test.sh --install' (or .ci/run) to install them" >&2
    return 1
  fi
  local py_versions
  py_versions="$("$VENV/bin/python" -c 'import confluent_kafka as c, kafka, aiokafka as a
print(f"confluent-kafka {c.version()} (librdkafka {c.libversion()[0]}),",
      f"kafka-python {kafka.__version__}, aiokafka {a.__version__}")')"
  echo "clients: kcat $(kcat -V 2>&1 | awk '/^Version/ {print $2; exit}'), $py_versions," \
    "kafkajs $(node -p "require('$NODE_DIR/node_modules/kafkajs/package.json').version")"
}

client_tests() {
  # Every client test starts and reaps its own broker from target/release/samsa.
  SAMSA_BIN="$ROOT/target/release/samsa" "$VENV/bin/python" -m pytest "$ROOT/tests/clients" \
    -v "${PYTEST_ARGS[@]}"
}

if [[ $INSTALL -eq 1 ]]; then
  stage install install_clients
fi
stage clients-present check_clients
if [[ $QUICK -eq 0 ]]; then
  stage fmt cargo fmt --all --check
  stage clippy cargo clippy --workspace --all-targets -- -D warnings
fi
stage cargo-test cargo test --workspace
stage build-release cargo build --release -p samsa-broker
stage client-tests client_tests

echo "==> ci/test.sh stage timings"
for i in "${!STAGE_NAMES[@]}"; do
  printf '  %-16s %5ss\n' "${STAGE_NAMES[$i]}" "${STAGE_SECS[$i]}"
done
echo "ci/test.sh: all stages passed"
