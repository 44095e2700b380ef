"""Consumer groups with real clients against a real samsa broker.

For confluent-kafka (classic and `group.protocol=consumer`, KIP-848), kafka-python, aiokafka
and kafkajs: two members of one group subscribe to a 6-partition topic; the partitions are
split between them; each commits what it consumed; one member is killed (SIGKILL: no
LeaveGroup, its session must expire); the other takes over every partition from the committed
positions. Checks: the split is disjoint and complete, the survivor ends up owning all 6
partitions, the union of what the members consumed covers every offset of every partition (no
gap), and the committed offsets end at the log end. Prints the join-to-first-assignment and
takeover-after-kill latencies. A static-membership test (confluent-kafka, `group.instance.id`)
restarts one member within its session timeout: it gets its partitions back under a new member
id and the other member sees no rebalance. Each member is a child process (this file run as a script, or
the node script for kafkajs); all are reaped, only 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import note

PARTITIONS = 6
SESSION_TIMEOUT_MS = 6000
# Static members get a session long enough to restart within it.
STATIC_SESSION_TIMEOUT_MS = 30000
WAIT_S = 60.0
HERE = Path(__file__).resolve().parent
NODE_MEMBER = HERE / "node" / "groups_member.js"


# ---- The member process (run as `python test_groups.py CLIENT BOOTSTRAP TOPIC GROUP`). ----

def emit(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class Tracker:
    """Prints assignment changes and consumed records as JSON lines."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.last: list[int] | None = None

    def assignment(self, parts: list[int]) -> None:
        parts = sorted(parts)
        if parts != self.last:
            self.last = parts
            emit({"ev": "assigned", "parts": parts,
                  "since_start_ms": round((time.monotonic() - self.start) * 1000)})

    @staticmethod
    def record(partition: int, offset: int) -> None:
        emit({"ev": "rec", "p": partition, "o": offset})


def member_confluent(bootstrap: str, topic: str, group: str, stop: threading.Event) -> None:
    from confluent_kafka import Consumer
    t = Tracker()
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "session.timeout.ms": SESSION_TIMEOUT_MS, "heartbeat.interval.ms": 500})
    c.subscribe([topic])
    while not stop.is_set():
        msgs = c.consume(num_messages=200, timeout=0.2)
        t.assignment([tp.partition for tp in c.assignment()])
        good = [m for m in msgs if m.error() is None]
        for m in good:
            t.record(m.partition(), m.offset())
        if good:
            c.commit(asynchronous=False)
            emit({"ev": "committed"})
    c.close()


def member_confluent_848(bootstrap: str, topic: str, group: str, stop: threading.Event) -> None:
    """librdkafka with the KIP-848 protocol: the broker assigns (session timeout is the
    broker's `group.consumer.session.timeout.ms`, 45 s by default)."""
    from confluent_kafka import Consumer
    t = Tracker()
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "group.protocol": "consumer", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe([topic])
    while not stop.is_set():
        msgs = c.consume(num_messages=200, timeout=0.2)
        t.assignment([tp.partition for tp in c.assignment()])
        good = [m for m in msgs if m.error() is None]
        for m in good:
            t.record(m.partition(), m.offset())
        if good:
            c.commit(asynchronous=False)
            emit({"ev": "committed"})
    c.close()


def member_kafka_python(bootstrap: str, topic: str, group: str, stop: threading.Event) -> None:
    from kafka import KafkaConsumer
    t = Tracker()
    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                      auto_offset_reset="earliest", enable_auto_commit=False,
                      session_timeout_ms=SESSION_TIMEOUT_MS, heartbeat_interval_ms=500)
    while not stop.is_set():
        batches = c.poll(timeout_ms=200)
        t.assignment([tp.partition for tp in c.assignment()])
        n = 0
        for _, recs in batches.items():
            for r in recs:
                t.record(r.partition, r.offset)
                n += 1
        if n:
            c.commit()
            emit({"ev": "committed"})
    c.close()


def member_aiokafka(bootstrap: str, topic: str, group: str, stop: threading.Event) -> None:
    import asyncio

    from aiokafka import AIOKafkaConsumer

    async def run() -> None:
        t = Tracker()
        c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             session_timeout_ms=SESSION_TIMEOUT_MS, heartbeat_interval_ms=500)
        await c.start()
        try:
            while not stop.is_set():
                batches = await c.getmany(timeout_ms=200)
                t.assignment([tp.partition for tp in c.assignment()])
                n = 0
                for _, recs in batches.items():
                    for r in recs:
                        t.record(r.partition, r.offset)
                        n += 1
                if n:
                    await c.commit()
                    emit({"ev": "committed"})
        finally:
            await c.stop()

    asyncio.run(run())


def member_confluent_static(bootstrap: str, topic: str, group: str,
                            stop: threading.Event) -> None:
    """Classic protocol with a static member id (`group.instance.id` from the environment)."""
    from confluent_kafka import Consumer
    t = Tracker()
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "group.instance.id": os.environ["SAMSA_INSTANCE_ID"],
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "session.timeout.ms": STATIC_SESSION_TIMEOUT_MS,
                  "heartbeat.interval.ms": 500})
    c.subscribe([topic])
    while not stop.is_set():
        msgs = c.consume(num_messages=200, timeout=0.2)
        t.assignment([tp.partition for tp in c.assignment()])
        good = [m for m in msgs if m.error() is None]
        for m in good:
            t.record(m.partition(), m.offset())
        if good:
            c.commit(asynchronous=False)
            emit({"ev": "committed"})
    c.close()


MEMBERS = {"confluent-kafka": member_confluent, "confluent-kafka-848": member_confluent_848,
           "confluent-kafka-static": member_confluent_static,
           "kafka-python": member_kafka_python,
           "aiokafka": member_aiokafka}


def member_main(argv: list[str]) -> None:
    client, bootstrap, topic, group = argv
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    MEMBERS[client](bootstrap, topic, group, stop)
    emit({"ev": "closed"})


# ---- The test side. ----

class Member:
    """One member process and what it reported."""

    def __init__(self, cmd: list[str], name: str, env: dict[str, str] | None = None):
        self.name = name
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True,
                                     env={**os.environ, **(env or {})})
        self.lock = threading.Lock()
        self.assigned: list[int] = []
        self.assignments: list[tuple[float, list[int]]] = []
        self.consumed: set[tuple[int, int]] = set()
        self.commits = 0
        self.closed = False
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                if ev["ev"] == "assigned":
                    self.assigned = ev["parts"]
                    self.assignments.append((time.monotonic(), ev["parts"]))
                elif ev["ev"] == "rec":
                    self.consumed.add((ev["p"], ev["o"]))
                elif ev["ev"] == "committed":
                    self.commits += 1
                elif ev["ev"] == "closed":
                    self.closed = True

    def _read_err(self) -> None:
        for line in self.proc.stderr:
            self.stderr.append(line)

    def first_assignment_s(self) -> float | None:
        with self.lock:
            for t, parts in self.assignments:
                if parts:
                    return t - self.started
        return None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def diag(self) -> str:
        return f"{self.name}: assigned={self.assigned} stderr={''.join(self.stderr[-20:])}"


def member_cmd(client: str, bootstrap: str, topic: str, group: str) -> list[str]:
    if client == "kafkajs":
        return ["node", str(NODE_MEMBER), bootstrap, topic, group]
    return [sys.executable, str(Path(__file__).resolve()), client, bootstrap, topic, group]


def wait_for(what: str, cond, members: list[Member], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}:\n" + "\n".join(m.diag() for m in members))


def produce(bootstrap: str, topic: str, first: int, count: int) -> None:
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(first, first + count):
        p.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), partition=i % PARTITIONS)
    assert p.flush(30) == 0


def high_watermarks(bootstrap: str, topic: str) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "samsa-groups-probe"})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(PARTITIONS)}
    finally:
        c.close()


def committed(bootstrap: str, topic: str, group: str) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


def create_topic(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic
    a = AdminClient({"bootstrap.servers": bootstrap})
    a.create_topics([NewTopic(topic, num_partitions=PARTITIONS,
                              replication_factor=1)])[topic].result(30)


CLIENTS = ["confluent-kafka", "confluent-kafka-848", "kafka-python", "aiokafka", "kafkajs"]


@pytest.mark.parametrize("client", CLIENTS)
def test_two_members_split_commit_and_take_over_after_a_kill(broker, client):
    if client == "kafkajs" and not (HERE / "node" / "node_modules" / "kafkajs").is_dir():
        pytest.fail("kafkajs not installed (cd tests/clients/node && npm ci)")
    bs = broker.bootstrap
    topic, group = f"groups-{client}", f"group-{client}"
    create_topic(bs, topic)
    produce(bs, topic, 0, 600)
    a = Member(member_cmd(client, bs, topic, group), "a")
    b = Member(member_cmd(client, bs, topic, group), "b")
    members = [a, b]
    try:
        def split() -> bool:
            pa, pb = set(a.assigned), set(b.assigned)
            return bool(pa) and bool(pb) and not (pa & pb) and pa | pb == set(range(PARTITIONS))

        wait_for("the partitions to be split between both members", split, members)
        join_s = [m.first_assignment_s() for m in members]
        produce(bs, topic, 600, 600)
        wait_for("both members to consume and commit",
                 lambda: len(a.consumed | b.consumed) >= 1200 and a.commits and b.commits,
                 members)
        b.kill()
        killed = time.monotonic()
        wait_for("the survivor to own every partition",
                 lambda: set(a.assigned) == set(range(PARTITIONS)), members)
        takeover_s = time.monotonic() - killed
        produce(bs, topic, 1200, 600)
        hw = high_watermarks(bs, topic)
        assert sum(hw.values()) == 1800, hw

        def covered() -> bool:
            with a.lock, b.lock:
                seen = a.consumed | b.consumed
            return all((p, o) in seen for p in range(PARTITIONS) for o in range(hw[p]))

        wait_for("the consumed offsets to cover every partition", covered, members)
        # The survivor commits what it consumed: let one more poll loop pass, then stop it.
        wait_for("the survivor to have committed",
                 lambda: committed(bs, topic, group) == hw, members, timeout=30)
        assert a.stop() == 0, a.diag()
        assert committed(bs, topic, group) == hw
    finally:
        for m in members:
            m.kill()
    session = f"session.timeout.ms={SESSION_TIMEOUT_MS}"
    if client.endswith("848"):
        session = "KIP-848: broker session timeout 45000 ms, heartbeat interval 5000 ms"
    note(f"groups {client}: join->first assignment {join_s[0]:.2f}s / {join_s[1]:.2f}s, "
         f"takeover after SIGKILL {takeover_s:.2f}s ({session})")


def test_static_member_restarts_within_its_session_without_a_rebalance(broker):
    """confluent-kafka, classic protocol, `group.instance.id`: SIGKILL one static member and
    start it again at once; it rejoins the Stable group under a new member id and gets its
    partitions back in the same generation, and the other member's assignment never moves."""
    bs = broker.bootstrap
    topic, group = "groups-static", "group-static"
    create_topic(bs, topic)
    produce(bs, topic, 0, 600)
    cmd = member_cmd("confluent-kafka-static", bs, topic, group)
    a = Member(cmd, "a", {"SAMSA_INSTANCE_ID": "static-a"})
    b = Member(cmd, "b", {"SAMSA_INSTANCE_ID": "static-b"})
    members = [a, b]
    try:
        def split() -> bool:
            pa, pb = set(a.assigned), set(b.assigned)
            return bool(pa) and bool(pb) and not (pa & pb) and pa | pb == set(range(PARTITIONS))

        wait_for("the partitions to be split between both members", split, members)
        wait_for("both members to commit", lambda: a.commits and b.commits, members)
        a_changes = len(a.assignments)
        b_parts = sorted(b.assigned)
        b.kill()
        restarted = time.monotonic()
        b2 = Member(cmd, "b2", {"SAMSA_INSTANCE_ID": "static-b"})
        members.append(b2)
        wait_for("the restarted static member to get its partitions back",
                 lambda: sorted(b2.assigned) == b_parts, members, timeout=30)
        back_s = time.monotonic() - restarted
        produce(bs, topic, 600, 600)
        wait_for("both members to consume what follows",
                 lambda: len(a.consumed | b.consumed | b2.consumed) >= 1200, members)
        with a.lock:
            assert len(a.assignments) == a_changes, f"a rebalanced: {a.assignments}"
        assert sorted(b2.assigned) == b_parts
        assert a.stop() == 0, a.diag()
        assert b2.stop() == 0, b2.diag()
    finally:
        for m in members:
            m.kill()
    note(f"groups confluent-kafka static member: restart to partitions back {back_s:.2f}s, "
         f"no rebalance of the other member (session.timeout.ms={STATIC_SESSION_TIMEOUT_MS})")


if __name__ == "__main__":
    member_main(sys.argv[1:])
