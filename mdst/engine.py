"""Engines run one forward step over a KV cache: `GpuEngine` (WebGPU plans) and `CpuEngine` (numpy).

Both take the same recorded graphs from the family module and expose the same interface:
`new_cache()`, `step(cache, ids, pos0, output_rows, greedy)` and `chunk` (rows per step).
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np

from . import reference
from .device import GPU
from .errors import DeviceError, UnsupportedModelError
from .gguf import GGUFFile
from .graph import Builder, Graph, build
from .kernels import WEIGHT_TYPES, PipelineCache
from .memory.kv_cache import CacheLayout, CpuKVCache, GpuKVCache
from .memory.pool import BufferPool
from .memory.weights import WeightStore
from .plan import Compiler, Plan, write_step

DEFAULT_CHUNK = 128


def build_graphs(forward: Callable[[Builder], None], gguf: GGUFFile) -> dict[str, Graph]:
    """The family's forward pass recorded for last-row and all-row outputs."""
    return {mode: build(forward, gguf.tensors, mode) for mode in ("last", "all")}


def buckets(chunk: int) -> list[int]:
    """Row counts plans are compiled for: powers of two below `chunk`, and `chunk`."""
    out, b = [], 1
    while b < chunk:
        out.append(b)
        b *= 2
    return out + [chunk]


class Engine:
    """What both engines share: graphs, the cache layout, step sizes."""

    kind = ""

    def __init__(self, graphs: dict[str, Graph], context: int, chunk: int):
        self.graphs, self.context, self.chunk = graphs, context, chunk
        self.chunk_all = chunk
        self.layout = CacheLayout.of(graphs["last"], context, chunk)
        self.vocab = graphs["last"].output.cols

    def max_rows(self, output_rows: str) -> int:
        """Most rows one step may take."""
        return self.chunk_all if output_rows == "all" else self.chunk

    def can_rewind(self, n_past: int, n: int) -> bool:
        """Whether a cache holding n_past tokens can be cut back to n."""
        return self.layout.can_rewind(n_past, n)


class CpuEngine(Engine):
    """The numpy fallback."""

    kind = "cpu"

    def __init__(self, gguf: GGUFFile, graphs: dict[str, Graph], context: int, chunk: int = DEFAULT_CHUNK):
        super().__init__(graphs, context, chunk)
        self.weights = reference.ReferenceWeights(gguf)

    def new_cache(self) -> CpuKVCache:
        return CpuKVCache.allocate(self.layout)

    def step(self, cache: CpuKVCache, ids: np.ndarray, pos0: int, output_rows: str, greedy: bool) -> np.ndarray:
        logits = reference.run(self.graphs[output_rows], self.weights, cache, ids, pos0)
        return reference.argmax(logits) if greedy else logits

    def close(self) -> None:
        self.weights = None


class GpuEngine(Engine):
    """Runs compiled plans on a WebGPU device."""

    kind = "gpu"

    def __init__(self, gpu: GPU, gguf: GGUFFile, graphs: dict[str, Graph], context: int, f16: bool,
                 chunk: int = DEFAULT_CHUNK):
        import wgpu

        self.gpu, self.f16 = gpu, f16
        self._wgpu = wgpu
        self.bytes_by_kind: dict[str, int] = {}
        self._lock = threading.Lock()
        cap = gpu.profile.max_binding_size
        for g in graphs.values():
            for name in g.weight_names():
                t = gguf.tensors[name]
                if t.type.name not in WEIGHT_TYPES:
                    raise UnsupportedModelError(
                        f"tensor {name} has type {t.type.name}; mdst's kernels read {', '.join(WEIGHT_TYPES)}")
        # Rows per step: every activation of a step must fit one binding.
        widest = max(n.out.cols for g in graphs.values() for n in g.nodes if n.out.rows == "n" and n.out is not g.output)
        super().__init__(graphs, context, max(1, min(chunk, cap // (4 * widest))))
        self.kv_elem_bytes = 2 if f16 else 4
        for lk in self.layout.kv:
            if lk.ring * lk.kv_dim * self.kv_elem_bytes > cap:
                raise UnsupportedModelError(
                    f"layer {lk.spec.layer}'s KV cache ({lk.ring} x {lk.kv_dim}) exceeds the binding limit of {cap} "
                    f"bytes; use a shorter context_length")

        self.weights = WeightStore(gpu, gguf, self._create)
        for g in graphs.values():
            for n in g.nodes:
                for name in n.weights:
                    if n.op in ("embed", "matmul"):
                        self.weights.load_matrix(name)
                    else:
                        self.weights.load_vector(name)
        # Logits of every row: each weight part's slice of them must fit a binding too.
        head = graphs["all"].producer(graphs["all"].output)
        out_w = self.weights.weights.get(head.weights[0]) if head.op == "matmul" else None
        if out_w is not None and self.chunk * self.vocab * 4 > cap:
            self.chunk_all = max(1, min(self.chunk, cap // (4 * max(p.rows for p in out_w.parts))))
        self.pool = BufferPool(lambda n, label: self._create(n, label, kind="activations"))
        self.pipelines = PipelineCache(gpu.device)
        self.step_buffer = self._create(16 + 4 * self.chunk, "step", kind="step")
        self.compiler = Compiler(gpu, self.pipelines, self.weights, self.pool, self.step_buffer, self.layout, f16,
                                 self._create)
        self.plans: dict[tuple[str, int, bool], Plan] = {}
        self._staging = None

    # ---- buffers ------------------------------------------------------------------------------
    def _create(self, size: int, label: str, uniform: bool = False, copy_src: bool = True,
                kind: str | None = None, map_read: bool = False) -> Any:
        u = self._wgpu.BufferUsage
        if map_read:
            usage = u.MAP_READ | u.COPY_DST
        elif uniform:
            usage = u.UNIFORM | u.COPY_DST
        else:
            usage = u.STORAGE | u.COPY_DST | u.COPY_SRC
        kind = kind or ("params" if uniform else label.split(".")[0])
        try:
            buf = self.gpu.device.create_buffer(size=size, usage=usage, label=label)
        except Exception as e:
            raise DeviceError(f"creating a {size}-byte GPU buffer ({label}) failed: {e}") from None
        self.bytes_by_kind[kind] = self.bytes_by_kind.get(kind, 0) + size
        return buf

    def new_cache(self) -> GpuKVCache:
        return GpuKVCache.allocate(self.layout, self.kv_elem_bytes, lambda n, label: self._create(n, label, kind="kv"))

    # ---- steps --------------------------------------------------------------------------------
    def plan(self, output_rows: str, n: int, greedy: bool) -> Plan:
        """The plan for a step of n rows (compiled on first use)."""
        limit = self.chunk_all if output_rows == "all" else self.chunk
        rows = next(b for b in buckets(limit) if b >= n)
        key = (output_rows, rows, greedy)
        p = self.plans.get(key)
        if p is None:
            p = self.compiler.compile(self.graphs[output_rows], rows, greedy)
            self.plans[key] = p
        return p

    def step(self, cache: GpuKVCache, ids: np.ndarray, pos0: int, output_rows: str, greedy: bool) -> np.ndarray:
        """Run one step; returns logits [rows_out, vocab] (float32) or token ids [rows_out]."""
        n = len(ids)
        plan = self.plan(output_rows, n, greedy)
        rows_out = n if output_rows == "all" else 1
        device, queue = self.gpu.device, self.gpu.queue
        groups = plan.bind(device, cache)
        write_step(queue, self.step_buffer, ids, pos0, plan.rows)
        enc = device.create_command_encoder()
        plan.encode(enc, groups)
        if greedy:
            nbytes = rows_out * 4
            staging = self._staging_buffer(nbytes)
            enc.copy_buffer_to_buffer(plan.ids_buffer, 0, staging, 0, max(4, nbytes))
        else:
            nbytes = rows_out * self.vocab * 4
            staging = self._staging_buffer(nbytes)
            off = 0
            for part in plan.outputs:
                size = rows_out * part.cols * 4
                enc.copy_buffer_to_buffer(part.buffer, 0, staging, off, size)
                off += size
        queue.submit([enc.finish()])
        staging.map_sync(self._wgpu.MapMode.READ, 0, nbytes)
        try:
            data = np.frombuffer(staging.read_mapped(0, nbytes, copy=True), dtype=np.uint32 if greedy else np.float32)
        finally:
            staging.unmap()
        if greedy:
            return data.astype(np.int64)
        if len(plan.outputs) == 1:
            return data.reshape(rows_out, self.vocab)
        blocks, off = [], 0
        for part in plan.outputs:
            size = rows_out * part.cols
            blocks.append(data[off:off + size].reshape(rows_out, part.cols))
            off += size
        return np.concatenate(blocks, axis=1)

    def _staging_buffer(self, nbytes: int) -> Any:
        nbytes = max(16, -(-nbytes // 4) * 4)
        if self._staging is None or self._staging.size < nbytes:
            if self._staging is not None:
                self._staging.destroy()
            self._staging = self._create(nbytes, "staging", map_read=True, kind="staging")
        return self._staging

    def close(self) -> None:
        """Free GPU memory."""
        self.pool.release_all()
        self.weights.release()
        for p in self.plans.values():
            p.param_buffer.destroy()
        self.plans.clear()
