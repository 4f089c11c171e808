#!/usr/bin/env bash
# The albumentations tests on the lowest and the newest albumentations that pyproject.toml
# allows: the fused ops are checked against albumentations' own output, and its internals
# (how a transform maps its targets, its parameter names) move between releases.
#
# The newest is what `pip install ".[test]"` installed; the lowest (with the albucore it
# pins) goes beside it, into .albumentations-lowest/ (ignored by git), first on the path.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export NO_ALBUMENTATIONS_UPDATE=1

lowest=$("$PY" - <<'PYEOF'
import re
spec = re.search(r'"albumentations\s*([^"]*)"', open("pyproject.toml").read()).group(1)
low = re.search(r">=\s*([0-9][0-9.]*)", spec).group(1)
print(".".join((low.split(".") + ["0", "0"])[:3]))
PYEOF
)
tests=(tests/test_albumentations.py)
echo "albumentations $("$PY" -c "import albumentations; print(albumentations.__version__)") (newest allowed, as installed):"
"$PY" -m pytest -q -p no:cacheprovider "${tests[@]}"

target=.albumentations-lowest
if [ "$("$PY" -c "import sys; sys.path.insert(0, '$target'); import albumentations; print(albumentations.__version__)" 2>/dev/null)" != "$lowest" ]; then
  rm -rf "$target"
  # Its own albucore pin, without touching the rest of the environment.
  "$PY" -m pip --disable-pip-version-check download -q --no-deps -d "$target.dl" "albumentations==$lowest" >/dev/null
  albucore=$("$PY" - "$target.dl" <<'PYEOF'
import glob, re, sys, zipfile
wheel = zipfile.ZipFile(glob.glob(f"{sys.argv[1]}/albumentations-*.whl")[0])
meta = next(n for n in wheel.namelist() if n.endswith("METADATA"))
print(re.search(r"Requires-Dist: albucore==([0-9.]+)", wheel.read(meta).decode()).group(1))
PYEOF
)
  rm -rf "$target.dl"
  "$PY" -m pip --disable-pip-version-check -q install --no-deps --target "$target" "albumentations==$lowest" "albucore==$albucore"
fi
echo "albumentations $lowest (lowest allowed):"
PYTHONPATH="$target${PYTHONPATH:+:$PYTHONPATH}" "$PY" -c "import albumentations; assert albumentations.__version__ == '$lowest', albumentations.__version__"
PYTHONPATH="$target${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m pytest -q -p no:cacheprovider "${tests[@]}"
