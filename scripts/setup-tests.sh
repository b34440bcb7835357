#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine (run as root):
# the Python requirements, this package in editable mode, and Chromium for the browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
  else
    echo "warning: no apt-get; install Chromium yourself for the browser tests" >&2
  fi
fi
python -m pip install -q -r requirements.txt
python -m pip install -q --no-deps -e .
