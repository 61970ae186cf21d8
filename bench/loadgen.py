"""Open-loop HTTP load generator, run as its own process so it never shares the API's core.

``python -m bench.loadgen --url URL --rate R --duration S --tokens FILE`` sends POSTs at a
fixed rate (requests are scheduled on the clock, not after the previous answer, so a slow
server cannot slow the load and hide its own latency: no coordinated omission) and prints
one JSON line: sent, status counts, latencies in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp


async def run(url: str, rate: float, duration: float, tokens: list[str], body: dict) -> dict:
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    payload = json.dumps(body).encode()
    connector = aiohttp.TCPConnector(limit=512, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one(i: int, scheduled: float):
            headers = {"Authorization": f"Bearer {tokens[i % len(tokens)]}", "Content-Type": "application/json"}
            try:
                async with session.post(url, data=payload, headers=headers) as response:
                    await response.read()
                    key = str(response.status)
            except aiohttp.ClientError as exc:
                key = type(exc).__name__
            # Latency from when the request was due, not when it was sent.
            latencies.append((time.perf_counter() - scheduled) * 1000)
            statuses[key] = statuses.get(key, 0) + 1

        total = int(rate * duration)
        start = time.perf_counter() + 0.05
        tasks = []
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, due)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return {"sent": total, "elapsed_s": elapsed, "statuses": statuses, "latencies_ms": latencies}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--tokens", required=True, help="file with one bearer token per line")
    parser.add_argument("--body", default='{"content": "Die Katze schläft auf dem Sofa.", "count": 5}')
    args = parser.parse_args()
    tokens = open(args.tokens).read().split()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(run(args.url, args.rate, args.duration, tokens, json.loads(args.body)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
