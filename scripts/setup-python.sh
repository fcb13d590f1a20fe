#!/usr/bin/env bash
# Creates .venv with the pinned Python peer (the upstream vineyard 0.24.2 client and
# daemon, and the numpy/pandas/pyarrow versions its extension was built for), what the
# Fluid tutorial's notebook imports, and the project's own `trellis` package (python/).
# Idempotent: a venv whose stamp matches requirements.txt and python/ is left alone; a
# change to either re-installs.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${TRELLIS_VENV:-$ROOT/.venv}
REQ=$ROOT/scripts/requirements.txt
STAMP=$VENV/.trellis-requirements
stamp() {
  {
    sha256sum <"$REQ"
    cd "$ROOT" && find python -type f \( -name '*.py' -o -name '*.c' -o -name '*.toml' -o -name '*.typed' -o -name '*.md' \) \
      -not -path '*/__pycache__/*' -not -path 'python/build/*' -not -path 'python/tests/*' -print0 \
      | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -d' ' -f1
}
WANT=$(stamp)
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ"
# The trellis package (trellis.flow, trellis.fluid, the deprecated trellis_flow name).
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps --no-build-isolation --force-reinstall "$ROOT/python"
# The C extension also beside its source, for the tests that import trellis from python/.
(cd "$ROOT/python" && "$VENV/bin/python" setup.py -q build_ext --inplace >/dev/null 2>&1) \
  || echo "warning: trellis._zerocopy was not built (zero-copy put unavailable)" >&2
rm -rf "$ROOT/python/build" "$ROOT"/python/*.egg-info
echo "$WANT" >"$STAMP"
