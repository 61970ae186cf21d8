"""Signed webhooks on job completion: target checks, HMAC signatures and a durable outbox.

The API checks a ``webhook_url`` when a job is submitted (``check_target``); the script that
completes the job puts its delivery in the outbox (``unilingo.jobs``; ``enqueue`` does it by
hand); every worker's webhook loop (``workers.housekeeping.WebhookLoop``, apart from the loop
that renews heartbeats and promotes jobs) sends what is due (``deliver_due_async``), at most
``webhook_concurrency`` at once, each attempt within ``webhook_timeout_seconds`` in all. The
outbox is a Redis sorted set scored by the next attempt time, so a delivery survives restarts
and is retried with exponential backoff and jitter up to ``webhook_attempts`` times.

Signature: ``Unilingo-Signature: t=<unix ts>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>``
(the scheme Stripe popularised), with the timestamp repeated in ``Unilingo-Timestamp``.
A receiver checks it with ``verify`` (or the same three lines in any language) and refuses
a timestamp older than its tolerance, which defeats replays.

Server-side request forgery: a target is refused unless every address its host resolves to
is a public unicast address (no private, loopback, link-local, multicast, reserved,
unspecified, shared (CGNAT) address, IPv4 or IPv6, including IPv4 embedded in IPv6 through
mapping, NAT64, 6to4 or Teredo), unless ``webhook_allow_private`` is set. The check runs
again before every attempt, and the request is sent to the very address that was checked
(the Host header and TLS SNI keep the name), so a DNS answer that changes between the check
and the connection (DNS rebinding) cannot redirect it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson

from unilingo import backoff, keys
from unilingo.scripts import LuaScript, lua

log = logging.getLogger(__name__)

MAX_URL_LENGTH = 2048
SIGNATURE_HEADER = "Unilingo-Signature"
TIMESTAMP_HEADER = "Unilingo-Timestamp"
EVENT_HEADER = "Unilingo-Event"
DELIVERY_HEADER = "Unilingo-Delivery"
USER_AGENT = "Unilingo-Webhooks/1"

BACKOFF_BASE_SECONDS = 2.0  # attempt n waits about base * 4**(n-1), with jitter
BACKOFF_FACTOR = 4.0
BACKOFF_CAP_SECONDS = 3600.0
DEAD_LETTERS_KEPT = 1000


# --- target checks -------------------------------------------------------------------------


class WebhookTargetError(ValueError):
    """A webhook URL we refuse to call. ``code`` is machine-readable."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    found = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if ip in _NAT64:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def address_refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why ``ip`` is not a public unicast address, or None when it is one."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return "a scoped (link-local) IPv6 address"
        for inner in _embedded_ipv4(ip):
            reason = address_refusal(inner)
            if reason:
                return f"{reason} (embedded in {ip})"
    checks = (
        ("is_unspecified", "an unspecified address"),
        ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local address"),
        ("is_multicast", "a multicast address"),
        ("is_private", "a private address"),
        ("is_reserved", "a reserved address"),
    )
    for attribute, reason in checks:
        if getattr(ip, attribute):
            return reason
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED:
        return "a shared (carrier-grade NAT) address"
    if not ip.is_global:
        return "a non-global address"
    return None


@dataclass(frozen=True)
class Target:
    """A checked webhook URL and the addresses it was found to resolve to."""

    url: str
    scheme: str
    host: str  # as written in the URL, without brackets
    port: int
    addresses: tuple[str, ...]


def _parse(url: str) -> tuple[Any, str, int]:
    if not isinstance(url, str) or not url:
        raise WebhookTargetError("webhook_invalid_url", "the webhook URL is empty")
    if len(url) > MAX_URL_LENGTH:
        raise WebhookTargetError("webhook_invalid_url", f"the webhook URL is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise WebhookTargetError("webhook_invalid_url", "the webhook URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookTargetError("webhook_invalid_url", f"the webhook URL is malformed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise WebhookTargetError("webhook_invalid_scheme", "the webhook URL must use https or http")
    host = parts.hostname
    if not host:
        raise WebhookTargetError("webhook_invalid_url", "the webhook URL has no host")
    if port == 0:
        raise WebhookTargetError("webhook_invalid_url", "the webhook URL's port is 0")
    return parts, host, port or (443 if scheme == "https" else 80)


def check_target(url: str, allow_private: bool = False) -> Target:
    """Check a webhook URL; raise ``WebhookTargetError`` when it must not be called.

    Resolves the host (blocking DNS: call it from a thread in async code). Every address
    the name resolves to must be public unless ``allow_private``.
    """
    parts, host, port = _parse(url)
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            host.encode("idna")
        except UnicodeError:
            raise WebhookTargetError("webhook_invalid_url", "the webhook URL's host name is not valid") from None
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError, OSError) as exc:
            raise WebhookTargetError(
                "webhook_unresolvable", f"the webhook host {host!r} does not resolve ({exc})"
            ) from None
        addresses = []
        for info in infos:
            try:
                ip = ipaddress.ip_address(info[4][0])
            except ValueError:
                continue
            if ip not in addresses:
                addresses.append(ip)
        if not addresses:
            raise WebhookTargetError("webhook_unresolvable", f"the webhook host {host!r} has no IP address") from None
    if not allow_private:
        for ip in addresses:
            reason = address_refusal(ip)
            if reason:
                raise WebhookTargetError(
                    "webhook_target_refused",
                    f"the webhook host {host!r} resolves to {ip}, {reason}; only public addresses are allowed",
                )
    return Target(
        url=urlunsplit(parts),
        scheme=parts.scheme.lower(),
        host=host,
        port=port,
        addresses=tuple(str(a) for a in addresses),
    )


# --- signatures ----------------------------------------------------------------------------


def _bytes(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else bytes(body)


def signature(secret: str, timestamp: int | str, body: bytes | str) -> str:
    """The hex HMAC-SHA256 of ``f"{timestamp}.{body}"``."""
    message = f"{timestamp}.".encode() + _bytes(body)
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int | str, body: bytes | str) -> str:
    """``t=<timestamp>,v1=<hex hmac-sha256 of f'{timestamp}.{body}'>``."""
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def verify(secret: str, header: str, body: bytes | str, tolerance_s: float = 300.0, now: float | None = None) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` and its timestamp is recent.

    Accepts several ``v1=`` entries (a sender rotating its secret may send two).
    """
    if not header or not isinstance(header, str):
        return False
    timestamp: str | None = None
    candidates: list[str] = []
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t":
            timestamp = value
        elif name == "v1" and value:
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    now = time.time() if now is None else now
    if tolerance_s is not None and abs(now - ts) > tolerance_s:
        return False
    expected = signature(secret, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


# --- the outbox ----------------------------------------------------------------------------

# unilingo/lua/webhooks/: claim (due deliveries, leased, attempt counted: the fencing token),
# settle (done, retry or dead, for the current attempt only) and enqueue.
_CLAIM = lua("webhooks/claim")
_SETTLE = lua("webhooks/settle")
_ENQUEUE = lua("webhooks/enqueue")

_DELIVERY_TTL = 7 * 24 * 3600


def _run(client, script: LuaScript, keys_: list[str], args: list[Any]):
    """``script`` on ``client`` (a synchronous redis client)."""
    return script.bind(client)(keys=keys_, args=args)


def enqueue(client, job_id: str, url: str, delay: float = 0.0) -> None:
    """Put the completion webhook of ``job_id`` in the outbox (sync redis client).

    One delivery per job: enqueueing the same job again replaces its pending delivery.
    """
    now = time.time() + delay
    _run(client, _ENQUEUE, [keys.webhook_outbox(), keys.webhook(job_id)], [job_id, job_id, url, now, _DELIVERY_TTL])


_BACKOFF = backoff.equal_jitter(BACKOFF_BASE_SECONDS, BACKOFF_CAP_SECONDS, BACKOFF_FACTOR)


def backoff_seconds(attempt: int) -> float:
    """Delay after failed attempt ``attempt`` (1-based): exponential, with jitter in [d/2, d]."""
    return backoff.delay(_BACKOFF, attempt)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def pending(client) -> int:
    return int(client.zcard(keys.webhook_outbox()))


def _pinned_urls(target: Target) -> tuple[list[str], dict[str, str], dict[str, Any], httpx.BasicAuth | None]:
    """The checked addresses as URLs, and the Host header, TLS name and auth that keep the name."""
    parts = urlsplit(target.url)
    host_header = f"[{target.host}]" if ":" in target.host else target.host
    default_port = 443 if target.scheme == "https" else 80
    if target.port != default_port:
        host_header = f"{host_header}:{target.port}"
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    auth = httpx.BasicAuth(parts.username or "", parts.password or "") if parts.username is not None else None
    urls = []
    for ip in target.addresses:
        ip_host = f"[{ip}]" if ":" in ip else ip
        urls.append(urlunsplit((parts.scheme, f"{ip_host}:{target.port}", parts.path or "/", parts.query, "")))
    return urls, {"Host": host_header}, extensions, auth


async def _pinned_request(target: Target, body: bytes, headers: dict[str, str], timeout: float) -> httpx.Response:
    """POST to a checked address itself, keeping the name for Host and TLS (no rebinding).

    The addresses are tried in the resolver's order until one accepts the connection.
    """
    urls, host, extensions, auth = _pinned_urls(target)
    last_error: httpx.HTTPError | None = None
    async with httpx.AsyncClient(
        timeout=timeout, follow_redirects=False, trust_env=False, limits=httpx.Limits(max_keepalive_connections=0)
    ) as http:
        for url in urls:
            try:
                return await http.post(
                    url,
                    content=body,
                    headers={**headers, **host},
                    extensions=extensions,
                    auth=auth or httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.ConnectError as exc:  # next address; any other failure ends the attempt
                last_error = exc
    assert last_error is not None
    raise last_error


async def _attempt(client, settings, job_id: str, url: str, attempt: int) -> tuple[str, str]:
    """One delivery attempt. Returns (outcome, error): outcome 'done' | 'retry' | 'gone'."""
    from unilingo.jobs import decode_job

    job = decode_job(client.hgetall(keys.job(job_id)))
    if job is None:
        return "gone", "the job no longer exists"
    try:
        target = await asyncio.to_thread(check_target, url, settings.webhook_allow_private)  # blocking DNS
    except WebhookTargetError as exc:
        return "retry", f"{exc.code}: {exc.message}"
    body = orjson.dumps(job.public())
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: sign(settings.webhook_secret, timestamp, body),
        TIMESTAMP_HEADER: timestamp,
        EVENT_HEADER: f"job.{job.status.value}",
        DELIVERY_HEADER: f"{job_id}.{attempt}",
    }
    try:
        response = await _pinned_request(target, body, headers, settings.webhook_timeout_seconds)
    except httpx.HTTPError as exc:
        return "retry", f"{type(exc).__name__}: {exc}"
    if 200 <= response.status_code < 300:
        return "done", ""
    return "retry", f"HTTP {response.status_code}"


def deliver_due(client, settings, limit: int | None = None, now: float | None = None) -> int:
    """``deliver_due_async`` for synchronous callers; returns how many attempts were made."""
    return asyncio.run(deliver_due_async(client, settings, limit, now))


async def deliver_due_async(client, settings, limit: int | None = None, now: float | None = None) -> int:
    """Send the webhooks that are due, at most ``webhook_concurrency`` at once; returns how
    many attempts were made.

    Safe to call from any number of workers at once: each due delivery is claimed atomically
    by one of them. Each attempt, from the DNS check to the last byte of the answer, ends
    within ``webhook_timeout_seconds``: a receiver that answers a byte at a time is cut off at
    the deadline, not after a timeout per read.
    """
    now = time.time() if now is None else now
    concurrency = max(1, int(settings.webhook_concurrency))
    limit = concurrency if limit is None else max(1, limit)
    deadline = float(settings.webhook_timeout_seconds)
    rounds = -(-limit // concurrency)
    lease_until = now + deadline * (rounds + 1) + 10  # another worker retakes it only if this one died
    due_ids = [_text(d) for d in client.zrangebyscore(keys.webhook_outbox(), "-inf", now, start=0, num=limit)]
    if not due_ids:
        return 0
    claimed = _run(
        client, _CLAIM, [keys.webhook_outbox(), *(keys.webhook(d) for d in due_ids)], [now, lease_until, *due_ids]
    )
    if not claimed:
        return 0
    entries = [(_text(d), _text(j), _text(u), int(a)) for d, j, u, a in claimed]
    max_attempts = max(1, int(settings.webhook_attempts))
    slots = asyncio.Semaphore(concurrency)

    async def run(entry):
        delivery_id, job_id, url, attempt = entry
        if attempt > max_attempts:  # a worker died mid-send on the last attempt
            return entry, "dead", "attempts exhausted"
        async with slots:
            try:
                async with asyncio.timeout(deadline):
                    outcome, error = await _attempt(client, settings, job_id, url, attempt)
            except TimeoutError:
                outcome, error = "retry", f"no complete answer within {deadline:g} s"
            except Exception as exc:  # never let one delivery break the loop
                log.exception("webhook %s attempt %s crashed", delivery_id, attempt)
                outcome, error = "retry", f"{type(exc).__name__}: {exc}"
        if outcome == "retry" and attempt >= max_attempts:
            outcome = "dead"
        return entry, outcome, error

    results = await asyncio.gather(*(run(entry) for entry in entries))
    for (delivery_id, job_id, url, attempt), outcome, error in results:
        settle = "done" if outcome in ("done", "gone") else outcome
        due = time.time() + backoff_seconds(attempt) if settle == "retry" else 0
        dead = orjson.dumps({"job_id": job_id, "url": url, "attempts": attempt, "error": error, "at": time.time()})
        if settle == "retry":
            log.info("webhook for job %s attempt %s failed (%s); retrying", job_id, attempt, error)
        elif settle == "dead":
            log.warning("webhook for job %s given up after %s attempts (%s)", job_id, attempt, error)
        _run(
            client,
            _SETTLE,
            [keys.webhook_outbox(), keys.webhook(delivery_id), keys.webhook_dead()],
            [delivery_id, attempt, settle, due, error, dead, DEAD_LETTERS_KEPT],
        )
    return len(entries)
