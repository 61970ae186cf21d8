"""Auth, quotas, isolation, status, listing, cancellation, SSE, health and metrics."""

from __future__ import annotations

import asyncio
import threading
import time

import jwt
import orjson
import redis

from tests.support.api import PDF, auth, token
from unilingo import keys
from unilingo.jobs import JobStore


async def submit(client, user="alice", content="some text") -> str:
    response = await client.post("/api/ai/generate-flashcards", json={"content": content}, headers=auth(user))
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


# --- auth ----------------------------------------------------------------------------------


async def test_every_api_route_but_health_needs_a_token(api):
    job_id = await submit(api)
    calls = [
        ("POST", "/api/ai/generate-flashcards", {"json": {"content": "x"}}),
        ("POST", "/api/ai/generate-lesson", {"json": {"topic": "x"}}),
        ("POST", "/api/audio/generate", {"json": {"text": "x"}}),
        ("POST", "/api/process-pdf", {"files": {"file": ("a.pdf", PDF)}}),
        ("POST", "/api/process-image", {"files": {"image": ("a.png", b"x")}}),
        ("POST", "/api/pronunciation-assess", {"files": {"audio": ("a.wav", b"x")}}),
        ("GET", f"/api/jobs/{job_id}", {}),
        ("GET", f"/api/jobs/{job_id}/events", {}),
        ("DELETE", f"/api/jobs/{job_id}", {}),
        ("GET", "/api/jobs", {}),
    ]
    now = int(time.time())
    bad_tokens = {
        "missing": None,
        "forged": jwt.encode({"sub": "alice", "aud": "authenticated", "exp": now + 60}, "x" * 40, algorithm="HS256"),
        "expired": token("alice", ttl=-30),
        "wrong audience": token("alice", audience="anon"),
        "not a jwt": "abc.def",
    }
    for method, path, kwargs in calls:
        for label, bad in bad_tokens.items():
            headers = {"Authorization": f"Bearer {bad}"} if bad else {}
            response = await api.request(method, path, headers=headers, **kwargs)
            assert response.status_code == 401, (method, path, label, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert response.json()["error"]["code"] in ("missing_token", "invalid_token", "token_expired")
    expired = await api.get("/api/jobs", headers={"Authorization": f"Bearer {bad_tokens['expired']}"})
    assert expired.json()["error"]["code"] == "token_expired"
    assert (await api.get("/api/health")).status_code == 200
    assert (await api.get("/api/health/detailed")).status_code == 200
    assert api.redis.llen("ai") == 1  # only the setup job


async def test_jwks_tokens_rs256_and_es256(api_factory):
    """Asymmetric Supabase keys through a JWKS URL served locally."""
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwks = {
        "keys": [
            {**json.loads(RSAAlgorithm.to_jwk(rsa_key.public_key())), "kid": "rsa-1", "alg": "RS256", "use": "sig"},
            {**json.loads(ECAlgorithm.to_jwk(ec_key.public_key())), "kid": "ec-1", "alg": "ES256", "use": "sig"},
        ]
    }
    fetches = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            fetches.append(self.path)
            body = json.dumps(jwks).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = await api_factory(
            supabase_jwks_url=f"http://127.0.0.1:{server.server_address[1]}/auth/v1/.well-known/jwks.json"
        )
        claims = {
            "sub": "carol",
            "aud": "authenticated",
            "iss": "unilingo-local",
            "exp": int(time.time()) + 300,
            "role": "authenticated",
        }
        for key, alg, kid in ((rsa_key, "RS256", "rsa-1"), (ec_key, "ES256", "ec-1")):
            signed = jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})
            response = await client.get("/api/jobs", headers={"Authorization": f"Bearer {signed}"})
            assert response.status_code == 200, (alg, response.text)
        assert len(fetches) == 1  # the key set is cached
        # an unknown key, a key of another algorithm, another signer: all 401
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        for signed in (
            jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": "nope"}),
            jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": "ec-1"}),
            jwt.encode(claims, other, algorithm="RS256", headers={"kid": "rsa-1"}),
        ):
            response = await client.get("/api/jobs", headers={"Authorization": f"Bearer {signed}"})
            assert response.status_code == 401, response.text
        # HS256 with the shared secret keeps working beside JWKS
        assert (await client.get("/api/jobs", headers=auth("carol"))).status_code == 200
    finally:
        server.shutdown()
        server.server_close()


# --- quotas --------------------------------------------------------------------------------


async def submit_pdf(client, user: str = "alice", **headers):
    return await client.post("/api/process-pdf", files={"file": ("a.pdf", PDF)}, headers={**auth(user), **headers})


async def test_ip_quota_answers_429_with_retry_after(api_factory):
    client = await api_factory(quota_ip="3/1m")
    for i in range(3):
        response = await submit_pdf(client)
        assert response.status_code == 202
        assert response.headers["ratelimit-remaining"] == str(2 - i)
    refused = await submit_pdf(client, "someone-else")  # same address, other user
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1 and refused.headers["ratelimit-limit"] == "3"
    assert (await client.get("/api/health")).status_code == 200  # health is not counted


async def test_reading_jobs_spends_the_users_read_quota_not_the_address(api_factory):
    """Phones poll, and many share one carrier-NAT address: reads never lock out submissions."""
    client = await api_factory(quota_ip="2/1m", quota_user_read="5/1m")
    job_id = (await submit_pdf(client)).json()["job_id"]
    for _ in range(5):
        assert (await client.get(f"/api/jobs/{job_id}", headers=auth())).status_code == 200
    refused = await client.get("/api/jobs", headers=auth())
    assert refused.status_code == 429 and "read quota" in refused.json()["error"]["message"]
    # Another user behind the same address reads freely, and the address can still submit.
    assert (await client.get("/api/jobs", headers=auth("bob"))).status_code == 200
    assert (await submit_pdf(client, "bob")).status_code == 202


async def test_requests_with_bad_tokens_spend_the_address_quota(api_factory):
    client = await api_factory(quota_ip="3/1m")
    answers = [
        (await client.get("/api/jobs", headers={"Authorization": "Bearer forged.token.value"})).status_code
        for _ in range(5)
    ]
    assert answers == [401, 401, 401, 429, 429]
    assert (await client.get("/api/jobs")).status_code == 429  # no token at all: the same address
    assert (await client.get("/api/jobs", headers=auth())).status_code == 200  # a valid token still reads


async def test_an_idempotent_replay_spends_no_quota(api_factory):
    client = await api_factory(quota_user_ai="2/1h")
    body = {"topic": "Ordering food"}
    first = await client.post("/api/ai/generate-lesson", json=body, headers={**auth("gil"), "Idempotency-Key": "k-1"})
    assert first.status_code == 202
    replays = await asyncio.gather(
        *(
            client.post("/api/ai/generate-lesson", json=body, headers={**auth("gil"), "Idempotency-Key": "k-1"})
            for _ in range(20)
        )
    )
    assert {r.status_code for r in replays} == {200}
    assert {r.json()["job_id"] for r in replays} == {first.json()["job_id"]}
    # The quota still has its second request left.
    assert (await client.post("/api/ai/generate-lesson", json=body, headers=auth("gil"))).status_code == 202
    assert (await client.post("/api/ai/generate-lesson", json=body, headers=auth("gil"))).status_code == 429


async def test_user_ai_quota_is_per_user_and_only_on_ai(api_factory):
    client = await api_factory(quota_user_ai="2/1h")
    for _ in range(2):
        assert (
            await client.post("/api/ai/generate-lesson", json={"topic": "t"}, headers=auth("dave"))
        ).status_code == 202
    refused = await client.post("/api/ai/generate-flashcards", json={"content": "c"}, headers=auth("dave"))
    assert refused.status_code == 429 and "ai quota" in refused.json()["error"]["message"]
    assert (await client.post("/api/ai/generate-lesson", json={"topic": "t"}, headers=auth("erin"))).status_code == 202
    pdf = await client.post("/api/process-pdf", files={"file": ("a.pdf", PDF)}, headers=auth("dave"))
    assert pdf.status_code == 202
    assert client.redis.llen("ai") == 3


async def test_forwarded_for_is_believed_only_from_trusted_proxies(api_factory):
    client = await api_factory(quota_ip="1/1m", trusted_proxies=["127.0.0.0/8"])
    # The in-process client's address is 127.0.0.1: a trusted proxy here.
    a = await submit_pdf(client, **{"X-Forwarded-For": "203.0.113.5"})
    b = await submit_pdf(client, **{"X-Forwarded-For": "203.0.113.6"})
    assert (a.status_code, b.status_code) == (202, 202)
    c = await submit_pdf(client, **{"X-Forwarded-For": "203.0.113.5"})
    assert c.status_code == 429


# --- jobs ----------------------------------------------------------------------------------


async def test_another_users_job_is_404_everywhere(api):
    job_id = await submit(api, "alice")
    for method, path in (
        ("GET", f"/api/jobs/{job_id}"),
        ("GET", f"/api/jobs/{job_id}/events"),
        ("DELETE", f"/api/jobs/{job_id}"),
    ):
        response = await api.request(method, path, headers=auth("mallory"))
        assert response.status_code == 404 and response.json()["error"]["code"] == "job_not_found"
        unknown = await api.request(method, path.replace(job_id, "0" * 32), headers=auth("alice"))
        assert unknown.status_code == 404 and unknown.json() == response.json()  # indistinguishable
        malformed = await api.request(method, path.replace(job_id, "../../etc"), headers=auth("alice"))
        assert malformed.status_code == 404
    assert (await api.get("/api/jobs", headers=auth("mallory"))).json() == {"jobs": [], "next_cursor": None}
    assert (await api.get(f"/api/jobs/{job_id}", headers=auth("alice"))).json()["status"] == "queued"


async def test_list_recent_jobs_newest_first_with_limit(api):
    ids = [await submit(api, content=f"text {i}") for i in range(5)]
    await submit(api, "bob")
    listed = (await api.get("/api/jobs", headers=auth())).json()["jobs"]
    assert [job["job_id"] for job in listed] == ids[::-1]
    assert [j["job_id"] for j in (await api.get("/api/jobs?limit=2", headers=auth())).json()["jobs"]] == ids[::-1][:2]
    for bad in ("0", "201", "x"):
        assert (await api.get(f"/api/jobs?limit={bad}", headers=auth())).status_code == 422


async def test_cancel_a_queued_job_then_409(api):
    job_id = await submit(api)
    response = await api.delete(f"/api/jobs/{job_id}", headers=auth())
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "cancelled" and body["error"]["code"] == "cancelled"
    again = await api.delete(f"/api/jobs/{job_id}", headers=auth())
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_terminal"
    # a worker that picks the message up later finds it cancelled and does nothing
    store = JobStore(api.redis)
    assert store.claim(job_id, 5).outcome == "terminal"


async def test_cancel_a_succeeded_job_is_409(api):
    job_id = await submit(api)
    store = JobStore(api.redis)
    claim = store.claim(job_id, 5)
    assert store.succeed(job_id, claim.run_token, {"cards": []})
    response = await api.delete(f"/api/jobs/{job_id}", headers=auth())
    assert response.status_code == 409 and "succeeded" in response.json()["error"]["message"]
    job = (await api.get(f"/api/jobs/{job_id}", headers=auth())).json()
    assert job["status"] == "succeeded" and job["result"]["cards"] == [] and job["attempts"] == 1


# --- SSE -----------------------------------------------------------------------------------


def parse_sse(text: str) -> list[dict]:
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        event: dict = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            event[name] = value[1:] if value.startswith(" ") else value
        if "data" in event:
            events.append(event)
    return events


def drive(redis_url: str, job_id: str, first_event: threading.Event) -> None:
    """What a worker does, with the sync store, from another thread, once the stream is live."""
    assert first_event.wait(10)
    client = redis.Redis.from_url(redis_url)
    store = JobStore(client)
    claim = store.claim(job_id, 30)
    time.sleep(0.05)
    store.update_progress(job_id, claim.run_token, {"step": "part-1", "steps_done": 1, "steps": 2})
    time.sleep(0.05)
    store.succeed(job_id, claim.run_token, {"cards": [{"front": "done", "back": "yes"}], "count": 1})
    client.close()


async def asgi_stream(app, path: str, headers: dict[str, str], on_body) -> tuple[int, dict, bytes]:
    """GET ``path`` on the ASGI app itself, seeing the body as it is sent (httpx's
    ASGITransport only returns a response once the app has finished)."""
    done = asyncio.Event()
    sent: list[dict] = []

    async def receive():
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)
        if message["type"] == "http.response.body":
            on_body(message.get("body", b""))
            if not message.get("more_body"):
                done.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }
    await app(scope, receive, send)
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


async def test_sse_follows_queued_running_succeeded(api, redis_url):
    job_id = await submit(api)
    first_event = threading.Event()
    worker = threading.Thread(target=drive, args=(redis_url, job_id, first_event))
    worker.start()

    def on_body(chunk: bytes):
        if b"data:" in chunk:
            first_event.set()

    status, headers, body = await asyncio.wait_for(
        asgi_stream(api.app, f"/api/jobs/{job_id}/events", auth(), on_body), timeout=20
    )
    worker.join()
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = parse_sse(body.decode())
    states = [orjson.loads(e["data"]) for e in events]
    statuses = [s["status"] for s in states]
    assert statuses[0] == "queued" and statuses[-1] == "succeeded"
    assert "running" in statuses
    assert any((s.get("progress") or {}).get("steps_done") == 1 for s in states)
    assert states[-1]["result"]["cards"] == [{"front": "done", "back": "yes"}]
    assert [int(e["id"]) for e in events] == list(range(1, len(events) + 1))
    assert api.redis.pubsub_numsub(keys.job_events(job_id))[0][1] == 0  # unsubscribed at the end


async def test_sse_on_a_finished_job_sends_its_state_and_ends(api):
    job_id = await submit(api)
    await api.delete(f"/api/jobs/{job_id}", headers=auth())
    response = await asyncio.wait_for(api.get(f"/api/jobs/{job_id}/events", headers=auth()), timeout=10)
    events = parse_sse(response.text)
    assert len(events) == 1 and orjson.loads(events[0]["data"])["status"] == "cancelled"


# --- health and metrics --------------------------------------------------------------------


async def test_health_detailed_reports_queues_and_live_workers(api):
    await submit(api)
    await api.post("/api/process-pdf", files={"file": ("a.pdf", PDF)}, headers=auth())
    body = (await api.get("/api/health/detailed")).json()
    assert body["status"] == "degraded" and body["workers"]["alive"] == 0
    assert (
        body["queues"]["ai"] == 1
        and body["queues"]["pdf"] == 1
        and set(body["queues"]) >= {"ai", "pdf", "speech", "ocr", "tts"}
    )
    assert body["redis"]["ok"] and body["redis"]["latency_ms"] >= 0
    now = time.time()
    api.redis.zadd(keys.workers_alive(), {"worker-a@host": now, "worker-old@host": now - 120})
    body = (await api.get("/api/health/detailed")).json()
    assert body["status"] == "ok" and body["workers"]["alive"] == 1
    assert body["workers"]["members"][0]["name"] == "worker-a@host"


async def test_health_detailed_is_503_when_redis_is_down(api_factory):
    client = await api_factory(redis_url="redis://127.0.0.1:1/0")
    response = await client.get("/api/health/detailed")
    assert response.status_code == 503 and response.json()["status"] == "down"
    assert (await client.get("/api/health")).status_code == 200
    response = await client.get("/api/jobs", headers=auth())
    assert response.status_code == 503 and response.json()["error"]["code"] == "service_unavailable"


async def test_metrics_count_requests_by_route_template(api):
    job_id = await submit(api)
    await api.get(f"/api/jobs/{job_id}", headers=auth())
    await api.get("/api/no-such-route")
    text = (await api.get("/metrics")).text
    assert 'unilingo_http_requests_total{method="GET",route="/api/jobs/{job_id}",status="200"}' in text
    assert 'route="/api/ai/generate-flashcards",status="202"' in text
    assert 'route="unmatched",status="404"' in text
    assert job_id not in text  # bounded labels: never the raw path
    assert "unilingo_http_request_duration_seconds_bucket" in text


async def test_openapi_and_docs(api):
    spec = (await api.get("/openapi.json")).json()
    for path in (
        "/api/ai/generate-flashcards",
        "/api/ai/generate-lesson",
        "/api/pronunciation-assess",
        "/api/process-image",
        "/api/process-pdf",
        "/api/audio/generate",
        "/api/jobs/{job_id}",
        "/api/jobs/{job_id}/events",
        "/api/jobs",
    ):
        assert path in spec["paths"], path
    assert "multipart/form-data" in spec["paths"]["/api/process-pdf"]["post"]["requestBody"]["content"]
    assert (await api.get("/docs")).status_code == 200


async def test_a_request_refused_by_the_user_quota_does_not_spend_the_ip_quota(api_factory):
    client = await api_factory(quota_ip="5/1m", quota_user_ai="1/1h")
    assert (await client.post("/api/ai/generate-lesson", json={"topic": "t"}, headers=auth("fay"))).status_code == 202
    for _ in range(3):
        refused = await client.post("/api/ai/generate-lesson", json={"topic": "t"}, headers=auth("fay"))
        assert refused.status_code == 429 and refused.headers["ratelimit-limit"] == "1"
    pdf = await submit_pdf(client, "fay")
    assert pdf.headers["ratelimit-limit"] == "5" and pdf.headers["ratelimit-remaining"] == "3"
