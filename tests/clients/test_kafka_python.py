"""kafka-python 3.x against a real samsa broker: admin create/describe/delete, idempotent (its
default) gzip produce of keyed records with headers, group-less consume with assign(), and
ListOffsets by time. Only talks to the broker fixture on 127.0.0.1.
"""

from __future__ import annotations

import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic

from conftest import Consumed, Rec, check_round_trip, make_records

TIMEOUT_S = 30.0
PARTITIONS = 3


def admin(bootstrap: str) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)


def topics(bootstrap: str) -> set[str]:
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        return set(c.topics())
    finally:
        c.close()


def consume_all(bootstrap: str, topic: str, partitions: int, expected: int) -> Consumed:
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest", consumer_timeout_ms=1000)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    got = Consumed()
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while got.count() < expected:
            assert time.monotonic() < deadline, f"consumed {got.count()} of {expected}"
            for tp, msgs in c.poll(timeout_ms=500).items():
                for m in msgs:
                    got.add(tp.partition, m.offset, Rec(m.key, m.value, tuple(m.headers)))
        end = c.end_offsets(tps)
        assert sum(end.values()) == expected, f"end offsets {end}"
    finally:
        c.close()
    return got


def test_admin_create_describe_delete(broker):
    bs = broker.bootstrap
    a = admin(bs)
    try:
        a.create_topics([NewTopic("kp-admin", num_partitions=4, replication_factor=1,
                                  topic_configs={"retention.bytes": "1048576"})])
        assert "kp-admin" in topics(bs)
        # kafka-python 3 returns {type: {name: {key: {config data}}}}; the default filter
        # keeps only values that differ from the defaults (the broker must say which).
        described = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "kp-admin")])
        [by_name] = described.values()
        entry = by_name["kp-admin"]["retention.bytes"]
        assert entry["value"] == "1048576", entry
        a.delete_topics(["kp-admin"])
        deadline = time.monotonic() + TIMEOUT_S
        while "kp-admin" in topics(bs):
            assert time.monotonic() < deadline, "deleted topic still listed"
            time.sleep(0.2)
    finally:
        a.close()


def test_produce_consume_gzip_idempotent(broker):
    bs = broker.bootstrap
    topic = "kp-gzip"
    a = admin(bs)
    try:
        a.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    finally:
        a.close()
    producer = KafkaProducer(bootstrap_servers=bs, compression_type="gzip", acks="all",
                             linger_ms=5)
    assert producer.config["enable_idempotence"], "kafka-python 3 should default to idempotence"
    recs = make_records("kafka-python", 300)
    try:
        futures = [(r, producer.send(topic, key=r.key, value=r.value, headers=list(r.headers)))
                   for r in recs]
        producer.flush(TIMEOUT_S)
        acked = {}
        for rec, fut in futures:
            md = fut.get(TIMEOUT_S)
            acked[rec] = (md.partition, md.offset)
    finally:
        producer.close()
    check_round_trip(recs, acked, consume_all(bs, topic, PARTITIONS, len(recs)))


def test_offsets_for_times(broker):
    bs = broker.bootstrap
    topic = "kp-times"
    base_ms = 1_600_000_000_000
    producer = KafkaProducer(bootstrap_servers=bs, acks="all")
    try:
        for i in range(20):
            # Auto-created topic (auto.create.topics.enable defaults to true).
            producer.send(topic, key=b"k", value=f"t-value-{i}".encode(),
                          timestamp_ms=base_ms + i * 100).get(TIMEOUT_S)
    finally:
        producer.close()
    c = KafkaConsumer(bootstrap_servers=bs, group_id=None)
    try:
        parts = c.partitions_for_topic(topic)
        assert parts, "auto-created topic has no partitions"
        owner = None
        for p in sorted(parts):
            end = c.end_offsets([TopicPartition(topic, p)])[TopicPartition(topic, p)]
            if end:
                assert end == 20
                owner = p
        assert owner is not None
        tp = TopicPartition(topic, owner)
        found = c.offsets_for_times({tp: base_ms + 550})[tp]
        assert found is not None and found.offset == 6 and found.timestamp == base_ms + 600
        assert c.offsets_for_times({tp: base_ms + 10_000})[tp] is None
        assert c.beginning_offsets([tp])[tp] == 0
    finally:
        c.close()
