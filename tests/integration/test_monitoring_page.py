"""``/monitoring`` in headless Chromium, and who may see the admin endpoints.

The page runs against a real stack (Redis, the sandbox, ``python -m api``, one worker for
``ai`` and ``pdf``) with some traffic: jobs that succeed, a user over the AI quota, TTS jobs
no worker takes, and Azure Vision's breaker opened by failed calls. Chromium (Debian's
``chromium``, driven over the DevTools protocol) opens ``/monitoring?token=<admin token>``
the way a person would: the token becomes an HttpOnly cookie and leaves the address bar, the
page fills itself from ``/monitoring/data`` and refreshes every 5 s. The figures it shows are
compared with the API's own JSON, and a screenshot is kept in ``tests/artifacts/`` (and, with
``UNILINGO_REFRESH_DOCS=1``, in ``docs/`` for the README: a test run leaves the tree as it was).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import redis

from devstack.processes import Service
from tests.samples import pdf_with_text
from tests.support.api import ApiProcess, auth, token
from tests.support.sandbox import worker_env
from unilingo import keys
from unilingo.limiter import Limiter

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
DOCS = ROOT / "docs"
ADMIN_ENDPOINTS = ["/api/metrics", "/api/admin/users/overview", "/api/admin/users/statistics", "/monitoring/data"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("Chromium is not installed (scripts/bootstrap.sh installs Debian's chromium)")


class DevTools:
    """A minimal Chrome DevTools Protocol client over the page's websocket."""

    def __init__(self, url: str):
        from websockets.sync.client import connect

        self.ws = connect(url, max_size=64 * 1024 * 1024, open_timeout=20)
        self.ids = itertools.count(1)

    def call(self, method: str, timeout: float = 30, **params):
        message_id = next(self.ids)
        self.ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self):
        self.ws.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    binary = chromium()
    profile = tmp_path_factory.mktemp("chromium")
    process = subprocess.Popen(
        [
            binary,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-extensions",
            "--hide-scrollbars",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "--window-size=1440,1000",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 30
    while not port_file.exists() or not port_file.read_text().strip():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail("Chromium did not start its DevTools endpoint")
        time.sleep(0.1)
    port = int(port_file.read_text().split()[0])
    pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json() if t["type"] == "page"]
    tools = DevTools(pages[0]["webSocketDebuggerUrl"])
    tools.call("Page.enable")
    tools.call("Runtime.enable")
    tools.call("Emulation.setDeviceMetricsOverride", width=1440, height=1000, deviceScaleFactor=1, mobile=False)
    yield tools
    tools.close()
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def live(redis_server, sandbox, tmp_path_factory):
    """The API and a worker with a little of everything going on."""
    workdir = tmp_path_factory.mktemp("monitoring")
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    with httpx.Client(base_url=sandbox.url) as sb:
        sb.delete("/_sandbox/faults")
    api = ApiProcess(redis_server.url, workdir, quota_user_ai="3/1h").start()
    port = int(sandbox.url.rsplit(":", 1)[1])
    before = set(client.zrange(keys.workers_alive(), 0, -1))
    worker = Service.python(
        "page-worker",
        "workers",
        log_dir=workdir,
        env=worker_env(redis_server.url, port, worker_queues="ai,pdf", worker_metrics_port=0),
        ready=lambda: bool(set(client.zrange(keys.workers_alive(), 0, -1)) - before),
    ).start(timeout=90)
    try:
        with httpx.Client(base_url=api.url, timeout=15) as http:
            ids = []
            for i in range(4):
                r = http.post(
                    "/api/process-pdf",
                    headers=auth("maria"),
                    files={"file": (f"{i}.pdf", pdf_with_text([f"Lesson {i}"]), "application/pdf")},
                )
                ids.append((r.json()["job_id"], "maria"))
            for i in range(5):  # 3 accepted, 2 over the quota
                r = http.post(
                    "/api/ai/generate-flashcards",
                    headers=auth("greedy"),
                    json={"content": f"Irregular verbs, set {i}", "count": 3},
                )
                if r.status_code == 202:
                    ids.append((r.json()["job_id"], "greedy"))
            for i in range(3):
                http.post("/api/audio/generate", headers=auth("li"), json={"text": f"Good morning {i}"})
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                states = [http.get(f"/api/jobs/{j}", headers=auth(u)).json()["status"] for j, u in ids]
                if all(s in ("succeeded", "failed") for s in states):
                    break
                time.sleep(0.5)
            else:
                raise AssertionError(f"jobs did not finish: {states}")
            # The API writes its share of the cluster totals once a second.
            deadline = time.monotonic() + 10
            while http.get("/api/metrics", headers=auth("ops", admin=True)).json()["jobs"]["submitted"] < 10:
                assert time.monotonic() < deadline, "the API's totals never reached Redis"
                time.sleep(0.2)
        # Azure Vision's breaker opens after five failed calls (Unilingo v1's threshold).
        limiter = Limiter(client)
        for _ in range(5):
            decision = limiter.acquire("azure-vision", holder="probe")
            limiter.release("azure-vision", decision.lease_id, "error")
        yield api
    finally:
        worker.stop()
        api.stop()
        client.close()


def test_monitoring_page_shows_live_figures(browser, live):
    admin = token("ops", admin=True)
    browser.call("Page.navigate", url=f"{live.url}/monitoring?token={admin}")

    def loaded() -> int:
        try:
            return int(browser.evaluate("document.body ? Number(document.body.getAttribute('data-loaded') || 0) : 0"))
        except AssertionError:
            return 0

    deadline = time.monotonic() + 30
    while loaded() < 1:
        assert time.monotonic() < deadline, browser.evaluate("document.documentElement.outerHTML")[:2000]
        time.sleep(0.2)

    # The token went into an HttpOnly cookie and out of the address bar.
    assert browser.evaluate("location.pathname + location.search") == "/monitoring"
    assert browser.evaluate("document.cookie") == ""
    cookies = browser.call("Network.getCookies", urls=[f"{live.url}/monitoring"])["cookies"]
    (cookie,) = [c for c in cookies if c["name"] == "unilingo_monitoring"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/monitoring"

    figures = browser.evaluate("""(() => {
        const text = id => document.getElementById(id).textContent;
        const rows = id => Array.from(document.querySelectorAll('#' + id + ' tr')).map(
            tr => Array.from(tr.children).map(td => td.textContent));
        return {requests: text('t-requests'), waiting: text('t-waiting'), workers: text('t-workers'),
                jobs: text('t-jobs'), quota: text('t-quota'), breakers: text('t-breakers'),
                errors: text('t-errors'), latency: text('t-latency'), updated: text('updated'),
                queues: rows('queues'), providers: rows('providers'), types: rows('jobtypes'), risky: rows('risky')};
    })()""")
    summary = httpx.get(f"{live.url}/api/metrics", headers=auth("ops", admin=True), timeout=10).json()
    assert int(figures["requests"].replace(",", "")) > 10
    assert figures["waiting"] == str(sum(q["depth"] for q in summary["queues"].values())) == "3"
    assert figures["workers"] == "2"  # one worker process, consuming ai and pdf
    assert figures["jobs"] == str(summary["jobs"]["succeeded"]) == "7"
    assert figures["quota"] == "2"
    assert figures["breakers"] == "1 open"
    assert figures["errors"].endswith("%") and figures["latency"].endswith("ms")
    assert figures["updated"].startswith("updated ")
    queues = {row[0]: row for row in figures["queues"]}
    assert set(queues) == {"ai", "ocr", "pdf", "speech", "tts"}
    assert queues["tts"][1] == "3" and queues["tts"][4] == "0"
    providers = {row[0]: row for row in figures["providers"]}
    assert providers["azure-vision"][1] == "open" and providers["openai"][1] == "closed"
    assert providers["openai"][3].endswith("/ 50") and providers["openai"][4].endswith("/ 75,000")
    types = {row[0]: row for row in figures["types"]}
    assert types["pdf"][2] == "4" and types["flashcards"][2] == "3"
    assert figures["risky"][0][0] == "greedy"

    # Live: the next refresh brings new figures without a reload.
    before = loaded()
    requests_before = int(figures["requests"].replace(",", ""))
    deadline = time.monotonic() + 15
    while loaded() <= before:
        assert time.monotonic() < deadline, "the page did not refresh itself"
        time.sleep(0.2)
    after = int(browser.evaluate("document.getElementById('t-requests').textContent").replace(",", ""))
    assert after > requests_before  # its own polling counts as traffic
    assert browser.evaluate("document.getElementById('t-rps').textContent") not in ("…", "")

    # A screenshot of the whole page, for the test artifacts and the README.
    height = int(browser.evaluate("Math.ceil(document.documentElement.scrollHeight)"))
    browser.call("Emulation.setDeviceMetricsOverride", width=1440, height=height, deviceScaleFactor=1, mobile=False)
    time.sleep(0.3)
    shot = base64.b64decode(browser.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"])
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 20_000
    for folder in (ARTIFACTS, DOCS) if os.environ.get("UNILINGO_REFRESH_DOCS") == "1" else (ARTIFACTS,):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "monitoring.png").write_bytes(shot)


def test_monitoring_page_asks_for_a_token_and_refuses_non_admins(live):
    with httpx.Client(base_url=live.url, timeout=10, follow_redirects=False) as http:
        response = http.get("/monitoring")
        assert response.status_code == 401 and "text/html" in response.headers["content-type"]
        assert 'name="token"' in response.text and "Content-Security-Policy" in response.headers
        response = http.get("/monitoring", params={"token": token("maria")})
        assert response.status_code == 403 and "admin role" in response.text
        response = http.get("/monitoring", params={"token": "not-a-jwt"})
        assert response.status_code == 401
        response = http.post("/monitoring", data={"token": token("ops", admin=True)})
        assert response.status_code == 303 and response.headers["location"] == "/monitoring"
        assert "httponly" in response.headers["set-cookie"].lower()
        page = http.get("/monitoring", cookies={"unilingo_monitoring": token("ops", admin=True)})
        # Its script and style are the API's own files, and the policy allows nothing else (no inline script).
        policy = page.headers["content-security-policy"]
        assert page.status_code == 200 and "script-src 'self';" in policy and "unsafe-inline" not in policy
        assert '<script src="/monitoring/static/monitoring.js">' in page.text
        assert http.get("/monitoring/static/monitoring.js").status_code == 200
        assert http.get("/monitoring", headers=auth("ops", admin=True)).status_code == 200


@pytest.mark.parametrize("path", ADMIN_ENDPOINTS)
async def test_admin_endpoints_refuse_anonymous_and_non_admins(api_factory, path):
    api = await api_factory()
    anonymous = await api.get(path)
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer")
    assert (await api.get(path, headers={"Authorization": "Bearer nonsense"})).status_code == 401
    user = await api.get(path, headers=auth("maria"))
    assert user.status_code == 403 and user.json()["error"]["code"] == "forbidden"
    assert (await api.get(path, headers=auth("ops", admin=True))).status_code == 200


async def test_status_endpoints_are_for_any_signed_in_user(api_factory):
    api = await api_factory()
    for path, provider in (("/api/ai/status", "openai"), ("/api/pronunciation/status", "azure-speech")):
        assert (await api.get(path)).status_code == 401
        body = (await api.get(path, headers=auth("maria"))).json()
        assert body["service"] == provider and body["status"] == "operational" and body["revision"] == 0
        assert set(body) >= {"limits", "budget", "in_flight", "breaker", "deferred_jobs", "queue", "revision", "policy"}


async def test_the_admin_ip_allowlist(api_factory):
    elsewhere = await api_factory(admin_ip_allowlist=["10.0.0.0/8", "fd00::/8"])
    for path in ADMIN_ENDPOINTS:
        refused = await elsewhere.get(path, headers=auth("ops", admin=True))
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "ip_not_allowed", path
    page = await elsewhere.get("/monitoring", headers=auth("ops", admin=True))
    assert page.status_code == 403 and "not served to this address" in page.text
    here = await api_factory(admin_ip_allowlist=["127.0.0.0/8"])  # the test client's address
    assert (await here.get("/api/admin/users/overview", headers=auth("ops", admin=True))).status_code == 200
    # the status endpoints are not admin endpoints
    assert (await elsewhere.get("/api/ai/status", headers=auth("maria"))).status_code == 200


@pytest.mark.parametrize(
    "path, rendered",
    [
        ("/docs", "document.querySelectorAll('.opblock').length"),  # Swagger UI: one block per operation
        ("/redoc", "document.querySelectorAll('[data-section-id^=\"operation/\"]').length"),  # ReDoc: one section each
    ],
)
def test_api_docs_render_from_the_api_alone(browser, live, path, rendered):
    """The documentation pages draw every operation with scripts the API serves: no CDN, no internet."""
    browser.call("Page.navigate", url=f"{live.url}{path}")
    deadline = time.monotonic() + 30
    while not (browser.evaluate(f"document.readyState === 'complete' && {rendered}") or 0) > 10:
        assert time.monotonic() < deadline, browser.evaluate("document.documentElement.outerHTML")[:2000]
        time.sleep(0.2)
    # Scripts, styles and the OpenAPI document; ReDoc's footer links an <img> of Redocly's logo,
    # which simply stays blank offline.
    loaded = browser.evaluate(
        "performance.getEntriesByType('resource').filter(r => r.initiatorType !== 'img').map(r => r.name)"
    )
    assert f"{live.url}/openapi.json" in loaded and all(url.startswith(live.url) for url in loaded), loaded


async def test_the_monitoring_forms_refuse_requests_from_other_sites(api_factory):
    api = await api_factory()
    admin = {"token": token("ops", admin=True)}
    for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}):
        signed_in = await api.post("/monitoring", data=admin, headers=headers)
        assert signed_in.status_code == 403 and "set-cookie" not in signed_in.headers, headers  # no login CSRF
        signed_out = await api.post("/monitoring/sign-out", headers=headers)
        assert signed_out.status_code == 403 and "set-cookie" not in signed_out.headers, headers  # no logout CSRF
    same_site = {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
    assert (await api.post("/monitoring", data=admin, headers=same_site)).status_code == 303
    assert (await api.post("/monitoring/sign-out", headers=same_site)).status_code == 303
