#!/usr/bin/env bash
# mdst beside llama.cpp CUDA and Vulkan on the GPU machine, same synthetic files, one run, one table:
#   source .device/on-device.sh && bash benchmarks/vs_llamacpp.sh [build|run|all]
# "build" builds both llama-bench binaries (in parallel; ~5 min on 16 cores) and writes the synthetic files;
# "run" times mdst and both builds (nothing else running); "all" (default) does both. A machine keeps its
# builds between calls, so "build" and "run" fit two commands of the device's 10-minute limit.
# JSON lines go to $OUT (on the device machine) or benchmarks/results/<date>-h200/, one object per
# engine x model x test: {"engine", "model", "test", "tokens_per_s"}. Env: MODELS, TESTS, ENGINES, REPEAT.
set -euo pipefail
cd "$(dirname "$0")/.."
phase=${1:-all}
out=${OUT:-benchmarks/results/$(date +%F)-h200}
mkdir -p "$out"
models=${MODELS:-gemma3-270m,qwen3-0.6b,qwen3-8b}

if [ "$phase" != run ]; then
  bash .device/llamacpp.sh cuda >/dev/null & cuda=$!
  bash .device/llamacpp.sh vulkan >/dev/null & vk=$!
  python3 -c "
import sys; from pathlib import Path; from mdst.dev import synth
cache = Path.home() / '.cache' / 'mdst-bench'; cache.mkdir(parents=True, exist_ok=True)
for m in sys.argv[1].split(','):
    p = cache / f'{m}-Q4_K_M.gguf'
    p.exists() or synth.write(p, m, types='Q4_K_M')
" "$models"
  wait $cuda; wait $vk
fi
if [ "$phase" != build ]; then
  export LD_LIBRARY_PATH=/opt/vk/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader || true
  python3 benchmarks/vs_llamacpp.py --out "$out/vs_llamacpp.jsonl" --models "$models" \
    --tests "${TESTS:-pp512,tg128,tg128@d8192}" --engines "${ENGINES:-mdst,cuda,vulkan}" --repeat "${REPEAT:-3}" \
    --llama "cuda=$(bash .device/llamacpp.sh cuda)" --llama "vulkan=$(bash .device/llamacpp.sh vulkan)"
fi
