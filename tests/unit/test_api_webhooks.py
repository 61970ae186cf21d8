"""Webhook signatures and target checks (IP literals only: no DNS, no network)."""

from __future__ import annotations

import time

import pytest

from unilingo import webhooks
from unilingo.webhooks import WebhookTargetError, check_target, sign, verify

SECRET = "s3cret"


def test_sign_and_verify_round_trip():
    body = b'{"job_id":"abc","status":"succeeded"}'
    ts = int(time.time())
    header = sign(SECRET, ts, body)
    assert header.startswith(f"t={ts},v1=") and len(header.split("v1=")[1]) == 64
    assert verify(SECRET, header, body)
    assert verify(SECRET, header, body.decode())  # str or bytes alike


def test_verify_refuses_tampering_wrong_secret_and_stale_timestamps():
    body = b'{"a":1}'
    ts = int(time.time())
    header = sign(SECRET, ts, body)
    assert not verify(SECRET, header, b'{"a":2}')
    assert not verify("other", header, body)
    old = sign(SECRET, ts - 3600, body)
    assert not verify(SECRET, old, body, tolerance_s=300)
    assert verify(SECRET, old, body, tolerance_s=7200)
    for bad in ("", "garbage", f"t={ts}", "v1=abc", f"t=x,v1={'0' * 64}"):
        assert not verify(SECRET, bad, body)


def test_verify_accepts_any_of_several_signatures():
    body = b"{}"
    ts = int(time.time())
    header = f"t={ts},v1={'0' * 64},v1={webhooks.signature(SECRET, ts, body)}"
    assert verify(SECRET, header, body)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://127.8.9.10:8080/hook",
        "http://[::1]/hook",
        "http://10.1.2.3/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data",  # cloud metadata: link-local
        "http://100.64.0.1/",  # carrier-grade NAT
        "http://0.0.0.0/",
        "http://[::]/",
        "http://224.0.0.1/",
        "http://240.0.0.1/",  # reserved
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://[ff02::1]/",
        "http://[::ffff:127.0.0.1]/",  # IPv4-mapped loopback
        "http://[64:ff9b::7f00:1]/",  # NAT64 of 127.0.0.1
        "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    ],
)
def test_private_targets_are_refused(url):
    with pytest.raises(WebhookTargetError) as err:
        check_target(url, allow_private=False)
    assert err.value.code == "webhook_target_refused"


def test_private_targets_are_allowed_when_configured():
    target = check_target("http://127.0.0.1:9999/hook", allow_private=True)
    assert target.addresses == ("127.0.0.1",) and target.port == 9999


@pytest.mark.parametrize("url", ["https://8.8.8.8/hook", "http://[2001:4860:4860::8888]:8443/x?y=1"])
def test_public_literals_pass(url):
    assert check_target(url).addresses


@pytest.mark.parametrize(
    "url,code",
    [
        ("ftp://8.8.8.8/x", "webhook_invalid_scheme"),
        ("file:///etc/passwd", "webhook_invalid_scheme"),
        ("https://", "webhook_invalid_url"),
        ("not a url", "webhook_invalid_url"),
        ("http://8.8.8.8:99999/", "webhook_invalid_url"),
        ("https://8.8.8.8/" + "x" * 3000, "webhook_invalid_url"),
        ("", "webhook_invalid_url"),
    ],
)
def test_malformed_targets(url, code):
    with pytest.raises(WebhookTargetError) as err:
        check_target(url)
    assert err.value.code == code


def test_backoff_grows_with_jitter():
    first = [webhooks.backoff_seconds(1) for _ in range(50)]
    third = [webhooks.backoff_seconds(3) for _ in range(50)]
    assert all(webhooks.BACKOFF_BASE_SECONDS / 2 <= d <= webhooks.BACKOFF_BASE_SECONDS for d in first)
    assert min(third) > max(first)
    assert len(set(first)) > 1  # jittered
    assert webhooks.backoff_seconds(100) <= webhooks.BACKOFF_CAP_SECONDS
