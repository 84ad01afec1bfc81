"""Aggregate decode speed of N sequences stepping together (`Model.batch`) against one alone. JSON lines.

For each N: N sequences of random prompt ids are added (prefilled; not timed), then `--gen` batched
steps are timed; aggregate tok/s = N * gen / seconds (median of --repeat, after an untimed run that
compiles the plan for N): mdst.serve.bench.bench_batch, what `mdst bench --batch` prints. "alone" is one
sequence's greedy decode (mdst.serve.bench.bench: `Session.decode`, the step-ahead path generate() uses),
measured in the same run.
On a GPU, two or more sequences take the batched plan (each weight read once for up to 16 of them; 64 are
four submits of 16); `batched_plan_rows` lists the row buckets that were compiled.
Synthetic files are written once into --cache (mdst synth, Q4_K_M-like mix unless --types).
Usage: python benchmarks/batched_decode.py [--presets qwen3-0.6b,qwen3-8b | --model FILE] [--batch 1,4,16,64]
                                           [--prompt 32] [--gen 32] [--repeat 3] [--device gpu] [--activations q8]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--presets", default="qwen3-0.6b", help="synth presets, comma-separated")
    ap.add_argument("--model", default="", help="a GGUF file instead of a synth preset")
    ap.add_argument("--types", default="Q4_K_M")
    ap.add_argument("--batch", default="1,4,16,64")
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="gpu")
    ap.add_argument("--activations", default="f32", help="mdst.load's option: f32 or q8")
    ap.add_argument("--cache", default=os.environ.get("MDST_BENCH_CACHE", str(Path.home() / ".cache" / "mdst-bench")))
    args = ap.parse_args()

    from mdst.dev import synth

    models = [("", Path(args.model))] if args.model else \
        [(p, Path(args.cache) / f"{p}-{args.types}.gguf") for p in filter(None, args.presets.split(","))]
    for preset, path in models:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            synth.write(path, preset, types=args.types)
        run(path, args)


def run(path: Path, args: argparse.Namespace) -> None:
    """One model's line of JSON."""
    import mdst
    from mdst.serve.bench import bench, bench_batch

    sizes = [int(n) for n in args.batch.split(",")]

    def say(phase: str) -> None:
        print(f"# {path.name}: {phase}", file=sys.stderr, flush=True)

    with mdst.load(path, device=args.device, context_length=args.prompt + args.gen + 8,
                   activations=args.activations) as model:
        base = bench(model, args.prompt, args.gen, args.repeat)["decode_tokens_per_s"]
        say(f"alone {base:.1f} tok/s")
        out = {"model": path.name, "device": model.backend, "activations": args.activations, "prompt": args.prompt,
               "gen": args.gen,
               "alone_tok_s": round(base, 2), "batched": {}}
        for n, r in bench_batch(model, sizes, args.prompt, args.gen, args.repeat, progress=say).items():
            agg = r["aggregate_tokens_per_s"]
            out["batched"][n] = {"aggregate_tok_s": round(agg, 2), "per_sequence_tok_s": round(agg / n, 2),
                                 "vs_alone": round(agg / base, 2)}
        out["batched_plan_rows"] = sorted(k[1] for k in getattr(model.engine, "plans", {}) if k[0] == "batch")
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
