"""Aggregate decode speed of N sequences stepping together (`Model.batch`) against one alone. JSON lines.

For each N: N sequences of random prompt ids are added (prefilled; not timed), then `--gen` batched
steps are timed; aggregate tok/s = N * gen / seconds (median of --repeat, after an untimed run that
compiles the plan for N). "alone" is one sequence's
greedy decode through `Session.decode` (the step-ahead path generate() uses), measured in the same run.
On a GPU, two or more sequences take the batched plan (each weight read once for up to 16 of them; 64 are
four submits of 16); `batched_plan_rows` lists the row buckets that were compiled.
Synthetic files are written once into --cache (mdst synth, Q4_K_M-like mix unless --types).
Usage: python benchmarks/batched_decode.py [--presets qwen3-0.6b,qwen3-8b | --model FILE] [--batch 1,4,16,64]
                                           [--prompt 32] [--gen 32] [--repeat 3] [--device gpu]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np


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
    from mdst.text.sampling import SamplingParams

    sizes = [int(n) for n in args.batch.split(",")]
    rng = np.random.default_rng(0)
    with mdst.load(path, device=args.device, context_length=args.prompt + args.gen + 8) as model:
        prompts = [[int(t) for t in rng.integers(0, model.n_vocab, args.prompt)] for _ in range(max(sizes))]

        def alone() -> float:
            with model.session() as s:
                tok = int(s.prefill(prompts[0], greedy=True))
                t0 = time.perf_counter()
                for _ in s.decode(tok, args.gen, lambda: "argmax", ahead=True):
                    pass
                return args.gen / (time.perf_counter() - t0)

        def batched(n: int) -> float:
            batch = model.batch()
            try:
                for ids in prompts[:n]:
                    batch.add(ids, SamplingParams())
                t0 = time.perf_counter()
                for _ in range(args.gen):
                    batch.step()
                return n * args.gen / (time.perf_counter() - t0)
            finally:
                batch.close()

        alone()   # compiles the plans
        base = statistics.median(alone() for _ in range(args.repeat))
        print(f"# {path.name}: alone {base:.1f} tok/s", file=sys.stderr, flush=True)
        out = {"model": path.name, "device": model.backend, "prompt": args.prompt, "gen": args.gen,
               "alone_tok_s": round(base, 2), "batched": {}}
        for n in sizes:
            agg = statistics.median([batched(n) for _ in range(args.repeat + 1)][1:])   # the first compiles n's plan
            out["batched"][n] = {"aggregate_tok_s": round(agg, 2), "per_sequence_tok_s": round(agg / n, 2),
                                 "vs_alone": round(agg / base, 2)}
            print(f"# {path.name}: {n} sequences {agg:.1f} tok/s ({agg / base:.2f}x alone)", file=sys.stderr, flush=True)
        out["batched_plan_rows"] = sorted(k[1] for k in getattr(model.engine, "plans", {}) if k[0] == "batch")
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
