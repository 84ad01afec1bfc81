"""GPU time per dispatch of one step, from timestamp queries, summed by op and by layer (`mdst bench --profile`).

Each dispatch runs in a compute pass of its own with timestamps at the pass's start and end, so the
figures include each dispatch's own launch but not the overlap a single pass allows: their sum is an
upper bound of the step's GPU time, and the split shows where the time goes.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DeviceError
from ..gpu.native import timestamp_period
from ..compile.plan import set_groups, write_step

if TYPE_CHECKING:
    from ..model import Model


def profile_step(model: "Model", rows: int = 1, output_rows: str = "last", pick: str = "argmax") -> dict[str, Any]:
    """Per-dispatch GPU time of one step of `rows` tokens after a 16-token prompt, summed by op and by layer."""
    import wgpu

    eng = model.engine
    if eng.kind != "gpu" or not eng.gpu.profile.timestamps:
        raise DeviceError("profiling needs a GPU adapter with the timestamp-query feature")
    device = eng.gpu.device
    plan = eng.plan(output_rows, rows, pick)
    n = len(plan.dispatches)
    queries = device.create_query_set(type=wgpu.QueryType.timestamp, count=2 * n)
    resolved = device.create_buffer(size=16 * n, usage=wgpu.BufferUsage.QUERY_RESOLVE | wgpu.BufferUsage.COPY_SRC)
    with model.session() as s:
        s.prefill(list(range(1, 17)), greedy=True)
        groups = eng.bind(plan, s.cache)
        write_step(device.queue, eng.step_buffer, np.arange(1, rows + 1), s.n_past, plan.rows)
        enc = device.create_command_encoder()
        for i, (d, g) in enumerate(zip(plan.dispatches, groups)):
            cp = enc.begin_compute_pass(timestamp_writes={"query_set": queries, "beginning_of_pass_write_index": 2 * i,
                                                          "end_of_pass_write_index": 2 * i + 1})
            cp.set_pipeline(d.pipeline)
            set_groups(cp, g)
            cp.dispatch_workgroups(*d.workgroups)
            cp.end()
        enc.resolve_query_set(queries, 0, 2 * n, resolved, 0)
        device.queue.submit([enc.finish()])
        ticks = np.frombuffer(device.queue.read_buffer(resolved), np.uint64).reshape(n, 2)
    ns = (ticks[:, 1] - ticks[:, 0]).astype(np.float64) * timestamp_period(device.queue)
    by_op: dict[str, float] = defaultdict(float)
    by_layer: dict[str, float] = defaultdict(float)
    for d, t in zip(plan.dispatches, ns):
        by_op[d.label] += t / 1e3
        by_layer["-" if d.layer is None else str(d.layer)] += t / 1e3
    queries.destroy()
    resolved.destroy()
    return {"rows": rows, "output_rows": output_rows, "pick": pick, "dispatches": n,
            "gpu_us_sum": round(float(ns.sum()) / 1e3, 1),
            "by_op_us": {k: round(v, 1) for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])},
            "by_layer_us": {k: round(v, 1) for k, v in by_layer.items()}}
