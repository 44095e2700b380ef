"""Compacted topics with a real client: confluent-kafka produces keyed updates and tombstones to
a `cleanup.policy=compact` topic with tiny segments, the broker's background cleaner runs, and a
consumer from the start must see, per key, the latest value (tombstones included: they stay for
`delete.retention.ms`), every record at the offset it was written, and fewer records than were
produced; `samsa topics describe` on the stopped broker's data dir shows the cleaner's progress;
the same after a restart. Only talks to its own broker on 127.0.0.1.
"""

from __future__ import annotations

import re
import subprocess
import time

from conftest import ANSI, SAMSA_BIN, Rec, note
from test_confluent_kafka import consume_all, create_topic, produce

TOPIC = "compacted"
KEYS = 20
ROUNDS = 4
PER_ROUND = 150
# The cleaner wakes every 15 s (Kafka's log.cleaner.backoff.ms); allow a few wake-ups.
CLEAN_WAIT_S = 70.0
CLEANER_PASS = re.compile(r"cleaner pass.*segments=([1-9]\d*)")


def updates(round_: int) -> list[Rec]:
    recs = []
    for i in range(PER_ROUND):
        n = round_ * PER_ROUND + i
        key = f"key-{(n * 7) % KEYS}".encode()
        # Every 9th write deletes its key (a tombstone: null value).
        value = None if n % 9 == 8 else f"value-{n}".encode()
        recs.append(Rec(key, value, (("n", str(n).encode()),)))
    return recs


def check(consumed, written: dict[int, Rec], latest: dict[bytes, int]) -> list[int]:
    entries = consumed.by_partition.get(0, [])
    offsets = [o for o, _ in entries]
    assert offsets == sorted(set(offsets)), "offsets ascend without repeats"
    for offset, rec in entries:
        assert written.get(offset) == rec, f"offset {offset}: {rec} was not written there"
    seen = set(offsets)
    lost = [k for k, o in latest.items() if o not in seen]
    assert not lost, f"latest value of {len(lost)} keys missing, e.g. {lost[:3]}"
    return offsets


def describe_offline(broker, produced: int) -> None:
    """`samsa topics describe` on the stopped broker's data dir shows the cleaner's progress."""
    out = subprocess.run(
        [str(SAMSA_BIN), "topics", "--data-dir", str(broker.data_dir), "describe", TOPIC],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "cleanup.policy=compact" in out.stdout, out.stdout
    assert f"LogEndOffset: {produced}" in out.stdout, out.stdout
    first_dirty = re.search(r"FirstDirtyOffset: (\d+)", out.stdout)
    assert first_dirty and int(first_dirty.group(1)) > 0, out.stdout
    note("compaction: samsa topics describe: " + " ".join(out.stdout.split()))


def test_compaction_keeps_latest_per_key(broker_factory):
    broker = broker_factory("compact").start()
    create_topic(broker.bootstrap, TOPIC, partitions=1, config={
        "cleanup.policy": "compact",
        "segment.bytes": "1024",
        "min.cleanable.dirty.ratio": "0.01",
    })
    written: dict[int, Rec] = {}
    for r in range(ROUNDS):
        acked = produce(broker.bootstrap, TOPIC, updates(r))
        for rec, (partition, offset) in acked.items():
            assert partition == 0
            written[offset] = rec
    latest: dict[bytes, int] = {}
    for offset in sorted(written):
        latest[written[offset].key] = offset

    deadline = time.monotonic() + CLEAN_WAIT_S
    while not CLEANER_PASS.search(ANSI.sub("", broker.log_text())):
        assert time.monotonic() < deadline, f"no cleaner pass in {CLEAN_WAIT_S}s:\n{broker.tail()}"
        time.sleep(0.5)

    first = check(consume_all(broker.bootstrap, TOPIC, 1), written, latest)
    assert len(first) < len(written), "the cleaner removed superseded records"
    note(f"compaction: produced={len(written)} keys={KEYS} after_clean={len(first)}")

    assert broker.stop() == 0
    describe_offline(broker, len(written))
    broker.start()
    again = check(consume_all(broker.bootstrap, TOPIC, 1), written, latest)
    assert again == first, "a restart changes nothing"
    assert broker.stop() == 0
    assert "panicked" not in broker.log_text(), broker.tail()
