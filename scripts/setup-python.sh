#!/usr/bin/env bash
# Creates .venv with the pinned Python peer (the upstream vineyard 0.24.2 client and
# daemon, and the numpy/pandas/pyarrow versions its extension was built for).
# Idempotent: a venv whose pins already match is left alone.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${TRELLIS_VENV:-$ROOT/.venv}
REQ=$ROOT/scripts/requirements.txt
STAMP=$VENV/.trellis-requirements
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && cmp -s "$REQ" "$STAMP"; then
  exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ"
cp "$REQ" "$STAMP"
