#!/usr/bin/env bash
# The device path's validation on a machine with a GPU, in one run (see scripts/gpu_check.py):
# results in $OUT/gpu_check.json (or ./gpu-check/), a line per check on stderr. Under 8
# minutes on one H100; exits 1 when a check fails, 2 without a GPU.
#   bash scripts/gpu_check.sh                # all checks
#   bash scripts/gpu_check.sh --only race    # one of them
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-check}"
if ! python3 -c "import lancefeed._core" 2>/dev/null; then
  # A checkout with the extension built in place (python/lancefeed/_core.abi3.so), not installed.
  export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
  python3 -c "import lancefeed._core" || { echo "lancefeed is not importable: pip install -e . first" >&2; exit 2; }
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true
exec timeout 470 python3 scripts/gpu_check.py --out "$out" "$@"
