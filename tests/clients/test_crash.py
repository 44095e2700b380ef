"""Crash test: SIGKILL the broker while an acks=all producer streams, restart on the same data
directory, and check that every acknowledged record is there (and, with the idempotent producer,
that none of them is duplicated). Only talks to its own brokers on 127.0.0.1.
"""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Producer

from conftest import note
from test_confluent_kafka import PARTITIONS, consume_all, create_topic, partition_count

KILL_AFTER_ACKS = 3000
RECORDS_MAX = 200_000
PRODUCE_TIME_MAX_S = 60.0
AFTER_KILL_S = 0.5
IN_FLIGHT_MAX = 2000


@pytest.mark.parametrize("idempotent", [False, True])
def test_sigkill_keeps_every_acked_record(broker_factory, idempotent):
    broker = broker_factory("crash").start()
    topic = "crash"
    create_topic(broker.bootstrap, topic)
    producer = Producer({
        "bootstrap.servers": broker.bootstrap,
        "acks": "all",
        "enable.idempotence": idempotent,
        "linger.ms": 2,
        "message.timeout.ms": 5000,
    })
    acked: dict[bytes, tuple[int, int]] = {}
    failed = 0

    def on_delivery(err, msg):
        nonlocal failed
        if err is None:
            acked[msg.value()] = (msg.partition(), msg.offset())
        else:
            failed += 1

    sent = 0
    sent_at_kill = None
    killed_at = None
    stop = threading.Event()

    def stream() -> None:
        # Produce without pause so the kill lands mid-stream, with requests in flight.
        nonlocal sent
        while not stop.is_set() and sent < RECORDS_MAX:
            if sent - len(acked) - failed >= IN_FLIGHT_MAX:
                producer.poll(0.001)  # A window, so the stream keeps flowing until the kill.
                continue
            try:
                producer.produce(topic, key=f"k{sent % 101}".encode(),
                                 value=f"crash-{sent}".encode(), on_delivery=on_delivery)
                sent += 1
            except BufferError:
                producer.poll(0.001)
            producer.poll(0)

    streamer = threading.Thread(target=stream, daemon=True)
    streamer.start()
    deadline = time.monotonic() + PRODUCE_TIME_MAX_S
    try:
        while len(acked) < KILL_AFTER_ACKS:
            assert streamer.is_alive(), f"producer stopped after {sent} sends"
            assert time.monotonic() < deadline, f"only {len(acked)} acks after {sent} sends"
            time.sleep(0.001)
        sent_at_kill = sent
        broker.kill()
        killed_at = len(acked)
        time.sleep(AFTER_KILL_S)  # The producer keeps going against a dead broker.
    finally:
        stop.set()
        streamer.join(10)
    # Let the producer give up on what was in flight (those records are not acknowledged).
    producer.flush(1.0)
    producer.purge()
    producer.flush(10.0)
    acked_total = len(acked)
    assert acked_total >= killed_at

    broker.start()
    assert partition_count(broker.bootstrap, topic) == PARTITIONS
    got = consume_all(broker.bootstrap, topic, PARTITIONS)
    found: dict[bytes, list[tuple[int, int]]] = {}
    for partition, entries in got.by_partition.items():
        offsets = [o for o, _ in entries]
        assert offsets == list(range(len(offsets))), f"partition {partition}: offset gap"
        for offset, rec in entries:
            found.setdefault(rec.value, []).append((partition, offset))
    lost = [v for v in acked if v not in found]
    moved = [v for v, where in acked.items() if v in found and where not in found[v]]
    dups = [v for v in acked if len(found.get(v, [])) > 1]
    unacked_at_kill = sum(1 for i in range(sent_at_kill)
                          if f"crash-{i}".encode() not in acked)
    note(f"crash(idempotent={idempotent}): sent={sent} sent_at_kill={sent_at_kill} "
         f"acked={acked_total} (acks seen at kill {killed_at}) "
         f"unacked_sent_before_kill={unacked_at_kill} failed={failed} found={got.count()} "
         f"acked_found={acked_total - len(lost)} lost={len(lost)} dups_of_acked={len(dups)}")
    assert not lost, f"{len(lost)} acknowledged records lost, e.g. {lost[:5]}"
    assert not moved, f"{len(moved)} acknowledged records at another offset, e.g. {moved[:5]}"
    if idempotent:
        assert not dups, f"{len(dups)} acknowledged records duplicated, e.g. {dups[:5]}"
    assert broker.stop() == 0
    assert "panicked" not in broker.log_text(), broker.tail()
