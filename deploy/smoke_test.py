#!/usr/bin/env python3
"""Smoke test a deployed cats-vs-dogs service; exit non-zero on any failure.

Checks, in order:
  1. GET /health answers 200                      (process is up)
  2. GET /ready answers 200, polling up to --wait  (model loaded and warm)
  3. POST /predict with a bundled image, --repeat times: 200, a well-formed
     answer, the expected label, and every request under --max-latency-ms
  4. GET /metrics exposes the catsdogs_* series and counted the predictions

    python deploy/smoke_test.py --url http://127.0.0.1:8000
    python deploy/smoke_test.py --url https://catsdogs.example.com --image deploy/samples/cat.jpg --expect cat --json

Exit codes: 0 all checks passed, 1 a check failed, 2 bad arguments.
Stdlib only: runs anywhere Python 3.9+ does.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from httpclient import normalize_url, predict, request  # noqa: E402

DEFAULT_IMAGE = Path(__file__).resolve().parent / "samples" / "cat.jpg"


class Checks:
    def __init__(self) -> None:
        self.results: list[dict] = []

    def add(self, name: str, ok: bool, detail: str, **extra) -> bool:
        self.results.append({"check": name, "ok": ok, "detail": detail, **extra})
        return ok

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r["ok"] for r in self.results)


def label_from_filename(path: Path) -> str | None:
    """cat.jpg, cat.12.jpg, dog_3.png -> the leading word; None if there is none."""
    match = re.match(r"([A-Za-z]+)", path.name)
    return match.group(1).lower() if match else None


def run(args: argparse.Namespace) -> Checks:
    checks = Checks()
    url = args.url

    health = request("GET", f"{url}/health", timeout=args.timeout)
    if not checks.add(
        "health", health.status == 200, _describe(health), status=health.status, latency_ms=round(health.elapsed_ms, 1)
    ):
        return checks  # nothing else can work

    deadline = time.monotonic() + args.wait
    while True:
        ready = request("GET", f"{url}/ready", timeout=args.timeout)
        if ready.status == 200 or time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    if not checks.add("ready", ready.status == 200, _describe(ready), status=ready.status):
        return checks

    for attempt in range(1, args.repeat + 1):
        resp = predict(url, args.image, timeout=args.timeout)
        name = f"predict[{attempt}]"
        if resp.status != 200:
            checks.add(name, False, _describe(resp), status=resp.status)
            continue
        try:
            answer = resp.json()
            label = answer["predicted_class"]
            confidence = float(answer["confidence"])
            probabilities = {k: float(v) for k, v in answer["probabilities"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            checks.add(name, False, f"malformed answer ({exc}): {resp.body[:200]!r}")
            continue
        problems = []
        if label != args.expect:
            problems.append(f"predicted {label!r}, expected {args.expect!r}")
        if not 0.0 <= confidence <= 1.0:
            problems.append(f"confidence {confidence} outside [0, 1]")
        if abs(sum(probabilities.values()) - 1.0) > 1e-3:
            problems.append(f"probabilities sum to {sum(probabilities.values()):.4f}")
        if resp.elapsed_ms > args.max_latency_ms:
            problems.append(f"took {resp.elapsed_ms:.0f} ms > {args.max_latency_ms:g} ms")
        checks.add(
            name,
            not problems,
            "; ".join(problems) or f"{label} ({confidence:.3f}) in {resp.elapsed_ms:.0f} ms",
            predicted_class=label,
            confidence=confidence,
            latency_ms=round(resp.elapsed_ms, 1),
            model_version=answer.get("model_version"),
        )

    if not args.skip_metrics:
        metrics = request("GET", f"{url}/metrics", timeout=args.timeout)
        text = metrics.body.decode("utf-8", "replace")
        counted = re.findall(r"^catsdogs_predictions_total\{[^}]*\}\s+([0-9.eE+]+)", text, flags=re.M)
        total = sum(float(v) for v in counted)
        ok = metrics.status == 200 and total >= 1
        checks.add(
            "metrics",
            ok,
            f"HTTP {metrics.status}, catsdogs_predictions_total={total:g}" if metrics.status else _describe(metrics),
        )
    return checks


def _describe(resp) -> str:
    if resp.status == 0:
        return f"no answer: {resp.error}"
    return f"HTTP {resp.status} in {resp.elapsed_ms:.0f} ms: {resp.body[:200].decode('utf-8', 'replace')}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="base URL of the service, e.g. http://127.0.0.1:8000")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="image to classify (default: bundled cat)")
    parser.add_argument("--expect", help="expected predicted_class (default: the image file name's leading word)")
    parser.add_argument("--max-latency-ms", type=float, default=1500.0, help="bound for each /predict (default 1500)")
    parser.add_argument("--repeat", type=int, default=3, help="number of /predict requests (default 3)")
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to keep polling /ready (default 0)")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-request timeout in seconds (default 10)")
    parser.add_argument("--skip-metrics", action="store_true", help="do not check /metrics (e.g. it is not exposed)")
    parser.add_argument("--json", action="store_true", help="print one JSON report instead of lines")
    args = parser.parse_args(argv)
    try:
        args.url = normalize_url(args.url)
    except ValueError as exc:
        parser.error(str(exc))
    if not args.image.is_file():
        parser.error(f"--image {args.image} is not a file")
    args.expect = args.expect or label_from_filename(args.image)
    if not args.expect:
        parser.error(f"cannot tell the expected label from {args.image.name}; pass --expect")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    checks = run(args)
    if args.json:
        print(
            json.dumps(
                {
                    "url": args.url,
                    "image": str(args.image),
                    "expect": args.expect,
                    "passed": checks.passed,
                    "checks": checks.results,
                },
                indent=2,
            )
        )
    else:
        for result in checks.results:
            print(f"{'PASS' if result['ok'] else 'FAIL'}  {result['check']:<12} {result['detail']}")
        print(f"smoke test {'PASSED' if checks.passed else 'FAILED'} against {args.url}")
    return 0 if checks.passed else 1


if __name__ == "__main__":
    sys.exit(main())
