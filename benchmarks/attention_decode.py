"""One-row (decode) attention time over a filled KV cache, per model shape, cache length, split size and lanes
per key, with the KV bytes read per second against the read ceiling (vec4 loads of a 1 GiB buffer) and each
output's relative L2 error against mdst.reference. JSON.

Times the attention dispatch plus its merge as the plan specializes them (a decode step runs that pair per
layer), and each of the two repeated alone, to choose the GPU presets (mdst.gpu.device.presets_for) by measurement and to check decode attention
against the bandwidth it could have.
Usage: python benchmarks/attention_decode.py [--cases 640@1024,8192@8192] [--splits 32,64] [--lanes 2,4,8]
  a case is KEYS@RING: the query attends KEYS positions of a cache allocated for RING (the context length).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
from gpu_timing import dispatcher, passes, read_ceiling, storage, timed

SHAPES = {"gemma3-270m": (4, 1, 256), "qwen3-0.6b": (16, 8, 128), "qwen3-8b": (32, 8, 128),
          "qwen3-30b-a3b": (32, 4, 128)}  # heads, kv heads, dim


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cases", default="640@1024,8192@8192,32768@32768")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--splits", default=None, help="keys a split to try (default: the preset)")
    ap.add_argument("--lanes", default=None, help="lanes per key to try (default: the preset)")
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--read-mib", type=int, default=1024, help="buffer size for the read ceiling")
    args = ap.parse_args()

    from mdst.compile.plan import ATTN_NO_ROPE, ATTN_WG, attention_group, attention_splits, merge_launch
    from mdst.ir.ops import AttentionSpec
    from mdst.reference import attention, split_keys
    from mdst.gpu.device import open_gpu
    from mdst.kernels import KernelSpec, PipelineCache

    gpu = open_gpu("gpu")
    pre = gpu.profile.presets
    f16 = gpu.profile.shader_f16
    dev = gpu.device
    pipelines = PipelineCache.for_gpu(gpu)
    rng = np.random.default_rng(0)

    nbytes = args.read_mib << 20
    src, sink = storage(gpu, nbytes), storage(gpu, 16)
    read_gbs = nbytes / read_ceiling(gpu)(src, nbytes, sink, 10) / 1e9
    src.destroy(), sink.destroy()

    results = []
    for case in args.cases.split(","):
        keys, ring = map(int, case.split("@"))
        step = storage(gpu, np.array([keys - 1, 1, 0, 0, 0], np.uint32))
        for name in args.shapes.split(","):
            heads, kvh, hd = SHAPES[name]
            kv = rng.standard_normal((ring, kvh * hd)).astype(np.float16 if f16 else np.float32)
            k, v = storage(gpu, kv), storage(gpu, kv[::-1].copy())
            kv_bytes = 2 * keys * kv.shape[1] * kv.itemsize
            y = storage(gpu, 4 * heads * hd)
            qv = rng.standard_normal(heads * hd).astype(np.float32)
            q = storage(gpu, qv)
            want = attention(qv[None], kv.astype(np.float32), kv[::-1].astype(np.float32), np.array([keys - 1]),
                             AttentionSpec(0, heads, kvh, hd, float(hd ** -0.5)))
            params = {"heads": heads, "kv_heads": kvh, "ring": ring, "window": 0, "scale": float(hd ** -0.5),
                      "softcap": 0.0, "temp_scale": 0.0, "temp_floor": 1, "stride": ring, **ATTN_NO_ROPE}
            for split_pre in (map(int, args.splits.split(",")) if args.splits else [pre.attention_split]):
                split, splits = attention_splits(ring, dataclasses.replace(pre, attention_split=split_pre))
                part = storage(gpu, heads * splits * (hd + 2) * 4)
                for lanes in (map(int, args.lanes.split(",")) if args.lanes else [pre.attention_lanes]):
                    gw = attention_group(heads, kvh, hd, lanes)
                    consts = (("GW", gw), ("HD", hd), ("LPK", lanes), ("SPLIT", split), ("WG", ATTN_WG))
                    att = dispatcher(gpu, pipelines, KernelSpec("attention", f16=f16, kv="F", constants=consts),
                                     [step, k, v, q, part, q, q, q], params, (heads // gw, 1, splits))
                    mc, mgrid = merge_launch(heads, hd)
                    merge = dispatcher(gpu, pipelines, KernelSpec("attention_merge", constants=tuple(mc.items())),
                                       [step, part, y], {"heads": heads, "splits": splits}, mgrid)
                    s = timed(gpu, passes(att, merge), args.reps)
                    s_att, s_merge = timed(gpu, passes(att), args.reps), timed(gpu, passes(merge), args.reps)
                    got = np.frombuffer(gpu.queue.read_buffer(y), np.float32)
                    err = float(np.linalg.norm(got - want.ravel()) / np.linalg.norm(want))
                    gbs = kv_bytes / s / 1e9
                    results.append({"shape": name, "keys": keys, "ring": ring, "splits": splits,
                                    "keys_per_split": split_keys(keys, split, splits),
                                    "lanes_per_key": lanes, "heads_per_workgroup": gw, "us": round(s * 1e6, 2),
                                    "attention_us": round(s_att * 1e6, 2), "merge_us": round(s_merge * 1e6, 2),
                                    "kv_gb_per_s": round(gbs, 1), "fraction_of_read_ceiling": round(gbs / read_gbs, 3),
                                    "rel_l2": float(f"{err:.2g}")})
                    print(json.dumps(results[-1]), flush=True)
                part.destroy()
            for b in (k, v, q, y):
                b.destroy()
    best = {f"{n}@{c}": min((r for r in results if r["shape"] == n and f"{r['keys']}@{r['ring']}" == c),
                            key=lambda r: r["us"])
            for n in args.shapes.split(",") for c in args.cases.split(",")}
    print(json.dumps({"benchmark": "attention_decode", "adapter": gpu.profile.as_dict(),
                      "read_ceiling_gb_per_s": round(read_gbs, 1), "results": results, "best": best}))


if __name__ == "__main__":
    main()
