#!/usr/bin/env python3
"""bench/kbench.py: the benchmark's confluent-kafka driver (librdkafka 2.16 from the wheel).

Modes (each prints one `RESULT {json}` line on stdout):
  create     create topics up front (Admin API), tolerating "already exists"
  e2e        end-to-end latency at a fixed rate: a producer process stamps CLOCK_MONOTONIC ns in
             the first 20 bytes of each payload, a consumer process (assign(), no group) reads
             from the high watermark and records receive time minus stamp; p50/p99/p99.9/max
  watermark  poll the high watermark of partition 0 until it reaches --expect (recovery probe)

It never asserts a figure and never talks to anything but the given bootstrap address. Every
loop is bounded by a count and a deadline.
"""
import argparse
import json
import multiprocessing as mp
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

STAMP_BYTES = 20  # decimal nanoseconds at the start of each e2e payload
E2E_SAMPLES_MAX = 1_000_000  # bound on latency samples kept in memory
CONSUMER_READY_S = 30  # bound on the consumer's start-up


def result(obj):
    print("RESULT " + json.dumps(obj), flush=True)


def create(a):
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    configs = {"min.insync.replicas": str(a.min_insync)} if a.replication_factor > 1 else {}
    topics = [NewTopic(t, num_partitions=a.partitions, replication_factor=a.replication_factor,
                       config=configs) for t in a.topic]
    errors = {}
    for name, fut in admin.create_topics(topics, operation_timeout=15).items():
        try:
            fut.result(timeout=30)
        except KafkaException as e:
            err = e.args[0]
            if err.code() != 36:  # TOPIC_ALREADY_EXISTS
                errors[name] = str(err)
    result({"mode": "create", "topics": a.topic, "errors": errors})
    return 0 if not errors else 1


def _consume(bootstrap, topic, n, deadline_s, fetch_wait_ms, ready, q):
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "samsa-bench-e2e",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "fetch.wait.max.ms": fetch_wait_ms,
        "fetch.min.bytes": 1,
    })
    hi = None
    end = time.monotonic() + CONSUMER_READY_S
    while hi is None and time.monotonic() < end:
        try:
            hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=2)[1]
        except KafkaException:
            time.sleep(0.1)
    if hi is None:
        c.close()
        q.put([])
        return
    c.assign([TopicPartition(topic, 0, hi)])
    c.poll(0.2)
    ready.set()
    lat = []
    end = time.monotonic() + deadline_s
    while len(lat) < n and len(lat) < E2E_SAMPLES_MAX and time.monotonic() < end:
        m = c.poll(0.1)
        if m is None or m.error():
            continue
        v = m.value()
        if v is None or len(v) < STAMP_BYTES:
            continue
        lat.append((time.monotonic_ns() - int(v[:STAMP_BYTES])) / 1e3)
    c.close()
    q.put(lat)


def e2e(a):
    n = int(a.rate * a.duration)
    p = Producer({
        "bootstrap.servers": a.bootstrap,
        "acks": a.acks,
        "linger.ms": a.linger,
        "enable.idempotence": False,
        "queue.buffering.max.messages": 1_000_000,
    })
    # The warm-up record also makes brokers without CreateTopics (the mock) create the topic.
    p.produce(a.topic[0], b"warm-up", partition=0)
    p.flush(10)
    # spawn, not fork: the producer's librdkafka threads must not be forked.
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    ready = ctx.Event()
    cons = ctx.Process(
        target=_consume,
        args=(a.bootstrap, a.topic[0], n, a.duration + 20, a.fetch_wait_ms, ready, q),
    )
    cons.start()
    if not ready.wait(CONSUMER_READY_S + 10):
        cons.terminate()
        result({"mode": "e2e", "error": "consumer not ready"})
        return 1
    time.sleep(0.3)
    pad = b"x" * max(0, a.size - STAMP_BYTES)
    step = 1.0 / a.rate
    t_next = time.monotonic()
    deadline = t_next + a.duration * 3 + 10
    sent = 0
    behind = 0
    for _ in range(n):
        now = time.monotonic()
        if now < t_next:
            time.sleep(t_next - now)
        elif now - t_next > 0.01:
            behind += 1
        if now > deadline:
            break
        try:
            p.produce(a.topic[0], b"%020d" % time.monotonic_ns() + pad, partition=0)
            sent += 1
        except BufferError:
            p.poll(0.001)
        p.poll(0)
        t_next += step
    p.flush(10)
    try:
        lat = q.get(timeout=a.duration + 40)
    except Exception:  # queue.Empty: the consumer died or hung
        lat = []
    cons.join(10)
    if cons.is_alive():
        cons.terminate()
    lat.sort()

    def pct(x):
        return lat[min(len(lat) - 1, int(x * len(lat)))] if lat else None

    result({
        "mode": "e2e", "rate": a.rate, "size": a.size, "sent": sent, "samples": len(lat),
        "late_sends": behind, "p50_us": pct(0.5), "p99_us": pct(0.99), "p999_us": pct(0.999),
        "max_us": lat[-1] if lat else None, "acks": a.acks, "linger_ms": a.linger,
        "fetch_wait_max_ms": a.fetch_wait_ms,
    })
    return 0


def watermark(a):
    t0 = time.monotonic()
    deadline = t0 + a.timeout
    hi = -1
    err = None
    c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": "samsa-bench-wm"})
    while time.monotonic() < deadline:
        try:
            _lo, hi = c.get_watermark_offsets(TopicPartition(a.topic[0], 0), timeout=1)
            if hi >= a.expect:
                break
        except KafkaException as e:
            err = str(e)
        time.sleep(0.01)
    c.close()
    ok = hi >= a.expect
    result({"mode": "watermark", "high": hi, "ok": ok, "secs": time.monotonic() - t0,
            "error": None if ok else err})
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["create", "e2e", "watermark"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", action="append", required=True)
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument("--replication-factor", type=int, default=1)
    ap.add_argument("--min-insync", type=int, default=2)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--acks", default="all")
    ap.add_argument("--linger", type=float, default=0)
    ap.add_argument("--fetch-wait-ms", type=int, default=5)
    ap.add_argument("--expect", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=30)
    a = ap.parse_args()
    return {"create": create, "e2e": e2e, "watermark": watermark}[a.mode](a)


if __name__ == "__main__":
    sys.exit(main())
