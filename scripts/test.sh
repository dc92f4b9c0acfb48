#!/usr/bin/env bash
# Install (scripts/setup.sh) and run the whole test suite; napari tests run under Xvfb (pytest-xvfb).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python -m pytest "$@"
