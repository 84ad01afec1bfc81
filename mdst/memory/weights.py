"""Weight upload: GGUF block bytes go from the mmap to GPU buffers in bounded chunks.

Matrices keep their GGUF block layout (the kernels dequantize). A matrix larger than the
binding limit is split on row boundaries into parts, each its own buffer. Small vectors
(norm weights, RoPE frequency factors) are stored as float32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UnsupportedModelError
from ..gguf import GGML_TYPE_BY_NAME, GGMLType, GGUFFile

UPLOAD_CHUNK = 8 << 20   # bytes per write_buffer call
FLUSH_BYTES = 32 << 20   # queued upload bytes after which the queue is drained (frees its staging copies)


@dataclass
class WeightPart:
    """Rows [row0, row0 + rows) of a matrix, in their own buffer."""

    buffer: Any
    row0: int
    rows: int
    nbytes: int


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


def split_rows(n_rows: int, row_bytes: int, max_bytes: int) -> list[tuple[int, int]]:
    """(row0, rows) parts of at most max_bytes each, on row boundaries."""
    per = max_bytes // row_bytes
    if per < 1:
        raise UnsupportedModelError(f"one row of {row_bytes} bytes exceeds the binding limit of {max_bytes} bytes")
    return [(r, min(per, n_rows - r)) for r in range(0, n_rows, per)]


def padded(nbytes: int) -> int:
    """GPU buffer size for nbytes: a multiple of 4, at least 4."""
    return max(4, -(-nbytes // 4) * 4)


def dequantize(raw: Any, gtype: GGMLType, shape: tuple[int, ...]) -> np.ndarray:
    """Float32 values of a tensor from its raw GGUF bytes, shaped [rows, row_elems]."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize as gguf_dequantize

    data = np.frombuffer(raw, dtype=np.uint8)
    if gtype.name == "F32":
        out = data.view(np.float32)
    elif gtype.name == "F16":
        out = data.view(np.float16).astype(np.float32)
    else:
        try:
            qtype = GGMLQuantizationType[gtype.name]
            out = gguf_dequantize(data, qtype)
        except (KeyError, NotImplementedError):
            raise UnsupportedModelError(f"tensor type {gtype.name} cannot be dequantized") from None
    rows = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    return np.asarray(out, dtype=np.float32).reshape(rows, shape[0])


class WeightStore:
    """The GPU copies of a model's weights."""

    def __init__(self, gpu: Any, gguf: GGUFFile, create_buffer: Any):
        self.gpu, self.gguf = gpu, gguf
        self._create = create_buffer
        self.weights: dict[str, GpuWeight] = {}
        self._queued = 0

    @property
    def nbytes(self) -> int:
        return sum(w.nbytes for w in self.weights.values())

    def load_matrix(self, name: str) -> GpuWeight:
        """Upload a matrix as raw blocks, split into parts that fit a binding."""
        if name in self.weights:
            return self.weights[name]
        t = self.gguf.tensors[name]
        w = GpuWeight(name, t.type, t.shape, t.row_bytes)
        for row0, rows in split_rows(t.n_rows, t.row_bytes, self.gpu.profile.max_binding_size):
            start = row0 * t.row_bytes
            nbytes = rows * t.row_bytes
            buf = self._create(padded(nbytes), f"w.{name}.{row0}")
            self._upload(buf, name, start, nbytes)
            w.parts.append(WeightPart(buf, row0, rows, nbytes))
        self.weights[name] = w
        return w

    def load_vector(self, name: str) -> GpuWeight:
        """Upload a (small) tensor as float32."""
        if name in self.weights:
            return self.weights[name]
        t = self.gguf.tensors[name]
        values = dequantize(self.gguf.tensor_bytes(name), t.type, t.shape).ravel()
        return self.put_vector(name, values)

    def put_vector(self, name: str, values: np.ndarray) -> GpuWeight:
        """Store float32 values computed on the host (e.g. a RoPE frequency table) under `name`."""
        values = np.ascontiguousarray(values, dtype=np.float32)
        buf = self._create(padded(values.nbytes), f"v.{name}")
        self._write(buf, memoryview(values).cast("B"))
        w = GpuWeight(name, GGML_TYPE_BY_NAME["F32"], (values.size,), values.nbytes,
                      [WeightPart(buf, 0, 1, values.nbytes)])
        self.weights[name] = w
        return w

    def _upload(self, buf: Any, name: str, start: int, nbytes: int) -> None:
        """Copy bytes [start, start + nbytes) of a tensor straight from the file mapping into `buf`.

        Each chunk's file pages are released once copied, so the file never sits in host memory.
        """
        for off in range(0, nbytes, UPLOAD_CHUNK):
            end = min(off + UPLOAD_CHUNK, nbytes)
            self._write(buf, self.gguf.tensor_bytes(name, start + off, start + end), off)
            self.gguf.release_pages(name, start + off, start + end)

    def _write(self, buf: Any, data: memoryview, offset: int = 0) -> None:
        """write_buffer, bounded: the queue's staging copies are freed by draining it every FLUSH_BYTES."""
        n = len(data)
        aligned = n - n % 4
        q = self.gpu.queue
        if aligned:
            q.write_buffer(buf, offset, data[:aligned])
        if aligned < n:  # write_buffer moves whole 4-byte words: pad the tail
            q.write_buffer(buf, offset + aligned, bytes(data[aligned:]) + b"\0" * (4 - n % 4))
        self._queued += n
        if self._queued >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Wait until queued uploads have reached the GPU (their staging memory is freed)."""
        self.gpu.wait_idle()
        self._queued = 0

    def release(self) -> None:
        """Destroy every weight buffer."""
        for w in self.weights.values():
            for p in w.parts:
                try:
                    p.buffer.destroy()
                except Exception:
                    pass
        self.weights.clear()

