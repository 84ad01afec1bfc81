"""Mixture-of-experts matmuls: the per-output kernel (matmul_experts) against the GPU plans' EXPERTS modes. JSON out.

At one layer's shape (default qwen3-30b-a3b's: d_model 2048, 128 experts of d_ff 768, 8 a token), for a decode
row and a prefill of --rows rows, the time of gate (x [rows, d_model] through the chosen experts' [d_ff, d_model]
matrices, slots apart) and of down (each slot's [d_ff] through its expert's [d_model, d_ff] matrix, the slots
summed by the router's weights), each as matmul_experts (an invocation per output: the CPU adapters' kernel and the
GPUs' before the EXPERTS modes) and as the GPU plans run it (plan._expert_matmul): matmul_row with EXPERTS for a
row; expert_groups, then matmul_rows with EXPERTS over the rows grouped by expert (and expert_combine for down)
for many. Decode figures count the chosen experts' bytes (GB/s), prefill ones 2 rows used n k flops (TFLOP/s).
Routes come from random router logits (reference.route): near-even loads, as a trained router's are.
Usage: python benchmarks/expert_matmul.py [--d-model 2048] [--d-ff 768] [--experts 128] [--used 8] [--rows 512]
                                          [--types Q4_K,Q6_K] [--reps 10]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
from gpu_timing import dispatcher, passes, storage, timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--d-model", type=int, default=2048)
    ap.add_argument("--d-ff", type=int, default=768)
    ap.add_argument("--experts", type=int, default=128)
    ap.add_argument("--used", type=int, default=8)
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--types", default="Q4_K,Q6_K")
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()

    from mdst import reference
    from mdst.gpu.device import open_gpu
    from mdst.format.gguf import GGML_TYPE_BY_NAME
    from mdst.kernels import KernelSpec, PipelineCache
    from mdst.compile.plan import GEMV_WG, ceil_div, gemm_groups, gemv_groups, gemv_lanes, gemv_rows, grid1
    from mdst.dev.random_weights import random_weights

    gpu = open_gpu("gpu")
    pre = gpu.profile.presets
    rng = np.random.default_rng(0)
    pipelines = PipelineCache.for_gpu(gpu)
    e, used = args.experts, args.used
    results = []
    for wtype in args.types.split(","):
        t = GGML_TYPE_BY_NAME[wtype]
        for name, k, n, combine in (("gate", args.d_model, args.d_ff, False), ("down", args.d_ff, args.d_model, True)):
            row_bytes = k // t.block * t.block_bytes
            w = storage(gpu, random_weights(wtype, e * n, k, rng))
            for rows in (1, args.rows):
                routes = reference.route(rng.standard_normal((rows, e)).astype(np.float32), used, "softmax", True)
                x = storage(gpu, rng.standard_normal((rows, used * k if combine else k)).astype(np.float32))
                rt = storage(gpu, routes)
                out = n if combine else used * n
                y = storage(gpu, 4 * rows * out)
                variants: dict[str, list[Any]] = {"matmul_experts": [dispatcher(
                    gpu, pipelines, KernelSpec("matmul_experts", wtype, constants=(("COMBINE", combine),)),
                    [w, x, rt, y], {"k": k, "n": n, "row_bytes": row_bytes, "w0": 0, "e0": 0, "e1": e, "used": used,
                                    "x_slot": k if combine else 0, "x_stride": used * k if combine else k, "acc": 0},
                    (ceil_div(n, 64), rows, 1 if combine else used))]}
                experts = (("EXPERTS", used), ("X_SLOT", combine))
                if pre.matmul == "by_output":
                    pass   # CPU adapters keep matmul_experts (plan._expert_matmul)
                elif rows == 1:
                    lanes = gemv_lanes(k, wtype, pre)
                    rr = gemv_rows(n * (1 if combine else used), lanes, pre)
                    gx, gy, _ = gemv_groups(n, lanes, rr)
                    consts = (("COMBINE", combine), *experts, ("GPT", pre.gemv_chunk), ("ROWS", rr), ("TPR", lanes),
                              ("WG", GEMV_WG))
                    variants["matmul_row"] = [dispatcher(
                        gpu, pipelines, KernelSpec("matmul_row", wtype, constants=consts), [w, x, y, rt, x],
                        {"k": k, "n": n, "row_bytes": row_bytes, "o0": 0, "w0": 0, "eps": 0.0, "y_stride": 0},
                        (gx, gy, 1 if combine else used))]
                else:
                    lists = storage(gpu, 4 * (e + 1 + rows * used))
                    slots = storage(gpu, 4 * rows * used * n) if combine else y
                    f16 = bool(pre.gemm_f16 and gpu.profile.shader_f16)
                    tc = pre.gemm_cols
                    rec = [dispatcher(gpu, pipelines, KernelSpec("expert_groups"), [rt, lists],
                                      {"n_expert": e, "used": used, "rows": rows}, (1, 1, 1)),
                           dispatcher(gpu, pipelines, KernelSpec("matmul_rows", wtype, f16,
                                                                 constants=(*experts, ("STEP_SUMS", f16), ("TC", tc), ("TR", 4))),
                                      [w, x, slots, lists],
                                      {"k": k, "n": n, "row_bytes": row_bytes, "o0": 0, "m": rows, "y_stride": n,
                                       "w0": 0}, (*gemm_groups(n, rows, 4, tc)[:2], e))]
                    if combine:
                        rec.append(dispatcher(gpu, pipelines, KernelSpec("expert_combine"), [slots, rt, y],
                                              {"n": n, "used": used, "rows": rows}, grid1(ceil_div(rows * n, 64))))
                    variants["expert_groups+matmul_rows" + "+expert_combine" * combine] = rec
                for label, rec in variants.items():
                    s = timed(gpu, passes(*rec), args.reps)
                    r = {"type": wtype, "matmul": name, "rows": rows, "k": k, "n": n, "experts": e, "used": used,
                         "kernels": label, "ms": round(s * 1e3, 4)}
                    if rows == 1:
                        r["gb_per_s"] = round(used * n * row_bytes / s / 1e9, 1)
                    else:
                        r["tflop_per_s"] = round(2 * rows * used * n * k / s / 1e12, 4)
                    results.append(r)
                    print(json.dumps(r), flush=True)
    print(json.dumps({"benchmark": "expert_matmul", "adapter": gpu.profile.as_dict(), "results": results}))


if __name__ == "__main__":
    main()
