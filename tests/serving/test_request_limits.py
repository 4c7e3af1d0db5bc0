"""Bounded requests over real HTTP (uvicorn on a free port, raw sockets where the client must
misbehave): 413 before a large body is read, from Content-Length or while a chunked body
streams; 503 with Retry-After past the in-flight limit; bounded lists in the schemas."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator

import orjson
import pytest
import requests
import uvicorn

from recsys.kafka import ensure_topics
from serving.main import create_app
from shell.localstack import free_port
from tests.serving.conftest import with_overrides

pytestmark = pytest.mark.integration

MAX_BODY = 64 * 1024


@pytest.fixture
def api(settings, published) -> Iterator[tuple[str, int]]:
    ours = with_overrides(settings, api_max_body_bytes=MAX_BODY, api_max_in_flight=3,
                          api_retry_after_s=4, api_max_anonymous_items=5)
    ensure_topics(ours)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(ours), host="127.0.0.1", port=port,
                                           log_config=None, access_log=False, loop="asyncio"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", port
    server.should_exit = True
    thread.join(10)


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return sock


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    want = int(headers.get("content-length", len(body)))
    while len(body) < want:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def test_a_declared_huge_body_is_refused_before_it_is_sent(api):
    _, port = api
    with _connect(port) as sock:
        t0 = time.perf_counter()
        sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: api\r\nContent-Type: application/json"
                     b"\r\nContent-Length: 524288000\r\n\r\n")  # 500 MB announced, none sent
        status, headers, body = _read_response(sock)
        assert time.perf_counter() - t0 < 2.0
    assert status == 413
    assert str(MAX_BODY) in orjson.loads(body)["detail"]


def test_a_chunked_body_is_cut_off_once_it_passes_the_limit(api):
    base, port = api
    sent = 0
    with _connect(port) as sock:
        sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: api\r\nContent-Type: application/json"
                     b"\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"[" + b" " * 16_383
        status = None
        # Keep streaming (a little past the bound asserted below) until the server answers.
        while sent <= 2 * MAX_BODY + len(chunk):
            try:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            except OSError:
                break
            sent += len(chunk)
            # Past the limit, give the server time to answer before sending more: on a loaded
            # machine it reads later than this loop writes, and the bound below is on the
            # server, not on the client's speed.
            sock.settimeout(0.01 if sent <= MAX_BODY else 2.0)
            try:
                peek = sock.recv(1, socket.MSG_PEEK)
            except (TimeoutError, BlockingIOError):
                peek = b""
            sock.settimeout(5)
            if peek:
                break
        status, _, body = _read_response(sock)
    assert status == 413, body
    assert sent <= 2 * MAX_BODY  # answered soon after the limit, not after the whole body
    # The process is fine and a body under the limit is handled normally.
    event = {"event_id": uuid.uuid4().hex, "user_id": "u1", "item_id": "i01",
             "event_type": "view", "timestamp": int(time.time() * 1000)}
    r = requests.post(f"{base}/v1/events", json=event, timeout=5)
    assert r.status_code == 202
    metrics = requests.get(f"{base}/metrics", timeout=5).text
    assert 'recsys_api_requests_limited_total{reason="body_size"} 1.0' in metrics


def test_past_the_in_flight_limit_a_request_gets_503_at_once(api):
    base, port = api
    held = []
    try:
        for _ in range(3):  # three POSTs whose bodies never finish: all three in flight
            sock = _connect(port)
            sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: api\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n[")
            held.append(sock)
        time.sleep(0.3)
        t0 = time.perf_counter()
        r = requests.get(f"{base}/v1/users/u1/recommendations", timeout=5)
        assert time.perf_counter() - t0 < 1.0
        assert r.status_code == 503 and r.headers["Retry-After"] == "4"
        assert "in flight" in r.json()["detail"]
        assert requests.get(f"{base}/healthz", timeout=5).status_code == 200  # exempt
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 5
    while requests.get(f"{base}/v1/users/u1/recommendations").status_code != 200:
        assert time.monotonic() < deadline, "in-flight slots were not released"
        time.sleep(0.1)
    metrics = requests.get(f"{base}/metrics", timeout=5).text
    assert 'recsys_api_requests_limited_total{reason="in_flight"} 1.0' in metrics


def test_lists_in_bodies_are_bounded(api):
    base, _ = api
    session = {"items": [{"item_id": "i01"}] * 6}
    r = requests.post(f"{base}/v1/recommendations/anonymous", json=session, timeout=5)
    assert r.status_code == 422 and "at most 5 items" in r.json()["detail"]
    r = requests.post(f"{base}/v1/recommendations/anonymous",
                      json={"items": [{"item_id": "i01"}] * 3}, timeout=5)
    assert r.status_code == 200


def test_schema_list_bounds_follow_the_settings_bounds():
    from recsys.settings import Settings
    from serving.schemas import AnonymousRequest

    setting = Settings.model_fields["api_max_anonymous_items"].metadata
    schema = AnonymousRequest.model_fields["items"].metadata
    assert [m.le for m in setting if hasattr(m, "le")] == \
        [m.max_length for m in schema if hasattr(m, "max_length")]
