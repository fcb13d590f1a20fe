#!/usr/bin/env bash
# Builds the libFuzzer harnesses (Fuzz/: FuzzJSON, FuzzFrame, FuzzRequest, FuzzWatch) with
# -sanitize=fuzzer in their own scratch path and runs each for a bounded time.
#
#   scripts/fuzz.sh                 # CI: 20 s per harness
#   scripts/fuzz.sh 3600 FuzzJSON   # by hand: an hour of one harness
#   FUZZ_PHASE=build scripts/fuzz.sh   # only build the harnesses (test.sh does this at low
#   FUZZ_PHASE=run scripts/fuzz.sh 20  #  priority beside the Python tests, then runs them)
#
# Seeds: Fuzz/corpus/<harness>/ (from the captured transcripts, scripts/fuzz_seeds.py).
# The growing corpus lives in .build-fuzz/corpus/<harness>/, crashing inputs are written
# to .build-fuzz/crashes/<harness>/ and the run fails. Replay one with the harness built
# without the fuzzer: TRELLIS_FUZZ=1 swift build --scratch-path .build-fuzz --product FuzzJSON &&
# .build-fuzz/debug/FuzzJSON FILE. (lld links them: gold fails on the instrumented objects.)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SECONDS_EACH=${1:-20}
shift || true
HARNESSES=${*:-FuzzJSON FuzzFrame FuzzRequest FuzzWatch}
SCRATCH=$ROOT/.build-fuzz
export TRELLIS_FUZZ=1

FLAGS=(-c release --scratch-path "$SCRATCH" -Xswiftc -sanitize=fuzzer -Xswiftc -D -Xswiftc TRELLIS_FUZZING
       -Xswiftc -enable-testing -Xswiftc -use-ld=lld)
PHASE=${FUZZ_PHASE:-all}
status=0
for h in $HARNESSES; do
  mkdir -p "$SCRATCH"
  if [ "$PHASE" != run ] && ! swift build "${FLAGS[@]}" --product "$h" > "$SCRATCH/build-$h.log" 2>&1; then
    grep -E "error" "$SCRATCH/build-$h.log" | head -10
    echo "fuzz: building $h failed (log: $SCRATCH/build-$h.log)"; status=1; continue
  fi
  [ "$PHASE" = build ] && continue
  bin=$(swift build "${FLAGS[@]}" --show-bin-path)/$h
  [ -x "$bin" ] || { echo "fuzz: $bin was not built"; status=1; continue; }
  mkdir -p "$SCRATCH/corpus/$h" "$SCRATCH/crashes/$h"
  # Bounded: -max_total_time ends the run, -timeout fails an input that hangs, -rss_limit_mb one that bloats.
  timeout $((SECONDS_EACH + 120)) "$bin" "$SCRATCH/corpus/$h" "Fuzz/corpus/$h" \
    -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
    -artifact_prefix="$SCRATCH/crashes/$h/" -print_final_stats=1 > "$SCRATCH/$h.log" 2>&1
  rc=$?
  runs=$(grep -E "^stat::number_of_executed_units" "$SCRATCH/$h.log" | awk '{print $2}')
  echo "fuzz: $h: ${runs:-?} inputs in ${SECONDS_EACH}s, exit $rc (log: $SCRATCH/$h.log)"
  if [ $rc -ne 0 ]; then
    status=1
    grep -E "ERROR|Fatal error|SUMMARY|Test unit written" "$SCRATCH/$h.log" | head -5
  fi
done
exit $status
