#!/usr/bin/env python3
"""Container health check: exit 0 when GET /ready answers 200, else 1.

Used by Dockerfile.serve's HEALTHCHECK and docker-compose.yml (no curl in the
slim image). Stdlib only.

    python healthcheck.py [--url http://127.0.0.1:8000/ready] [--timeout 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request


def main(argv: list[str] | None = None) -> int:
    default = f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/ready"
    parser = argparse.ArgumentParser(description="exit 0 if the service is ready")
    parser.add_argument("--url", default=default, help=f"readiness URL (default {default})")
    parser.add_argument("--timeout", type=float, default=4.0, help="seconds to wait for an answer")
    args = parser.parse_args(argv)
    try:
        with urllib.request.urlopen(args.url, timeout=args.timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        print(f"unhealthy: {args.url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"unhealthy: {args.url} answered HTTP {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
