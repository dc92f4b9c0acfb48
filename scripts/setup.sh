#!/usr/bin/env bash
# Install everything napari-deblend needs on a fresh Debian machine (idempotent):
# the X/GL libraries napari needs under Xvfb, the CPU build of torch, and the package with its extras.
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES=(xvfb xauth libgl1-mesa-dri libglx-mesa0 libegl1 libxkbcommon-x11-0 libxcb-cursor0
  libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0
  libxcb-xinerama0 libxcb-xfixes0 libdbus-1-3 libfontconfig1)
missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PIP="python -m pip"
# The CPU build of torch first: a bare `torch` requirement would pull a multi-GB CUDA build on Linux.
# A local wheel (pip's find-links) if there is one, else PyTorch's CPU index.
if ! python -c "import torch" 2>/dev/null; then
  $PIP install -q "torch==2.13.0+cpu" 2>/dev/null \
    || $PIP install -q torch --index-url https://download.pytorch.org/whl/cpu
fi
# The package, editable, with the viewer, the simulator, Dask and the test tools.
$PIP install -q -e ".[all,testing]"
