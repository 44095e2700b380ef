"""The `--create` subset of Kafka's kafka-topics.sh, over CreateTopics (confluent-kafka admin).

Used by compat/kafka-bin/bin/kafka-topics.sh for the librdkafka tests that create topics with
the JVM tool. Exits 0 when the topic was created (or already exists with --if-not-exists), 1
otherwise, 2 on arguments it does not understand. It never deletes or alters anything.
"""

import argparse
import sys

from confluent_kafka.admin import AdminClient, NewTopic

TIMEOUT_S = 30.0


def main(argv):
    p = argparse.ArgumentParser(prog="kafka-topics.sh")
    p.add_argument("--bootstrap-server", required=True)
    p.add_argument("--create", action="store_true")
    p.add_argument("--topic", required=True)
    p.add_argument("--partitions", type=int, default=-1)
    p.add_argument("--replication-factor", type=int, default=-1)
    p.add_argument("--config", action="append", default=[])
    p.add_argument("--if-not-exists", action="store_true")
    args = p.parse_args(argv)
    if not args.create:
        print("kafka-topics.sh (samsa compat shim): only --create is supported",
              file=sys.stderr)
        return 2
    configs = {}
    for item in args.config:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"kafka-topics.sh: bad --config {item!r}", file=sys.stderr)
            return 2
        configs[key] = value
    admin = AdminClient({"bootstrap.servers": args.bootstrap_server})
    topic = NewTopic(args.topic, num_partitions=args.partitions,
                     replication_factor=args.replication_factor, config=configs)
    future = admin.create_topics([topic], operation_timeout=TIMEOUT_S,
                                 request_timeout=TIMEOUT_S)[args.topic]
    try:
        future.result(timeout=TIMEOUT_S)
    except Exception as e:  # the client's KafkaException carries the broker's error
        if args.if_not_exists and "TOPIC_ALREADY_EXISTS" in str(e):
            return 0
        print(f"Error while executing topic command : {e}", file=sys.stderr)
        return 1
    print(f"Created topic {args.topic}.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
