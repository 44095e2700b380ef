#!/usr/bin/env bash
# ci/sim.sh: build the deterministic simulator (madsim, its own target dir) and run it.
#   ci/sim.sh list
#   ci/sim.sh run SCENARIO --seed N [--mutant NAME] [--trace]   replay one seed bit for bit
#   ci/sim.sh sweep [--seeds N | --minutes M] [--jobs J]        fresh seeds (base from the commit)
#   ci/sim.sh mutants [--budget N] [--only NAME]                 every planted bug must be caught
#   ci/sim.sh smoke                                     seeds 0..32 per scenario + regressions
# Long local sweep:  ci/sim.sh sweep --minutes 120 --jobs "$(nproc)"
# Never modifies the source tree; builds go to target/sim.
# Which scenarios a sweep rotates over (NOT_IN_ROTATION) and which scenarios hunt each planted
# bug (mutant_targets) live in scenarios/src/lib.rs; a sweep gives every scenario in rotation
# the same number of seeds, batch by batch (cluster scenarios cost more wall time per seed).
set -euo pipefail
cd "$(dirname "$0")/.."

cmd="${1:-}"
case "$cmd" in
  list|run|sweep|mutants|smoke|batch) ;;
  *)
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_SIM:-target/sim}"
RUSTFLAGS="--cfg madsim" cargo build --quiet --profile sim -p samsa-scenarios --bin samsa-sim
bin="$CARGO_TARGET_DIR/sim/samsa-sim"

if [ "$cmd" = sweep ] && [ -z "${SAMSA_SIM_BASE:-}" ]; then
  # A reproducible seed base per commit: the first 12 hex digits of the commit hash.
  commit="$(git rev-parse HEAD 2>/dev/null || echo 0)"
  export SAMSA_SIM_BASE="$((16#${commit:0:12}))"
  echo "sim: commit ${commit:0:12} -> seed base $SAMSA_SIM_BASE" >&2
fi

exec "$bin" "$@"
