#!/usr/bin/env bash
# Install (scripts/setup.sh) and open the demo: napari on the shipped sample field with its
# detections and the blend browser. Without a display, it runs under Xvfb and saves a screenshot.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -n "${DISPLAY:-}" ]; then
  exec napari-deblend demo "$@"
else
  echo "demo: no DISPLAY; running under Xvfb and saving demo.png"
  exec xvfb-run -a -s "-screen 0 1600x1000x24" napari-deblend demo --screenshot demo.png "$@"
fi
