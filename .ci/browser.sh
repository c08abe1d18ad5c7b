#!/usr/bin/env bash
# CI step: the dashboard in a real browser.
#
#   .ci/browser.sh               # install chromium when missing, run tests/browser
#
# Debian's chromium (apt-get, only when missing; never a browser build of Playwright's own),
# driven by Playwright for Python from the project venv, against `medrobotics up` seeded on
# loopback ports. Screenshots and the platform's log go to .work/browser/.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null; then
    if [ "$(id -u)" -ne 0 ]; then echo "need root to apt-get install chromium" >&2; exit 1; fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        chromium fonts-liberation
fi
chromium --version
if [ ! -x .venv/bin/python ]; then
    echo "missing .venv: run make venv first" >&2
    exit 1
fi
CI="${CI:-true}" .venv/bin/python -m pytest tests/browser -m browser -v -p no:cacheprovider "$@"
echo "screenshots: $PWD/.work/browser/"
