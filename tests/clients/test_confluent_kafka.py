"""confluent-kafka (librdkafka 2.16) against a real samsa broker.

Admin (create with configs / validate_only, describe_configs, create_partitions, delete),
keyed produce with headers under every compression codec, the idempotent producer, ListOffsets by
time, and a clean restart. Consumers use assign() with explicit offsets and never commit, so no
group coordinator is needed. Only talks to the broker fixture on 127.0.0.1.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaException, Producer,
                             TopicPartition)
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic

from conftest import Consumed, Rec, check_round_trip, make_records

TIMEOUT_S = 30.0
PARTITIONS = 3


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def create_topic(bootstrap: str, name: str, partitions: int = PARTITIONS,
                 config: dict[str, str] | None = None) -> None:
    a = admin(bootstrap)  # Keep the handle alive until the future resolves.
    futures = a.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=10, request_timeout=TIMEOUT_S)
    futures[name].result(TIMEOUT_S)


def partition_count(bootstrap: str, name: str) -> int | None:
    md = admin(bootstrap).list_topics(timeout=TIMEOUT_S)
    topic = md.topics.get(name)
    if topic is None or topic.error is not None:
        return None
    return len(topic.partitions)


def produce(bootstrap: str, topic: str, recs: list[Rec], extra: dict | None = None,
            timestamps: list[int] | None = None) -> dict[Rec, tuple[int, int]]:
    """Produces `recs` and returns where each was acknowledged; fails on any delivery error."""
    conf = {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5}
    conf.update(extra or {})
    producer = Producer(conf)
    acked: dict[Rec, tuple[int, int]] = {}
    errors: list[str] = []

    def on_delivery(err, msg, rec):
        if err is not None:
            errors.append(f"{rec}: {err}")
        else:
            acked[rec] = (msg.partition(), msg.offset())

    for i, rec in enumerate(recs):
        kwargs = {}
        if timestamps is not None:
            kwargs["timestamp"] = timestamps[i]
        producer.produce(topic, key=rec.key, value=rec.value, headers=list(rec.headers),
                         on_delivery=lambda err, msg, rec=rec: on_delivery(err, msg, rec),
                         **kwargs)
        producer.poll(0)
    remaining = producer.flush(TIMEOUT_S)
    assert remaining == 0, f"{remaining} records still in flight after {TIMEOUT_S}s"
    assert not errors, f"delivery errors: {errors[:5]}"
    return acked


def consumer(bootstrap: str) -> Consumer:
    # librdkafka insists on a group.id; with assign() and no commits it never needs the
    # coordinator for fetching.
    return Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "samsa-tests-unused",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
        "enable.partition.eof": True,
    })


def consume_all(bootstrap: str, topic: str, partitions: int,
                start: dict[int, int] | None = None) -> Consumed:
    """Reads every partition from `start` (default: beginning) up to its end."""
    c = consumer(bootstrap)
    start = start or {}
    c.assign([TopicPartition(topic, p, start.get(p, OFFSET_BEGINNING))
              for p in range(partitions)])
    got = Consumed()
    at_end: set[int] = set()
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while len(at_end) < partitions:
            assert time.monotonic() < deadline, f"consume timed out; at end: {sorted(at_end)}"
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() == -191:  # _PARTITION_EOF
                    at_end.add(msg.partition())
                    continue
                raise KafkaException(msg.error())
            at_end.discard(msg.partition())
            headers = tuple((k, v) for k, v in (msg.headers() or []))
            got.add(msg.partition(), msg.offset(), Rec(msg.key(), msg.value(), headers))
    finally:
        c.close()
    return got


def test_admin_create_describe_partitions_delete(broker):
    bs = broker.bootstrap
    name = "cf-admin"
    a = admin(bs)
    # validate_only creates nothing.
    futures = a.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)],
                              validate_only=True, request_timeout=TIMEOUT_S)
    futures[name].result(TIMEOUT_S)
    assert partition_count(bs, name) is None, "validate_only created the topic"

    create_topic(bs, name, partitions=2, config={"retention.ms": "3600000"})
    assert partition_count(bs, name) == 2

    # Creating it again is TOPIC_ALREADY_EXISTS.
    again = a.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)],
                            request_timeout=TIMEOUT_S)
    with pytest.raises(KafkaException) as exc:
        again[name].result(TIMEOUT_S)
    assert "TOPIC_ALREADY_EXISTS" in str(exc.value) or exc.value.args[0].code() == 36

    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    configs = a.describe_configs([resource], request_timeout=TIMEOUT_S)[resource].result(TIMEOUT_S)
    assert configs["retention.ms"].value == "3600000"

    a.create_partitions([NewPartitions(name, 5)], request_timeout=TIMEOUT_S)[name].result(
        TIMEOUT_S)
    assert partition_count(bs, name) == 5

    a.delete_topics([name], request_timeout=TIMEOUT_S)[name].result(TIMEOUT_S)
    deadline = time.monotonic() + TIMEOUT_S
    while partition_count(bs, name) is not None:
        assert time.monotonic() < deadline, "deleted topic still listed"
        time.sleep(0.2)


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_produce_consume_keyed_with_headers(broker, codec):
    bs = broker.bootstrap
    topic = f"cf-{codec}"
    create_topic(bs, topic)
    recs = make_records(f"confluent-{codec}", 300)
    acked = produce(bs, topic, recs, {"compression.codec": codec, "enable.idempotence": False})
    assert {p for p, _ in acked.values()} == set(range(PARTITIONS)), "keys did not spread"
    check_round_trip(recs, acked, consume_all(bs, topic, PARTITIONS))


def test_idempotent_producer(broker):
    bs = broker.bootstrap
    topic = "cf-idempotent"
    create_topic(bs, topic)
    recs = make_records("confluent-idem", 1000)
    acked = produce(bs, topic, recs, {"enable.idempotence": True, "compression.codec": "lz4",
                                      "batch.num.messages": 50})
    check_round_trip(recs, acked, consume_all(bs, topic, PARTITIONS))


def test_list_offsets_by_time(broker):
    bs = broker.bootstrap
    topic = "cf-times"
    create_topic(bs, topic, partitions=1)
    base_ms = 1_700_000_000_000
    count = 30
    recs = make_records("confluent-time", count)
    stamps = [base_ms + i * 1000 for i in range(count)]
    # One record per batch (flush after each): answers at batch boundaries.
    acked = {}
    for i, rec in enumerate(recs):
        acked.update(produce(bs, topic, [rec], timestamps=[stamps[i]]))
    # Then one batch of ten records, all later than the ones above.
    batch_ms = base_ms + 100_000
    tail = make_records("confluent-time", 10, first=count)
    acked.update(produce(bs, topic, tail, {"linger.ms": 200},
                         timestamps=[batch_ms + i * 10 for i in range(10)]))
    check_round_trip(recs + tail, acked, consume_all(bs, topic, 1))
    assert len({offset for _, offset in acked.values()}) == count + 10
    c = consumer(bs)
    try:
        low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=TIMEOUT_S)
        assert (low, high) == (0, count + 10)

        def by_time(query: int) -> int:
            [tp] = c.offsets_for_times([TopicPartition(topic, 0, query)], timeout=TIMEOUT_S)
            assert tp.error is None, tp.error
            return tp.offset

        queries = {
            base_ms - 5000: 0,            # before everything: the first record
            base_ms: 0,
            base_ms + 1: 1,               # the first record whose timestamp is >= the query
            base_ms + 17_000: 17,
            base_ms + 17_500: 18,
            base_ms + (count - 1) * 1000: count - 1,
            batch_ms: count,
            batch_ms + 10_000: -1,        # after everything: no such record
        }
        for query, expected in queries.items():
            assert by_time(query) == expected, f"time {query}: offset != {expected}"
        # Inside a batch, the answer is the exact record (as in Kafka), not the batch's base.
        assert by_time(batch_ms + 45) == count + 5
        assert by_time(batch_ms + 90) == count + 9
    finally:
        c.close()


def test_restart_keeps_records(broker):
    """A clean SIGTERM + restart on the same data dir serves every record again."""
    topic = "cf-restart"
    create_topic(broker.bootstrap, topic)
    recs = make_records("confluent-restart", 200)
    acked = produce(broker.bootstrap, topic, recs)
    assert broker.stop() == 0
    broker.start()
    assert partition_count(broker.bootstrap, topic) == PARTITIONS
    check_round_trip(recs, acked, consume_all(broker.bootstrap, topic, PARTITIONS))
    more = make_records("confluent-restart2", 30)
    acked2 = produce(broker.bootstrap, topic, more)
    for rec, (p, offset) in acked2.items():
        assert offset >= sum(1 for q, _ in acked.values() if q == p), "offsets reused"
