"""The API under clients that misbehave and a Redis that stalls: a real uvicorn process and
raw sockets, so the server sees exactly what an attacker's client would send."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from devstack.processes import wait_until
from tests.support.api import ApiProcess, auth, token

UPLOAD = "/api/process-pdf"
BOUNDARY = "unilingo-test-boundary"


@pytest.fixture(scope="module")
def server(redis_server, tmp_path_factory):
    process = ApiProcess(
        redis_server.url, tmp_path_factory.mktemp("api-hardening"), request_body_timeout_seconds=2, api_log_level="info"
    ).start()
    yield process
    process.stop()


def _upload_head(server, length: int) -> bytes:
    return (
        f"POST {UPLOAD} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nAuthorization: Bearer {token('mallory')}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {length}\r\n\r\n"
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.pdf"\r\n'
        "Content-Type: application/pdf\r\n\r\n%PDF-1.4\n"
    ).encode()


def _metric(server, name: str, **labels) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_slow_upload_is_cut_off_with_408(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as conn:
        conn.sendall(_upload_head(server, 10_000))
        conn.settimeout(0.5)
        reply = b""
        deadline = time.monotonic() + 30
        while b"\r\n\r\n" not in reply and time.monotonic() < deadline:
            try:
                conn.sendall(b"x")  # one byte at a time, never the whole body
            except OSError:
                pass  # the server closed its side: read what it answered
            try:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                reply += chunk
            except TimeoutError:
                continue
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]


def test_a_client_hanging_up_mid_upload_is_no_server_error(server):
    before_5xx = _metric(server, "unilingo_http_requests_total", route=UPLOAD, status="500")
    before = _metric(server, "unilingo_http_client_disconnects_total", route=UPLOAD)
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
            conn.sendall(_upload_head(server, 10_000))  # then hang up, the body unfinished
    wait_until(
        lambda: _metric(server, "unilingo_http_client_disconnects_total", route=UPLOAD) >= before + 5, timeout=30
    )
    assert _metric(server, "unilingo_http_requests_total", route=UPLOAD, status="500") == before_5xx
    assert _metric(server, "unilingo_http_requests_total", route=UPLOAD, status="499") >= 5
    log = server.log.read_text()
    assert "client hung up during POST /api/process-pdf" in log
    assert "Traceback" not in log


async def test_a_redis_stall_is_answered_503_not_waited_out(api):
    missing = f"/api/jobs/{'0' * 32}"
    assert (await api.get(missing, headers=auth("maria"))).status_code == 404  # connections warm
    # Redis answers nobody for 6 s. An API that waited it out would then answer 404; the API
    # gives up after its one-second Redis timeout and says the store is unavailable.
    api.redis.execute_command("CLIENT", "PAUSE", 6000, "ALL")
    try:
        stalled = await api.get(missing, headers=auth("maria"))
    finally:
        wait_until(lambda: api.redis.ping(), timeout=30)  # the pause ends by itself
    assert stalled.status_code == 503 and stalled.json()["error"]["code"] == "service_unavailable"
    assert stalled.headers["Retry-After"] == "1"
    assert (await api.get(missing, headers=auth("maria"))).status_code == 404  # and recovers
