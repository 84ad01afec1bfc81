"""One-row matmul (decode GEMV) bandwidth per weight type on large matrices, against copy bandwidth. JSON out.

Weight bytes read per dispatch over the dispatch's time, against two ceilings that count bytes read
plus bytes written: a buffer copy, and a compute shader streaming an elementwise add (what a shader
can read); and, per matrix, the same bytes read by a plain grid-stride loop of vec4<u32> loads timed
the same way (back-to-back dispatches with a barrier between, as a decode step runs them), whose
dispatch floor a matrix of a few tens of MB cannot hide. The kernel is the one mdst's plans pick for
the adapter, or each --lanes/--chunks/--rows variant; with --q8, each also with 8-bit activations (Q8: the
workgroup quantizes x and the types with an integer step use dot4I8Packed), marked "q8": true in its result;
with --xr, each also over that many rows of x (batched decode: each weight read once for all of them; "xr" in
its result, and "row_gb_per_s", the weight bytes a lone row would have read in the same time; --rows sets the
weight rows a group takes there too).
Usage: python benchmarks/matmul_bandwidth.py [--k 4096] [--n 14336] [--types Q4_K,Q8_0,...] [--reps 50] [--q8]
       [--xr 4,16]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

import numpy as np
from gpu_timing import dispatcher, passes, read_ceiling, storage, timed


def with_q8(spec: Any) -> Any:
    """matmul_row's spec with 8-bit activations (over rows of x, with the XQ the plan gives them)."""
    from mdst.compile.plan import gemv_launch

    c = {**spec.constants_dict(), "Q8": True}
    if "XR" in c:
        c["XQ"] = gemv_launch(c["XR"], c["TPR"], True)["XQ"]
    return dataclasses.replace(spec, constants=tuple(sorted(c.items())))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--k", type=int, default=4096)
    ap.add_argument("--n", type=int, default=14336)
    ap.add_argument("--types", default=None, help="comma-separated weight types (default: every type)")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--copy-mib", type=int, default=1024)
    ap.add_argument("--lanes", default=None, help="matmul_row lanes per row to try, e.g. 16,32 (default: preset)")
    ap.add_argument("--chunks", default=None, help="matmul_row groups a lane takes to try, e.g. 1,8 (default: preset)")
    ap.add_argument("--rows", default=None, help="matmul_row rows a group of lanes to try, e.g. 1,4 (default: preset)")
    ap.add_argument("--q8", action="store_true", help="time every variant with 8-bit activations too")
    ap.add_argument("--q8-only", action="store_true", help="time only the 8-bit-activation variants")
    ap.add_argument("--xr", default=None, help="rows of x to try besides one, e.g. 4,16 (matmul_row's XR)")
    args = ap.parse_args()

    import wgpu

    from mdst.gpu.device import open_gpu
    from mdst.format.gguf import GGML_TYPE_BY_NAME
    from mdst.kernels import WEIGHT_TYPES, KernelSpec, PipelineCache
    from mdst.compile.plan import GEMV_WG, gemv_groups, gemv_lanes, gemv_launch, gemv_rows, grid1
    from mdst.dev.random_weights import random_weights

    gpu = open_gpu("gpu")
    dev, u = gpu.device, wgpu.BufferUsage
    rng = np.random.default_rng(0)

    nbytes = args.copy_mib << 20
    src = dev.create_buffer(size=nbytes, usage=u.COPY_SRC | u.COPY_DST)
    dst = dev.create_buffer(size=nbytes, usage=u.COPY_DST)
    dev.queue.write_buffer(src, 0, rng.integers(0, 255, nbytes, dtype=np.uint8))
    copy_s = timed(gpu, lambda enc, n: [enc.copy_buffer_to_buffer(src, 0, dst, 0, nbytes) for _ in range(n)],
                   max(3, args.reps // 10))
    copy_gbs = 2 * nbytes / copy_s / 1e9
    src.destroy(), dst.destroy()

    # the same through a compute shader: an elementwise add reads two arrays and writes one
    pipelines = PipelineCache.for_gpu(gpu)
    n_add = min(nbytes, gpu.profile.max_binding_size) // 4
    add = [storage(gpu, 4 * n_add) for _ in range(3)]
    add_s = timed(gpu, passes(dispatcher(gpu, pipelines, KernelSpec("binary", constants=(("OP", 0),)), add,
                                         {"n": n_add}, grid1(-(-n_add // 64)))), max(3, args.reps // 10))
    stream_gbs = 12 * n_add / add_s / 1e9
    for b in add:
        b.destroy()

    read_time = read_ceiling(gpu)
    results = []
    for wtype in (args.types.split(",") if args.types else WEIGHT_TYPES):
        t = GGML_TYPE_BY_NAME[wtype]
        k = args.k // t.block * t.block
        row_bytes = k // t.block * t.block_bytes
        n = min(args.n, gpu.profile.max_binding_size // row_bytes)  # one binding holds the matrix
        raw = random_weights(wtype, n, k, rng)
        xrs = [1] + (list(map(int, args.xr.split(","))) if args.xr else [])
        x = rng.standard_normal(max(xrs) * k).astype(np.float32)
        bufs = [storage(gpu, raw), storage(gpu, x), storage(gpu, 4 * max(xrs) * n),
                storage(gpu, 4 * max(xrs) * n), storage(gpu, 4 * k)]   # res and g: bound, unread without RES / NORM
        params = {"k": k, "n": n, "row_bytes": row_bytes, "o0": 0, "w0": 0, "eps": 0.0, "y_stride": n}
        if gpu.profile.software:
            spec, params = KernelSpec("matmul_by_output", wtype, constants=(("R", 1),)), {**params, "m": 1,
                                                                                          "y_stride": n}
            groups = (-(-n // 256), 1, 1)
            variants = [(spec, params, groups)]
        else:
            pre = gpu.profile.presets
            variants = []
            for c in (list(map(int, args.chunks.split(","))) if args.chunks else [pre.gemv_chunk]):
                for lanes in (list(map(int, args.lanes.split(","))) if args.lanes else [None]):
                    lanes = lanes or gemv_lanes(k, wtype, dataclasses.replace(pre, gemv_chunk=c))
                    for r in (list(map(int, args.rows.split(","))) if args.rows else [gemv_rows(n, lanes, pre)]):
                        consts = (("GPT", c), ("ROWS", r), ("TPR", lanes), ("WG", GEMV_WG))
                        variants.append((KernelSpec("matmul_row", wtype, constants=consts), params,
                                         gemv_groups(n, lanes, r)))
            for xr in xrs[1:]:
                for r in sorted({gemv_launch(xr, 1, False, r)["ROWS"] for r in
                                 (list(map(int, args.rows.split(","))) if args.rows else [pre.batch_gemv_rows])}):
                    launch = gemv_launch(xr, gemv_lanes(k, wtype, pre), False, r)
                    consts = tuple(sorted({**launch, "GPT": pre.gemv_chunk}.items()))
                    variants.append((KernelSpec("matmul_row", wtype, constants=consts), params,
                                     gemv_groups(n, launch["TPR"], launch["ROWS"], launch["WG"])))
        # the read ceiling for these bytes: one pass of vec4<u32> loads over the matrix, dispatched like the GEMV
        nread = raw.nbytes // 16 * 16
        read_s = read_time(bufs[0], nread, bufs[2], args.reps)
        if t.block > 1 and (args.q8 or args.q8_only):   # 8-bit activations apply to block-quantized weights
            q8 = [(with_q8(spec), pa, gr) for spec, pa, gr in variants]
            variants = q8 if args.q8_only else variants + q8
        for spec, params, groups in variants:
            s = timed(gpu, passes(dispatcher(gpu, pipelines, spec, bufs, params, groups)), args.reps)
            xr = spec.constants_dict().get("XR", 1)
            results.append({"type": wtype, "k": k, "n": n, "kernel": spec.key(), "q8": ("Q8", True) in spec.constants,
                            "xr": xr, "weight_bytes": raw.nbytes,
                            "us_per_dispatch": round(s * 1e6, 2), "gb_per_s": round(raw.nbytes / s / 1e9, 1),
                            "row_gb_per_s": round(xr * raw.nbytes / s / 1e9, 1),
                            "fraction_of_stream": round(raw.nbytes / s / (stream_gbs * 1e9), 3),
                            "read_ceiling_gb_per_s": round(nread / read_s / 1e9, 1),
                            "fraction_of_read_ceiling": round(read_s / s * raw.nbytes / nread, 3)})
        for b in bufs:
            b.destroy()
    print(json.dumps({"benchmark": "matmul_bandwidth", "adapter": gpu.profile.as_dict(),
                      "copy_gb_per_s_read_plus_write": round(copy_gbs, 1),
                      "stream_gb_per_s_read_plus_write": round(stream_gbs, 1), "results": results}, indent=2))


if __name__ == "__main__":
    main()
