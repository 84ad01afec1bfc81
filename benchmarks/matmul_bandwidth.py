"""One-row matmul (decode GEMV) bandwidth per weight type on large matrices, against copy bandwidth. JSON out.

Weight bytes read per dispatch over the dispatch's time. Copy bandwidth counts bytes read plus bytes
written (as device copy figures usually do); a GEMV reads its weights once, so its GB/s compares with
half of that at most. The kernel is the one mdst's plans pick for the adapter.
Usage: python benchmarks/matmul_bandwidth.py [--k 4096] [--n 14336] [--types Q4_K,Q8_0,...] [--reps 50]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from gpu_timing import dispatcher, passes, storage, timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--k", type=int, default=4096)
    ap.add_argument("--n", type=int, default=14336)
    ap.add_argument("--types", default=None, help="comma-separated weight types (default: every type)")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--copy-mib", type=int, default=1024)
    args = ap.parse_args()

    import wgpu

    from mdst.device import open_gpu
    from mdst.gguf import GGML_TYPE_BY_NAME
    from mdst.kernels import WEIGHT_TYPES, KernelSpec, PipelineCache
    from mdst.plan import GEMV_TPR, GEMV_WG, gemv_groups
    from mdst.testing.random_weights import random_weights

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

    pipelines = PipelineCache(dev)
    results = []
    for wtype in (args.types.split(",") if args.types else WEIGHT_TYPES):
        t = GGML_TYPE_BY_NAME[wtype]
        k = args.k // t.block * t.block
        row_bytes = k // t.block * t.block_bytes
        n = min(args.n, gpu.profile.max_binding_size // row_bytes)  # one binding holds the matrix
        raw = random_weights(wtype, n, k, rng)
        x = rng.standard_normal(k).astype(np.float32)
        bufs = [storage(gpu, raw), storage(gpu, x), storage(gpu, 4 * n),
                storage(gpu, 4 * n), storage(gpu, 4 * k)]   # res and g: bound, unread without RES / NORM
        params = {"k": k, "n": n, "row_bytes": row_bytes, "o0": 0, "w0": 0, "eps": 0.0}
        if gpu.profile.software:
            spec, params = KernelSpec("matmul_by_output", wtype, constants=(("R", 1),)), {**params, "m": 1,
                                                                                          "y_stride": n}
            groups = (-(-n // 256), 1, 1)
        else:
            spec = KernelSpec("matmul_row", wtype, constants=(("TPR", GEMV_TPR), ("WG", GEMV_WG)))
            groups = gemv_groups(n)
        encode = passes(dispatcher(gpu, pipelines, spec, bufs, params, groups))
        s = timed(gpu, encode, args.reps)
        results.append({"type": wtype, "k": k, "n": n, "kernel": spec.key(), "weight_bytes": raw.nbytes,
                        "us_per_dispatch": round(s * 1e6, 2), "gb_per_s": round(raw.nbytes / s / 1e9, 1),
                        "fraction_of_copy_read": round(raw.nbytes / s / (copy_gbs / 2 * 1e9), 3)})
        for b in bufs:
            b.destroy()
    print(json.dumps({"benchmark": "matmul_bandwidth", "adapter": gpu.profile.as_dict(),
                      "copy_gb_per_s_read_plus_write": round(copy_gbs, 1), "results": results}, indent=2))


if __name__ == "__main__":
    main()
