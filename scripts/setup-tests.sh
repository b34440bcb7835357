#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine (run as root): Chromium
# for the browser tests, a CJK font for the renderer's non-Latin text, a colour emoji font for its subject pictograms, the Python requirements
# and this package in editable mode.
set -euo pipefail
cd "$(dirname "$0")/.."
debs=(chromium fonts-dejavu-core fonts-noto-cjk fonts-noto-color-emoji)
missing=()
for deb in "${debs[@]}"; do
  dpkg -s "$deb" >/dev/null 2>&1 || missing+=("$deb")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]} (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "warning: no apt-get; install ${missing[*]} yourself (browser and CJK tests will skip)" >&2
  fi
fi
python -m pip install -q -r requirements.txt
python -m pip install -q --no-deps -e .
