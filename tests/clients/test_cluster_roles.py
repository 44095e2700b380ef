"""Real-process process roles: node 1 is the only metadata voter and controller-only
(`--process-roles controller`), nodes 2-4 are broker-only (`--process-roles broker`, in nobody's
configuration: they introduce themselves to the voter and follow the metadata log as Raft
observers). Checks that every node is listed, that the controller hosts no replica, that an
RF=3 topic created through a broker-only node lands on the three brokers, and that a broker
SIGKILLed mid-stream and restarted comes back into every ISR while an idempotent acks=all
producer keeps going, with every acknowledged record read back exactly once.
It never talks to anything but its own processes on 127.0.0.1 and never leaves one running.
"""

from __future__ import annotations

import collections
import logging
import re
import threading
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker, free_ports, note, running_cluster

BROKERS = [2, 3, 4]
CONTROLLER = 1
TOPIC = "roles"
PARTITIONS = 4
RECORDS = 1200
KILL_AFTER_ACKS = 300
IN_FLIGHT_MAX = 200
UP_S = 30.0
PRODUCE_S = 40.0
REJOIN_S = 30.0
CONSUME_S = 20.0
RPC_S = 5.0
CLIENT_LOG_LINES = 120
OBSERVER_ROLE = re.compile(r"metadata quorum role role=(\w+)")


@pytest.fixture
def cluster(request, tmp_path):
    """One controller-only voter and three broker-only nodes on loopback; always reaped."""
    ports = free_ports(8)
    client, quorum = ports[:4], ports[4:]
    voters = f"{CONTROLLER}@127.0.0.1:{quorum[0]}"
    nodes: dict[int, Broker] = {}
    for node_id in [CONTROLLER, *BROKERS]:
        role = "controller" if node_id == CONTROLLER else "broker"
        nodes[node_id] = Broker(
            tmp_path / f"node{node_id}-data", tmp_path / f"node{node_id}.log",
            listen=f"127.0.0.1:{client[node_id - 1]}",
            extra_args=["--node-id", str(node_id), "--voters", voters,
                        "--process-roles", role,
                        "--controller-listen", f"127.0.0.1:{quorum[node_id - 1]}"])
    with running_cluster(request, nodes):
        yield nodes


class RingHandler(logging.Handler):
    """Keeps the last lines librdkafka logged (its debug output) in a bounded deque."""

    def __init__(self, ring: collections.deque):
        super().__init__()
        self.ring = ring

    def emit(self, record: logging.LogRecord) -> None:
        self.ring.append(f"{record.created:.3f} {record.getMessage()}")


def wait_for(what: str, timeout_s: float, probe):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout_s}s waiting for {what}; last: {last}")


def metadata(bootstrap: str):
    try:
        return AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=RPC_S)
    except KafkaException:
        return None


def partitions(bootstrap: str) -> dict[int, tuple[int, list[int], list[int]]] | None:
    """partition -> (leader, replicas, isr), or None while the topic is not fully known."""
    md = metadata(bootstrap)
    topic = md.topics.get(TOPIC) if md is not None else None
    if topic is None or topic.error is not None or len(topic.partitions) != PARTITIONS:
        return None
    if any(p.error is not None for p in topic.partitions.values()):
        return None
    return {i: (p.leader, sorted(p.replicas), sorted(p.isrs))
            for i, p in topic.partitions.items()}


def full_isrs(bootstrap: str):
    view = partitions(bootstrap)
    ok = view is not None and all(
        leader in BROKERS and replicas == BROKERS and isr == BROKERS
        for leader, replicas, isr in view.values())
    return view if ok else None


def quorum_roles(b: Broker) -> list[str]:
    return OBSERVER_ROLE.findall(b.log_text())


def test_controller_only_voter_and_broker_only_observers(cluster):
    nodes = cluster
    via_brokers = ",".join(nodes[i].bootstrap for i in BROKERS)
    started = time.monotonic()
    wait_for("4 nodes listed and node 1 the controller", UP_S, lambda: (
        (m := metadata(nodes[4].bootstrap)) is not None and len(m.brokers) == 4
        and m.controller_id == CONTROLLER and m))
    # CreateTopics goes to the controller-only node's listener (the Metadata controller).
    admin = AdminClient({"bootstrap.servers": nodes[4].bootstrap})
    futures = admin.create_topics(
        [NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=3,
                  config={"min.insync.replicas": "2"})],
        operation_timeout=10, request_timeout=UP_S)
    futures[TOPIC].result(UP_S)
    wait_for("RF 3 on the three brokers with full ISRs", UP_S, lambda: full_isrs(via_brokers))
    ready_s = time.monotonic() - started
    # A replication factor the brokers cannot hold is refused: the controller is no replica.
    too_big = admin.create_topics([NewTopic("roles-rf4", 1, 4)], request_timeout=UP_S)
    with pytest.raises(KafkaException, match="REPLICATION_FACTOR"):
        too_big["roles-rf4"].result(UP_S)
    for node_id in BROKERS:
        roles = set(quorum_roles(nodes[node_id]))
        assert roles == {"Observer"}, f"broker-only node {node_id} quorum roles {roles}"
    assert "Leader" in quorum_roles(nodes[CONTROLLER])

    # The client's own account of the last moments (printed only if the test fails): a rare
    # stall after the kill (CI, once) left nothing but node logs to go on.
    client_log: collections.deque[str] = collections.deque(maxlen=CLIENT_LOG_LINES)
    logger = logging.getLogger("roles-producer")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(RingHandler(client_log))
    producer = Producer({
        "bootstrap.servers": via_brokers,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 2,
        "message.timeout.ms": int(PRODUCE_S * 1000),
        "topic.metadata.refresh.interval.ms": 1000,
        "debug": "eos,broker,topic,protocol",
    }, logger=logger)

    def stalled(sent: int) -> str:
        by_partition: dict[int, int] = {}
        for p, _ in acked.values():
            by_partition[p] = by_partition.get(p, 0) + 1
        return (f"stalled: {sent} sent, {len(acked)} acked (by partition {by_partition}), "
                f"errors {errors[:3]}, victim {victim}, view {partitions(via_brokers)}\n"
                "---- producer debug log, last lines ----\n" + "\n".join(client_log))

    acked: dict[int, tuple[int, int]] = {}  # index -> (partition, offset)
    errors: list[str] = []
    lock = threading.Lock()

    def on_delivery(err, msg):
        i = int(msg.key())
        with lock:
            if err is not None:
                errors.append(f"{i}: {err}")
            else:
                acked[i] = (msg.partition(), msg.offset())

    victim = None
    sent = 0
    deadline = time.monotonic() + PRODUCE_S
    killed_at = None
    while sent < RECORDS:
        assert time.monotonic() < deadline, stalled(sent)
        if killed_at is None and len(acked) >= KILL_AFTER_ACKS:
            victim = partitions(via_brokers)[0][0]  # the leader of partition 0
            nodes[victim].kill()
            killed_at = time.monotonic()
        if sent - len(acked) - len(errors) >= IN_FLIGHT_MAX:
            producer.poll(0.01)
            continue
        producer.produce(TOPIC, key=str(sent).encode(), value=f"v{sent}".encode(),
                         partition=sent % PARTITIONS, on_delivery=on_delivery)
        sent += 1
        producer.poll(0)
    remaining = producer.flush(PRODUCE_S)
    assert remaining == 0, f"{remaining} records never answered; " + stalled(sent)
    assert not errors, f"delivery errors: {errors[:5]}; " + stalled(sent)
    assert len(acked) == RECORDS

    nodes[victim].start()
    rejoin_started = time.monotonic()
    wait_for(f"node {victim} back in every ISR", REJOIN_S, lambda: full_isrs(via_brokers))
    rejoin_s = time.monotonic() - rejoin_started
    assert set(quorum_roles(nodes[victim])) == {"Observer"}

    # Every acknowledged record exactly once, at its offset, read through the restarted node
    # first in the bootstrap list.
    got: dict[int, tuple[int, int]] = {}
    c = Consumer({"bootstrap.servers": ",".join(nodes[i].bootstrap for i in [victim, *BROKERS]),
                  "group.id": "roles-unused", "enable.auto.commit": False,
                  "auto.offset.reset": "error", "enable.partition.eof": True})
    c.assign([TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    eof: set[int] = set()
    deadline = time.monotonic() + CONSUME_S
    try:
        while len(eof) < PARTITIONS:
            assert time.monotonic() < deadline, f"consume timed out after {len(got)} records"
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() == -191:  # _PARTITION_EOF
                    eof.add(msg.partition())
                    continue
                raise KafkaException(msg.error())
            i = int(msg.key())
            assert i not in got, f"record {i} read twice"
            assert msg.value() == f"v{i}".encode()
            got[i] = (msg.partition(), msg.offset())
    finally:
        c.close()
    lost = [i for i in acked if i not in got]
    assert not lost, f"{len(lost)} acknowledged records missing, e.g. {lost[:5]}"
    moved = [i for i in acked if got[i] != acked[i]]
    assert not moved, f"acknowledged at one offset, found at another: {moved[:5]}"
    note(f"roles: controller-only voter + 3 broker-only observers: ready {ready_s:.1f}s, "
         f"{RECORDS} acked with broker {victim} SIGKILLed after {KILL_AFTER_ACKS}, "
         f"{len(got)} read back, rejoin {rejoin_s:.1f}s")
