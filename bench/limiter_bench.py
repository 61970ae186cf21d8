"""Limiter cost: our provider permits and client quotas beside the ``limits`` library.

One process, one private Redis (``devstack.redis.RedisServer``, AOF off so that the disk
does not set the pace), every implementation measured in the same run. Many short rounds,
the implementations in a fresh random order each round, so that a noisy neighbour on the
machine hits all of them alike; the table shows medians. Each round times a sequential loop
of decisions on one connection, so decisions per second is also the inverse of latency.

Round trips are counted at the client (every request written to the socket, a pipeline
counting once); Redis commands at the server (``INFO commandstats`` deltas, which include
the commands a Lua script runs).

    python -m bench.limiter_bench [--rounds 15] [--ops 1000]    (or LIMITER_BENCH_ROUNDS/_OPS)

Writes ``bench/results/limiter.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import limits
import limits.aio.storage
import limits.aio.strategies
import limits.storage
import limits.strategies
import redis
import redis.asyncio

from devstack.redis import RedisServer
from unilingo.limiter import Limiter
from unilingo.policy import PolicyStore, ProviderPolicy
from unilingo.quota import AsyncClientQuota, ClientQuota

RESULTS = Path(__file__).resolve().parent / "results" / "limiter.md"
IP_QUOTA = "100/15m"  # Unilingo v1's IP quota
USER_QUOTA = "200/1h"  # Unilingo v1's per-user AI quota
SUBJECTS = 200  # admitted workload: requests spread over this many clients, none over quota


class _Counted:
    """Counts requests written to Redis, whatever the client sends them for."""

    sent = 0


class CountingConnection(redis.Connection):
    def send_packed_command(self, command, check_health=True):
        _Counted.sent += 1
        return super().send_packed_command(command, check_health)


class AsyncCountingConnection(redis.asyncio.Connection):
    async def send_packed_command(self, command, check_health=True):
        _Counted.sent += 1
        return await super().send_packed_command(command, check_health)


@dataclass
class Case:
    workload: str
    name: str
    op: Callable[[int], object] | Callable[[int], Awaitable[object]]
    is_async: bool = False
    setup: Callable[[], None] | None = None  # before each round, on a flushed Redis
    rates: list[float] = field(default_factory=list)
    client_cpu: list[float] = field(default_factory=list)  # µs per decision
    server_cpu: list[float] = field(default_factory=list)  # µs per decision
    trips: list[float] = field(default_factory=list)
    commands: list[float] = field(default_factory=list)


def _server_commands(admin: redis.Redis) -> int:
    stats = admin.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k not in ("cmdstat_info",))


def _server_cpu(admin: redis.Redis) -> float:
    """CPU seconds Redis's main thread has used: its cost, whatever else the machine runs."""
    cpu = admin.info("cpu")
    return cpu["used_cpu_user_main_thread"] + cpu["used_cpu_sys_main_thread"]


def _measure(case: Case, admin: redis.Redis, loop: asyncio.AbstractEventLoop, ops: int) -> None:
    admin.flushall()  # scripts stay cached; keys start empty for every implementation
    if case.setup:
        case.setup()
    if case.is_async:

        async def run(n: int, offset: int) -> None:
            for i in range(n):
                await case.op(offset + i)

        go = lambda n, offset: loop.run_until_complete(run(n, offset))  # noqa: E731
    else:

        def go(n: int, offset: int) -> None:
            for i in range(n):
                case.op(offset + i)

    go(50, 0)  # warm up: connections made, scripts loaded
    sent, commands, server_cpu = _Counted.sent, _server_commands(admin), _server_cpu(admin)
    client_cpu, started = time.process_time(), time.perf_counter()
    go(ops, 50)
    elapsed, client_cpu = time.perf_counter() - started, time.process_time() - client_cpu
    server_cpu = _server_cpu(admin) - server_cpu
    case.trips.append((_Counted.sent - sent) / ops)
    case.commands.append((_server_commands(admin) - commands) / ops)
    case.rates.append(ops / elapsed)
    case.client_cpu.append(client_cpu / ops * 1e6)
    case.server_cpu.append(server_cpu / ops * 1e6)


def build_cases(url: str, loop: asyncio.AbstractEventLoop) -> list[Case]:
    pool = redis.ConnectionPool.from_url(url, connection_class=CountingConnection)
    client = redis.Redis(connection_pool=pool)
    async_client = loop.run_until_complete(_async_client(url))

    moving = limits.strategies.MovingWindowRateLimiter(limits.storage.RedisStorage(url, connection_pool=pool))
    async_moving = limits.aio.strategies.MovingWindowRateLimiter(
        limits.aio.storage.RedisStorage(
            "async+" + url,
            implementation="redispy",  # the client the API uses (coredis is not installed)
            connection_pool=redis.asyncio.ConnectionPool.from_url(url, connection_class=AsyncCountingConnection),
        )
    )
    ip_item = limits.parse("100/15 minutes")
    user_item = limits.parse("200/hour")
    quota, async_quota = ClientQuota(client), AsyncClientQuota(async_client)
    limiter = Limiter(client)
    store = PolicyStore(client)

    # A permit workload that admits every call yet runs every check: rate, burst, tokens,
    # in flight, breaker; release reconciles tokens.
    roomy = ProviderPolicy(
        provider="openai",
        requests_per_minute=1_000_000,
        burst=500_000,
        tokens_per_minute=100_000_000,
        max_in_flight=100_000,
    )
    roomy_item = limits.parse("1000000/minute")

    def permit_cycle(i: int) -> None:
        decision = limiter.acquire("openai", tokens=1000, holder="bench")
        limiter.release("openai", decision.lease_id, "success", actual_tokens=900)

    def spend_quota() -> None:  # the refused workloads start with the budget spent
        for _ in range(100):
            quota.hit("ip", "greedy", IP_QUOTA)
            moving.hit(ip_item, "ip", "greedy")

    def spend_openai() -> None:  # Unilingo v1's openai policy, its rate budget used up
        for _ in range(50):
            decision = limiter.acquire("openai")
            if decision.granted:
                limiter.release("openai", decision.lease_id, "success")
            moving.hit(fifty, "openai")

    fifty = limits.parse("50/minute")
    return [
        Case(
            "client quota, admitted (100/15m, 200 clients)",
            "limits moving window",
            lambda i: moving.hit(ip_item, "ip", str(i % SUBJECTS)),
        ),
        Case(
            "client quota, admitted (100/15m, 200 clients)",
            "unilingo ClientQuota.hit",
            lambda i: quota.hit("ip", str(i % SUBJECTS), IP_QUOTA),
        ),
        Case(
            "client quota, admitted, asyncio",
            "limits.aio moving window",
            lambda i: async_moving.hit(ip_item, "ip", str(i % SUBJECTS)),
            is_async=True,
        ),
        Case(
            "client quota, admitted, asyncio",
            "unilingo AsyncClientQuota.hit",
            lambda i: async_quota.hit("ip", str(i % SUBJECTS), IP_QUOTA),
            is_async=True,
        ),
        # What the API does per AI submission: the IP quota and the user's AI quota. `limits`
        # needs a call per quota (and on a refusal by the second the first is already spent);
        # ours takes both in one script, all or nothing.
        Case(
            "IP + user quota per submission (two quotas)",
            "limits moving window, two hits",
            lambda i: (
                moving.hit(ip_item, "ip", f"s{i % SUBJECTS}") and moving.hit(user_item, "user", f"s{i % SUBJECTS}")
            ),
        ),
        Case(
            "IP + user quota per submission (two quotas)",
            "unilingo ClientQuota.hit_all",
            lambda i: quota.hit_all(
                [("ip", f"s{i % SUBJECTS}", IP_QUOTA), ("user_ai", f"s{i % SUBJECTS}", USER_QUOTA)]
            ),
        ),
        Case(
            "client quota, refused (one client over quota)",
            "limits moving window",
            lambda i: moving.hit(ip_item, "ip", "greedy"),
            setup=spend_quota,
        ),
        Case(
            "client quota, refused (one client over quota)",
            "unilingo ClientQuota.hit",
            lambda i: quota.hit("ip", "greedy", IP_QUOTA),
            setup=spend_quota,
        ),
        Case(
            "provider permit, admitted", "limits moving window (rate only)", lambda i: moving.hit(roomy_item, "openai")
        ),
        Case(
            "provider permit, admitted",
            "unilingo acquire (all checks), slot kept",
            lambda i: limiter.acquire("openai", tokens=1000, holder="bench"),
            setup=lambda: store.write(roomy),
        ),
        Case(
            "provider permit, admitted",
            "unilingo acquire + release (all checks)",
            permit_cycle,
            setup=lambda: store.write(roomy),
        ),
        Case(
            "provider permit, refused (rate spent, default openai policy)",
            "limits moving window (rate only)",
            lambda i: moving.hit(fifty, "openai"),
            setup=spend_openai,
        ),
        Case(
            "provider permit, refused (rate spent, default openai policy)",
            "unilingo acquire",
            lambda i: limiter.acquire("openai"),
            setup=spend_openai,
        ),
    ]


async def _async_client(url: str) -> redis.asyncio.Redis:
    return redis.asyncio.Redis(
        connection_pool=redis.asyncio.ConnectionPool.from_url(url, connection_class=AsyncCountingConnection)
    )


def render(cases: list[Case], rounds: int, ops: int, redis_version: str, load: float) -> str:
    lines = [
        "# Limiter cost: unilingo beside the `limits` library",
        "",
        f"One process, sequential decisions on one connection, {rounds} rounds of {ops} decisions each "
        f"(medians shown), one private Redis {redis_version} with AOF off, all implementations in the same "
        f"run, in a fresh random order each round. Python {platform.python_version()}, {platform.machine()}, "
        f"`limits` {limits.__version__}, redis-py {redis.__version__}; {os.cpu_count()} CPUs, load average "
        f"{load:.1f} at the end of the run (other work on the machine slows every row alike, the ratios "
        "hold better than the absolute figures).",
        "",
        "A *decision* is one `hit` for the client quotas and one `acquire` + `release` cycle for "
        "provider permits (the release is a second round trip: it frees the slot, feeds the breaker "
        "and reconciles tokens, none of which `limits` has). CPU is the benchmark process's CPU time "
        "plus Redis's main thread's (`INFO cpu`): what a decision costs, which a busy machine does not "
        "inflate the way it inflates wall-clock rates. Round trips are counted at the client, Redis "
        "commands at the server (`INFO commandstats`, script-internal commands included).",
        "",
        "| workload | implementation | decisions/s | vs `limits` | CPU µs / decision: client + Redis "
        "| vs `limits` | round trips / decision | Redis commands / decision |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    baseline: dict[str, tuple[float, float]] = {}
    for case in cases:
        rate = statistics.median(case.rates)
        client, server = statistics.median(case.client_cpu), statistics.median(case.server_cpu)
        base_rate, base_cpu = baseline.setdefault(case.workload, (rate, client + server))
        lines.append(
            f"| {case.workload} | {case.name} | {rate:,.0f} | {rate / base_rate:.2f}× "
            f"| {client:.0f} + {server:.0f} = {client + server:.0f} | {(client + server) / base_cpu:.2f}× "
            f"| {statistics.median(case.trips):.2f} | {statistics.median(case.commands):.1f} |"
        )
    lines += [
        "",
        "What the figures compare: `limits`' moving window is a Lua script over a Redis list holding "
        "the window's timestamps, stamped with the *client's* clock; ours are Lua scripts over sorted "
        "sets stamped with Redis's `TIME` (one clock for every replica). The provider permit checks "
        "suspension, pause, breaker, rate, burst, tokens and in-flight leases in one round trip where "
        "`limits` checks a rate only; the client quota is the like-for-like comparison.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("LIMITER_BENCH_ROUNDS", "15")))
    parser.add_argument(
        "--ops",
        type=int,
        default=int(os.environ.get("LIMITER_BENCH_OPS", "1000")),
        help="decisions per round per implementation",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    # `python -m bench` calls main() with its own command line: that one is not ours
    args = parser.parse_args([] if argv is None else argv)

    loop = asyncio.new_event_loop()
    with RedisServer(appendonly=False) as server:
        admin = redis.Redis.from_url(server.url)
        cases = build_cases(server.url, loop)
        order = random.Random(1)
        for round_ in range(args.rounds):
            for case in order.sample(cases, len(cases)):
                _measure(case, admin, loop, args.ops)
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        load = os.getloadavg()[0]
        report = render(cases, args.rounds, args.ops, admin.info("server")["redis_version"], load)
        admin.close()
    loop.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(report)
    print(f"written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
