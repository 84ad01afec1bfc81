"""What a dependent dispatch costs on its own: chains of small dispatches in one compute pass, each reading
the buffer the one before wrote, as a decode step's are. JSON lines, microseconds a dispatch.

"touch" is the floor (one thread adds 1 to a float); the others are mdst's small decode kernels at a model's
sizes, so a kernel's time above the floor is its own latency (loads in sequence, barriers), which fewer
dispatches or shorter chains inside the kernel would save.
Usage: python benchmarks/dispatch_floor.py [--dims 640,1024,4096] [--chain 200]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from gpu_timing import dispatcher, passes, storage, timed

TOUCH = """
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read_write> b: array<f32>;

@compute @workgroup_size(1)
fn main() {
    b[0] = a[0] + 1.0;
}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dims", default="640,1024,4096", help="vector sizes for rms_norm")
    ap.add_argument("--chain", type=int, default=200, help="dispatches a chain")
    args = ap.parse_args()

    from mdst.gpu.device import open_gpu
    from mdst.kernels import KernelSpec, PipelineCache

    gpu = open_gpu("gpu")
    dev = gpu.device
    pipelines = PipelineCache.for_gpu(gpu)
    rng = np.random.default_rng(0)
    out = []

    def report(case: str, seconds: float, **extra: object) -> None:
        out.append({"case": case, "us_per_dispatch": round(seconds / args.chain * 1e6, 2), **extra})
        print(json.dumps(out[-1]), flush=True)

    a, b = storage(gpu, np.zeros(4, np.float32)), storage(gpu, 16)
    pipe = dev.create_compute_pipeline(layout="auto", compute={
        "module": dev.create_shader_module(code=TOUCH), "entry_point": "main"})
    bgs = [dev.create_bind_group(layout=pipe.get_bind_group_layout(0), entries=[
        {"binding": 0, "resource": {"buffer": s, "offset": 0, "size": s.size}},
        {"binding": 1, "resource": {"buffer": d, "offset": 0, "size": d.size}}]) for s, d in ((a, b), (b, a))]

    def touch(cp: object) -> None:
        cp.set_pipeline(pipe)
        for i in range(args.chain):
            cp.set_bind_group(0, bgs[i % 2])
            cp.dispatch_workgroups(1, 1, 1)
    report("touch", timed(gpu, passes(touch), 1))

    for dim in map(int, args.dims.split(",")):
        x, y = storage(gpu, rng.standard_normal(dim).astype(np.float32)), storage(gpu, 4 * dim)
        w = storage(gpu, rng.standard_normal(dim).astype(np.float32))
        for wg in (64, 256):
            spec = KernelSpec("rms_norm", constants=(("WG", wg),))
            params = {"dim": dim, "n_vec": 1, "eps": 1e-6}
            there = dispatcher(gpu, pipelines, spec, [x, w, y, x], params, (1, 1, 1))
            back = dispatcher(gpu, pipelines, spec, [y, w, x, y], params, (1, 1, 1))
            report("rms_norm", timed(gpu, passes(*[there, back] * (args.chain // 2)), 1), dim=dim, threads=wg)
    print(json.dumps({"benchmark": "dispatch_floor", "adapter": gpu.profile.as_dict(), "chain": args.chain,
                      "results": out}))


if __name__ == "__main__":
    main()
