#!/usr/bin/env bash
# One GPU-machine run for batched decode (see ../shared/device/README.md): the many-row matmul's tile shapes
# and slices of k at a batched step's rows (GEMM="gemm.py's arguments", "" to skip) and the rows-of-x GEMV's
# weight-row tiles (GEMV=1), then the qwen3-8b shape's aggregate decode at
# BATCH sequences under each MDST_PRESETS variant given ("" for the defaults); with LLAMA=1 first
# llama.cpp CUDA's llama-batched-bench on the same file (a ~4.5 min build). JSON under $OUT, a table last.
# Usage there: source .device/on-device.sh && bash benchmarks/batched_suite.sh "" "batch_gemv=4"
set -uo pipefail
export PYTHONUNBUFFERED=1 MDST_BENCH_CACHE=/tmp/mdst-bench
OUT=${OUT:-/tmp/out}
BATCH=${BATCH:-1,4,16,64}
mkdir -p "$OUT" "$MDST_BENCH_CACHE"
model=$MDST_BENCH_CACHE/qwen3-8b-Q4_K_M.gguf
[ -f "$model" ] || python3 -m mdst.cli synth qwen3-8b "$model" > /dev/null &
synth=$!
GEMM=${GEMM-"--m 4,16,64,512 --blocks 4x4x4,4x4x16 --slices 1,2,4,8,16"}
if [ -n "$GEMM" ]; then
  python3 benchmarks/gemm.py --types Q4_K,Q6_K --reps 20 $GEMM > "$OUT/gemm_short.json" || echo "gemm failed"
fi
if [ "${GEMV:-0}" = 1 ]; then
  python3 benchmarks/matmul_bandwidth.py --types Q4_K,Q6_K --xr 4,16 --rows 1,2,4 > "$OUT/gemv_xr.json" \
    || echo "matmul_bandwidth failed"
fi
wait $synth
if [ "${LLAMA:-0}" = 1 ]; then
  batched=$(bash .device/llamacpp.sh cuda llama-batched-bench) && \
    "$batched" -m "$model" -npp 128 -ntg 128 -npl "$BATCH" -ngl 99 -fa 1 -c 32768 > "$OUT/llama_batched.txt" 2>&1 \
    || echo "llama-batched-bench failed"
  grep "^|" "$OUT/llama_batched.txt"
fi
for v in "$@"; do
  MDST_PRESETS="$v" python3 benchmarks/batched_decode.py --model "$model" --batch "$BATCH" --prompt 128 --gen 16 \
    --repeat 1 | python3 -c "import json, sys; [print(json.dumps({'presets': sys.argv[1], **json.loads(l)})) for l in sys.stdin]" "$v" \
    >> "$OUT/batched.jsonl" || echo "batched_decode ($v) failed"
done
python3 - "$OUT" <<'PY'
import json, math, sys
from pathlib import Path
out = Path(sys.argv[1])
if (out / "gemm_short.json").exists():
    for r in json.loads((out / "gemm_short.json").read_text())["results"]:
        print(f"gemm {r['type']} m={r['m']} {r['kernel']} slices {r.get('slices', 1)}: {r['ms'] * 1e3:.1f} us, {r['tflop_per_s']:.2f} TFLOP/s")
if (out / "gemv_xr.json").exists():
    for r in json.loads((out / "gemv_xr.json").read_text())["results"]:
        print(f"gemv {r['type']} {r['kernel']}: {r['us_per_dispatch']} us, row GB/s {r['row_gb_per_s']}")
runs = [json.loads(line) for line in (out / "batched.jsonl").read_text().splitlines()] \
    if (out / "batched.jsonl").exists() else []
for r in runs:
    print(f"batched [{r['presets']}] alone {r['alone_tok_s']}:",
          ", ".join(f"{n}: {b['aggregate_tok_s']} ({b['vs_alone']}x)" for n, b in r["batched"].items()))
if runs:   # the variant with the best geometric mean over the batch sizes above one (as x its run's lone rate)
    def score(r):
        gains = [b["vs_alone"] for n, b in r["batched"].items() if int(n) > 1]
        return math.prod(gains) ** (1 / len(gains)) if gains else 0.0
    best = max(runs, key=score)
    print(f"batched pick: MDST_PRESETS=\"{best['presets']}\" (geometric mean {score(best):.2f}x alone)")
PY
