"""Weight paging against fully resident weights: load time, GPU bytes by kind, prefill and decode speed. JSON.

The paged load gets a gpu_memory_limit some fraction of the weights short of holding them all, so
the rest are copied from the file mapping into slot buffers as each step needs them.
Usage: python benchmarks/weight_paging.py MODEL [--short 0.3] [--prompt 64] [--gen 16]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def run(path: str, prompt: list[int], gen: int, **kwargs: object) -> dict:
    """Load, then a timed prefill and greedy decode after an untimed round; the figures and the tokens picked."""
    import mdst

    t0 = time.perf_counter()
    with mdst.load(path, device="gpu", context_length=len(prompt) + gen + 8, **kwargs) as m:
        load_s = time.perf_counter() - t0
        for _ in range(2):   # the first round compiles the plans; the second is timed
            with m.session() as s:
                t0 = time.perf_counter()
                tok = int(s.prefill(prompt, greedy=True))
                prefill_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                tokens = [tok] + [t for t in s.decode(tok, gen - 1, lambda: "argmax", ahead=True)]
                decode_s = time.perf_counter() - t0
                by_kind = dict(m.engine.bytes_by_kind)   # while the session holds its KV cache
        w = m.memory_report()["weights"]
        return {"load_s": round(load_s, 3), "prefill_tokens_per_s": round(len(prompt) / prefill_s, 2),
                "decode_tokens_per_s": round((gen - 1) / decode_s, 2), "gpu_bytes": by_kind,
                "predicted_gpu_bytes": m.predicted.total, "paged_bytes": w.get("paged_bytes", 0),
                "parts_paged_in": w.get("parts_paged_in", 0), "tokens": tokens}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model")
    ap.add_argument("--short", type=float, default=0.3, help="fraction of the weight bytes the limit leaves out")
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--gen", type=int, default=16)
    args = ap.parse_args()

    prompt = list(range(100, 100 + args.prompt))
    full = run(args.model, prompt, args.gen)
    limit = full["predicted_gpu_bytes"] - int(args.short * full["gpu_bytes"]["weights"])
    paged = run(args.model, prompt, args.gen, gpu_memory_limit=limit, weight_paging=True)
    same = full.pop("tokens") == paged.pop("tokens")
    print(json.dumps({"benchmark": "weight_paging", "model": args.model, "gpu_memory_limit": limit,
                      "resident": full, "paged": paged, "same_tokens": same,
                      "prefill_slowdown": round(full["prefill_tokens_per_s"] / paged["prefill_tokens_per_s"], 2),
                      "decode_slowdown": round(full["decode_tokens_per_s"] / paged["decode_tokens_per_s"], 2)},
                     indent=2, default=lambda v: int(v) if isinstance(v, np.integer) else str(v)))


if __name__ == "__main__":
    main()
