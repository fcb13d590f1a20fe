#!/usr/bin/env bash
# The main job: sets everything up and runs the seed's house-prices pipeline as a Trellis
# flow on 2 replicas (generate 600,000 x 46 -> preprocess -> train -> test), each step
# placed where its inputs live and handing data to the next through shared memory.
# Prints the MSE, where each step ran, and the handoff times, and ends by writing the run's
# report (an HTML page: DAG, placement, timeline, objects) and printing its path.
#   HOUSE_PRICES_ROWS=60000 bash scripts/demo.sh    # a smaller run
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh >&2
export TRELLIS_BIN=$ROOT/.build/release/trellis
export TRELLIS_PYTHON=$ROOT/.venv/bin/python
export TRELLIS_HOME=${TRELLIS_HOME:-$(mktemp -d /tmp/trellis-demo.XXXXXX)}
export PATH=$ROOT/.venv/bin:$PATH
RUN_ID=house-prices-$(date +%Y%m%d-%H%M%S)
STATUS=0
"$TRELLIS_PYTHON" examples/house-prices/flow.py --rows "${HOUSE_PRICES_ROWS:-600000}" --run-id "$RUN_ID" || STATUS=$?
# The run report, finished or failed: one HTML file with the DAG (each step coloured by the
# replica it ran on), the timeline of every attempt, the objects and any failure with its log.
if "$TRELLIS_BIN" flow status "$RUN_ID" >/dev/null 2>&1; then
  REPORT=$("$TRELLIS_BIN" flow report "$RUN_ID")
  echo "run report (open it in a browser): $REPORT"
fi
exit $STATUS
