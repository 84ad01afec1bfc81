"""Many-row matmul (prefill GEMM) arithmetic rate per weight type, against a plain FMA loop's peak. JSON out.

TFLOP/s of the many-row matmul the plans pick for the adapter (matmul_rows on GPUs, matmul_by_output on CPU
adapters) on an [m, k] x [n, k] product, counted as 2 m n k over the dispatch's time, against the peak of a
shader doing nothing but independent vec4 FMAs (f32, and f16 where the adapter has shader-f16) on the same
adapter, timed the same way.
Usage: python benchmarks/gemm.py [--m 512,16] [--k 4096] [--n 14336] [--types Q4_K,Q8_0,F16] [--reps 20]
                                 [--blocks 4x4,8x8,4x4x4]   (matmul_rows' rows x outputs a thread [x thread rows
                                                             TY]; default: the presets')
                                 [--f16]              (also matmul_rows' f16 variant, where the adapter has shader-f16)
                                 [--slices 1,4,16]    (slices of k, summed by sum_splits: both timed; default: the
                                                       presets')
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
from gpu_timing import dispatcher, passes, storage, timed

# The FMA peak: every thread runs CHAINS independent vec4 FMA chains for `iters` steps (2 * 4 * CHAINS
# flops a step); the sum is written only when it is impossible, which keeps the arithmetic.
FMA = """
{enable}
struct P {{ iters: u32, }}
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<uniform> p: P;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {{
    let s = {t}(f32(gid.x & 7u) * 1e-3);
    var a0 = vec4<{t}>(s, s + {t}(0.1), s + {t}(0.2), s + {t}(0.3));
    var a1 = a0 + vec4<{t}>({t}(0.01));
    var a2 = a0 + vec4<{t}>({t}(0.02));
    var a3 = a0 + vec4<{t}>({t}(0.03));
    var a4 = a0 + vec4<{t}>({t}(0.04));
    var a5 = a0 + vec4<{t}>({t}(0.05));
    var a6 = a0 + vec4<{t}>({t}(0.06));
    var a7 = a0 + vec4<{t}>({t}(0.07));
    let b = vec4<{t}>({t}(0.999));
    let c = vec4<{t}>({t}(0.0001));
    for (var i = 0u; i < p.iters; i++) {{
        a0 = fma(a0, b, c); a1 = fma(a1, b, c); a2 = fma(a2, b, c); a3 = fma(a3, b, c);
        a4 = fma(a4, b, c); a5 = fma(a5, b, c); a6 = fma(a6, b, c); a7 = fma(a7, b, c);
    }}
    let t = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
    if (f32(t.x + t.y + t.z + t.w) == -1.0) {{
        out[gid.x % arrayLength(&out)] = 1.0;
    }}
}}
"""
FMA_CHAINS = 8
FMA_GROUPS = 132 * 32


def fma_peak(gpu: Any, f16: bool, reps: int) -> float:
    """TFLOP/s of FMA_GROUPS x 256 threads running vec4 FMA chains (f16 or f32)."""
    import wgpu

    dev = gpu.device
    code = FMA.format(enable="enable f16;" if f16 else "", t="f16" if f16 else "f32")
    pipe = dev.create_compute_pipeline(layout="auto", compute={"module": dev.create_shader_module(code=code),
                                                               "entry_point": "main"})
    iters = 256 if gpu.profile.software else 4096
    groups = 64 if gpu.profile.software else FMA_GROUPS
    sink = storage(gpu, 1024)
    prm = dev.create_buffer_with_data(data=np.array([iters, 0, 0, 0], np.uint32), usage=wgpu.BufferUsage.UNIFORM)
    bg = dev.create_bind_group(layout=pipe.get_bind_group_layout(0), entries=[
        {"binding": 0, "resource": {"buffer": sink, "offset": 0, "size": sink.size}},
        {"binding": 1, "resource": {"buffer": prm, "offset": 0, "size": prm.size}}])

    def run(cp: Any) -> None:
        cp.set_pipeline(pipe)
        cp.set_bind_group(0, bg)
        cp.dispatch_workgroups(groups, 1, 1)
    s = timed(gpu, passes(run), reps)
    return groups * 256 * iters * FMA_CHAINS * 8 / s / 1e12


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--m", default="512", help="activation rows, e.g. 512,16")
    ap.add_argument("--k", type=int, default=4096)
    ap.add_argument("--n", type=int, default=14336)
    ap.add_argument("--types", default="Q4_K,Q6_K,Q8_0,F16,F32")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--blocks", default=None, help="matmul_rows rows x outputs a thread [x thread rows] to try, "
                                                   "e.g. 4x4,8x8,4x4x4")
    ap.add_argument("--slices", default=None, help="slices of k to try, e.g. 1,4,16 (default: the presets')")
    ap.add_argument("--f16", action="store_true", help="also time matmul_rows' f16 variant (needs shader-f16)")
    args = ap.parse_args()

    from mdst.gpu.device import open_gpu
    from mdst.kernels import PipelineCache

    gpu = open_gpu("gpu")
    pipelines = PipelineCache.for_gpu(gpu)
    peaks = {"f32": fma_peak(gpu, False, args.reps)}
    if gpu.profile.shader_f16:
        peaks["f16"] = fma_peak(gpu, True, args.reps)
    results = []
    for wtype in args.types.split(","):
        for m in map(int, args.m.split(",")):
            results += _time_type(gpu, pipelines, peaks, wtype, m, args)
    print(json.dumps({"benchmark": "gemm", "adapter": gpu.profile.as_dict(), "fma_peak_tflop_per_s": {t: round(v, 4) for t, v in peaks.items()},
                      "results": results}, indent=2))


def _time_type(gpu: Any, pipelines: Any, peaks: dict[str, float], wtype: str, m: int, args: Any) -> list[dict[str, Any]]:
    """The many-row matmul's rate on an [m, k] x [n, k] product of `wtype`, per variant."""
    from mdst.format.gguf import GGML_TYPE_BY_NAME
    from mdst.kernels import KernelSpec
    from mdst.compile.plan import gemm_block, gemm_groups, gemm_slices
    from mdst.dev.random_weights import random_weights

    rng = np.random.default_rng(0)
    results = []
    t = GGML_TYPE_BY_NAME[wtype]
    k = args.k // t.block * t.block
    row_bytes = k // t.block * t.block_bytes
    n = min(args.n, gpu.profile.max_binding_size // row_bytes)
    raw = random_weights(wtype, n, k, rng)
    x = rng.standard_normal((m, k)).astype(np.float32)
    bufs = [storage(gpu, raw), storage(gpu, x), storage(gpu, 4 * m * n), storage(gpu, 4 * m * n)]
    params = {"k": k, "n": n, "row_bytes": row_bytes, "o0": 0, "w0": 0, "m": m, "y_stride": n}
    variants = []   # (spec, slices of k, the records of one matmul)
    scratch: list[Any] = []   # the slices' partial sums
    if gpu.profile.presets.matmul == "by_output":
        spec = KernelSpec("matmul_by_output", wtype, constants=(("R", 8),))
        bufs.append(storage(gpu, 4 * k))
        variants.append((spec, 1, [dispatcher(gpu, pipelines, spec, bufs, {**params, "eps": 0.0},
                                              (-(-n // 256), -(-m // 8), 1))]))
    else:
        blocks = ([(*map(int, b.split("x")), 16)[:3] for b in args.blocks.split(",")] if args.blocks
                  else [gemm_block(m, gpu.profile.presets)])
        f16s = [False, True] if args.f16 and gpu.profile.shader_f16 else [bool(gpu.profile.presets.gemm_f16 and gpu.profile.shader_f16)]
        for (tr, tc, ty), f16 in ((b, f) for b in blocks for f in f16s):
            spec = KernelSpec("matmul_rows", wtype, f16, constants=(("STEP_SUMS", f16), ("TC", tc), ("TR", tr),
                                                                     ("TY", ty)))
            gx, gy, _ = gemm_groups(n, m, tr, tc, ty)
            for sl in (map(int, args.slices.split(",")) if args.slices else [gemm_slices(m, gx * gy, k, gpu.profile.presets)]):
                if sl == 1:
                    variants.append((spec, 1, [dispatcher(gpu, pipelines, spec, bufs, params, (gx, gy, 1))]))
                    continue
                parts = storage(gpu, 4 * sl * m * n)
                scratch.append(parts)
                variants.append((spec, sl, [
                    dispatcher(gpu, pipelines, spec, [bufs[0], bufs[1], parts, bufs[3]], params, (gx, gy, sl)),
                    dispatcher(gpu, pipelines, KernelSpec("sum_splits"), [parts, bufs[3], bufs[2]],
                               {"n": n, "m": m, "splits": sl, "o0": 0, "y_stride": n}, (-(-m * n // 64), 1, 1))]))
    for spec, sl, records in variants:
        s = timed(gpu, passes(*records), args.reps)
        tflops = 2 * m * n * k / s / 1e12
        results.append({"type": wtype, "m": m, "k": k, "n": n, "kernel": spec.key(), "slices": sl,
                        "ms": round(s * 1e3, 3),
                        "tflop_per_s": round(tflops, 4), "fraction_of_f32_peak": round(tflops / peaks["f32"], 3),
                        **({"fraction_of_f16_peak": round(tflops / peaks["f16"], 3)} if spec.f16 else {})})
    for b in bufs + scratch:
        b.destroy()
    return results


if __name__ == "__main__":
    main()
