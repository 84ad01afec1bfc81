#!/usr/bin/env bash
# One GPU-machine run (see ../shared/device/README.md): adapter; decode attention per split/lanes choice;
# GEMV bandwidth per weight type; decode phases; model speed on synthetic presets with a profile, with the
# default presets and with the attention sweep's best; the no-split check; load memory. JSON under $OUT,
# a summary table last.
# Usage there: source .device/on-device.sh && bash benchmarks/device_suite.sh [presets] [repeat]
set -uo pipefail
export PYTHONUNBUFFERED=1 MDST_BENCH_CACHE=/tmp/mdst-bench
PRESETS=${1:-gemma3-270m,qwen3-0.6b}
REPEAT=${2:-3}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" "$MDST_BENCH_CACHE"
python3 -m mdst.cli doctor | tee "$OUT/doctor.txt"
python3 benchmarks/attention_decode.py > "$OUT/attention.json" || echo "attention_decode failed"
BEST=$(python3 - "$OUT/attention.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
shapes = {x["shape"] for x in r}
fastest = {s: min(x["us"] for x in r if x["shape"] == s) for s in shapes}
cost = {}
for x in r:  # worst slowdown over the shapes against each shape's fastest
    key = (x["split"], x["lanes_per_key"])
    cost[key] = max(cost.get(key, 0), x["us"] / fastest[x["shape"]])
split, lanes = min(cost, key=cost.get)
print(f"attention_split={split},attention_lanes={lanes}")
PY
)
echo "attention sweep best: $BEST"
for p in ${PRESETS//,/ }; do
  [ -f "$MDST_BENCH_CACHE/$p-Q4_K_M.gguf" ] || python3 -m mdst.cli synth "$p" "$MDST_BENCH_CACHE/$p-Q4_K_M.gguf" >/dev/null
  python3 benchmarks/decode_phases.py "$MDST_BENCH_CACHE/$p-Q4_K_M.gguf" --steps 20 > "$OUT/phases-$p.json" || echo "phases $p failed"
done
python3 benchmarks/matmul_bandwidth.py --k 4096 --n 14336 --reps ${REPS:-50} > "$OUT/matmul.json" || echo "matmul_bandwidth failed"
python3 benchmarks/models.py --presets "$PRESETS" --prompt 512 --gen 128 --repeat "$REPEAT" --context 1024 --profile \
  > "$OUT/models.jsonl" || echo "models failed"
if [ -n "$BEST" ]; then
  MDST_PRESETS="$BEST" python3 benchmarks/models.py --presets "$PRESETS" --prompt 512 --gen 128 --repeat "$REPEAT" \
    --context 1024 > "$OUT/models-best.jsonl" || echo "models (best presets) failed"
fi
if [[ "$PRESETS" == *gemma3-270m* ]]; then
  python3 benchmarks/binding_split.py "$MDST_BENCH_CACHE/gemma3-270m-Q4_K_M.gguf" > "$OUT/split.json" || echo "split failed"
  python3 benchmarks/load_memory.py "$MDST_BENCH_CACHE/gemma3-270m-Q4_K_M.gguf" > "$OUT/load_memory.json" || echo "load_memory failed"
fi
python3 benchmarks/summarize.py "$OUT"
