"""Real-process failover: three `samsa broker` processes (combined mode, all voters) on
127.0.0.1, an RF=3 topic with min.insync.replicas=2, an idempotent acks=all confluent-kafka
producer, and a SIGKILL of the partition leader mid-stream. Checks that the producer fails over
and that every acknowledged record is readable exactly once, at its acknowledged offset and in
send order, from the new leader and again through the old leader once it rejoined the ISR, and
that the three replicas' logs are byte-identical after a clean stop. The records in flight at
the kill are retried against the new leader, so its idempotence state must have been replicated.
A third test runs one consumer group across the nodes and SIGKILLs its coordinator (the leader
of its partition of the replicated __consumer_offsets) halfway: every acknowledged commit stays.
A second test wipes a voter's disk and restarts it: with its directory id pinned it comes back
as a metadata observer (never a candidate or leader as its old self) and rejoins the partition's
ISR as a follower that copied the log from the others.
It never talks to anything but its own processes on 127.0.0.1 and never leaves one running.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import (OFFSET_BEGINNING, Consumer, ConsumerGroupTopicPartitions,
                             KafkaException, Producer, TopicPartition)
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import ANSI, Broker, note, pinned_voters, running_cluster

NODES = 3
TOPIC = "failover"
RECORDS = 2000
KILL_AFTER_ACKS = 500
IN_FLIGHT_MAX = 400  # A window, so the stream is still going when the leader dies.
CLUSTER_UP_S = 30.0
PRODUCE_S = 40.0
REJOIN_S = 30.0
CONSUME_S = 20.0
RPC_S = 5.0
POLL_S = 0.05
LEADING = re.compile(rf"leading topic={TOPIC} partition=0 epoch=[1-9]\d* .*?leo=(\d+) hw=(\d+)")
TRUNCATED = re.compile(r"follower truncated to the divergence point .*?from=(\d+) to=(\d+)")


def value_of(i: int) -> bytes:
    return f"failover-value-{i}".encode()


def index_of(key: bytes, value: bytes) -> int:
    """The index a record carries; fails on anything this test never sent."""
    assert key.startswith(b"k"), f"unexpected key {key!r}"
    i = int(key[1:])
    assert 0 <= i < RECORDS and value == value_of(i), f"never sent: {key!r}={value!r}"
    return i


@pytest.fixture
def cluster(request, tmp_path):
    """Three pinned voters on fixed loopback ports (`conftest.pinned_voters`); always reaped."""
    with running_cluster(request, pinned_voters(tmp_path, NODES)) as nodes:
        yield nodes


def bootstrap_of(nodes: dict[int, Broker], ids=None) -> str:
    return ",".join(nodes[i].bootstrap for i in (ids or sorted(nodes)))


def partition_view(bootstrap: str) -> tuple[int, list[int], list[int]] | None:
    """(leader, replicas, isr) of failover/0 as `bootstrap` sees it, or None if unknown."""
    try:
        md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(TOPIC, timeout=RPC_S)
    except KafkaException:
        return None
    topic = md.topics.get(TOPIC)
    if topic is None or topic.error is not None or 0 not in topic.partitions:
        return None
    p = topic.partitions[0]
    if p.error is not None:
        return None
    return p.leader, sorted(p.replicas), sorted(p.isrs)


def wait_for(what: str, timeout_s: float, probe):
    """Polls `probe` until it returns something truthy; fails with the last value."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(POLL_S * 4)
    pytest.fail(f"timed out after {timeout_s}s waiting for {what}; last: {last}")


def broker_count(bootstrap: str) -> int:
    try:
        md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=RPC_S)
    except KafkaException:
        return 0
    return len(md.brokers)


def consume_partition(bootstrap: str) -> list[tuple[int, bytes, bytes]]:
    """(offset, key, value) of failover/0 from the beginning to its end."""
    return consume_partition_from(bootstrap, OFFSET_BEGINNING)


def consume_partition_from(bootstrap: str, start: int) -> list[tuple[int, bytes, bytes]]:
    """(offset, key, value) of failover/0 from `start` to its end."""
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "samsa-failover-unused",  # assign() without commits: no coordinator.
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
        "enable.partition.eof": True,
    })
    c.assign([TopicPartition(TOPIC, 0, start)])
    got: list[tuple[int, bytes, bytes]] = []
    deadline = time.monotonic() + CONSUME_S
    try:
        while True:
            assert time.monotonic() < deadline, f"consume timed out after {len(got)} records"
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() == -191:  # _PARTITION_EOF
                    break
                raise KafkaException(msg.error())
            got.append((msg.offset(), msg.key(), msg.value()))
    finally:
        c.close()
    return got


def partition_bytes(data_dir: Path) -> bytes:
    """The failover/0 log of one node: its segment files in base-offset order, concatenated
    (so replicas that rolled segments at different points still compare equal)."""
    dirs = sorted(data_dir.glob(f"{TOPIC}-0.*"))
    assert len(dirs) == 1, f"{data_dir}: partition directories {dirs}"
    return b"".join(f.read_bytes() for f in sorted(dirs[0].glob("*.log")))


def check_log(got: list[tuple[int, bytes, bytes]], acked: dict[int, int], where: str) -> None:
    """Offsets contiguous from 0, only records that were sent, each at most once, in send
    order, and every acknowledged one exactly at its acknowledged offset."""
    offsets = [o for o, _, _ in got]
    assert offsets == list(range(len(got))), f"{where}: offsets not contiguous: {offsets[:20]}"
    indexes = [index_of(k, v) for _, k, v in got]
    dups = len(indexes) - len(set(indexes))
    assert dups == 0, f"{where}: {dups} duplicated records"
    assert indexes == sorted(indexes), f"{where}: send order not kept"
    at = {i: o for o, i in zip(offsets, indexes)}
    lost = [i for i in sorted(acked) if i not in at]
    assert not lost, f"{where}: {len(lost)} acknowledged records missing, e.g. {lost[:5]}"
    moved = [(i, acked[i], at[i]) for i in sorted(acked) if at[i] != acked[i]]
    assert not moved, f"{where}: acknowledged at one offset, found at another: {moved[:5]}"


def create_replicated_topic(nodes: dict[int, Broker]) -> tuple[int, list[int], list[int]]:
    """Waits for every broker, creates the RF=3 topic with min.insync.replicas=2, waits for a
    leader and a full ISR; returns (leader, replicas, isr)."""
    everyone = bootstrap_of(nodes)
    wait_for("3 brokers in Metadata", CLUSTER_UP_S,
             lambda: all(broker_count(b.bootstrap) == NODES for b in nodes.values()))
    admin = AdminClient({"bootstrap.servers": everyone})
    futures = admin.create_topics(
        [NewTopic(TOPIC, num_partitions=1, replication_factor=NODES,
                  config={"min.insync.replicas": "2"})],
        operation_timeout=10, request_timeout=CLUSTER_UP_S)
    futures[TOPIC].result(CLUSTER_UP_S)
    all_ids = list(range(1, NODES + 1))
    return wait_for("RF=3 with ISR 3 and a leader", CLUSTER_UP_S, lambda: (
        (v := partition_view(everyone)) is not None and v[0] in all_ids
        and v[1] == all_ids and v[2] == all_ids and v))


def test_sigkill_leader_fails_over_and_rejoins(cluster):
    nodes = cluster
    everyone = bootstrap_of(nodes)
    started = time.monotonic()
    all_ids = list(range(1, NODES + 1))
    old_leader = create_replicated_topic(nodes)[0]
    cluster_ready_s = time.monotonic() - started

    producer = Producer({
        "bootstrap.servers": everyone,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 2,
        "message.timeout.ms": int(PRODUCE_S * 1000),
        "topic.metadata.refresh.interval.ms": 1000,
    })
    acked: dict[int, int] = {}  # index -> offset
    ack_order: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()
    killed_at: list[float] = []
    first_ack_after_kill: list[float] = []

    def on_delivery(err, msg):
        i = index_of(msg.key(), msg.value())
        with lock:
            if err is not None:
                errors.append(f"k{i}: {err}")
                return
            acked[i] = msg.offset()
            ack_order.append(i)
            if killed_at and not first_ack_after_kill:
                first_ack_after_kill.append(time.monotonic())

    sent = 0
    sent_at_kill = None
    deadline = time.monotonic() + PRODUCE_S
    while sent < RECORDS:
        assert time.monotonic() < deadline, \
            f"stream stalled: {sent} sent, {len(acked)} acked, errors {errors[:3]}"
        if not killed_at and len(acked) >= KILL_AFTER_ACKS:
            sent_at_kill = sent
            nodes[old_leader].kill()
            killed_at.append(time.monotonic())
        if sent - len(acked) - len(errors) >= IN_FLIGHT_MAX:
            producer.poll(POLL_S / 10)
            continue
        producer.produce(TOPIC, key=f"k{sent}".encode(), value=value_of(sent), partition=0,
                         on_delivery=on_delivery)
        sent += 1
        producer.poll(0)
    remaining = producer.flush(max(1.0, deadline - time.monotonic()))
    assert killed_at, f"never reached {KILL_AFTER_ACKS} acks"
    assert remaining == 0, f"{remaining} records still in flight after the flush"
    assert first_ack_after_kill, "no delivery report after the kill"
    failover_s = first_ack_after_kill[0] - killed_at[0]
    with lock:
        acked_n, errors_n = len(acked), len(errors)
        # Acknowledged offsets grow with the index: the idempotent producer keeps send order.
        offsets_by_index = [acked[i] for i in sorted(acked)]
    assert offsets_by_index == sorted(offsets_by_index), "acknowledged offsets out of send order"
    assert len(set(offsets_by_index)) == acked_n, "two records acknowledged at one offset"

    survivors = [i for i in all_ids if i != old_leader]
    view = wait_for("a new leader among the survivors", CLUSTER_UP_S, lambda: (
        (v := partition_view(bootstrap_of(nodes, survivors))) is not None
        and v[0] in survivors and v))
    new_leader = view[0]
    from_new = consume_partition(nodes[new_leader].bootstrap)
    check_log(from_new, acked, f"from the new leader {new_leader}")

    restarted_at = time.monotonic()
    nodes[old_leader].start()
    wait_for("ISR 3 again", REJOIN_S, lambda: (
        (v := partition_view(nodes[old_leader].bootstrap)) is not None and v[2] == all_ids
        and v))
    rejoin_s = time.monotonic() - restarted_at
    from_old = consume_partition(nodes[old_leader].bootstrap)
    check_log(from_old, acked, f"through the rejoined old leader {old_leader}")
    assert from_old[:len(from_new)] == from_new, "the log changed between the two reads"
    producer_total_s = time.monotonic() - started

    # Replicas copy batches verbatim: after a clean stop the three logs are byte-identical
    # (the old leader truncated whatever it had that the new leader never got).
    codes = {node_id: b.stop() for node_id, b in nodes.items()}
    assert all(c == 0 for c in codes.values()), f"exit codes after SIGTERM: {codes}"
    logs = {node_id: partition_bytes(b.data_dir) for node_id, b in nodes.items()}
    sizes = {node_id: len(data) for node_id, data in logs.items()}
    assert len(set(logs.values())) == 1, f"replica logs differ (bytes per node: {sizes})"
    elected = LEADING.findall(ANSI.sub("", nodes[new_leader].log_text()))
    truncated = TRUNCATED.findall(ANSI.sub("", nodes[old_leader].log_text()))

    summary = (f"cluster failover: sent={sent} acked={acked_n} delivery_errors={errors_n} "
               f"sent_at_kill={sent_at_kill} found_new_leader={len(from_new)} "
               f"found_after_rejoin={len(from_old)} old_leader={old_leader} "
               f"new_leader={new_leader} failover_s={failover_s:.2f} "
               f"isr_rejoin_s={rejoin_s:.2f} cluster_ready_s={cluster_ready_s:.2f} "
               f"total_s={producer_total_s:.2f} new_leader_leo_hw_at_election="
               f"{elected[-1] if elected else None} old_leader_truncations={truncated} "
               f"log_bytes={sizes[new_leader]}")
    print(summary)
    note(summary)
    assert errors_n == 0, f"delivery errors: {errors[:5]}"


QUORUM_ROLE = re.compile(r"metadata quorum (?:role|started).*?role=(\w+)")
WIPE_RECORDS = 300


def quorum_roles(text: str) -> list[str]:
    return QUORUM_ROLE.findall(ANSI.sub("", text))


def test_wiped_voter_follows_as_observer_and_rejoins(cluster):
    nodes = cluster
    everyone = bootstrap_of(nodes)
    all_ids = list(range(1, NODES + 1))
    view = create_replicated_topic(nodes)
    for i in all_ids:
        roles = quorum_roles(nodes[i].log_text())
        assert roles and roles[0] == "Follower", f"node {i} started as {roles[:1]}"

    producer = Producer({"bootstrap.servers": everyone, "acks": "all",
                         "enable.idempotence": True, "linger.ms": 2,
                         "message.timeout.ms": int(PRODUCE_S * 1000)})
    acked: dict[int, int] = {}
    errors: list[str] = []

    def on_delivery(err, msg):
        i = index_of(msg.key(), msg.value())
        if err is not None:
            errors.append(f"k{i}: {err}")
        else:
            acked[i] = msg.offset()

    def produce(first: int, count: int) -> None:
        for i in range(first, first + count):
            producer.produce(TOPIC, key=f"k{i}".encode(), value=value_of(i), partition=0,
                             on_delivery=on_delivery)
            producer.poll(0)
        assert producer.flush(PRODUCE_S) == 0, "records still in flight"
        assert not errors, f"delivery errors: {errors[:5]}"

    produce(0, WIPE_RECORDS)
    # Wipe the partition leader: the one whose loss of data would hurt most if it led again.
    wiped = view[0]
    before = len(nodes[wiped].log_text())
    nodes[wiped].kill()
    shutil.rmtree(nodes[wiped].data_dir)
    survivors = [i for i in all_ids if i != wiped]
    wait_for("a new leader among the survivors", CLUSTER_UP_S, lambda: (
        (v := partition_view(bootstrap_of(nodes, survivors))) is not None
        and v[0] in survivors and v))
    produce(WIPE_RECORDS, WIPE_RECORDS)

    restarted_at = time.monotonic()
    nodes[wiped].start()
    wait_for("ISR 3 again", REJOIN_S, lambda: (
        (v := partition_view(everyone)) is not None and v[2] == all_ids and v))
    rejoin_s = time.monotonic() - restarted_at
    after = nodes[wiped].log_text()[before:]
    roles = quorum_roles(after)
    assert roles and roles[0] == "Observer", f"wiped voter started as {roles[:1]}"
    assert set(roles) == {"Observer"}, f"wiped voter took quorum roles {roles}"
    assert "is not the one its voters entry pins" in ANSI.sub("", after)
    produce(2 * WIPE_RECORDS, WIPE_RECORDS)
    producer.flush(PRODUCE_S)

    # The wiped node copied the whole log back: read it through the wiped node's listener.
    got = consume_partition(nodes[wiped].bootstrap)
    check_log(got, acked, f"through the wiped node {wiped}")
    assert len(acked) == 3 * WIPE_RECORDS
    codes = {node_id: b.stop() for node_id, b in nodes.items()}
    assert all(c == 0 for c in codes.values()), f"exit codes after SIGTERM: {codes}"
    logs = {node_id: partition_bytes(b.data_dir) for node_id, b in nodes.items()}
    sizes = {node_id: len(data) for node_id, data in logs.items()}
    assert len(set(logs.values())) == 1, f"replica logs differ (bytes per node: {sizes})"
    summary = (f"wiped voter: node={wiped} acked={len(acked)} found={len(got)} "
               f"isr_rejoin_s={rejoin_s:.2f} quorum_roles_after_wipe={sorted(set(roles))}")
    print(summary)
    note(summary)


GROUP = "samsa-cluster-group"
GROUP_PARTITIONS = 4
GROUP_RECORDS = 400


def coordinator_of(bootstrap: str) -> int | None:
    """The group's coordinator as `bootstrap` reports it (DescribeConsumerGroups), or None."""
    try:
        a = AdminClient({"bootstrap.servers": bootstrap})
        return a.describe_consumer_groups([GROUP])[GROUP].result(RPC_S).coordinator.id
    except KafkaException:
        return None


def committed_offsets(bootstrap: str) -> dict[int, int] | None:
    try:
        a = AdminClient({"bootstrap.servers": bootstrap})
        got = a.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(GROUP)])[GROUP].result(RPC_S)
    except KafkaException:
        return None
    return {tp.partition: tp.offset for tp in got.topic_partitions}


def test_group_coordinator_fails_over_with_every_acknowledged_commit(cluster):
    """Consumer groups in cluster mode: `__consumer_offsets` is replicated (RF 3, min ISR 2 on
    three brokers) and the leader of the group's partition coordinates it. Two consumers of
    one group, bootstrapped from different nodes, share the partitions and commit every record
    synchronously; halfway through, the coordinator is SIGKILLed. The group must move to a new
    coordinator, every acknowledged commit must still be there (no record whose commit was
    acknowledged is delivered again), and the group must finish the topic."""
    nodes = cluster
    everyone = bootstrap_of(nodes)
    wait_for("3 brokers in Metadata", CLUSTER_UP_S,
             lambda: all(broker_count(b.bootstrap) == NODES for b in nodes.values()))
    admin = AdminClient({"bootstrap.servers": everyone})
    futures = admin.create_topics(
        [NewTopic(TOPIC, num_partitions=GROUP_PARTITIONS, replication_factor=3)],
        operation_timeout=10, request_timeout=CLUSTER_UP_S)
    futures[TOPIC].result(CLUSTER_UP_S)
    producer = Producer({"bootstrap.servers": everyone, "acks": "all"})
    for i in range(GROUP_RECORDS):
        producer.produce(TOPIC, key=f"k{i}".encode(), value=value_of(i),
                         partition=i % GROUP_PARTITIONS)
    assert producer.flush(PRODUCE_S) == 0

    consumers = [Consumer({
        "bootstrap.servers": nodes[node_id].bootstrap,
        "group.id": GROUP,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
    }) for node_id in (2, 3)]
    seen: set[bytes] = set()
    acked: dict[int, int] = {}  # partition -> highest acknowledged committed offset
    failed_commits = 0
    victim = None
    before_kill: dict[int, int] = {}
    try:
        for c in consumers:
            c.subscribe([TOPIC])
        deadline = time.monotonic() + CONSUME_S * 4
        while len(seen) < GROUP_RECORDS:
            assert time.monotonic() < deadline, \
                f"group consumed {len(seen)} of {GROUP_RECORDS}; acked commits {acked}"
            if victim is None and len(seen) >= GROUP_RECORDS // 2:
                victim = wait_for("the group's coordinator", CLUSTER_UP_S,
                                  lambda: coordinator_of(everyone))
                before_kill = dict(acked)
                nodes[victim].kill()
            for i, c in enumerate(consumers):
                msg = c.poll(0.1)
                if msg is None or msg.error() is not None:
                    continue
                p, o = msg.partition(), msg.offset()
                assert o >= acked.get(p, 0), \
                    f"consumer {i}: {p}@{o} delivered again after commit {acked.get(p)} was acked"
                seen.add(msg.key())
                try:
                    c.commit(message=msg, asynchronous=False)
                except KafkaException:
                    failed_commits += 1  # Not acknowledged: the record may come again.
                    continue
                acked[p] = max(acked.get(p, 0), o + 1)
        assert len(seen) == GROUP_RECORDS
    finally:
        for c in consumers:
            c.close()
    assert victim is not None
    survivors = bootstrap_of(nodes, [i for i in sorted(nodes) if i != victim])
    moved = wait_for("a new coordinator", CLUSTER_UP_S,
                     lambda: (c := coordinator_of(survivors)) not in (None, victim) and c)
    committed = wait_for("the committed offsets", CLUSTER_UP_S,
                         lambda: committed_offsets(survivors))
    # A refused commit may still have landed (its answer was lost), never one beyond the end.
    per_partition = GROUP_RECORDS // GROUP_PARTITIONS
    assert all(acked[p] <= committed.get(p, -1) <= per_partition for p in acked), \
        f"committed {committed}, acknowledged {acked}"
    assert all(committed.get(p, -1) >= o for p, o in before_kill.items()), \
        f"commits acknowledged before the kill {before_kill} lost: {committed}"
    nodes[victim].start()
    note(f"cluster group: coordinator {victim} SIGKILLed after {sum(before_kill.values())} "
         f"acked commits, moved to {moved}, {failed_commits} commits refused during the move, "
         f"all {GROUP_RECORDS} records consumed")


DELETED_BEFORE = 60
DELETE_RECORDS = 100


def test_deleted_records_stay_deleted_after_failover(cluster):
    """DeleteRecords on the leader moves every replica's log start (followers follow the
    leader's log start up to their high watermark), so once the leader dies the new leader
    does not serve the deleted records again."""
    nodes = cluster
    everyone = bootstrap_of(nodes)
    leader = create_replicated_topic(nodes)[0]
    producer = Producer({"bootstrap.servers": everyone, "acks": "all"})
    for i in range(DELETE_RECORDS):
        producer.produce(TOPIC, key=f"k{i}".encode(), value=value_of(i), partition=0)
    assert producer.flush(PRODUCE_S) == 0
    admin = AdminClient({"bootstrap.servers": everyone})
    done = admin.delete_records([TopicPartition(TOPIC, 0, DELETED_BEFORE)])
    result = list(done.values())[0].result(RPC_S)
    assert result.low_watermark == DELETED_BEFORE, f"low watermark {result.low_watermark}"
    # Followers learn the new log start on their next fetch; one more acked record makes sure
    # every ISR member fetched after the delete.
    producer.produce(TOPIC, key=f"k{DELETE_RECORDS}".encode(), value=value_of(DELETE_RECORDS),
                     partition=0)
    assert producer.flush(PRODUCE_S) == 0
    time.sleep(1.0)
    nodes[leader].kill()
    survivors = [i for i in nodes if i != leader]
    view = wait_for("a new leader among the survivors", CLUSTER_UP_S, lambda: (
        (v := partition_view(bootstrap_of(nodes, survivors))) is not None
        and v[0] in survivors and v))
    low, high = wait_for("the new leader's watermarks", CLUSTER_UP_S,
                         lambda: watermarks(nodes[view[0]].bootstrap))
    assert (low, high) == (DELETED_BEFORE, DELETE_RECORDS + 1), \
        f"new leader {view[0]}: watermarks {(low, high)}"
    got = consume_partition_from(nodes[view[0]].bootstrap, DELETED_BEFORE)
    assert [o for o, _, _ in got] == list(range(DELETED_BEFORE, DELETE_RECORDS + 1))
    note(f"delete records: low watermark {low} on new leader {view[0]} after failover")
    nodes[leader].start()


def watermarks(bootstrap: str) -> tuple[int, int] | None:
    """failover/0's (low, high) watermarks, or None on a client-side hiccup right after a
    failover (librdkafka may retire the broker handle a request went out on:
    _DESTROY_BROKER, seen once on the bootstrap connection)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "samsa-unused"})
    try:
        return c.get_watermark_offsets(TopicPartition(TOPIC, 0), timeout=RPC_S)
    except KafkaException:
        return None
    finally:
        c.close()


def test_follower_behind_the_leaders_log_start_starts_over_there(cluster):
    """A follower that was down while the leader deleted everything it held (DeleteRecords
    beyond its log end) cannot fetch from its own log end any more: it replaces its log by an
    empty one starting at the leader's log start (Kafka's truncateFullyAndStartAt) and rejoins
    the ISR, instead of retrying OFFSET_OUT_OF_RANGE forever."""
    nodes = cluster
    everyone = bootstrap_of(nodes)
    leader = create_replicated_topic(nodes)[0]
    follower = next(i for i in nodes if i != leader)
    others = [i for i in nodes if i != follower]
    producer = Producer({"bootstrap.servers": everyone, "acks": "all"})

    def produce(start: int, end: int) -> None:
        for i in range(start, end):
            producer.produce(TOPIC, key=f"k{i}".encode(), value=value_of(i), partition=0)
        assert producer.flush(PRODUCE_S) == 0

    produce(0, 50)
    nodes[follower].kill()
    wait_for(f"node {follower} out of the ISR", CLUSTER_UP_S, lambda: (
        (v := partition_view(bootstrap_of(nodes, others))) is not None
        and follower not in v[2] and v))
    produce(50, 150)
    admin = AdminClient({"bootstrap.servers": bootstrap_of(nodes, others)})
    done = admin.delete_records([TopicPartition(TOPIC, 0, 120)])
    assert list(done.values())[0].result(RPC_S).low_watermark == 120
    nodes[follower].start()
    started = time.monotonic()
    wait_for(f"node {follower} back in the ISR", REJOIN_S, lambda: (
        (v := partition_view(everyone)) is not None and follower in v[2] and v))
    rejoin_s = time.monotonic() - started
    log = nodes[follower].log_text()
    assert "behind the leader's log start" in log, "the follower never started over"
    produce(150, 160)
    # Its old log (0..50) is gone: it starts at the base of the leader's batch that holds
    # offset 120 (records 50..149 may be one batch), as Kafka's follower does.
    dirs = sorted(nodes[follower].data_dir.glob(f"{TOPIC}-0.*"))
    assert len(dirs) == 1, dirs
    bases = sorted(int(f.stem) for f in dirs[0].glob("*.log"))
    assert bases and 50 <= bases[0] <= 120, f"follower segments {bases}"
    got = consume_partition_from(everyone, 120)
    assert [o for o, _, _ in got] == list(range(120, 160))
    note(f"follower behind the log start: rejoined the ISR {rejoin_s:.1f}s after its restart "
         f"(its log 0..50, the leader's 120..150); it starts at {bases[0]}")
