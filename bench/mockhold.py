#!/usr/bin/env python3
"""bench/mockhold.py: holds a librdkafka in-process mock cluster in its own process, so other
processes can use it as an out-of-process broker (the client-side throughput ceiling).

Prints `MOCK 127.0.0.1:PORT` once the mock listens, then idles until killed or until --seconds
pass. It never persists anything and never listens on anything but 127.0.0.1.
"""
import argparse
import logging
import re
import sys
import time

from confluent_kafka import Producer

ADDRESS_WAIT_S = 20  # bound on waiting for the mock's address log line


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=3600)
    a = ap.parse_args()
    found = []

    class Capture(logging.Handler):
        def emit(self, rec):
            m = re.search(r"replaced with (\S+)", rec.getMessage())
            if m:
                found.append(m.group(1))

    log = logging.getLogger("mockhold")
    log.addHandler(Capture())
    log.setLevel(logging.DEBUG)
    p = Producer({"test.mock.num.brokers": a.brokers}, logger=log)
    deadline = time.monotonic() + ADDRESS_WAIT_S
    while not found and time.monotonic() < deadline:
        p.poll(0.05)
    if not found:
        print("mockhold: no mock address logged", file=sys.stderr)
        return 1
    print(f"MOCK {found[0]}", flush=True)
    end = time.monotonic() + a.seconds
    while time.monotonic() < end:
        p.poll(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
