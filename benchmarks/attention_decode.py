"""One-row (decode) attention time over a filled f16/f32 KV cache for each split size and lanes per key. JSON.

Times the attention dispatch plus its merge (what a decode step runs per layer) on model-like head
shapes, to choose the GPU presets (mdst.gpu.device.presets_for) by measurement.
Usage: python benchmarks/attention_decode.py [--keys 640] [--ring 1024] [--splits 16,32,64] [--lanes 1,4,8,16]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from gpu_timing import dispatcher, passes, storage, timed

SHAPES = {"gemma3-270m": (4, 1, 256), "qwen3-0.6b": (16, 8, 128), "qwen3-8b": (32, 8, 128)}  # heads, kv heads, dim


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--keys", type=int, default=640, help="positions attended (the query sits at keys - 1)")
    ap.add_argument("--ring", type=int, default=1024, help="cache positions (the context length)")
    ap.add_argument("--splits", default="16,32,64")
    ap.add_argument("--lanes", default="1,4,8,16")
    ap.add_argument("--reps", type=int, default=200)
    args = ap.parse_args()

    from mdst.gpu.device import open_gpu
    from mdst.kernels import KernelSpec, PipelineCache

    gpu = open_gpu("gpu")
    f16 = gpu.profile.shader_f16
    pipelines = PipelineCache(gpu.device)
    rng = np.random.default_rng(0)
    step = storage(gpu, np.array([args.keys - 1, 1, 0, 0, 0], np.uint32))
    results = []
    for name, (heads, kvh, hd) in SHAPES.items():
        kv = (rng.standard_normal((args.ring, kvh * hd))).astype(np.float16 if f16 else np.float32)
        k, v = storage(gpu, kv), storage(gpu, kv[::-1].copy())
        q = storage(gpu, rng.standard_normal(heads * hd).astype(np.float32))
        y = storage(gpu, 4 * heads * hd)
        params = {"heads": heads, "kv_heads": kvh, "head_dim": hd, "ring": args.ring, "window": 0,
                  "scale": float(hd ** -0.5), "softcap": 0.0, "temp_scale": 0.0, "temp_floor": 1}
        for split in map(int, args.splits.split(",")):
            splits = -(-args.ring // split)
            part = storage(gpu, heads * splits * (hd + 2) * 4)
            for lanes in map(int, args.lanes.split(",")):
                spec = KernelSpec("attention", f16=f16, kv="F", constants=(("LPK", lanes), ("SPLIT", split)))
                att = dispatcher(gpu, pipelines, spec, [step, k, v, q, part], params, (heads, 1, splits))
                merge = dispatcher(gpu, pipelines, KernelSpec("attention_merge"), [step, part, y],
                                   {"heads": heads, "head_dim": hd, "splits": splits}, (heads, 1, 1))
                s = timed(gpu, passes(att, merge), args.reps)
                results.append({"shape": name, "split": split, "lanes_per_key": lanes, "us": round(s * 1e6, 2)})
    best = {n: min((r for r in results if r["shape"] == n), key=lambda r: r["us"]) for n in SHAPES}
    print(json.dumps({"benchmark": "attention_decode", "adapter": gpu.profile.as_dict(), "keys": args.keys,
                      "ring": args.ring, "results": results, "best": best}, indent=2))


if __name__ == "__main__":
    main()
