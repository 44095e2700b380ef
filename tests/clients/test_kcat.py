"""kcat (Debian's kcat 1.7.1 on librdkafka 2.0.2) against a real samsa broker: metadata, keyed
produce with headers under every codec to a topic created by a Python admin, produce to an
auto-created topic, consume everything back (JSON output) and ListOffsets by time.
Only talks to the broker fixture on 127.0.0.1.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import defaultdict

import pytest

from conftest import Consumed, Rec, check_round_trip
from test_confluent_kafka import PARTITIONS, create_topic

KCAT = shutil.which("kcat") or shutil.which("kafkacat")
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
PER_CODEC = 60
KCAT_TIMEOUT_S = 60

pytestmark = pytest.mark.skipif(KCAT is None, reason="kcat not installed (apt-get install kcat)")


def kcat(bootstrap: str, *args: str, stdin: str | None = None) -> str:
    cmd = [KCAT, "-b", bootstrap, *args]
    out = subprocess.run(cmd, input=stdin, capture_output=True, text=True,
                         timeout=KCAT_TIMEOUT_S)
    assert out.returncode == 0, f"{cmd} exited {out.returncode}:\n{out.stderr}"
    assert "ERROR" not in out.stderr, f"{cmd}:\n{out.stderr}"
    return out.stdout


def produce(bootstrap: str, topic: str, codec: str, count: int, first: int) -> list[Rec]:
    recs = []
    lines = []
    for i in range(first, first + count):
        key, value = f"key-{i % 13}", f"kcat-{codec}-value-{i}"
        lines.append(f"{key}:{value}")
        recs.append(Rec(key.encode(), value.encode(),
                        (("client", b"kcat"), ("codec", codec.encode()))))
    kcat(bootstrap, "-P", "-t", topic, "-K", ":", "-z", codec,
         "-H", "client=kcat", "-H", f"codec={codec}", "-X", "acks=all",
         stdin="\n".join(lines) + "\n")
    return recs


def consume(bootstrap: str, topic: str) -> Consumed:
    out = kcat(bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-J", "-q")
    got = Consumed()
    for line in out.splitlines():
        if not line.strip():
            continue
        m = json.loads(line)
        flat = m.get("headers") or []
        headers = tuple((flat[i], None if flat[i + 1] is None else flat[i + 1].encode())
                        for i in range(0, len(flat), 2))
        key = None if m["key"] is None else m["key"].encode()
        value = None if m["payload"] is None else m["payload"].encode()
        got.add(m["partition"], m["offset"], Rec(key, value, headers))
    return got


def metadata(bootstrap: str) -> dict:
    return json.loads(kcat(bootstrap, "-L", "-J"))


def test_kcat_round_trip_every_codec(broker):
    bs = broker.bootstrap
    topic = "kcat-codecs"
    create_topic(bs, topic)  # kcat has no admin API: a Python admin creates the topic.
    md = metadata(bs)
    [entry] = [t for t in md["topics"] if t["topic"] == topic]
    assert len(entry["partitions"]) == PARTITIONS
    assert [b["id"] for b in md["brokers"]], md
    recs: list[Rec] = []
    for n, codec in enumerate(CODECS):
        recs += produce(bs, topic, codec, PER_CODEC, n * PER_CODEC)
    got = consume(bs, topic)
    # kcat prints no delivery offsets, so only the consumed side's offsets are checked.
    check_round_trip(recs, None, got)
    assert len(got.by_partition) > 1, "keys did not spread over partitions"


def test_kcat_auto_create_and_offsets_by_time(broker):
    bs = broker.bootstrap
    topic = "kcat-auto"
    recs = produce(bs, topic, "gzip", 40, 0)
    md = metadata(bs)
    assert any(t["topic"] == topic and t["partitions"] for t in md["topics"]), md
    got = consume(bs, topic)
    check_round_trip(recs, None, got)
    # By time: timestamp 0 precedes every record (-> offset 0 on each partition with data);
    # a timestamp far in the future follows them all (-> -1, no such record).
    counts = defaultdict(int)
    for partition, entries in got.by_partition.items():
        counts[partition] = len(entries)
    for partition, count in counts.items():
        out = kcat(bs, "-Q", "-t", f"{topic}:{partition}:0")
        assert f"[{partition}] offset 0" in out, out
        out = kcat(bs, "-Q", "-t", f"{topic}:{partition}:{4_102_444_800_000}")
        assert f"[{partition}] offset -1" in out, out
