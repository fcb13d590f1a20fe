#!/usr/bin/env bash
# Creates .venv-ray: Ray (and the numpy/pandas/pyarrow pins of the project's venv) for
# the Ray object-store anchor of bench/daemon_bench.py (`--ray`). Benchmarks only: Ray is
# never installed into .venv, the pinned test venv, and no test needs it.
# Idempotent: a venv whose stamp matches the pins below is left alone.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${TRELLIS_RAY_VENV:-$ROOT/.venv-ray}
# Ray 2.60 ships cp311 manylinux wheels (~80 MB) and accepts numpy<2.
PINS=("ray==2.60.0" "numpy<2" "pandas<2.2" "pyarrow<17")
STAMP=$VENV/.trellis-ray
WANT=$(printf '%s\n' "${PINS[@]}" | sha256sum | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "${PINS[@]}"
"$VENV/bin/python" -c 'import ray, numpy, pandas, pyarrow; print("ray", ray.__version__, "numpy", numpy.__version__, "pandas", pandas.__version__, "pyarrow", pyarrow.__version__)'
echo "$WANT" >"$STAMP"
