"""Prefill and decode speed of models: synthetic shape-faithful presets and the packaged real files. JSON lines.

Each model: `mdst.serve.bench` (pp N, tg M, median of R runs, greedy decode on random token ids).
Synthetic files are written once into --cache (mdst synth, Q4_K_M-like mix unless --types); any synth preset
name works, the mixtures of experts included (qwen3-30b-a3b, lfm2-8b-a1b).
Usage: python benchmarks/models.py [--presets gemma3-270m,qwen3-0.6b] [--real smollm2-135m,gemma3-270m]
                                   [--prompt 512] [--gen 128] [--repeat 3] [--device gpu] [--activations f32,q8]
--activations: mdst.load's option; several (comma-separated) run each model once per value.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--presets", default="gemma3-270m,qwen3-0.6b,qwen3-8b")
    ap.add_argument("--real", default="", help="packaged models, e.g. smollm2-135m,gemma3-270m")
    ap.add_argument("--types", default="Q4_K_M")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="gpu")
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--activations", default="f32", help="f32, q8, or both: f32,q8 (each model once per value)")
    ap.add_argument("--profile", action="store_true", help="add GPU time per op and layer")
    ap.add_argument("--cache", default=os.environ.get("MDST_BENCH_CACHE", str(Path.home() / ".cache" / "mdst-bench")))
    args = ap.parse_args()

    import mdst
    from mdst.serve.bench import bench
    from mdst.dev import synth

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    models = [(p, cache / f"{p}-{args.types}.gguf") for p in filter(None, args.presets.split(","))]
    models += [(r, r) for r in filter(None, args.real.split(","))]
    for name, path in models:
        if isinstance(path, Path) and not path.exists():
            t0 = time.perf_counter()
            synth.write(path, name, types=args.types)
            print(json.dumps({"synth": name, "path": str(path), "bytes": path.stat().st_size,
                              "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
        for activations in args.activations.split(","):
            t0 = time.perf_counter()
            with mdst.load(path, device=args.device, context_length=args.context, activations=activations) as model:
                load_s = time.perf_counter() - t0
                r = bench(model, args.prompt, args.gen, args.repeat, profile=args.profile)
            r.update(name=name, synthetic=isinstance(path, Path),
                     types=args.types if isinstance(path, Path) else "file", load_s=round(load_s, 2))
            print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
