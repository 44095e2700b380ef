"""Real-client cases for the broker gaps the compatibility suites found (ci/compat.sh, issue 8).

Each test starts its own broker (conftest `broker` fixture, node id 1) and checks one answer
the librdkafka or kafka-python suites needed: the single-node admin APIs (DescribeTopicPartitions,
ElectLeaders, partition reassignments, log dirs), manual replica assignments naming this node,
IncrementalAlterConfigs APPEND/SUBTRACT on cleanup.policy, the broker's advertised.listeners, and
per-record errors for keyless records on a compacted topic. It never talks to anything but the
broker on 127.0.0.1.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   ResourceType)
from confluent_kafka.admin import NewTopic as CkNewTopic
from kafka import TopicPartition
from kafka.admin import KafkaAdminClient, NewPartitions, NewTopic
from kafka.admin import ConfigResource as KpConfigResource
from kafka.admin import ConfigResourceType
from kafka.errors import UnknownTopicOrPartitionError
from kafka.structs import TopicPartitionReplica

TIMEOUT_S = 30.0
NODE_ID = 1
ELECTION_NOT_NEEDED = 84


def kp_admin(bootstrap: str) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)


def test_single_node_admin_apis(broker):
    a = kp_admin(broker.bootstrap)
    try:
        a.create_topics([NewTopic("dtp", num_partitions=3, replication_factor=1)])
        # DescribeTopicPartitions, one partition per page: the cursor walks all three.
        seen = []
        cursor = None
        for _ in range(5):
            r = a.describe_topic_partitions(["dtp"], response_partition_limit=1, cursor=cursor)
            for t in r["topics"]:
                assert t["name"] == "dtp" and t["error_code"] == 0
                seen += [(p["partition_index"], p["leader_id"]) for p in t["partitions"]]
            cursor = r["next_cursor"]
            if cursor is None:
                break
        assert seen == [(0, NODE_ID), (1, NODE_ID), (2, NODE_ID)]

        r = a.elect_leaders(0, {"dtp": [0, 1]})
        (topic, parts), = [(x[0], x[1]) for x in r.replica_election_results]
        assert topic == "dtp"
        assert sorted((p[0], p[1]) for p in parts) == [
            (0, ELECTION_NOT_NEEDED), (1, ELECTION_NOT_NEEDED)]
        with pytest.raises(UnknownTopicOrPartitionError):
            a.elect_leaders(0, {"dtp": [7]})

        assert a.list_partition_reassignments() == {}
        tp = TopicPartition("dtp", 0)
        assert a.alter_partition_reassignments({tp: [NODE_ID]}) == {tp: None}
        bad = a.alter_partition_reassignments({tp: [NODE_ID + 1]})
        assert bad[tp] is not None

        # Manual assignments naming this node are honoured; others are refused.
        a.create_partitions({"dtp": NewPartitions(5, [[NODE_ID], [NODE_ID]])})
        meta = a.describe_topics(["dtp"])[0]
        assert len(meta["partitions"]) == 5

        dirs = a.describe_log_dirs()
        (entry,) = [d for d in dirs if d["broker"] == NODE_ID]
        (log_dir,) = entry["log_dirs"]
        assert log_dir["error_code"] == 0
        tpr = TopicPartitionReplica("dtp", 0, NODE_ID)
        result = a.alter_replica_log_dirs({tpr: log_dir["log_dir"]})
        assert result[tpr].errno == 0

        configs = a.describe_configs([KpConfigResource(ConfigResourceType.BROKER, NODE_ID)],
                                     config_filter="all")
        listeners = configs["broker"][str(NODE_ID)]["advertised.listeners"]
        assert listeners["value"] == f"PLAINTEXT://{broker.bootstrap}"
    finally:
        a.close()


def test_keyless_records_on_compacted_topic(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([CkNewTopic("cmp", num_partitions=1, replication_factor=1)])[
        "cmp"].result(TIMEOUT_S)
    res = ConfigResource(ResourceType.TOPIC, "cmp", incremental_configs=[
        ConfigEntry("cleanup.policy", "compact",
                    incremental_operation=AlterConfigOpType.APPEND)])
    admin.incremental_alter_configs([res])[res].result(TIMEOUT_S)
    described = admin.describe_configs([ConfigResource(ResourceType.TOPIC, "cmp")])
    (cfg,) = described.values()
    assert cfg.result(TIMEOUT_S)["cleanup.policy"].value == "delete,compact"

    errors: dict[int, int] = {}

    # One batch of 10 where records 0 and 5 have no key: exactly those fail INVALID_RECORD.
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 200, "retries": 0})
    for i in range(10):
        key = None if i % 5 == 0 else f"k{i}".encode()
        p.produce("cmp", value=b"v", key=key, partition=0,
                  on_delivery=lambda err, msg, i=i: errors.__setitem__(
                      i, err.code() if err else 0))
    deadline = time.monotonic() + TIMEOUT_S
    while len(errors) < 10 and time.monotonic() < deadline:
        p.poll(0.1)
    p.flush(TIMEOUT_S)
    assert errors[0] == KafkaError.INVALID_RECORD
    assert errors[5] == KafkaError.INVALID_RECORD
    others = {errors[i] for i in range(10) if i % 5 != 0}
    assert others == {KafkaError._INVALID_DIFFERENT_RECORD}

    # SUBTRACT compact again: keyless records are accepted.
    res = ConfigResource(ResourceType.TOPIC, "cmp", incremental_configs=[
        ConfigEntry("cleanup.policy", "compact",
                    incremental_operation=AlterConfigOpType.SUBTRACT)])
    admin.incremental_alter_configs([res])[res].result(TIMEOUT_S)
    done = []
    p.produce("cmp", value=b"v", key=None, partition=0,
              on_delivery=lambda err, msg: done.append(err))
    p.flush(TIMEOUT_S)
    assert done == [None]
