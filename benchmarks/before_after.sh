#!/usr/bin/env bash
# Speed of this checkout against an earlier commit, in one run on one machine (for changes meant to keep speed):
#   here:       bash benchmarks/before_after.sh pack REV      (writes .device/before/: REV's mdst/ and benchmarks/)
#   GPU machine: source .device/on-device.sh && bash benchmarks/before_after.sh run
# "run" writes the synthetic files once, then times both trees in turn, ROUNDS times (alternating, so drift
# on the machine hits both), and prints JSON lines and a table of medians and after/before ratios.
# Env: MODELS (default gemma3-270m,qwen3-0.6b,qwen3-8b), ROUNDS (2), REPEAT (3), PROMPT (512), GEN (128),
# CONTEXT (1024: the context each model is loaded with).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  pack)
    rev=${2:?usage: before_after.sh pack REV}
    rm -rf .device/before && mkdir -p .device/before
    git archive "$rev" mdst benchmarks | tar -x -C .device/before
    git rev-parse "$rev" > .device/before/REV
    echo "packed $(cat .device/before/REV) into .device/before"
    ;;
  run)
    [ -d .device/before/mdst ] || { echo "no .device/before: run 'before_after.sh pack REV' here first" >&2; exit 2; }
    out=${OUT:-benchmarks/results/$(date +%F)-before-after}
    mkdir -p "$out"
    models=${MODELS:-gemma3-270m,qwen3-0.6b,qwen3-8b}
    args=(--presets "$models" --prompt "${PROMPT:-512}" --gen "${GEN:-128}" --repeat "${REPEAT:-3}" --context "${CONTEXT:-1024}")
    python3 benchmarks/models.py "${args[@]}" --gen 1 --repeat 1 >/dev/null   # synthetic files, warm caches
    for round in $(seq "${ROUNDS:-2}"); do
      for tree in before after; do
        root=$([ "$tree" = before ] && echo .device/before || echo .)
        PYTHONPATH="$root" python3 "$root/benchmarks/models.py" "${args[@]}" |
          python3 -c "import json, sys
for line in sys.stdin:
    r = json.loads(line)
    if 'name' in r:
        print(json.dumps({'tree': sys.argv[1], 'round': int(sys.argv[2]), **r}), flush=True)" "$tree" "$round"
      done
    done | tee "$out/before_after.jsonl"
    python3 - "$out/before_after.jsonl" "$(cat .device/before/REV)" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
keys = ["prefill_tokens_per_s", "decode_tokens_per_s"]
print(f"before = {sys.argv[2][:10]}, after = this checkout; medians over rounds, tok/s")
print(f"{'model':<14}" + "".join(f"{k.split('_')[0] + ' before':>14}{k.split('_')[0] + ' after':>14}{'ratio':>8}" for k in keys))
for name in dict.fromkeys(r["name"] for r in rows):
    cells = ""
    for k in keys:
        b, a = (statistics.median(r[k] for r in rows if r["name"] == name and r["tree"] == t) for t in ("before", "after"))
        cells += f"{b:>14,.0f}{a:>14,.0f}{a / b:>8.3f}"
    print(f"{name:<14}{cells}")
EOF
    ;;
  *) echo "usage: before_after.sh pack REV | run" >&2; exit 2 ;;
esac
