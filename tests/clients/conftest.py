"""pytest fixtures: a real `samsa broker` process on 127.0.0.1 per test, and record checks.

Each test gets its own broker on a free port with its own data directory; the fixture always
stops it (SIGTERM, then SIGKILL after a grace period) and fails the test if the broker panicked
or did not shut down cleanly. It never leaves a process running and never talks to anything but
127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMSA_BIN = Path(os.environ.get("SAMSA_BIN", ROOT / "target" / "release" / "samsa"))
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
LOG_TAIL_LINES = 60
LISTENING = re.compile(r"samsa listening on (\d+\.\d+\.\d+\.\d+):(\d+)")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Broker:
    """One `samsa broker` process; `start` may be called again after `stop`/`kill`."""

    def __init__(self, data_dir: Path, log_path: Path, listen: str = "127.0.0.1:0",
                 extra_args: list[str] | None = None):
        self.data_dir = data_dir
        self.listen = listen  # A fixed port keeps the address across restarts (clusters).
        self.extra_args = list(extra_args or [])
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.exit_codes: list[int] = []
        self._reader: threading.Thread | None = None

    @property
    def bootstrap(self) -> str:
        assert self.port is not None, "broker not started"
        return f"127.0.0.1:{self.port}"

    def start(self) -> "Broker":
        assert self.proc is None, "broker already running"
        if not SAMSA_BIN.exists():
            pytest.fail(f"{SAMSA_BIN} missing: run `cargo build --release -p samsa-broker`")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [str(SAMSA_BIN), "broker", "--listen", self.listen,
               "--data-dir", str(self.data_dir), *self.extra_args]
        log = open(self.log_path, "a", buffering=1)
        log.write(f"==> {' '.join(cmd)}\n")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, text=True, errors="replace")
        bound = threading.Event()
        found: list[int] = []

        def read(proc: subprocess.Popen) -> None:
            for line in proc.stdout:
                log.write(line)
                match = LISTENING.search(ANSI.sub("", line))
                if match and not found:
                    found.append(int(match.group(2)))
                    bound.set()
            log.close()
            bound.set()

        self._reader = threading.Thread(target=read, args=(self.proc,), daemon=True)
        self._reader.start()
        bound.wait(START_TIMEOUT_S)
        if not found:
            code = self.proc.poll()
            self.kill()
            pytest.fail(f"broker did not print 'samsa listening on' (exit {code}):\n{self.tail()}")
        self.port = found[0]
        return self

    def _wait(self) -> int:
        assert self.proc is not None
        code = self.proc.wait()
        if self._reader is not None:
            self._reader.join(5)
        self.exit_codes.append(code)
        self.proc = None
        return code

    def stop(self) -> int:
        """SIGTERM and wait; SIGKILL if it does not exit within the grace period."""
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self._wait()
            pytest.fail(f"broker ignored SIGTERM for {STOP_TIMEOUT_S}s:\n{self.tail()}")
        return self._wait()

    def kill(self) -> None:
        """SIGKILL (a crash: no flush, no sync) and reap."""
        if self.proc is not None:
            self.proc.kill()
            self._wait()

    def tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(lines[-LOG_TAIL_LINES:])

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


NOTES: list[str] = []


def note(line: str) -> None:
    """A figure or remark worth reading in CI output (printed in the terminal summary)."""
    NOTES.append(line)


def pytest_terminal_summary(terminalreporter):
    if NOTES:
        terminalreporter.section("samsa client-test notes")
        for line in NOTES:
            terminalreporter.write_line(line)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def broker(request, tmp_path):
    """A started broker; stopped (and checked) after the test, also on failure."""
    b = Broker(tmp_path / "data", tmp_path / "broker.log")
    b.start()
    yield b
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    code = b.stop()
    if failed:
        print(f"---- broker log tail ({b.log_path}) ----\n{b.tail()}")
    assert "panicked" not in b.log_text(), f"broker panicked:\n{b.tail()}"
    assert code == 0, f"broker exited with {code} after SIGTERM:\n{b.tail()}"


@pytest.fixture
def broker_factory(tmp_path):
    """Unstarted brokers for tests that crash and restart them; all are reaped at the end."""
    made: list[Broker] = []

    def make(name: str = "b") -> Broker:
        b = Broker(tmp_path / f"{name}-data", tmp_path / f"{name}.log")
        made.append(b)
        return b

    yield make
    for b in made:
        b.kill()


def format_dir(data_dir: Path) -> str:
    """`samsa format`: the data directory's metadata directory id (32 hex digits)."""
    if not SAMSA_BIN.exists():
        pytest.fail(f"{SAMSA_BIN} missing: run `cargo build --release -p samsa-broker`")
    out = subprocess.run([str(SAMSA_BIN), "format", "--data-dir", str(data_dir)],
                         capture_output=True, text=True, timeout=START_TIMEOUT_S, check=True)
    dir_id = out.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", dir_id), f"samsa format printed {out.stdout!r}"
    return dir_id


def pinned_voters(tmp_path: Path, count: int) -> dict[int, Broker]:
    """`count` unstarted voters (ids 1..count) on fixed loopback ports, each data directory
    formatted first and its directory id pinned in the voter list (ID@HOST:PORT:DIRID)."""
    ports = free_ports(2 * count)
    client_ports, quorum_ports = ports[:count], ports[count:]
    dir_ids = [format_dir(tmp_path / f"node{i + 1}-data") for i in range(count)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{quorum_ports[i]}:{dir_ids[i]}" for i in range(count))
    nodes: dict[int, Broker] = {}
    for i in range(count):
        node_id = i + 1
        nodes[node_id] = Broker(
            tmp_path / f"node{node_id}-data", tmp_path / f"node{node_id}.log",
            listen=f"127.0.0.1:{client_ports[i]}",
            extra_args=["--node-id", str(node_id), "--voters", voters,
                        "--controller-listen", f"127.0.0.1:{quorum_ports[i]}"])
    return nodes


@contextlib.contextmanager
def running_cluster(request, nodes: dict[int, Broker]):
    """Starts every node of a cluster; on the way out stops them all (SIGTERM), prints their
    log tails if the test failed, and fails on a panic or an unclean exit. Always reaps."""
    try:
        for b in nodes.values():
            b.start()
        yield nodes
        rep = getattr(request.node, "rep_call", None)
        failed = rep is not None and rep.failed
        codes = {node_id: b.stop() for node_id, b in nodes.items()}
        if failed:
            for node_id, b in nodes.items():
                print(f"---- node {node_id} log tail ({b.log_path}) ----\n{b.tail()}")
            # The failure again, last, where a truncated CI excerpt still shows it.
            why = getattr(rep, "longreprtext", "") or ""
            print("---- the failure, again ----\n" + "\n".join(why.splitlines()[-40:]))
        for node_id, b in nodes.items():
            assert "panicked" not in b.log_text(), f"node {node_id} panicked:\n{b.tail()}"
        assert all(c == 0 for c in codes.values()), f"exit codes after SIGTERM: {codes}"
    finally:
        for b in nodes.values():
            b.kill()


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports free right now (bound to port 0, then released)."""
    import socket

    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# ---- Records and checks shared by every client test. ----

@dataclass(frozen=True)
class Rec:
    """One record as the tests compare it: bytes everywhere, headers in order."""

    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()


def make_records(client: str, count: int, keys: int = 13, first: int = 0) -> list[Rec]:
    """Keyed records with two headers each; the index is in the value and a header."""
    recs = []
    for i in range(first, first + count):
        headers = (("idx", str(i).encode()), ("client", client.encode()))
        recs.append(Rec(f"key-{i % keys}".encode(), f"{client}-value-{i}".encode(), headers))
    return recs


def index_of(rec: Rec) -> int:
    return int(rec.value.rsplit(b"-", 1)[1])


@dataclass
class Consumed:
    """Records read back, by partition, in the order the consumer returned them."""

    by_partition: dict[int, list[tuple[int, Rec]]] = field(
        default_factory=lambda: defaultdict(list))

    def add(self, partition: int, offset: int, rec: Rec) -> None:
        self.by_partition[partition].append((offset, rec))

    def count(self) -> int:
        return sum(len(v) for v in self.by_partition.values())


def check_round_trip(produced: list[Rec], acked: dict[Rec, tuple[int, int]] | None,
                     consumed: Consumed, start_offsets: dict[int, int] | None = None) -> None:
    """Every produced record comes back exactly once, intact (key, value, headers), at the
    partition and offset the producer was told (when it was told), offsets are contiguous per
    partition from `start_offsets` (default 0) and each partition keeps the produce order."""
    start_offsets = start_offsets or {}
    seen: dict[Rec, tuple[int, int]] = {}
    key_partition: dict[bytes | None, int] = {}
    for partition, entries in consumed.by_partition.items():
        offsets = [o for o, _ in entries]
        first = start_offsets.get(partition, 0)
        assert offsets == list(range(first, first + len(offsets))), \
            f"partition {partition}: offsets not contiguous from {first}: {offsets[:20]}..."
        indexes = [index_of(r) for _, r in entries]
        assert indexes == sorted(indexes), f"partition {partition}: produce order not kept"
        for offset, rec in entries:
            assert rec not in seen, f"duplicate {rec} at {partition}/{offset} and {seen[rec]}"
            seen[rec] = (partition, offset)
            if rec.key is not None:
                assert key_partition.setdefault(rec.key, partition) == partition, \
                    f"key {rec.key!r} found in two partitions"
    missing = [r for r in produced if r not in seen]
    assert not missing, f"{len(missing)} records missing or altered, e.g. {missing[:3]}"
    extra = [r for r in seen if r not in set(produced)]
    assert not extra, f"{len(extra)} unexpected records, e.g. {extra[:3]}"
    if acked is not None:
        assert len(acked) == len(produced), f"{len(acked)} acked of {len(produced)}"
        for rec, where in acked.items():
            assert seen[rec] == where, f"{rec} acked at {where} but found at {seen[rec]}"


def api_versions(bootstrap: str) -> dict[int, tuple[int, int]]:
    """ApiVersions v0 over a raw socket: {api_key: (min, max)} as the broker advertises."""
    import socket
    import struct

    host, port = bootstrap.rsplit(":", 1)
    client_id = b"samsa-tests"
    body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(struct.pack(">i", len(body)) + body)

        def read(n: int) -> bytes:
            buf = b""
            while len(buf) < n:
                chunk = s.recv(n - len(buf))
                assert chunk, "broker closed the connection during ApiVersions"
                buf += chunk
            return buf

        (size,) = struct.unpack(">i", read(4))
        assert 0 < size < 1 << 20, f"ApiVersions response size {size}"
        resp = read(size)
    correlation_id, error_code, count = struct.unpack(">ihi", resp[:10])
    assert correlation_id == 7 and error_code == 0, (correlation_id, error_code)
    apis = {}
    for i in range(count):
        key, lo, hi = struct.unpack(">hhh", resp[10 + 6 * i: 16 + 6 * i])
        apis[key] = (lo, hi)
    return apis


GROUP_APIS = (8, 9, 10, 11, 12, 13, 14)  # OffsetCommit/Fetch, FindCoordinator, Join..SyncGroup


def groups_supported(bootstrap: str) -> bool:
    apis = api_versions(bootstrap)
    return all(key in apis for key in GROUP_APIS)
