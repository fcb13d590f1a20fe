#!/usr/bin/env bash
# The main job: sets everything up, starts a Trellis daemon, hands the seed's DataFrame
# (600,000 x 46 int64) from a writer process to a reader process by name, prints the
# handoff time, and stops the daemon.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh >&2
PY=$ROOT/.venv/bin/python
BIN=$ROOT/.build/release/trellis
DIR=$(mktemp -d /tmp/trdemo.XXXXXX)
SOCK=$DIR/t.sock
"$BIN" serve --socket "$SOCK" --size 2Gi --norpc --log-level warning &
PID=$!
trap 'kill -TERM $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.05; done
export VINEYARD_IPC_SOCKET=$SOCK
W=$("$PY" examples/handoff/handoff.py writer)
R=$("$PY" examples/handoff/handoff.py reader)
echo "$W" | grep -v _seconds=
echo "$R" | grep -v _seconds=
PUT=$(echo "$W" | sed -n 's/^put_seconds=//p')
GET=$(echo "$R" | sed -n 's/^get_seconds=//p')
"$PY" -c "print(f'handoff (writer put + reader get, separate processes): {($PUT + $GET) * 1e3:.1f} ms')"
