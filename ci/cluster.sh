#!/usr/bin/env bash
# ci/cluster.sh: a local Samsa cluster on 127.0.0.1 for trying cluster mode out.
#   ci/cluster.sh start [N] [--brokers M]
#                             N voters (default 3), each also a broker, and M more broker-only
#                             nodes (default 0; N + M at most 9): node i serves clients on
#                             19090+2i and its metadata quorum on 19091+2i (i = 1..N+M)
#   ci/cluster.sh stop        SIGTERM every node started here, wait for clean shutdown
#   ci/cluster.sh status      which nodes run, and their logs' last line
# Data in target/cluster/node<i>/, logs in target/cluster/node<i>.log, pids in .pid files, the
# voter list (with each voter's pinned directory id) in target/cluster/voters.
# Uses target/release/samsa (built if missing). Never touches anything outside target/.
set -euo pipefail
cd "$(dirname "$0")/.."

base=target/cluster
bin=target/release/samsa
cmd="${1:-}"

client_port() { echo $((19090 + 2 * $1)); }
quorum_port() { echo $((19091 + 2 * $1)); }

running() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

case "$cmd" in
  start)
    shift
    n=3
    m=0
    if [[ $# -gt 0 && "$1" != --* ]]; then n="$1"; shift; fi
    if [[ $# -gt 0 ]]; then
      if [[ "$1" != "--brokers" || $# -ne 2 ]]; then
        echo "usage: ci/cluster.sh start [N] [--brokers M]" >&2
        exit 2
      fi
      m="$2"
    fi
    if ! [[ "$n" =~ ^[1-9]$ && "$m" =~ ^[0-8]$ ]] || (( n + m > 9 )); then
      echo "need 1..9 voters and 0..8 broker-only nodes, 9 in all; got $n and $m" >&2
      exit 2
    fi
    [[ -x "$bin" ]] || cargo build --release -p samsa-broker
    mkdir -p "$base"
    # Each voter's directory id is pinned in the voter list (`samsa format` creates and prints
    # it), and the list is kept in $base/voters: a later start reuses it, so a node whose data
    # directory was wiped comes back with a new id and only follows the quorum as an observer.
    if [[ -f "$base/voters" && "$(tr ',' '\n' <"$base/voters" | wc -l)" -eq "$n" ]]; then
      voters="$(cat "$base/voters")"
      for i in $(seq 1 "$n"); do "$bin" format --data-dir "$base/node$i" >/dev/null 2>&1; done
    else
      voters=""
      for i in $(seq 1 "$n"); do
        dir_id="$("$bin" format --data-dir "$base/node$i" 2>/dev/null)"
        voters="${voters:+$voters,}$i@127.0.0.1:$(quorum_port "$i"):$dir_id"
      done
      echo "$voters" >"$base/voters"
    fi
    # Nodes 1..n are voters (and brokers); n+1..n+m are broker-only: in nobody's
    # configuration, each introduces itself to the voters and follows the metadata log as a
    # Raft observer.
    for i in $(seq 1 $((n + m))); do
      pid="$base/node$i.pid"
      if running "$pid"; then
        echo "node $i already running (pid $(cat "$pid"))"
        continue
      fi
      roles=()
      what=""
      if (( i > n )); then
        roles=(--process-roles broker)
        what=" (broker only)"
      fi
      mkdir -p "$base/node$i"
      "$bin" broker --node-id "$i" --listen "127.0.0.1:$(client_port "$i")" \
        --data-dir "$base/node$i" --voters "$voters" "${roles[@]}" \
        --controller-listen "127.0.0.1:$(quorum_port "$i")" \
        >>"$base/node$i.log" 2>&1 &
      echo $! >"$pid"
      echo "node $i$what: clients 127.0.0.1:$(client_port "$i")," \
        "quorum 127.0.0.1:$(quorum_port "$i"), pid $!"
    done
    echo "voters: $voters"
    bootstrap=""
    for i in $(seq 1 $((n + m))); do
      bootstrap="${bootstrap:+$bootstrap,}127.0.0.1:$(client_port "$i")"
    done
    echo "bootstrap servers: $bootstrap"
    ;;
  stop)
    shopt -s nullglob
    for pid in "$base"/node*.pid; do
      if running "$pid"; then
        kill -TERM "$(cat "$pid")"
        for _ in $(seq 1 100); do
          running "$pid" || break
          sleep 0.1
        done
        if running "$pid"; then
          echo "$pid: still running after 10 s" >&2
        else
          echo "stopped $(basename "$pid" .pid)"
        fi
      fi
      rm -f "$pid"
    done
    ;;
  status)
    shopt -s nullglob
    for pid in "$base"/node*.pid; do
      name=$(basename "$pid" .pid)
      if running "$pid"; then state="running (pid $(cat "$pid"))"; else state="stopped"; fi
      echo "$name: $state; last log: $(tail -n 1 "$base/$name.log" 2>/dev/null || true)"
    done
    ;;
  *)
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
