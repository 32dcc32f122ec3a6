"""Soak the real service: many clients for a long while, production settings (a script, not a test).

    .venv/bin/python benchmarks/soak.py [--seconds 60] [--clients 32] [--window 10]

Starts `python -m service` on the bundled model with its defaults (the serve-only interpreter
when .venv-serve exists, as bench_service.py does), and has `--clients` keep-alive connections
upload real ~500x375 JPEGs back to back. A 503 is the service shedding load: that client waits
the Retry-After delay, as a well-behaved client would, then goes on. Prints per window: status
counts, goodput (200s per second), p50/p99 latency of the 200s and the server's RSS; then the
totals and a verdict: only 200 and 503 may occur, and RSS in the last window must be within
5% of the first. Exits 1 when the verdict fails.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench_service import free_port, make_jpegs, multipart_request, rss_mb, wait_ready  # this script's own folder

REPO = Path(__file__).resolve().parents[1]
ALLOWED = {200, 503}
RSS_GROWTH_BOUND = 1.05


@dataclass
class Window:
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    ok_latencies: list[float] = field(default_factory=list)
    rss_mb: float = 0.0


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes]]:
    head = await reader.readuntil(b"\r\n\r\n")
    headers = dict(
        (name.strip().lower(), value.strip())
        for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:] if line)
    )
    await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return int(head[9:12]), headers


async def client(
    port: int, requests: list[bytes], offset: int, end: float, start: float, windows: list[Window], window_s: float
) -> None:
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    sent = offset
    while time.perf_counter() < end:
        if connection is None:
            connection = await asyncio.open_connection("127.0.0.1", port)
        reader, writer = connection
        begun = time.perf_counter()
        try:
            writer.write(requests[sent % len(requests)])
            status, headers = await read_response(reader)
        except (ConnectionError, asyncio.IncompleteReadError):
            status, headers = -1, {b"connection": b"close"}  # counted as "other": a failure
        sent += 1
        done = time.perf_counter()
        window = windows[min(int((done - start) / window_s), len(windows) - 1)]
        window.statuses[status] += 1
        if status == 200:
            window.ok_latencies.append(done - begun)
        if headers.get(b"connection", b"").lower() == b"close":
            writer.close()
            connection = None
        if status == 503:
            await asyncio.sleep(float(headers.get(b"retry-after", b"1")))


async def sample_rss(pid: int, start: float, windows: list[Window], window_s: float) -> None:
    for index, window in enumerate(windows):
        await asyncio.sleep(max(0.0, start + (index + 1) * window_s - time.perf_counter()))
        window.rss_mb = rss_mb(pid)


async def soak(
    pid: int, port: int, requests: list[bytes], clients: int, seconds: float, window_s: float
) -> list[Window]:
    windows = [Window() for _ in range(max(1, round(seconds / window_s)))]
    start = time.perf_counter()
    end = start + seconds
    await asyncio.gather(
        sample_rss(pid, start, windows, window_s),
        *(client(port, requests, i * 7, end, start, windows, window_s) for i in range(clients)),
    )
    return windows


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))] * 1000 if ordered else float("nan")


def report(windows: list[Window], window_s: float, seconds: float) -> bool:
    print(f"{'window':>10}{'200':>8}{'503':>8}{'other':>7}{'goodput/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'RSS MB':>9}")
    totals: collections.Counter[int] = collections.Counter()
    for index, w in enumerate(windows):
        totals.update(w.statuses)
        other = sum(n for status, n in w.statuses.items() if status not in ALLOWED)
        span = f"{index * window_s:.0f}-{(index + 1) * window_s:.0f} s"
        print(
            f"{span:>10}{w.statuses[200]:>8}{w.statuses[503]:>8}{other:>7}{w.statuses[200] / window_s:>11.1f}"
            f"{quantile(w.ok_latencies, 0.5):>9.1f}{quantile(w.ok_latencies, 0.99):>9.1f}{w.rss_mb:>9.1f}"
        )
    unexpected = {status: n for status, n in totals.items() if status not in ALLOWED}
    growth = windows[-1].rss_mb / windows[0].rss_mb
    print(f"status counts: {dict(sorted(totals.items()))}")
    print(f"goodput: {totals[200] / seconds:.1f} req/s over {seconds:.0f} s")
    print(f"RSS last/first window: {growth:.3f}")
    ok = not unexpected and growth <= RSS_GROWTH_BOUND
    verdict = "met" if ok else f"NOT met (unexpected statuses {unexpected}, RSS x{growth:.3f})"
    print(f"verdict (only 200/503, RSS last/first <= {RSS_GROWTH_BOUND}): {verdict}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--window", type=float, default=10, help="seconds per reported window")
    parser.add_argument("--model", type=Path, default=REPO / "models" / "model.onnx")
    args = parser.parse_args()

    jpegs = make_jpegs(64)
    serve_python = REPO / ".venv-serve" / "bin" / "python"
    python = str(serve_python) if serve_python.exists() else sys.executable
    port = free_port()
    # Production settings: the service's own defaults, access log on (its lines go to /dev/null).
    env = {"PATH": os.environ.get("PATH", ""), "MODEL_PATH": str(args.model), "PORT": str(port)}
    print(f"soak: {args.seconds:.0f} s, {args.clients} clients, {len(jpegs)} real JPEGs, service defaults, {python}")
    started = time.perf_counter()
    proc = subprocess.Popen([python, "-m", "service"], cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    try:
        wait_ready(proc, port, started)
        requests = [multipart_request(port, jpeg) for jpeg in jpegs]
        windows = asyncio.run(soak(proc.pid, port, requests, args.clients, args.seconds, args.window))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return 0 if report(windows, args.window, args.seconds) else 1


if __name__ == "__main__":
    sys.exit(main())
