#!/usr/bin/env bash
# Installs lancefeed and everything its tests and benchmarks need on a fresh Debian
# machine with Rust and Python 3.9+: the C build tools (nasm for libjpeg-turbo's SIMD,
# cmake), the lightest torch pip can reach, and the package itself with its test extras
# (Ray Data, Ray Train and lance-ray among them, for the Ray engine's tests),
# then the two benchmark peers that need system libraries, so their tests run: FFCV 1.0.2
# (built here against OpenCV and libjpeg-turbo found by pkg-config) and SPDL (loads
# FFmpeg's shared libraries). They add about a minute: ~250 MB of Debian packages, a 10 s
# build. LANCEFEED_NATIVE_PEERS=0 leaves them out.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

missing=()
command -v nasm >/dev/null || missing+=(nasm)
command -v cmake >/dev/null || missing+=(cmake)
command -v jpegtran >/dev/null || missing+=(libjpeg-turbo-progs)  # tests: arithmetic/restart JPEGs
NATIVE_PEERS=${LANCEFEED_NATIVE_PEERS:-1}
if [ "$NATIVE_PEERS" = 1 ]; then
  command -v pkg-config >/dev/null || missing+=(pkg-config)
  pkg-config --exists opencv4 2>/dev/null || missing+=(libopencv-dev)          # ffcv's build
  pkg-config --exists libturbojpeg 2>/dev/null || missing+=(libturbojpeg0-dev)  # ffcv's build
  compgen -G '/usr/lib/*/libavdevice.so.*' >/dev/null || missing+=(ffmpeg)     # spdl at run time
fi
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

pip() { "$PY" -m pip --disable-pip-version-check -q "$@"; }
if ! "$PY" -c "import torch" 2>/dev/null; then
  # The CPU-only wheel is a tenth of the default CUDA build; use it where its index is reachable.
  pip install --index-url https://download.pytorch.org/whl/cpu --timeout 15 --retries 0 "torch>=2.1" torchvision 2>/dev/null \
    || pip install "torch>=2.1"
fi
pip install ".[test]"
if [ "$NATIVE_PEERS" = 1 ]; then
  # ffcv's own requirements but opencv-python: the test extras' opencv-python-headless
  # (albumentations') provides the same cv2, and the two must not both be installed.
  pip install numba terminaltables pytorch_pfn_extras fastargs assertpy psutil
  if "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then  # SPDL: Python 3.10+
    pip install "spdl-io>=0.8" "spdl-core>=0.8"
  fi
  "$PY" -c "import ffcv" 2>/dev/null || pip install --no-deps ffcv==1.0.2
fi
