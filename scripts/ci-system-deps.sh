#!/usr/bin/env bash
# System packages the checks need, from apt. Idempotent: does nothing when all are there.
#   bash scripts/ci-system-deps.sh             # promtool and a real Prometheus (tests/ops),
#                                              # chromium and chromium-driver (tests/browser)
#   bash scripts/ci-system-deps.sh containers  # Docker engine, docker-compose, debootstrap, curl (tests/containers)
# Run as root, or with sudo available.
set -euo pipefail

case "${1:-ops}" in
    ops)
        needed=(promtool prometheus)
        packages=(prometheus)
        # GitHub's Ubuntu runners ship Google Chrome and a matching chromedriver; tests/browser uses those.
        if ! { command -v google-chrome && command -v chromedriver; } >/dev/null 2>&1; then
            needed+=(chromium chromedriver)
            packages+=(chromium chromium-driver)
        fi
        ;;
    containers)
        # debootstrap checks Debian's signatures with this keyring (preinstalled on Debian, not on Ubuntu).
        needed=(dockerd docker docker-compose debootstrap curl /usr/share/keyrings/debian-archive-keyring.gpg)
        packages=(docker-compose debootstrap debian-archive-keyring curl)
        # An engine that is already installed (GitHub's runners ship Moby) would conflict with docker.io.
        if ! command -v dockerd >/dev/null 2>&1; then packages+=(docker.io); fi
        ;;
    *)
        echo "usage: bash scripts/ci-system-deps.sh [ops|containers]" >&2
        exit 2
        ;;
esac

present() {
    case "$1" in
        /*) [ -e "$1" ] ;;
        *) command -v "$1" >/dev/null 2>&1 ;;
    esac
}
missing=()
for item in "${needed[@]}"; do present "$item" || missing+=("$item"); done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "ci-system-deps: ${needed[*]} already installed"
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
# packages' postinst from starting a system-wide Prometheus (:9090) or Docker daemon.
POLICY=/usr/sbin/policy-rc.d
CREATED_POLICY=0
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod +x "$POLICY"
    CREATED_POLICY=1
fi
trap 'if [ "$CREATED_POLICY" = 1 ]; then $SUDO rm -f "$POLICY"; fi' EXIT
$SUDO apt-get install -y -q --no-install-recommends "${packages[@]}"

for item in "${needed[@]}"; do
    present "$item" || { echo "ci-system-deps: $item still missing after installing ${packages[*]}" >&2; exit 1; }
done
echo "ci-system-deps: installed ${packages[*]}"
