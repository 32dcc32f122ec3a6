#!/usr/bin/env bash
# System packages the checks need: promtool and a real Prometheus server (tests/ops), and
# Debian's chromium with its chromium-driver (tests/browser). Idempotent: installs only what is
# missing. Usage: bash scripts/ci-system-deps.sh   (as root, or with sudo available)
set -euo pipefail

packages=()
if ! { command -v promtool && command -v prometheus; } >/dev/null 2>&1; then packages+=(prometheus); fi
# GitHub's Ubuntu runners ship Google Chrome and a matching chromedriver; tests/browser uses those.
if ! { { command -v chromium || command -v google-chrome; } && command -v chromedriver; } >/dev/null 2>&1; then
    packages+=(chromium chromium-driver)
fi
if [ "${#packages[@]}" -eq 0 ]; then
    echo "ci-system-deps: promtool, prometheus, a Chromium and chromedriver already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "ci-system-deps: need root (or sudo) to apt-get install ${packages[*]}" >&2
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
$SUDO apt-get install -y -q --no-install-recommends "${packages[@]}"

command -v promtool >/dev/null && command -v prometheus >/dev/null && command -v chromedriver >/dev/null
echo "ci-system-deps: installed ${packages[*]}"
