#!/usr/bin/env bash
# The main job of the few-shot workflow, from a fresh checkout: set up, then train the `demo`
# baseline and its bootstrapped twin `demo_boot` on the built-in glyphs (side by side, one CPU
# thread each), evaluate both at several K_test on fixed test episodes, write the report
# (markdown table + plot of accuracy against K_test) and explain one test prediction of the
# baseline (`fwp fewshot explain`). 5 min 44 s on 2 idle CPU cores after set-up (docs/fewshot.md).
#
#   scripts/demo.sh [OUT]        (default OUT: runs/demo; `make demo` runs this)
#
# Environment: PYTHON (interpreter used by `make setup`), STEPS (override the presets' steps),
# EPISODES (test episodes per K_test, default 1000), FWP (command that runs the fwp CLI).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
OUT=${1:-runs/demo}
EPISODES=${EPISODES:-1000}
K_TEST=(1 2 5 10)

make setup >/dev/null
setup_s=$(( $(date +%s) - start ))
start=$(date +%s)  # the demo's time is counted from here: set-up (a first install) is not the demo
FWP=${FWP:-.venv/bin/python -m fwp}
PY=.venv/bin/python

if [ -e "$OUT" ]; then
    echo "demo: $OUT exists; remove it or pass another folder: scripts/demo.sh OUT" >&2
    exit 2
fi
mkdir -p "$OUT"
# Render the glyph cache once, before the two runs would both start rendering it.
$PY -c "from fwp.data import load_dataset; [load_dataset('glyphs', split=s) for s in ('train', 'val', 'test')]"

steps=()
if [ -n "${STEPS:-}" ]; then steps=(--steps "$STEPS"); fi
pids=()
for preset in demo demo_boot; do
    echo "demo: training $preset -> $OUT/$preset (log: $OUT/$preset.log)"
    OMP_NUM_THREADS=1 $FWP fewshot train --preset "$preset" "${steps[@]}" --out "$OUT/$preset" \
        --no-progress >"$OUT/$preset.log" 2>&1 &
    pids+=($!)
done
# Progress: the newest training line of each run, every 30 s, while they train.
progress() {
    for preset in demo demo_boot; do
        [ -f "$OUT/$preset/metrics.jsonl" ] || continue
        grep '"split": "train"' "$OUT/$preset/metrics.jsonl" | tail -n 1 | $PY -c "
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    print(f'  $preset: step {m[\"step\"]}, loss {m[\"loss\"]:.3f}, '
          f'acc {m[\"accuracy\"]:.1f} %, {m[\"steps_per_s\"]:.2f} steps/s')" || true
    done
}
# Polled every second (a 30 s sleep would idle up to 30 s after training ends).
last=$(date +%s)
while kill -0 "${pids[@]}" 2>/dev/null; do
    sleep 1
    if (( $(date +%s) - last >= 30 )); then
        last=$(date +%s)
        echo "demo: $(( last - start )) s"
        progress
    fi
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
if [ "$status" -ne 0 ]; then
    echo "demo: training failed; see $OUT/demo.log and $OUT/demo_boot.log" >&2
    tail -n 5 "$OUT"/*.log >&2
    exit "$status"
fi
tail -n 1 "$OUT/demo.log" "$OUT/demo_boot.log"

# Both evaluations side by side; the baseline's explanation (what the trained SRWM does with one
# test episode; docs/dual.md explains the pictures) follows its evaluation on the same core.
pids=()
for preset in demo demo_boot; do
    OMP_NUM_THREADS=1 $FWP fewshot eval "$OUT/$preset" --k-test "${K_TEST[@]}" \
        --episodes "$EPISODES" --split test >"$OUT/$preset.eval.log" 2>&1 &
    pids+=($!)
done
wait "${pids[0]}" || status=$?
OMP_NUM_THREADS=1 $FWP fewshot explain "$OUT/demo" --out "$OUT/explain" >"$OUT/explain.log" 2>&1 &
pids[0]=$!
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
cat "$OUT/demo.eval.log" "$OUT/demo_boot.eval.log"
if [ "$status" -ne 0 ]; then cat "$OUT/explain.log" >&2; exit "$status"; fi

$FWP fewshot report "$OUT/demo" "$OUT/demo_boot" --out "$OUT/report"
cat "$OUT/explain.log"
echo "demo: done in $(( $(date +%s) - start )) s after set-up ($setup_s s); report: $OUT/report/report.md;" \
    "explanation: $OUT/explain/attribution.png, fast_weights.png"
