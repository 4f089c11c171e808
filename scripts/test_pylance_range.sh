#!/usr/bin/env bash
# The read-path tests (and optimize, which writes Lance's fragments itself) on the lowest and the
# newest pylance that pyproject.toml allows.
#
# The newest is what `pip install ".[test]"` installed (the environment as it is); the
# lowest is installed beside it, into .pylance-lowest/ (ignored by git), and put first
# on the path for a second run. Everything else stays as installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

lowest=$("$PY" - <<'EOF'
import re
spec = re.search(r'"pylance\s*([^"]*)"', open("pyproject.toml").read()).group(1)
low = re.search(r">=\s*([0-9][0-9.]*)", spec).group(1)
print(".".join((low.split(".") + ["0", "0"])[:3]))  # 8 -> 8.0.0, as pylance numbers its releases
EOF
)
tests=(tests/test_inplace.py tests/test_writers.py tests/test_optimize.py)
newest=$("$PY" -c "import lance; print(lance.__version__)")
echo "pylance $newest (newest allowed, as installed):"
"$PY" -m pytest -q -p no:cacheprovider "${tests[@]}"

target=.pylance-lowest
if [ "$("$PY" -c "import sys; sys.path.insert(0, '$target'); import lance; print(lance.__version__)" 2>/dev/null)" != "$lowest" ]; then
  rm -rf "$target"
  "$PY" -m pip --disable-pip-version-check -q install --no-deps --target "$target" "pylance==$lowest"
fi
echo "pylance $lowest (lowest allowed):"
PYTHONPATH="$target${PYTHONPATH:+:$PYTHONPATH}" "$PY" -c "import lance; assert lance.__version__ == '$lowest', lance.__version__"
PYTHONPATH="$target${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m pytest -q -p no:cacheprovider "${tests[@]}"
