#!/usr/bin/env bash
# Set up everything the demo and the tests need, on a fresh machine; safe to run again.
#   - system libraries for headless napari/Qt tests (Debian/Ubuntu, when run as root)
#   - a virtual environment in .venv with the package (editable) and its test extras
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
SYSTEM_PACKAGES="xvfb xauth libgl1 libfontconfig1 libglib2.0-0 libdbus-1-3 libxkbcommon-x11-0 libxcb-icccm4 \
libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-cursor0 \
xdotool"

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  missing=""
  for p in $SYSTEM_PACKAGES; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
  done
  if [ -n "$missing" ]; then
    echo "setup: installing system packages:$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
elif ! command -v Xvfb >/dev/null 2>&1; then
  echo "setup: note: Xvfb and the Qt libraries are not installed and this is not a root Debian shell;"
  echo "       the napari GUI tests need them (see README, 'Tests'). Everything else works without."
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(cat pyproject.toml | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  echo "setup: installing the package and its test dependencies into .venv (a few minutes the first time)"
  .venv/bin/python -m pip install -q -e ".[testing]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
echo "setup: ready"
