#!/usr/bin/env bash
# Speed of this checkout against earlier commits or branches, in one run on one machine (for changes meant to
# keep or gain speed; one machine start measures several candidates):
#   here:        bash benchmarks/before_after.sh pack REV [NAME]   (writes .device/trees/NAME/, default NAME
#                "before": REV's mdst/ and benchmarks/; pack more names to time several trees)
#   GPU machine: source .device/on-device.sh && bash benchmarks/before_after.sh run
# "run" writes the synthetic files once, then times every packed tree and this checkout ("after") in turn,
# ROUNDS times (alternating, so drift on the machine hits all), and prints JSON lines and a table of medians and
# ratios to "before" (or the first packed tree).
# Env: MODELS (default gemma3-270m,qwen3-0.6b,qwen3-8b), ROUNDS (2), REPEAT (3), PROMPT (512), GEN (128),
# CONTEXT (1024: the context each model is loaded with).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  pack)
    rev=${2:?usage: before_after.sh pack REV [NAME]}
    dir=.device/trees/${3:-before}
    rm -rf "$dir" && mkdir -p "$dir"
    git archive "$rev" mdst benchmarks | tar -x -C "$dir"
    git rev-parse "$rev" > "$dir/REV"
    echo "packed $(cat "$dir/REV") into $dir"
    ;;
  run)
    trees=$(ls .device/trees 2>/dev/null | sort | awk '$0 == "before" {print; next} {rest = rest " " $0} END {print rest}')
    [ -n "${trees// /}" ] || { echo "no .device/trees: run 'before_after.sh pack REV' here first" >&2; exit 2; }
    out=${OUT:-benchmarks/results/$(date +%F)-before-after}
    mkdir -p "$out"
    models=${MODELS:-gemma3-270m,qwen3-0.6b,qwen3-8b}
    args=(--presets "$models" --prompt "${PROMPT:-512}" --gen "${GEN:-128}" --repeat "${REPEAT:-3}" --context "${CONTEXT:-1024}")
    python3 benchmarks/models.py "${args[@]}" --gen 1 --repeat 1 >/dev/null   # synthetic files, warm caches
    for round in $(seq "${ROUNDS:-2}"); do
      for tree in $trees after; do
        root=$([ "$tree" = after ] && echo . || echo ".device/trees/$tree")
        PYTHONPATH="$root" python3 "$root/benchmarks/models.py" "${args[@]}" |
          python3 -c "import json, sys
for line in sys.stdin:
    r = json.loads(line)
    if 'name' in r:
        print(json.dumps({'tree': sys.argv[1], 'round': int(sys.argv[2]), **r}), flush=True)" "$tree" "$round"
      done
    done | tee "$out/before_after.jsonl"
    revs=$(for t in $trees; do echo "$t=$(cut -c1-10 ".device/trees/$t/REV")"; done | tr '\n' ' ')
    python3 - "$out/before_after.jsonl" "$revs" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
trees = list(dict.fromkeys(r["tree"] for r in rows))
base = trees[0]
print(f"{sys.argv[2]}after = this checkout; medians over rounds, tok/s (ratio to {base})")
for key in ("prefill_tokens_per_s", "decode_tokens_per_s"):
    print(f"{key.split('_')[0]:<14}" + "".join(f"{t:>20}" for t in trees))
    for name in dict.fromkeys(r["name"] for r in rows):
        med = {t: statistics.median(r[key] for r in rows if r["name"] == name and r["tree"] == t) for t in trees}
        print(f"{name:<14}" + "".join(f"{med[t]:>12,.0f} ({med[t] / med[base]:.3f})" for t in trees))
EOF
    ;;
  *) echo "usage: before_after.sh pack REV [NAME] | run" >&2; exit 2 ;;
esac
