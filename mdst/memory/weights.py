"""Weight upload: GGUF block bytes go from the mmap to GPU buffers in bounded chunks.

Matrices keep their GGUF block layout (the kernels dequantize). A matrix larger than the
binding limit is split on row boundaries into parts, each its own buffer. Small vectors
(norm weights, RoPE frequency factors) are stored as float32.

With a byte budget (weight paging), the parts used first stay resident and the rest are paged:
they have no buffer of their own, and a step copies each from the mmap into one of a few fixed
slot buffers just before the dispatches that read it (plans bind the slots, so their bind
groups stay valid whatever a slot holds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import DeviceError
from ..format.gguf import GGML_TYPE_BY_NAME, GGMLType, GGUFFile
from ..format.quants import dequantize
from .layout import WeightLayout, padded, run_name

UPLOAD_CHUNK = 2 << 20   # bytes per upload: one of two mapped staging buffers, copied on the GPU
FLUSH_BYTES = 8 << 20    # write_buffer bytes (small tensors) after which the queue is drained


@dataclass
class WeightPart:
    """Rows [row0, row0 + rows) of a matrix, at byte `offset` of `buffer` (None: paged in when used)."""

    buffer: Any
    row0: int
    rows: int
    nbytes: int
    offset: int = 0

    @property
    def paged(self) -> bool:
        return self.buffer is None


@dataclass
class GpuWeight:
    """A weight tensor on the GPU: raw blocks (matrices) or float32 (vectors)."""

    name: str
    type: GGMLType
    shape: tuple[int, ...]
    row_bytes: int
    parts: list[WeightPart] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.parts)




class WeightStore:
    """The GPU copies of a model's weights, laid out as a `WeightLayout` says."""

    def __init__(self, allocator: Any, gguf: GGUFFile, layout: WeightLayout, create_buffer: Any,
                 progress: Callable[[int, int], None] | None, timeout: Callable[[], float]):
        self.allocator, self.gguf, self.layout = allocator, gguf, layout
        self.gpu = allocator.gpu
        self._create = create_buffer
        self._progress = progress  # called with (bytes uploaded, bytes to upload) as loading goes
        self._timeout = timeout    # seconds a staging buffer's previous copy may take (the engine's step deadline)
        self.weights: dict[str, GpuWeight] = {}
        self._queued = 0
        # Uploads go through two mapped buffers of our own, taking turns: write_buffer's staging
        # comes from wgpu's allocator, which keeps the host memory it grew (tens of MB) after loading.
        self._staging: list[Any] = []
        self._turn = 0
        self.runs: dict[str, GpuWeight] = {}             # sibling matrices stored back to back, as one matrix
        self.slots: list[Any] = []                       # paging slot buffers
        self.slot_holds: list[tuple[str, int] | None] = []  # (matrix, part) each slot holds now
        self.page_ins = 0                                # parts copied into slots so far

    @property
    def nbytes(self) -> int:
        """Bytes of resident weights."""
        return sum(p.nbytes for w in self.weights.values() for p in w.parts if not p.paged)

    def matrix(self, name: str) -> GpuWeight:
        """A matrix by tensor name, or a run of them by `run_name`."""
        return self.weights[name] if name in self.weights else self.runs[name]

    @property
    def paged_bytes(self) -> int:
        return sum(p.nbytes for w in self.weights.values() for p in w.parts if p.paged)

    def load_matrices(self) -> None:
        """Upload the matrices as raw blocks: shared buffers, then the resident parts; make the paging slots."""
        lay = self.layout
        t = self.gguf.tensors
        self._total = sum(t[n].nbytes for run in lay.shared for n in run) + \
            sum(t[n].nbytes for n in dict.fromkeys(p.name for p in lay.parts))
        self._done = 0
        for run in lay.shared:
            self._load_shared(run)
        for run in lay.runs.values():
            ws = [self.weights[n] for n in run]
            rows = sum(w.parts[0].rows for w in ws)
            self.runs[run_name(run)] = GpuWeight(run_name(run), ws[0].type, (ws[0].shape[0], rows), ws[0].row_bytes,
                                                 [WeightPart(ws[0].parts[0].buffer, 0, rows, rows * ws[0].row_bytes)])
        for i, p in enumerate(lay.parts):
            w = self.weights.get(p.name)
            if w is None:
                w = self.weights[p.name] = GpuWeight(p.name, t[p.name].type, t[p.name].shape, t[p.name].row_bytes)
            buf = None
            if i < lay.resident:
                buf = self._create(padded(p.nbytes), f"w.{p.name}.{p.row0}")
                self._upload(buf, p.name, p.row0 * w.row_bytes, p.nbytes)
            w.parts.append(WeightPart(buf, p.row0, p.rows, p.nbytes))
        if lay.slots:
            self.slots = [self._create(lay.slot_bytes, f"slot.{i}") for i in range(lay.slots)]
            self.slot_holds = [None] * lay.slots
        else:
            self.release_staging()

    def _load_shared(self, run: tuple[str, ...]) -> None:
        """Store a run's matrices back to back in one buffer."""
        ts = [self.gguf.tensors[n] for n in run]
        sizes = [t.n_rows * t.row_bytes for t in ts]
        buf = self._create(padded(sum(sizes)), "w." + run_name(run))
        at = 0
        for name, t, nbytes in zip(run, ts, sizes):
            self._upload(buf, name, 0, nbytes, at)
            self.weights[name] = GpuWeight(name, t.type, t.shape, t.row_bytes,
                                           [WeightPart(buf, 0, t.n_rows, nbytes, at)])
            at += nbytes

    def page_in(self, slot: int, name: str, part: int) -> None:
        """Make slot `slot` hold part `part` of matrix `name` (copied from the mmap unless it already does)."""
        if self.slot_holds[slot] == (name, part):
            return
        p = self.weights[name].parts[part]
        self.slot_holds[slot] = None   # until the copy is queued whole: a failed one leaves the slot unknown
        self._upload(self.slots[slot], name, p.row0 * self.weights[name].row_bytes, p.nbytes)
        self.slot_holds[slot] = (name, part)
        self.page_ins += 1

    def load_vector(self, name: str) -> GpuWeight:
        """Upload a (small) tensor as float32."""
        if name in self.weights:
            return self.weights[name]
        t = self.gguf.tensors[name]
        values = dequantize(self.gguf.read(name), t.type, t.shape).ravel()
        return self.put_vector(name, values)

    def put_vector(self, name: str, values: np.ndarray) -> GpuWeight:
        """Store float32 values computed on the host (e.g. a RoPE frequency table), or uint32 words as they are
        (a weight type's grid), under `name`."""
        values = np.ascontiguousarray(values, dtype=np.uint32 if values.dtype == np.uint32 else np.float32)
        buf = self._create(padded(values.nbytes), f"v.{name}")
        self._write(buf, memoryview(values).cast("B"))
        w = GpuWeight(name, GGML_TYPE_BY_NAME["F32"], (values.size,), values.nbytes,
                      [WeightPart(buf, 0, 1, values.nbytes)])
        self.weights[name] = w
        return w

    def _upload(self, buf: Any, name: str, start: int, nbytes: int, at: int = 0) -> None:
        """Copy bytes [start, start + nbytes) of a tensor straight from the file mapping into `buf` at `at`.

        Each chunk's file pages are released once copied, so the file never sits in host memory.
        """
        for off in range(0, nbytes, UPLOAD_CHUNK):
            end = min(off + UPLOAD_CHUNK, nbytes)
            self._write(buf, self.gguf.tensor_bytes(name, start + off, start + end), at + off, (name, start + off))
            self.gguf.release_pages(name, start + off, start + end)
            if self._progress is not None and not self.slot_holds:  # initial loading, not paging
                self._done += end - off
                self._progress(self._done, self._total)

    def _write(self, buf: Any, data: memoryview, offset: int = 0, source: tuple[str, int] | None = None) -> None:
        """Copy `data` into `buf` at `offset`: whole words through the staging buffers, a tail through
        write_buffer (bounded: the queue's copies are freed by draining it every FLUSH_BYTES).
        `source`: the tensor and byte `data` starts at, when it is a view of the file mapping."""
        n = len(data)
        aligned = n - n % 4
        q = self.gpu.queue

        def host(a: int, b: int) -> Any:   # data[a:b], read from the file rather than the mapping if it is a view of it
            return data[a:b] if source is None else self.gguf.read(source[0], source[1] + a, source[1] + b)

        if aligned >= UPLOAD_CHUNK // 4:
            self._stage(buf, data[:aligned], offset, source)
        elif aligned:
            q.write_buffer(buf, offset, host(0, aligned))
        if aligned < n:  # write_buffer moves whole 4-byte words: pad the tail
            q.write_buffer(buf, offset + aligned, bytes(host(aligned, n)) + b"\0" * (4 - n % 4))
        self._queued += n
        if self._queued >= FLUSH_BYTES:
            self.flush()

    def _stage(self, buf: Any, data: memoryview, offset: int, source: tuple[str, int] | None) -> None:
        """Copy whole words into `buf` through the two mapped staging buffers, UPLOAD_CHUNK at a time.

        Mapping a staging buffer waits until the GPU has finished its previous copy, so one buffer
        is filled while the other's copy runs; file bytes are read straight into the mapped buffer
        (touching the file mapping leaves its pages resident). Four buffers filled by four threads
        measured no faster in loading or paging on the H100.
        """
        dev = self.gpu.device
        if not self._staging:
            self._staging = [self.allocator.create_upload(UPLOAD_CHUNK, f"upload.{i}") for i in range(2)]
        for at in range(0, len(data), UPLOAD_CHUNK):
            piece = data[at:at + UPLOAD_CHUNK]
            st = self._staging[self._turn]
            self._turn ^= 1

            def put(mem: memoryview, piece: memoryview = piece, at: int = at) -> None:
                if source is None:
                    mem[:] = piece
                else:
                    self.gguf.read_into(mem, source[0], source[1] + at)
            timeout = self._timeout()
            try:
                self.allocator.fill(st, len(piece), put, timeout)
            except TimeoutError:
                self.release_staging()   # one is still being mapped: fresh ones next time
                raise DeviceError(f"a copy of weights to the GPU did not finish within {timeout:g} s; "
                                  "the device may be hung") from None
            enc = dev.create_command_encoder()
            enc.copy_buffer_to_buffer(st, 0, buf, offset + at, len(piece))
            self.gpu.queue.submit([enc.finish()])

    def release_staging(self) -> None:
        """Destroy the staging buffers (after loading, when weights are all resident; or abandoned)."""
        for b in self._staging:
            b.destroy()
        self._staging = []

    def flush(self) -> None:
        """Wait until queued uploads have reached the GPU (their staging memory is freed)."""
        self.allocator.wait_idle()
        self._queued = 0
