"""Run one kernel specialization on host arrays: the harness of the kernel tests and of `mdst oracle`.

Bindings are given in binding order, the uniform parameter block last (filled from `params`); a
GRID_TYPES weight's grid is bound as group 1.
An input is a numpy array (uploaded as its raw bytes); an output is an `Out` (a buffer of that
many bytes, pre-filled with a poison pattern so unwritten elements are caught).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import GRID_TYPES, KernelSpec, PipelineCache, grid_words, pack_params

POISON = 0xFFFFFFFF  # NaN as f32 and as both f16 halves, and no valid index: unwritten elements show


@dataclass
class Out:
    """An output (or read-write) binding of `nbytes`, poisoned before the dispatch unless `init` is given."""

    nbytes: int
    init: np.ndarray | None = None


def _bytes(a: np.ndarray) -> bytes:
    b = np.ascontiguousarray(a).tobytes()
    return b + b"\0" * (-len(b) % 4) if b else b"\0\0\0\0"


class KernelRunner:
    """Dispatches single kernels on a device, reusing compiled pipelines."""

    def __init__(self, gpu: Any):
        import wgpu

        self.gpu = gpu
        self._wgpu = wgpu
        self.pipelines = PipelineCache.for_gpu(gpu)

    def run(self, spec: KernelSpec, bindings: list[np.ndarray | Out], params: dict[str, Any],
            workgroups: tuple[int, int, int]) -> list[np.ndarray]:
        """Dispatch once; returns the bytes of every `Out` binding as uint8 arrays, in order."""
        u = self._wgpu.BufferUsage
        dev, q = self.gpu.device, self.gpu.queue
        bufs, outs = [], []
        for b in bindings:
            if isinstance(b, Out):
                init = b.init if b.init is not None else np.full(-(-b.nbytes // 4), POISON, np.uint32)
                data = _bytes(init)[:max(4, -(-b.nbytes // 4) * 4)]
                buf = dev.create_buffer(size=len(data), usage=u.STORAGE | u.COPY_SRC | u.COPY_DST)
                q.write_buffer(buf, 0, data)
                outs.append((buf, b.nbytes))
            else:
                data = _bytes(b)
                buf = dev.create_buffer(size=len(data), usage=u.STORAGE | u.COPY_DST)
                q.write_buffer(buf, 0, data)
            bufs.append(buf)
        p = pack_params(spec.name, params)
        ubuf = dev.create_buffer(size=len(p), usage=u.UNIFORM | u.COPY_DST)
        q.write_buffer(ubuf, 0, p)
        bufs.append(ubuf)
        pipeline = self.pipelines.get(spec)
        group = dev.create_bind_group(layout=pipeline.get_bind_group_layout(0), entries=[
            {"binding": i, "resource": {"buffer": b, "offset": 0, "size": b.size}} for i, b in enumerate(bufs)])
        enc = dev.create_command_encoder()
        cp = enc.begin_compute_pass()
        cp.set_pipeline(pipeline)
        cp.set_bind_group(0, group)
        if spec.wtype in GRID_TYPES:
            grid = dev.create_buffer_with_data(data=grid_words(spec.wtype), usage=u.STORAGE)
            bufs.append(grid)
            cp.set_bind_group(1, dev.create_bind_group(layout=pipeline.get_bind_group_layout(1), entries=[
                {"binding": 0, "resource": {"buffer": grid, "offset": 0, "size": grid.size}}]))
        cp.dispatch_workgroups(*workgroups)
        cp.end()
        q.submit([enc.finish()])
        results = [np.frombuffer(q.read_buffer(buf), np.uint8)[:n].copy() for buf, n in outs]
        for b in bufs:
            b.destroy()
        return results
