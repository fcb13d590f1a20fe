#!/usr/bin/env bash
# The main job: sets everything up and runs the seed's house-prices pipeline as a Trellis
# flow on 2 replicas (generate 600,000 x 46 -> preprocess -> train -> test), each step
# placed where its inputs live and handing data to the next through shared memory.
# Prints the MSE, where each step ran, and the handoff times.
#   HOUSE_PRICES_ROWS=60000 bash scripts/demo.sh    # a smaller run
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh >&2
export TRELLIS_BIN=$ROOT/.build/release/trellis
export TRELLIS_PYTHON=$ROOT/.venv/bin/python
export TRELLIS_HOME=${TRELLIS_HOME:-$(mktemp -d /tmp/trellis-demo.XXXXXX)}
export PATH=$ROOT/.venv/bin:$PATH
exec "$TRELLIS_PYTHON" examples/house-prices/flow.py --rows "${HOUSE_PRICES_ROWS:-600000}"
