#!/usr/bin/env bash
# One GPU-machine run (see ../shared/device/README.md): adapter; kernel sweeps (decode attention split and
# lanes per key; GEMV lanes and chunk per weight type, against copy and stream bandwidth); model speed on
# synthetic presets with a profile, under the default presets and under the sweeps' picks; decode phases;
# the no-split check; load memory. JSON under $OUT, a summary table last.
# Usage there: source .device/on-device.sh && bash benchmarks/device_suite.sh [presets] [repeat]
set -uo pipefail
export PYTHONUNBUFFERED=1 MDST_BENCH_CACHE=/tmp/mdst-bench
PRESETS=${1:-gemma3-270m,qwen3-0.6b}
REPEAT=${2:-3}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" "$MDST_BENCH_CACHE"
python3 -m mdst.cli doctor > "$OUT/doctor.txt"
python3 benchmarks/attention_decode.py > "$OUT/attention.json" || echo "attention_decode failed"
python3 benchmarks/matmul_bandwidth.py --k 4096 --n 14336 --reps ${REPS:-50} --lanes ${LANES:-16,32,64} \
  --chunks ${CHUNKS:-1,2,8} > "$OUT/matmul.json" || echo "matmul_bandwidth failed"
PICK=$(python3 benchmarks/pick_presets.py "$OUT/attention.json" "$OUT/matmul.json")
echo "sweeps pick: $PICK" | tee "$OUT/pick.txt"
for p in ${PRESETS//,/ }; do
  [ -f "$MDST_BENCH_CACHE/$p-Q4_K_M.gguf" ] || python3 -m mdst.cli synth "$p" "$MDST_BENCH_CACHE/$p-Q4_K_M.gguf" >/dev/null
  MDST_PRESETS="$PICK" python3 benchmarks/decode_phases.py "$MDST_BENCH_CACHE/$p-Q4_K_M.gguf" --steps 20 \
    > "$OUT/phases-$p.json" || echo "phases $p failed"
done
for run in default picked; do
  [ $run = picked ] && export MDST_PRESETS="$PICK"
  python3 benchmarks/models.py --presets "$PRESETS" --prompt 512 --gen 128 --repeat "$REPEAT" --context 1024 \
    --profile > "$OUT/models-$run.jsonl" || echo "models ($run) failed"
done
if [[ "$PRESETS" == *gemma3-270m* ]]; then
  python3 benchmarks/binding_split.py "$MDST_BENCH_CACHE/gemma3-270m-Q4_K_M.gguf" > "$OUT/split.json" || echo "split failed"
  python3 benchmarks/load_memory.py "$MDST_BENCH_CACHE/gemma3-270m-Q4_K_M.gguf" > "$OUT/load_memory.json" || echo "load_memory failed"
fi
python3 benchmarks/summarize.py "$OUT"
