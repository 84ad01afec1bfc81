"""Shared by the kernel benchmarks: buffers, bind groups and the wall time of repeated dispatches."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import numpy as np


def timed(gpu: Any, encode: Callable[[Any, int], None], reps: int, warm_s: float = 0.5, batches: int = 5) -> float:
    """Seconds per repetition: the median over `batches` submissions of `reps` repetitions recorded in one pass.

    The GPU first runs batches for `warm_s` seconds: an idle GPU runs short bursts at lower clocks
    (a first H100 sweep that skipped this read about a fifth of the bandwidth decode steps reached).
    """
    dev = gpu.device

    def batch() -> float:
        enc = dev.create_command_encoder()
        encode(enc, reps)
        t0 = time.perf_counter()
        dev.queue.submit([enc.finish()])
        gpu.wait_idle()
        return time.perf_counter() - t0

    t_end = time.perf_counter() + warm_s
    while time.perf_counter() < t_end:
        batch()
    return statistics.median(batch() for _ in range(batches)) / reps


def storage(gpu: Any, data: np.ndarray | int) -> Any:
    """A storage buffer holding `data`, or of that many (zeroed) bytes."""
    import wgpu

    u = wgpu.BufferUsage
    if isinstance(data, int):
        return gpu.device.create_buffer(size=max(4, data), usage=u.STORAGE | u.COPY_SRC)
    return gpu.device.create_buffer_with_data(data=np.ascontiguousarray(data), usage=u.STORAGE | u.COPY_SRC)


def dispatcher(gpu: Any, pipelines: Any, spec: Any, buffers: list[Any], params: dict[str, Any],
               groups: tuple[int, int, int]) -> Callable[[Any], None]:
    """A function recording one dispatch of `spec` over `buffers` (the uniform params are bound last; a grid
    type's grid as group 1)."""
    import wgpu

    from mdst.kernels import GRID_TYPES, grid_words, pack_params

    dev = gpu.device
    p = dev.create_buffer_with_data(data=pack_params(spec.name, params), usage=wgpu.BufferUsage.UNIFORM)
    pipe = pipelines.get(spec)
    sets = [buffers + [p]] + ([[storage(gpu, grid_words(spec.wtype))]] if spec.wtype in GRID_TYPES else [])
    bgs = [dev.create_bind_group(layout=pipe.get_bind_group_layout(g), entries=[
        {"binding": i, "resource": {"buffer": b, "offset": 0, "size": b.size}} for i, b in enumerate(bs)])
        for g, bs in enumerate(sets)]

    def record(cp: Any) -> None:
        cp.set_pipeline(pipe)
        for g, bg in enumerate(bgs):
            cp.set_bind_group(g, bg)
        cp.dispatch_workgroups(*groups)
    return record


def passes(*records: Callable[[Any], None]) -> Callable[[Any, int], None]:
    """An `encode` for `timed`: each repetition runs the records in order in one compute pass."""
    def encode(enc: Any, n: int) -> None:
        cp = enc.begin_compute_pass()
        for _ in range(n):
            for r in records:
                r(cp)
        cp.end()
    return encode


# The read ceiling: every byte of a matrix read once as vec4<u32>, grid-stride, by READ_GROUPS x 256 threads.
READ_GROUPS = 132 * 16
READ = """
@group(0) @binding(0) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    var a = vec4<u32>(0u);
    for (var i = gid.x; i < arrayLength(&w); i += nwg.x * 256u) {
        a ^= w[i];
    }
    if (all(a == vec4<u32>(0x9e3779b9u))) {   // never in practice: keeps the loads
        out[gid.x % arrayLength(&out)] = a.x;
    }
}
"""


def read_ceiling(gpu: Any) -> Callable[[Any, int, Any, int], float]:
    """A function timing one read of a buffer's first `nbytes` (a multiple of 16) with vec4<u32> loads:
    (src, nbytes, sink, reps) -> seconds; `sink` is any storage buffer (written only to keep the loads)."""
    dev = gpu.device
    pipe = dev.create_compute_pipeline(layout="auto", compute={"module": dev.create_shader_module(code=READ),
                                                               "entry_point": "main"})

    def seconds(src: Any, nbytes: int, sink: Any, reps: int) -> float:
        bg = dev.create_bind_group(layout=pipe.get_bind_group_layout(0), entries=[
            {"binding": 0, "resource": {"buffer": src, "offset": 0, "size": nbytes}},
            {"binding": 1, "resource": {"buffer": sink, "offset": 0, "size": sink.size}}])

        def read_all(cp: Any) -> None:
            cp.set_pipeline(pipe)
            cp.set_bind_group(0, bg)
            cp.dispatch_workgroups(READ_GROUPS, 1, 1)
        return timed(gpu, passes(read_all), reps)
    return seconds
