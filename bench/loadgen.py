"""A lean HTTP/1.1 load generator: keep-alive connections, pre-built requests, per-request latency.

Runs as its own process so the client's CPU shows up as a separate process, not inside the API.
Prints one JSON line: {"requests", "seconds", "rps", "p50_ms", "p99_ms", "statuses"}.

    python bench/loadgen.py --port P --path /registry/heartbeat --requests requests.jsonl \\
        --concurrency 64 --duration 15
where each line of requests.jsonl is {"headers": {...}, "body": {...}}.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import statistics
import sys
import time
from pathlib import Path


def build(host: str, path: str, headers: dict[str, str], body: object) -> bytes:
    payload = json.dumps(body).encode()
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
    ]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if length:
        await reader.readexactly(length)
    return status


async def worker(host, port, requests, start_index, stride, deadline, latencies, statuses, limit):
    reader, writer = await asyncio.open_connection(host, port)
    i = start_index
    try:
        while time.perf_counter() < deadline and (limit is None or i < limit):
            request = requests[i % len(requests)]
            i += stride
            began = time.perf_counter()
            writer.write(request)
            status = await read_response(reader)
            latencies.append(time.perf_counter() - began)
            statuses[status] += 1
    finally:
        writer.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--requests", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--count", type=int, default=None, help="stop after this many requests in all")
    args = parser.parse_args()
    specs = [json.loads(line) for line in args.requests.read_text().splitlines() if line.strip()]
    requests = [build(args.host, args.path, s.get("headers", {}), s["body"]) for s in specs]
    latencies: list[float] = []
    statuses: collections.Counter[int] = collections.Counter()
    started = time.perf_counter()
    deadline = started + args.duration
    await asyncio.gather(
        *(
            worker(
                args.host, args.port, requests, n, args.concurrency, deadline, latencies, statuses, args.count
            )
            for n in range(args.concurrency)
        )
    )
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    print(
        json.dumps(
            {
                "requests": len(latencies),
                "seconds": round(elapsed, 3),
                "rps": round(len(latencies) / elapsed, 1),
                "p50_ms": round(statistics.median(ordered) * 1000, 2),
                "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))] * 1000, 2),
                "statuses": {str(k): v for k, v in sorted(statuses.items())},
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
