"""aiokafka 0.14 against a real samsa broker: admin create/delete, gzip produce of keyed records
with headers (plain and idempotent), group-less consume with assign(), and ListOffsets by time.
aiokafka uses old non-flexible protocol versions. Only talks to the broker fixture on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from conftest import Consumed, Rec, check_round_trip, make_records

TIMEOUT_S = 30.0
PARTITIONS = 3


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    a = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await a.start()
    try:
        await a.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        await a.close()


async def produce(bootstrap: str, topic: str, recs: list[Rec],
                  idempotent: bool) -> dict[Rec, tuple[int, int]]:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type="gzip", acks="all",
                         enable_idempotence=idempotent, linger_ms=5)
    await p.start()
    try:
        futures = [(r, await p.send(topic, key=r.key, value=r.value, headers=list(r.headers)))
                   for r in recs]
        acked = {}
        for rec, fut in futures:
            md = await asyncio.wait_for(fut, TIMEOUT_S)
            acked[rec] = (md.partition, md.offset)
        return acked
    finally:
        await p.stop()


async def consume_all(bootstrap: str, topic: str, partitions: int, expected: int) -> Consumed:
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest")
    await c.start()
    got = Consumed()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        deadline = time.monotonic() + TIMEOUT_S
        while got.count() < expected:
            assert time.monotonic() < deadline, f"consumed {got.count()} of {expected}"
            batches = await c.getmany(timeout_ms=500)
            for tp, msgs in batches.items():
                for m in msgs:
                    got.add(tp.partition, m.offset, Rec(m.key, m.value, tuple(m.headers)))
        end = await c.end_offsets(tps)
        assert sum(end.values()) == expected, f"end offsets {end}"
    finally:
        await c.stop()
    return got


async def round_trip(bootstrap: str, topic: str, idempotent: bool) -> None:
    await create_topic(bootstrap, topic, PARTITIONS)
    recs = make_records(f"aiokafka-{topic}", 300)
    acked = await produce(bootstrap, topic, recs, idempotent)
    got = await consume_all(bootstrap, topic, PARTITIONS, len(recs))
    check_round_trip(recs, acked, got)


def test_produce_consume_gzip(broker):
    asyncio.run(round_trip(broker.bootstrap, "aio-gzip", idempotent=False))


def test_produce_consume_gzip_idempotent(broker):
    asyncio.run(round_trip(broker.bootstrap, "aio-idem", idempotent=True))


def test_admin_delete_and_offsets_for_times(broker):
    async def run(bs: str) -> None:
        topic = "aio-times"
        await create_topic(bs, topic, 1)
        base_ms = 1_650_000_000_000
        p = AIOKafkaProducer(bootstrap_servers=bs, acks="all")
        await p.start()
        try:
            for i in range(10):
                await p.send_and_wait(topic, key=b"k", value=f"v-value-{i}".encode(),
                                      timestamp_ms=base_ms + i * 10)
        finally:
            await p.stop()
        c = AIOKafkaConsumer(bootstrap_servers=bs, group_id=None)
        await c.start()
        try:
            tp = TopicPartition(topic, 0)
            found = (await c.offsets_for_times({tp: base_ms + 35}))[tp]
            assert found is not None and found.offset == 4, found
            assert (await c.offsets_for_times({tp: base_ms + 1000}))[tp] is None
            assert (await c.end_offsets([tp]))[tp] == 10
        finally:
            await c.stop()
        a = AIOKafkaAdminClient(bootstrap_servers=bs)
        await a.start()
        try:
            await a.delete_topics([topic])
            deadline = time.monotonic() + TIMEOUT_S
            while topic in await a.list_topics():
                assert time.monotonic() < deadline, "deleted topic still listed"
                await asyncio.sleep(0.2)
        finally:
            await a.close()

    asyncio.run(run(broker.bootstrap))
