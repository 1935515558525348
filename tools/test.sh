#!/usr/bin/env bash
# Run the whole test suite on a fresh machine that has only python3.
#  - installs the Debian packages the virtual display (Xvfb) and Qt need (when root and missing)
#  - creates .venv, installs the project with its napari and dev extras
#  - checks the import-layer contracts, then runs pytest (napari tests on Xvfb via pytest-xvfb)
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PKGS="xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-xinerama0 \
libxcb-xkb1 libxcb-randr0 libxcb-shape0 libxcb-cursor0 libxkbcommon-x11-0 libxkbcommon0 libegl1 libgl1 \
libglib2.0-0 libfontconfig1 libdbus-1-3 libxrender1 libxi6 \
chromium"  # chromium: the headless browser test of the web demo (tests/test_serve_browser.py)
missing=""
for p in $DEB_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing Debian packages:$missing"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "warning: missing Debian packages (need root to install):$missing" >&2
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[napari,dev]"

.venv/bin/lint-imports
exec .venv/bin/python -m pytest "$@"
