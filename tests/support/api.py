"""Helpers for the API tests: in-process apps (behind the ``api`` and ``api_factory`` fixtures of
tests/integration/conftest.py), real API processes, tokens, a webhook receiver.

The app runs in-process (httpx + ASGITransport) with its lifespan, on the real Redis of
``tests/conftest.py``; tests that need a real server start ``python -m api`` with uvicorn.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import redis

from devstack.ports import free_port, wait_for_port
from unilingo.settings import Settings
from unilingo.tokens import mint

ROOT = Path(__file__).resolve().parents[2]
SECRET = "integration-test-secret-integration-test-secret"

# Loose enough that only the quota tests meet the quotas.
BASE_SETTINGS = dict(
    supabase_jwt_secret=SECRET,
    quota_ip="100000/1m",
    quota_user_ai="100000/1h",
    quota_user_pronunciation="100000/1h",
    quota_user_read="100000/1m",
    max_text_chars=2_000,
    max_tts_chars=500,
    max_pdf_bytes=20_000,
    max_image_bytes=20_000,
    max_audio_bytes=20_000,
)

PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde"
WAV = (
    b"RIFF"
    + struct.pack("<I", 36 + 8)
    + b"WAVEfmt "
    + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
    + b"data"
    + struct.pack("<I", 8)
    + b"\x00" * 8
)


def token(user: str = "alice", **kwargs) -> str:
    return mint(user, secret=SECRET, **kwargs)


def auth(user: str = "alice", **kwargs) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user, **kwargs)}"}


def make_settings(redis_url: str, **overrides) -> Settings:
    return Settings(redis_url=redis_url, **{**BASE_SETTINGS, **overrides})


class ApiClient(httpx.AsyncClient):
    app = None
    redis: redis.Redis


async def open_api(redis_url: str, **overrides):
    """An in-process app with its lifespan running, and an httpx client on it."""
    from api.main import create_app

    app = create_app(make_settings(redis_url, **overrides))
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    client = ApiClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    client.app = app
    client.redis = redis.Redis.from_url(redis_url, socket_connect_timeout=1)
    return client, lifespan


# --- a real server -------------------------------------------------------------------------


class ApiProcess:
    """``python -m api`` (uvicorn, uvloop, httptools) on a free port."""

    def __init__(self, redis_url: str, log_dir: Path, **env):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "API_PORT": str(self.port),
            "API_HOST": "127.0.0.1",
            "SUPABASE_JWT_SECRET": SECRET,
            "QUOTA_IP": "100000/1m",
            "QUOTA_USER_READ": "100000/1m",
            "API_LOG_LEVEL": "warning",
            "PYTHONPATH": str(ROOT),
            **{k.upper(): str(v) for k, v in env.items()},
        }
        self.log = log_dir / f"api-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> ApiProcess:
        self._log = open(self.log, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "api"], cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT
        )
        try:
            wait_for_port(self.port, timeout=30)
        except TimeoutError:
            self.stop()
            raise AssertionError(f"the API did not start:\n{self.log.read_text()}") from None
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


# --- a webhook receiver --------------------------------------------------------------------


class Receiver:
    """A local HTTP server recording the webhooks it receives; answers from ``statuses``."""

    def __init__(self, statuses: list[int] | None = None):
        self.requests: list[dict] = []
        self.statuses = list(statuses or [])
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/unilingo"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class DripReceiver:
    """A receiver that answers one byte every ``interval`` seconds (the slow-loris of webhooks),
    counting how many deliveries it holds at once."""

    def __init__(self, interval: float = 0.5, drips: int = 120):
        self.active = self.peak = self.arrived = self.completed = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.arrived += 1
                    receiver.active += 1
                    receiver.peak = max(receiver.peak, receiver.active)
                try:
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % drips)
                    for _ in range(drips):
                        time.sleep(interval)
                        self.wfile.write(b".")
                        self.wfile.flush()
                    with receiver.lock:
                        receiver.completed += 1
                except OSError:
                    pass  # the sender gave up on us
                finally:
                    with receiver.lock:
                        receiver.active -= 1

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/slow"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
