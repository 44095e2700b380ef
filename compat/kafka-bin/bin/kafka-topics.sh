#!/usr/bin/env bash
# compat/kafka-bin/bin/kafka-topics.sh: Samsa's stand-in for the JVM tool of the same name, for
# the librdkafka tests that shell out to it (test_kafka_topics: 0052, 0077). It only creates
# topics (`--bootstrap-server B --create --topic T --partitions N --replication-factor R
# --config K=V ...`) through CreateTopics from the confluent-kafka client in the venv; it never
# starts a broker. ci/compat.sh points KAFKA_PATH at compat/kafka-bin.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${SAMSA_VENV:-$HERE/../../../.venv}"
exec "$VENV/bin/python" "$HERE/kafka_topics.py" "$@"
