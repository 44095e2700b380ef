"""Bad bytes over a raw socket against a real samsa broker: unsupported ApiVersions version
(KIP-511 fallback), unknown API keys, lengths beyond the request bound, negative lengths,
truncated frames and seeded garbage. Each must get an error response or a closed connection,
and afterwards the broker must still serve real clients (the fixture also fails the test if the
broker panicked). Only talks to the broker fixture on 127.0.0.1.
"""

from __future__ import annotations

import random
import socket
import struct

from conftest import Rec, api_versions, check_round_trip, make_records
from test_confluent_kafka import PARTITIONS, consume_all, create_topic, produce

SOCKET_TIMEOUT_S = 10.0
RESPONSE_BYTES_MAX = 1 << 20
GARBAGE_FRAMES = 200
GARBAGE_SEED = 20_251_121
UNSUPPORTED_VERSION = 35


def connect(bootstrap: str) -> socket.socket:
    host, port = bootstrap.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=SOCKET_TIMEOUT_S)


def header(api_key: int, api_version: int, correlation_id: int) -> bytes:
    client_id = b"bad-input"
    return struct.pack(">hhih", api_key, api_version, correlation_id, len(client_id)) + client_id


def read_response(s: socket.socket) -> bytes | None:
    """One response frame, or None if the broker closed the connection."""
    buf = b""
    try:
        while len(buf) < 4:
            chunk = s.recv(4 - len(buf))
            if not chunk:
                return None
            buf += chunk
        (size,) = struct.unpack(">i", buf)
        assert 0 <= size <= RESPONSE_BYTES_MAX, f"response size {size}"
        body = b""
        while len(body) < size:
            chunk = s.recv(size - len(body))
            if not chunk:
                return None
            body += chunk
        return body
    except ConnectionResetError:
        return None


def closed(s: socket.socket) -> bool:
    """True once the broker has closed the connection (reads EOF or reset)."""
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def test_api_versions_unsupported_version_falls_back_to_v0(broker):
    with connect(broker.bootstrap) as s:
        body = header(18, 99, 42) + b"\x00"
        s.sendall(struct.pack(">i", len(body)) + body)
        resp = read_response(s)
        assert resp is not None, "connection closed instead of the KIP-511 fallback"
        correlation_id, error_code, count = struct.unpack(">ihi", resp[:10])
        assert correlation_id == 42
        assert error_code == UNSUPPORTED_VERSION
        apis = {}
        for i in range(count):
            key, lo, hi = struct.unpack(">hhh", resp[10 + 6 * i: 16 + 6 * i])
            apis[key] = (lo, hi)
        # As Kafka does: the body lists at least ApiVersions itself, so the client can retry
        # with a version the broker speaks.
        assert 18 in apis and apis[18][0] == 0 and apis[18][1] >= 3, apis


def test_unknown_api_key_gets_error_or_close(broker):
    with connect(broker.bootstrap) as s:
        body = header(9999, 0, 7)
        s.sendall(struct.pack(">i", len(body)) + body)
        resp = read_response(s)
        if resp is not None:
            (correlation_id,) = struct.unpack(">i", resp[:4])
            assert correlation_id == 7


def test_oversized_and_negative_lengths_close_the_connection(broker):
    for length in (0x7FFF_FFFF, 104_857_601, -1, -0x8000_0000):
        with connect(broker.bootstrap) as s:
            s.sendall(struct.pack(">i", length) + b"\x00" * 16)
            assert closed(s), f"length {length}: connection left open"


def test_truncated_frames_and_garbage_leave_the_broker_serving(broker):
    bs = broker.bootstrap
    # A frame cut short, then the client hangs up.
    with connect(bs) as s:
        body = header(3, 1, 1) + b"\x00\x00"
        s.sendall(struct.pack(">i", len(body) + 50) + body)
    # A header cut short inside a complete frame.
    with connect(bs) as s:
        s.sendall(struct.pack(">i", 3) + b"\x00\x03\x00")
        resp = read_response(s)
        assert resp is None or len(resp) >= 4
    # Seeded garbage: valid-looking API keys and versions with random bodies.
    rng = random.Random(GARBAGE_SEED)
    supported = sorted(api_versions(bs).items())
    sent = 0
    while sent < GARBAGE_FRAMES:
        with connect(bs) as s:
            for _ in range(10):
                key, (lo, hi) = rng.choice(supported)
                if key == 18:
                    continue  # ApiVersions tolerates anything by design.
                body = header(key, rng.randint(lo, hi), sent)
                body += bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64)))
                try:
                    s.sendall(struct.pack(">i", len(body)) + body)
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += 1
                if read_response(s) is None:
                    break
    # Still serving: ApiVersions and a real produce/consume round trip.
    assert 0 in api_versions(bs)
    topic = "after-garbage"
    create_topic(bs, topic)
    recs: list[Rec] = make_records("after-garbage", 50)
    acked = produce(bs, topic, recs)
    check_round_trip(recs, acked, consume_all(bs, topic, PARTITIONS))
