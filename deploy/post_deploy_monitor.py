#!/usr/bin/env python3
"""Send a labelled image folder to a deployed service and judge the answers.

Reports accuracy, per-class accuracy, a confusion matrix, error count and
latency percentiles as JSON (stdout, and --output FILE), and exits non-zero
when a threshold is not met.

Labelled folder layouts (both may be mixed):
  DIR/cat/*.jpg, DIR/dog/*.jpg         class sub-folders
  DIR/cat.1.jpg, DIR/dog.7.jpg         Kaggle-style file names

    python deploy/post_deploy_monitor.py --url http://127.0.0.1:8000 --images holdout/ \\
        --min-accuracy 0.85 --min-class-accuracy 0.8 --max-p95-ms 250

Exit codes: 0 every threshold met, 1 a threshold missed, 2 bad arguments or
no labelled images. Stdlib only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from httpclient import normalize_url, percentile, predict  # noqa: E402

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp"}


def labelled_images(root: Path, classes: set[str] | None) -> list[tuple[Path, str]]:
    """[(path, true label)] sorted by path; files whose label cannot be told are left out."""
    found = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.parent != root:
            label = path.relative_to(root).parts[0].lower()
        else:
            match = re.match(r"([A-Za-z]+)[._-]", path.name)
            if not match:
                continue
            label = match.group(1).lower()
        label = {"cats": "cat", "dogs": "dog"}.get(label, label)
        if classes is None or label in classes:
            found.append((path, label))
    return found


def evaluate(url: str, items: list[tuple[Path, str]], *, concurrency: int, timeout: float) -> dict:
    def one(item: tuple[Path, str]) -> dict:
        path, truth = item
        resp = predict(url, path, timeout=timeout)
        record = {"file": str(path), "truth": truth, "status": resp.status, "latency_ms": resp.elapsed_ms}
        if resp.status == 200:
            try:
                answer = resp.json()
                record["predicted"] = str(answer["predicted_class"])
                record["confidence"] = float(answer["confidence"])
                record["model_version"] = answer.get("model_version")
            except (ValueError, KeyError, TypeError) as exc:
                record["error"] = f"malformed answer: {exc}"
        else:
            record["error"] = resp.error or f"HTTP {resp.status}: {resp.body[:200].decode('utf-8', 'replace')}"
        return record

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        records = list(pool.map(one, items))
    wall = time.perf_counter() - started

    answered = [r for r in records if "predicted" in r]
    per_class: dict[str, dict] = {}
    confusion: dict[str, Counter] = defaultdict(Counter)
    for label in sorted({r["truth"] for r in records}):
        mine = [r for r in records if r["truth"] == label]
        correct = sum(1 for r in mine if r.get("predicted") == label)
        per_class[label] = {"n": len(mine), "correct": correct, "accuracy": correct / len(mine)}
    for r in answered:
        confusion[r["truth"]][r["predicted"]] += 1
    latencies = [r["latency_ms"] for r in records if r["status"] != 0]
    correct = sum(1 for r in records if r.get("predicted") == r["truth"])
    return {
        "url": url,
        "n": len(records),
        "answered": len(answered),
        "errors": len(records) - len(answered),
        # Errors count as wrong: a deployment that fails requests is not accurate.
        "accuracy": correct / len(records),
        "per_class": per_class,
        "confusion": {truth: dict(row) for truth, row in sorted(confusion.items())},
        "mean_confidence": (sum(r["confidence"] for r in answered) / len(answered)) if answered else None,
        "latency_ms": {
            name: round(value, 2)
            for name, value in (
                ("p50", percentile(latencies, 50)),
                ("p90", percentile(latencies, 90)),
                ("p95", percentile(latencies, 95)),
                ("p99", percentile(latencies, 99)),
                ("max", max(latencies)),
                ("mean", sum(latencies) / len(latencies)),
            )
        }
        if latencies
        else None,
        "throughput_rps": round(len(records) / wall, 2) if wall > 0 else None,
        "model_versions": sorted({str(r.get("model_version")) for r in answered}),
        "error_samples": [{k: r[k] for k in ("file", "status", "error")} for r in records if "error" in r][:10],
    }


def judge(report: dict, args: argparse.Namespace) -> list[str]:
    failures = []
    if report["accuracy"] < args.min_accuracy:
        failures.append(f"accuracy {report['accuracy']:.3f} < {args.min_accuracy}")
    for label, stats in report["per_class"].items():
        if stats["accuracy"] < args.min_class_accuracy:
            failures.append(f"accuracy on {label} {stats['accuracy']:.3f} < {args.min_class_accuracy}")
    if report["errors"] > args.max_errors:
        failures.append(f"{report['errors']} failed requests > {args.max_errors}")
    latency = report["latency_ms"]
    if args.max_p95_ms is not None:
        if latency is None:
            failures.append("no latency measured: no request got an answer")
        elif latency["p95"] > args.max_p95_ms:
            failures.append(f"p95 latency {latency['p95']:.1f} ms > {args.max_p95_ms} ms")
    if args.max_p99_ms is not None and latency is not None and latency["p99"] > args.max_p99_ms:
        failures.append(f"p99 latency {latency['p99']:.1f} ms > {args.max_p99_ms} ms")
    return failures


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="base URL of the deployed service")
    parser.add_argument("--images", type=Path, required=True, help="labelled image folder (see layouts above)")
    parser.add_argument("--classes", default="cat,dog", help="labels to keep, comma-separated (default cat,dog)")
    parser.add_argument("--limit", type=int, default=None, help="use at most N images (evenly spread)")
    parser.add_argument("--min-accuracy", type=float, default=0.0, help="overall accuracy threshold (0..1)")
    parser.add_argument("--min-class-accuracy", type=float, default=0.0, help="threshold for every class")
    parser.add_argument("--max-p95-ms", type=float, default=None, help="p95 latency bound in ms")
    parser.add_argument("--max-p99-ms", type=float, default=None, help="p99 latency bound in ms")
    parser.add_argument("--max-errors", type=int, default=0, help="failed requests tolerated (default 0)")
    parser.add_argument("--concurrency", type=int, default=1, help="parallel requests (default 1)")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-request timeout in seconds")
    parser.add_argument("--output", type=Path, help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    try:
        args.url = normalize_url(args.url)
    except ValueError as exc:
        parser.error(str(exc))
    if not args.images.is_dir():
        parser.error(f"--images {args.images} is not a directory")
    for name in ("min_accuracy", "min_class_accuracy"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            parser.error(f"--{name.replace('_', '-')} must be between 0 and 1")
    if args.concurrency < 1 or (args.limit is not None and args.limit < 1):
        parser.error("--concurrency and --limit must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    classes = {c.strip().lower() for c in args.classes.split(",") if c.strip()} or None
    items = labelled_images(args.images, classes)
    if args.limit is not None and len(items) > args.limit:
        step = len(items) / args.limit
        items = [items[int(i * step)] for i in range(args.limit)]
    if not items:
        print(f"error: no labelled images under {args.images} (want class folders or cat.N.jpg names)", file=sys.stderr)
        return 2
    report = evaluate(args.url, items, concurrency=args.concurrency, timeout=args.timeout)
    failures = judge(report, args)
    report["thresholds"] = {
        "min_accuracy": args.min_accuracy,
        "min_class_accuracy": args.min_class_accuracy,
        "max_p95_ms": args.max_p95_ms,
        "max_p99_ms": args.max_p99_ms,
        "max_errors": args.max_errors,
    }
    report["failures"] = failures
    report["passed"] = not failures
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
