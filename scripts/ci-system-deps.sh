#!/usr/bin/env bash
# System packages the ops checks need: promtool and a real Prometheus server
# (Debian package `prometheus`). Idempotent: does nothing when both are on PATH.
# Usage: bash scripts/ci-system-deps.sh   (as root, or with sudo available)
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
    echo "ci-system-deps: promtool and prometheus already installed ($(promtool --version 2>&1 | head -1))"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "ci-system-deps: need root (or sudo) to apt-get install prometheus" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# --no-install-recommends keeps out node-exporter & co.; policy-rc.d stops the
# package's postinst from starting a system-wide Prometheus daemon on :9090.
POLICY=/usr/sbin/policy-rc.d
CREATED_POLICY=0
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod +x "$POLICY"
    CREATED_POLICY=1
fi
trap 'if [ "$CREATED_POLICY" = 1 ]; then $SUDO rm -f "$POLICY"; fi' EXIT
$SUDO apt-get install -y -q --no-install-recommends prometheus

command -v promtool >/dev/null && command -v prometheus >/dev/null
echo "ci-system-deps: installed $(prometheus --version 2>&1 | head -1)"
