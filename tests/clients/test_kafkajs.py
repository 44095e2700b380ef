"""kafkajs 2.2.4 against a real samsa broker, through tests/clients/node/kafkajs_client.js:
admin create/list/metadata/describe/create-partitions/delete, keyed gzip produce with headers
(plain and idempotent), fetchTopicOffsets and offsets by timestamp. kafkajs has no group-less
consumer, so unless the broker serves consumer groups its records are read back here with
confluent-kafka's assign()-based consumer. Only talks to the broker fixture on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import Rec, check_round_trip, groups_supported, note
from test_confluent_kafka import PARTITIONS, consume_all

NODE_DIR = Path(__file__).resolve().parent / "node"
SCRIPT = NODE_DIR / "kafkajs_client.js"
NODE = shutil.which("node")
NODE_TIMEOUT_S = 180
RECORDS = 200

pytestmark = pytest.mark.skipif(
    NODE is None or not (NODE_DIR / "node_modules" / "kafkajs").is_dir(),
    reason="node or kafkajs missing (cd tests/clients/node && npm install)")


def as_rec(m: dict) -> Rec:
    headers = tuple((k, v.encode()) for k, v in m["headers"].items())
    return Rec(m["key"].encode(), m["value"].encode(), headers)


def test_kafkajs(broker):
    groups = groups_supported(broker.bootstrap)
    env = dict(os.environ, SAMSA_GROUPS="1" if groups else "0")
    out = subprocess.run([NODE, str(SCRIPT), broker.bootstrap], cwd=NODE_DIR, env=env,
                         capture_output=True, text=True, timeout=NODE_TIMEOUT_S)
    assert out.returncode == 0, f"kafkajs exited {out.returncode}:\n{out.stderr}\n{out.stdout}"
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["admin"] == "ok"
    assert result["times"] == {"mid": 3, "first": 0, "high": 10}
    for name, produced in result["produced"].items():
        recs = [as_rec(m) for m in produced["all"]]
        assert len(recs) == RECORDS
        got = consume_all(broker.bootstrap, produced["topic"], PARTITIONS)
        check_round_trip(recs, None, got)
        where = {rec: (p, o) for p, entries in got.by_partition.items() for o, rec in entries}
        for m in produced["acked"]:
            assert where[as_rec(m)] == (m["partition"], m["offset"]), f"{name}: {m}"
    if groups:
        consumed = result["consumed"]
        assert len(consumed) == RECORDS
        got = {(m["partition"], m["offset"]): as_rec(m) for m in consumed}
        plain = result["produced"]["plain"]
        for m in plain["acked"]:
            assert got[(m["partition"], m["offset"])] == as_rec(m)
    else:
        note("kafkajs: broker serves no consumer groups; records verified with confluent-kafka")
