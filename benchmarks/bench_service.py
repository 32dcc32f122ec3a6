"""Benchmark the real service: one server per configuration, measured side by side in one run.

    .venv/bin/python benchmarks/bench_service.py [--workers 1,2,4] [--config NAME:K=V,K=V] [--torch]

Starts `python -m service` (with the serve-only interpreter when .venv-serve exists, so RSS is
what production sees) once per configuration: each `--config` first, then WORKERS=n for each of
`--workers` (default 1, 2, 4, 8, 16 up to the usable CPUs). It uploads real ~500x375 JPEGs
(Kaggle photos from ../shared/data/dogs-vs-cats-mini.zip, read in place and upscaled) and reports
p50/p99 at concurrency 1, req/s and p50/p99 at --concurrency (8), server CPU per request summed
over the supervisor and every worker, RSS per process, each worker's share of the CPU, and the
floor: decode + model on one thread, timed in this process on the same photos, with its ratio to
the server's CPU per request. `--torch` adds the same architecture in torch eager behind the same
Starlette/uvicorn stack.

Without models/model.onnx it exports training.model with random weights to a temp dir (latency
does not depend on the weights). The load client is raw asyncio sockets with keep-alive, split
over --clients processes on larger machines so the client is not the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MINI_ZIP = Path(os.environ.get("CATSDOGS_SHARED_DATA", REPO.parent / "shared" / "data")) / "dogs-vs-cats-mini.zip"
BOUNDARY = b"benchboundary7d1f"


# ---- inputs -----------------------------------------------------------------


def make_jpegs(count: int, size: tuple[int, int] = (500, 375)) -> list[bytes]:
    from PIL import Image

    images: list[bytes] = []
    if MINI_ZIP.exists():
        with zipfile.ZipFile(MINI_ZIP) as archive:
            names = sorted(n for n in archive.namelist() if n.lower().endswith(".jpg"))
            for name in random.Random(0).sample(names, min(count, len(names))):
                img = Image.open(io.BytesIO(archive.read(name))).convert("RGB").resize(size, Image.Resampling.BICUBIC)
                buf = io.BytesIO()
                img.save(buf, format="JPEG", quality=90)
                images.append(buf.getvalue())
    else:  # no dataset on this box: textured noise is the worst case for JPEG decoding
        import numpy as np

        rng = np.random.default_rng(0)
        for _ in range(count):
            pixels = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
            buf = io.BytesIO()
            Image.fromarray(pixels).resize(size, Image.Resampling.BICUBIC).save(buf, format="JPEG", quality=90)
            images.append(buf.getvalue())
    return images


def multipart_request(port: int, jpeg: bytes) -> bytes:
    body = (
        b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="file"; filename="pet.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + jpeg + b"\r\n--" + BOUNDARY + b"--\r\n"
    )
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY.decode()}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


def onnx_model(requested: Path | None, workdir: Path) -> tuple[Path, Path | None]:
    """(model.onnx, best_model.pth or None) - exporting random weights when no model exists yet."""
    pth = REPO / "models" / "best_model.pth"
    if requested is not None:
        return requested, pth if pth.exists() else None
    bundled = REPO / "models" / "model.onnx"
    if bundled.exists():
        return bundled, pth if pth.exists() else None
    import torch

    from export.export import stamp_metadata, to_onnx
    from service.metadata import ModelMetadata
    from training.model import WithSoftmax, build_model
    from training.params import load_params

    params = load_params(REPO / "params.yaml")
    torch.manual_seed(0)
    arch = params.model
    net = build_model(len(params.data.classes), arch.width, arch.dropout, arch=arch.arch).eval()
    served = WithSoftmax(net, params.export.flip_tta).eval()
    proto = to_onnx(served, params.preprocess.image_size, params.export.opset)
    stamp_metadata(
        proto,
        ModelMetadata(params.data.classes, params.preprocess, "bench-random", "none", {}),
    )
    import onnx

    path = workdir / "model.onnx"
    onnx.save(proto, path)
    torch.save(
        {
            "state_dict": net.state_dict(),
            "classes": list(params.data.classes),
            "model": asdict(arch),
        },
        workdir / "best_model.pth",
    )
    return path, workdir / "best_model.pth"


# ---- the torch-eager baseline server ----------------------------------------


def serve_torch(model_onnx: Path, pth: Path | None, port: int, threads: int) -> None:
    """Same Starlette/uvicorn stack and preprocessing; inference by torch eager instead of ORT."""
    import anyio
    import onnxruntime as ort
    import torch
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from service.metadata import ModelMetadata
    from service.preprocessing import preprocess
    from training.model import WithSoftmax, build_model, model_from_checkpoint
    from training.params import load_params

    torch.set_num_threads(threads)  # same budget as the ORT service: its intra-op threads x 2 workers
    meta = ModelMetadata.from_props(dict(ort.InferenceSession(str(model_onnx)).get_modelmeta().custom_metadata_map))
    params = load_params(REPO / "params.yaml")
    if pth is not None:
        net = model_from_checkpoint(torch.load(pth, map_location="cpu", weights_only=True))
    else:
        net = build_model(len(meta.classes), params.model.width, params.model.dropout, arch=params.model.arch)
    model = WithSoftmax(net, params.export.flip_tta).eval()  # the same graph the ONNX file holds
    limiter = anyio.CapacityLimiter(2)

    def infer(data: bytes) -> list[float]:
        with torch.inference_mode():
            return model(torch.from_numpy(preprocess(data, meta.preprocessing)))[0].tolist()

    async def predict(request: Request) -> JSONResponse:
        form = await request.form()
        probs = await anyio.to_thread.run_sync(infer, await form["file"].read(), limiter=limiter)
        best = max(range(len(probs)), key=probs.__getitem__)
        return JSONResponse(
            {
                "predicted_class": meta.classes[best],
                "confidence": probs[best],
                "probabilities": dict(zip(meta.classes, probs, strict=True)),
                "model_version": meta.model_version,
            }
        )

    async def ready(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ready"})

    infer(make_jpegs(1)[0])  # warm up, as the ORT service does before /ready
    app = Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/ready", ready)])
    uvicorn.run(app, host="127.0.0.1", port=port, access_log=False, log_level="warning")


# ---- load client ------------------------------------------------------------


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    return status


async def run_load(port: int, requests: list[bytes], concurrency: int, count: int) -> tuple[list[float], int, float]:
    """`count` requests spread over `concurrency` keep-alive connections: (latencies s, errors, wall s)."""
    latencies: list[float] = []
    errors = 0
    next_index = 0

    async def worker() -> None:
        nonlocal errors, next_index
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while next_index < count:
            request = requests[next_index % len(requests)]
            next_index += 1
            start = time.perf_counter()
            status = await _exchange(reader, writer, request)
            latencies.append(time.perf_counter() - start)
            errors += status != 200
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - start


@dataclass
class Load:
    latencies: list[float]
    errors: int
    wall_s: float
    client_cpu_s: float


def _client_process(port: int, requests: list[bytes], concurrency: int, count: int, go: Any, out: Any) -> None:
    go.wait()
    cpu = own_cpu_seconds()
    latencies, errors, _ = asyncio.run(run_load(port, requests, concurrency, count))
    out.put((latencies, errors, own_cpu_seconds() - cpu))


def load(port: int, requests: list[bytes], concurrency: int, count: int, clients: int) -> Load:
    """`run_load` split over `clients` processes, so on a large machine the client is not the bottleneck."""
    if clients <= 1 or concurrency < 2:
        cpu = own_cpu_seconds()
        latencies, errors, wall = asyncio.run(run_load(port, requests, concurrency, count))
        return Load(latencies, errors, wall, own_cpu_seconds() - cpu)
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    go, out = ctx.Event(), ctx.Queue()
    clients = min(clients, concurrency)
    shares = [(concurrency // clients + (i < concurrency % clients), count // clients) for i in range(clients)]
    procs = [ctx.Process(target=_client_process, args=(port, requests, c, n, go, out)) for c, n in shares]
    for proc in procs:
        proc.start()
    time.sleep(0.2)  # every client process is waiting on `go`
    start = time.perf_counter()
    go.set()
    parts = [out.get() for _ in procs]
    wall = time.perf_counter() - start
    for proc in procs:
        proc.join()
    return Load([x for p in parts for x in p[0]], sum(p[1] for p in parts), wall, sum(p[2] for p in parts))


# ---- orchestration ----------------------------------------------------------


@dataclass
class Result:
    name: str
    workers: int
    ready_s: float
    p50_ms: float
    p99_ms: float
    rps_c8: float
    p50_c8_ms: float
    p99_c8_ms: float
    rss_mb: float  # the largest worker's (the supervisor's own is listed apart)
    server_cpu_ms: float  # server CPU time per request at c=8, every thread of every worker and the supervisor
    floor_ratio: float  # the floor (decode + model on 1 thread) / server_cpu_ms
    client_cpu_ms: float  # the load client's own CPU per request at c=8
    errors: int
    rss_each: list[float]
    cpu_share: list[float]  # each worker's part of the server CPU at c=8: how evenly the kernel spread connections


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(proc: subprocess.Popen[bytes], port: int, start: float, timeout: float = 120) -> float:
    import http.client

    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/ready")
            if conn.getresponse().status == 200:
                return time.perf_counter() - start
        except OSError:
            pass
        time.sleep(0.005)
    raise SystemExit("server not ready in time")


def server_pids(pid: int) -> list[int]:
    """The server's process and its children (the workers, when WORKERS > 1)."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return [pid, *children]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def soak(proc: subprocess.Popen[bytes], port: int, requests: list[bytes], seconds: float, windows: int) -> None:
    """c=8 load for `seconds`, split in windows: a long run must not slow down or grow in memory."""
    print(f"soak: {seconds:.0f} s at c=8 in {windows} windows")
    print(f"{'window':>8}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'RSS MB':>10}")
    rows = []
    for window in range(1, windows + 1):
        deadline = time.perf_counter() + seconds / windows
        latencies: list[float] = []
        wall = 0.0
        while time.perf_counter() < deadline:
            chunk, errors, chunk_wall = asyncio.run(run_load(port, requests, 8, 400))
            if errors:
                raise SystemExit(f"soak: {errors} non-200 responses")
            latencies += chunk
            wall += chunk_wall
        q = sorted(latencies)
        rss = sum(rss_mb(pid) for pid in server_pids(proc.pid))
        rows.append((len(q) / wall, statistics.median(q) * 1000, q[int(0.99 * (len(q) - 1))] * 1000, rss))
        print(f"{window:>8}" + "".join(f"{v:>10.1f}" for v in rows[-1]))
    first, last = rows[0], rows[-1]
    ratios = f"throughput {last[0] / first[0]:.2f}x, p50 {last[1] / first[1]:.2f}x, RSS {last[3] / first[3]:.2f}x"
    print(f"soak last/first window: {ratios}")


def measure(
    name: str,
    cmd: list[str],
    env: dict[str, str],
    port: int,
    jpegs: list[bytes],
    args: argparse.Namespace,
    floor_ms: float,
    soak_seconds: float = 0,
) -> Result:
    requests = [multipart_request(port, j) for j in jpegs]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    try:
        ready = wait_ready(proc, port, start)
        pids = server_pids(proc.pid)
        load(port, requests, 1, 50, 1)  # warm-up
        c1 = load(port, requests, 1, args.requests, 1)
        before = [cpu_seconds(pid) for pid in pids]
        c8 = load(port, requests, args.concurrency, args.requests * 4, args.clients)
        spent = [cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]
        server_cpu = sum(spent)
        q1, q8 = sorted(c1.latencies), sorted(c8.latencies)
        rss = [rss_mb(pid) for pid in pids]
        if soak_seconds > 0:
            soak(proc, port, requests, soak_seconds, windows=6)
        cpu_ms = server_cpu / len(q8) * 1000
        return Result(
            name=name,
            workers=max(1, len(pids) - 1),
            ready_s=ready,
            p50_ms=statistics.median(q1) * 1000,
            p99_ms=q1[int(0.99 * (len(q1) - 1))] * 1000,
            rps_c8=len(q8) / c8.wall_s,
            p50_c8_ms=statistics.median(q8) * 1000,
            p99_c8_ms=q8[int(0.99 * (len(q8) - 1))] * 1000,
            rss_mb=max(rss[1:] or rss),
            server_cpu_ms=cpu_ms,
            floor_ratio=floor_ms / cpu_ms,
            client_cpu_ms=c8.client_cpu_s / len(q8) * 1000,
            errors=c1.errors + c8.errors,
            rss_each=rss,
            cpu_share=[x / server_cpu for x in (spent[1:] or spent)],
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def floor_ms(model: Path, jpegs: list[bytes], rounds: int = 3) -> tuple[float, float]:
    """(decode, model) CPU ms per photo on one thread, on the photos the load uses: what a request cannot go below."""
    from service.model import SessionTuning, load_model
    from service.preprocessing import load_pixels, normalize

    loaded = load_model(model, SessionTuning(intra_op_threads=1, inter_op_threads=1))
    spec = loaded.metadata.preprocessing
    decode = infer = 0.0
    for _ in range(rounds):
        for jpeg in jpegs:
            start = time.thread_time()
            batch = normalize(load_pixels(jpeg, spec.image_size), spec)
            middle = time.thread_time()
            loaded.predict(batch)
            decode, infer = decode + middle - start, infer + time.thread_time() - middle
    count = rounds * len(jpegs)
    return decode / count * 1000, infer / count * 1000


def describe_host(model: Path) -> str:
    """CPU, core count and the model's own 1-thread cost: what makes runs on different boxes comparable."""
    import numpy as np
    from bench_model import time_batches  # this script's own folder is on sys.path

    from service.cpus import usable_cpus
    from service.model import SessionTuning, load_model

    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "unknown CPU")
    loaded = load_model(model, SessionTuning(intra_op_threads=1, inter_op_threads=1))
    size = loaded.image_size
    timings = time_batches(loaded, [np.zeros((1, 3, size, size), dtype=np.float32)], 300)
    model_ms = statistics.median(timings[50:])  # the first runs warm caches up
    return (
        f"host: {cpu}, {len(os.sched_getaffinity(0))} CPUs ({usable_cpus()} usable after the cgroup quota); "
        f"the model alone: {model_ms:.2f} ms per image on 1 thread"
    )


def print_table(results: list[Result], concurrency: int) -> None:
    # (label, attribute, format, target, bound the first column must meet, higher is better)
    # Latency and throughput bars are the pretrained model's (issue #12), not the 80 px cnn's 5 ms / 300 req/s.
    c = f"c={concurrency}"
    rows = [
        ("workers", "workers", "{}", "", None, True),
        ("ready after start (s)", "ready_s", "{:.2f}", "<= 1", 1.0, False),
        ("p50 latency c=1 (ms)", "p50_ms", "{:.2f}", "<= 8", 8.0, False),
        ("p99 latency c=1 (ms)", "p99_ms", "{:.2f}", "", None, False),
        (f"throughput {c} (req/s)", "rps_c8", "{:.0f}", ">= 250", 250.0, True),
        (f"p50 latency {c} (ms)", "p50_c8_ms", "{:.2f}", "", None, False),
        (f"p99 latency {c} (ms)", "p99_c8_ms", "{:.2f}", "", None, False),
        (f"server CPU/request {c} (ms)", "server_cpu_ms", "{:.2f}", "", None, False),
        ("floor / server CPU", "floor_ratio", "{:.0%}", ">= 75%", 0.75, True),
        (f"client CPU/request {c} (ms)", "client_cpu_ms", "{:.2f}", "", None, False),
        ("server RSS (MB)", "rss_mb", "{:.0f}", "<= 120", 120.0, False),
        ("non-200 responses", "errors", "{}", "0", 0, False),
    ]
    header = f"{'metric':<30}" + "".join(f"{r.name:>16}" for r in results) + f"{'target':>10}{'met':>5}"
    if len(results) > 1:
        header += f"{'last vs first':>16}"
    print(header)
    print("-" * len(header))
    for label, attr, fmt, target, bound, higher_better in rows:
        values = [getattr(r, attr) for r in results]
        met = "" if bound is None else "yes" if (values[0] >= bound if higher_better else values[0] <= bound) else "NO"
        line = f"{label:<30}" + "".join(f"{fmt.format(v):>16}" for v in values) + f"{target:>10}{met:>5}"
        if len(results) > 1 and attr not in ("errors", "client_cpu_ms", "workers") and values[0] and values[-1]:
            better = values[-1] / values[0] if higher_better else values[0] / values[-1]
            line += f"{better:>15.2f}x"
        print(line)
    print("RSS per process (MB, supervisor first when there is one) | share of the server CPU per worker:")
    for r in results:
        rss = ", ".join(f"{v:.0f}" for v in r.rss_each)
        print(f"  {r.name}: {rss} | " + ", ".join(f"{v:.0%}" for v in r.cpu_share))


def median_result(runs: list[Result]) -> Result:
    """Each figure's median over rounds (errors summed; RSS and CPU shares from the last round)."""
    last = runs[-1]
    figures = {
        field: statistics.median(getattr(r, field) for r in runs)
        for field in ("ready_s", "p50_ms", "p99_ms", "rps_c8", "p50_c8_ms", "p99_c8_ms", "rss_mb", "server_cpu_ms")
    }
    figures |= {"client_cpu_ms": statistics.median(r.client_cpu_ms for r in runs)}
    floor_ms = last.floor_ratio * last.server_cpu_ms
    return Result(
        name=last.name,
        workers=last.workers,
        floor_ratio=floor_ms / figures["server_cpu_ms"],
        errors=sum(r.errors for r in runs),
        rss_each=last.rss_each,
        cpu_share=last.cpu_share,
        **figures,
    )


def configurations(args: argparse.Namespace, cpus: int) -> list[tuple[str, dict[str, str]]]:
    """(column name, extra env) per server to measure: --config ones first, then one per --workers count."""
    configs = []
    for spec in args.config:
        name, _, pairs = spec.partition(":")
        configs.append((name, dict(kv.split("=", 1) for kv in pairs.split(",") if kv)))
    counts = [int(n) for n in args.workers.split(",")] if args.workers else [n for n in (1, 2, 4, 8, 16) if n <= cpus]
    configs += [(f"WORKERS={n}", {"WORKERS": str(n)}) for n in counts]
    return configs


def main() -> None:
    from service.cpus import usable_cpus

    cpus = usable_cpus()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="ONNX model (default models/model.onnx, else random export)")
    parser.add_argument("--requests", type=int, default=400, help="requests at c=1 (4x that at --concurrency)")
    parser.add_argument("--concurrency", type=int, default=8, help="connections for the throughput figures")
    parser.add_argument(
        "--clients", type=int, default=1 if cpus <= 4 else cpus // 4, help="load client processes (default by CPUs)"
    )
    parser.add_argument(
        "--workers", help="comma-separated WORKERS to measure, one server each (default 1,2,4,8,16 up to the CPUs)"
    )
    parser.add_argument(
        "--config", action="append", default=[], help="an extra server to measure first, NAME:KEY=VALUE,KEY=VALUE"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure every configuration this many times, alternating"
    )
    parser.add_argument("--torch", action="store_true", help="also serve torch eager behind the same stack")
    parser.add_argument("--skip-torch", action="store_true", help=argparse.SUPPRESS)  # the default now
    parser.add_argument("--soak-seconds", type=float, default=0, help="long-run check of the first server (0: skip)")
    parser.add_argument("--env", action="append", default=[], help="extra KEY=VALUE for every ONNX server")
    parser.add_argument("--serve-torch", nargs=4, metavar=("ONNX", "PTH", "PORT", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_torch:
        onnx_path, pth, port, threads = args.serve_torch
        serve_torch(Path(onnx_path), Path(pth) if pth != "-" else None, int(port), int(threads))
        return

    with tempfile.TemporaryDirectory() as tmp:
        model, pth = onnx_model(args.model, Path(tmp))
        jpegs = make_jpegs(64)
        print(f"model {model}; {len(jpegs)} JPEGs, mean {sum(map(len, jpegs)) / len(jpegs) / 1024:.0f} KiB, 500x375")
        print(describe_host(model))
        decode_ms, model_ms = floor_ms(model, jpegs)
        floor = decode_ms + model_ms
        print(f"floor: decode {decode_ms:.2f} ms + model {model_ms:.2f} ms = {floor:.2f} ms CPU per photo on 1 thread")
        serve_python = REPO / ".venv-serve" / "bin" / "python"
        python = str(serve_python) if serve_python.exists() else sys.executable
        configs = configurations(args, cpus)
        rounds: dict[str, list[Result]] = {name: [] for name, _ in configs}
        # Round-robin, so a neighbour's load that comes and goes falls on every configuration alike.
        for round_index in range(args.rounds):
            for index, (name, extra) in enumerate(configs):
                port = free_port()
                # Production settings, access log included (its lines go to /dev/null).
                env = {"PATH": os.environ.get("PATH", ""), "MODEL_PATH": str(model), "PORT": str(port)}
                env.update(kv.split("=", 1) for kv in args.env)
                env.update(extra)
                soak_s = args.soak_seconds if index == 0 and round_index == 0 else 0
                rounds[name].append(measure(name, [python, "-m", "service"], env, port, jpegs, args, floor, soak_s))
        results = [median_result(runs) for runs in rounds.values()]
        if args.rounds > 1:
            print(f"medians of {args.rounds} rounds; c=8 req/s per round:")
            for name, runs in rounds.items():
                print(f"  {name}: " + ", ".join(f"{r.rps_c8:.0f}" for r in runs))
        if args.torch:
            port = free_port()
            threads = str(min(cpus, 2))
            cmd = [sys.executable, __file__, "--serve-torch", str(model), str(pth or "-"), str(port), threads]
            env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO)}
            results.append(measure("torch eager", cmd, env, port, jpegs, args, floor))
        print_table(results, args.concurrency)


if __name__ == "__main__":
    main()
