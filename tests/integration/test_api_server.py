"""The API as it runs for real: ``python -m api`` (uvicorn, uvloop, httptools) over TCP."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import orjson
import pytest
import redis

from tests.support.api import PDF, ApiProcess, auth
from unilingo import keys
from unilingo.jobs import JobStore


@pytest.fixture(scope="module")
def server(redis_server, tmp_path_factory):
    """One server for the module (it starts in ~3 s); each test still gets a flushed Redis."""
    process = ApiProcess(redis_server.url, tmp_path_factory.mktemp("api"), max_pdf_bytes=50_000).start()
    yield process
    process.stop()


def test_submit_poll_and_follow_over_sse(server, redis_url):
    client = redis.Redis.from_url(redis_url)
    store = JobStore(client)
    with httpx.Client(base_url=server.url, timeout=10) as http:
        assert http.get("/api/health").json() == {"status": "ok"}
        response = http.post("/api/process-pdf", files={"file": ("a.pdf", PDF, "application/pdf")}, headers=auth())
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        assert response.headers["location"] == f"/api/jobs/{job_id}"
        assert client.llen("pdf") == 1

        first_event = threading.Event()

        def worker():
            assert first_event.wait(10)
            claim = store.claim(job_id, 30)
            time.sleep(0.05)
            store.succeed(job_id, claim.run_token, {"text": "hi", "pages": 1})

        thread = threading.Thread(target=worker)
        thread.start()
        statuses = []
        with http.stream("GET", f"/api/jobs/{job_id}/events", headers=auth()) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    statuses.append(orjson.loads(line[5:])["status"])
                    first_event.set()
        thread.join()
        assert statuses[0] == "queued" and statuses[-1] == "succeeded" and "running" in statuses
        assert http.get(f"/api/jobs/{job_id}", headers=auth()).json()["result"] == {"text": "hi", "pages": 1}
        metrics = http.get("/metrics").text
        assert 'route="/api/process-pdf",status="202"' in metrics
    client.close()


def test_an_oversized_upload_is_refused_before_it_is_read(server, redis_url):
    """A declared Content-Length over the cap: 413 at once, the body never read."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        headers = (
            "POST /api/process-pdf HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {auth()['Authorization'].split()[1]}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 500000000\r\n\r\n"
        )
        sock.sendall(headers.encode())
        received = b""
        while b'"payload_too_large"' not in received:  # headers and body may arrive apart
            chunk = sock.recv(65536)
            if not chunk:  # the server closed the connection (it says "connection: close")
                break
            received += chunk
        reply = received.decode(errors="replace")
    assert reply.startswith("HTTP/1.1 413")
    assert '"payload_too_large"' in reply


def test_chunked_oversized_upload_is_cut_off(server, redis_url):
    def chunks():
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.pdf"\r\n\r\n%PDF-1.4\n'
        for _ in range(200):
            yield b"0" * 4096  # 800 KB, past the 50 KB limit (+ 64 KiB)
        yield b"\r\n--b--\r\n"

    with httpx.Client(base_url=server.url, timeout=10) as http:
        try:
            response = http.post(
                "/api/process-pdf",
                content=chunks(),
                headers={**auth(), "Content-Type": "multipart/form-data; boundary=b"},
            )
        except httpx.HTTPError:
            return  # the server may close the connection while we are still sending: also a refusal
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"


def test_a_client_leaving_an_sse_stream_frees_its_subscription(server, redis_url):
    client = redis.Redis.from_url(redis_url)
    with httpx.Client(base_url=server.url, timeout=10) as http:
        job_id = http.post("/api/ai/generate-flashcards", json={"content": "x"}, headers=auth()).json()["job_id"]
        channel = keys.job_events(job_id)
        with http.stream("GET", f"/api/jobs/{job_id}/events", headers=auth()) as stream:
            lines = stream.iter_lines()  # kept referenced: breaking out must not close the stream
            for line in lines:
                if line.startswith("data:"):
                    assert orjson.loads(line[5:])["status"] == "queued"
                    break
            # subscribed before the first event was sent
            assert client.pubsub_numsub(channel)[0][1] == 1
        deadline = time.monotonic() + 10
        while client.pubsub_numsub(channel)[0][1] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.pubsub_numsub(channel)[0][1] == 0
    client.close()


def _subscribers(client: redis.Redis) -> list[int]:
    """The channel count of every Redis connection that holds subscriptions."""
    return [int(c["sub"]) for c in client.client_list() if int(c.get("sub", 0)) > 0]


async def test_sse_streams_share_one_redis_subscription_per_process(server, redis_url):
    import asyncio

    client = redis.Redis.from_url(redis_url)
    streams = 30
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        job_ids = [
            (await http.post("/api/ai/generate-flashcards", json={"content": f"fact {i}"}, headers=auth())).json()[
                "job_id"
            ]
            for i in range(streams)
        ]
        opened: list = []
        first_events = 0

        async def follow(job_id: str) -> None:
            nonlocal first_events
            request = http.build_request("GET", f"/api/jobs/{job_id}/events", headers=auth())
            response = await http.send(request, stream=True)
            lines = response.aiter_lines()
            opened.append((response, lines))  # kept referenced: an abandoned iterator would close the stream
            async for line in lines:
                if line.startswith("data:"):
                    first_events += 1
                    return

        await asyncio.gather(*(follow(j) for j in job_ids))
        assert first_events == streams
        assert _subscribers(client) == [streams]  # one connection, one channel per stream
        for response, _ in opened:
            await response.aclose()
        deadline = time.monotonic() + 15
        while _subscribers(client) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert _subscribers(client) == []  # every channel unsubscribed when its stream left
    client.close()
