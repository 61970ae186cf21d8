"""Quota rates, RateLimit headers and the client address (no I/O)."""

from __future__ import annotations

import pytest

from unilingo.quota import QuotaResult, Rate, client_ip, parse_rate, rate_limit_headers


@pytest.mark.parametrize(
    "text, rate",
    [
        ("100/15m", Rate(100, 900)),
        ("200/1h", Rate(200, 3600)),
        ("100/1h", Rate(100, 3600)),
        ("10/s", Rate(10, 1)),
        ("10/second", Rate(10, 1)),
        ("5 per 2 minutes", Rate(5, 120)),
        (" 7 / 3d ", Rate(7, 3 * 86400)),
        ("1/H", Rate(1, 3600)),
    ],
)
def test_rates_parse(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "100", "100/", "0/1m", "10/0m", "-1/m", "10/fortnight", "ten/m", "10/1.5m"])
def test_bad_rates_are_refused(text):
    with pytest.raises(ValueError, match="not a rate"):
        parse_rate(text)


def test_rates_print_back_in_their_own_notation():
    assert [str(parse_rate(t)) for t in ("100/15m", "200/1h", "10/s", "3/90s", "1/2d")] == [
        "100/15m",
        "200/1h",
        "10/1s",
        "3/90s",
        "1/2d",
    ]


def test_headers_of_an_admitted_request():
    result = QuotaResult(
        allowed=True, limit=100, remaining=57, reset_seconds=412.2, retry_after=0.0, window_seconds=900
    )
    assert rate_limit_headers(result) == {
        "RateLimit-Limit": "100",
        "RateLimit-Remaining": "57",
        "RateLimit-Reset": "413",
        "RateLimit-Policy": "100;w=900",
    }


def test_headers_of_a_refused_request_carry_retry_after_rounded_up():
    result = QuotaResult(allowed=False, limit=10, remaining=0, reset_seconds=0.2, retry_after=0.2, window_seconds=1)
    headers = rate_limit_headers(result)
    assert headers["Retry-After"] == "1" and headers["RateLimit-Remaining"] == "0" and headers["RateLimit-Reset"] == "1"


PROXIES = ["10.0.0.0/8", "2001:db8:ff::/48"]


@pytest.mark.parametrize(
    "remote, xff, expected",
    [
        # no trusted proxy between us and the client: the peer, whatever the header says
        ("203.0.113.9", "1.2.3.4", "203.0.113.9"),
        ("203.0.113.9", None, "203.0.113.9"),
        # through one trusted proxy: the address it appended
        ("10.0.0.2", "198.51.100.7", "198.51.100.7"),
        # the client forged entries to the left: ignored
        ("10.0.0.2", "1.1.1.1, 2.2.2.2, 198.51.100.7", "198.51.100.7"),
        # through two trusted proxies
        ("10.0.0.2", "6.6.6.6, 198.51.100.7, 10.1.2.3", "198.51.100.7"),
        # every hop trusted: the leftmost one is the best we know
        ("10.0.0.2", "10.9.9.9, 10.1.2.3", "10.9.9.9"),
        # a trusted peer without a header is itself the client
        ("10.0.0.2", None, "10.0.0.2"),
        ("10.0.0.2", "", "10.0.0.2"),
        # ports, brackets and IPv4-mapped IPv6 as proxies write them
        ("10.0.0.2", "198.51.100.7:5411", "198.51.100.7"),
        ("10.0.0.2", "[2001:db8::1]:443", "2001:db8::1"),
        ("::ffff:10.0.0.2", "::ffff:198.51.100.7", "198.51.100.7"),
        ("2001:db8:ff::5", "2001:db8::1", "2001:db8::1"),
        # garbage where a trusted proxy should have written an address: stop at the last good hop
        ("10.0.0.2", "198.51.100.7, not-an-ip", "10.0.0.2"),
        ("10.0.0.2", "not-an-ip, 10.3.3.3", "10.3.3.3"),
    ],
)
def test_client_ip_believes_forwarded_for_only_through_trusted_proxies(remote, xff, expected):
    assert client_ip(remote, xff, PROXIES) == expected


def test_client_ip_joins_repeated_headers_in_order():
    assert client_ip("10.0.0.2", ["5.5.5.5, 198.51.100.7", "10.4.4.4"], PROXIES) == "198.51.100.7"


def test_client_ip_without_trusted_proxies_ignores_the_header():
    assert client_ip("10.0.0.2", "198.51.100.7", []) == "10.0.0.2"


def test_client_ip_without_a_peer_address():
    assert client_ip(None, "198.51.100.7", PROXIES) == "unknown"
    assert client_ip("testclient", None, PROXIES) == "testclient"  # Starlette's TestClient
