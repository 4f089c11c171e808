#!/usr/bin/env bash
# Installs lancefeed and everything its tests and benchmarks need on a fresh Debian
# machine with Rust and Python 3.9+: the C build tools (nasm for libjpeg-turbo's SIMD,
# cmake), the lightest torch pip can reach, and the package itself with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

missing=()
command -v nasm >/dev/null || missing+=(nasm)
command -v cmake >/dev/null || missing+=(cmake)
command -v jpegtran >/dev/null || missing+=(libjpeg-turbo-progs)  # tests: arithmetic/restart JPEGs
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
