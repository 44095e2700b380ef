"""Samsa's own stand-in for kafka-python's `test/service.py`, which the PyPI sdist lacks.

The integration fixtures import `ExternalService` (a broker somebody else runs, reached through
KAFKA_URI) and `SpawnedService` (a JVM broker the fixture would start). ci/compat.sh always runs
the suite against a Samsa broker it started itself, so `ExternalService` only has to answer the
fixture's calls, and `SpawnedService` refuses to start anything. This file never starts, stops
or signals a process and never opens a socket.
"""

import logging

log = logging.getLogger(__name__)


class ExternalService:
    """A service already running at host:port; every lifecycle call is a no-op."""

    def __init__(self, host, port):
        log.info("Using already running service at %s:%d", host, port)
        self.host = host
        self.port = port

    def start(self):
        pass

    def stop(self):
        pass

    def kill(self):
        pass

    def wait_for(self, pattern, timeout=30):
        # The broker is up before pytest starts (ci/compat.sh waits for its listening line).
        return True

    def dump_logs(self):
        pass


class SpawnedService:
    """The fixture's JVM-spawning path: not available here, so it fails loudly."""

    def __init__(self, args=None, env=None):
        self.args = args
        self.env = env

    def start(self):
        raise RuntimeError(
            "SpawnedService: ci/compat.sh runs kafka-python against an external Samsa broker "
            "(KAFKA_URI); spawning a Kafka/ZooKeeper JVM is not supported")

    def stop(self):
        pass

    def kill(self):
        pass

    def wait_for(self, pattern, timeout=30):
        return False

    def dump_logs(self):
        pass
