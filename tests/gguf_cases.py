"""Malformed GGUF inputs, and the sandbox that opens them (used by tests/test_gguf_malformed.py).

- `write_gguf`: small valid files written with gguf-py's GGUFWriter; `layout` maps where each field sits;
- `MATRIX`: the corruption matrix of llama.cpp's tests/test-gguf.cpp, rebuilt as byte patches of those files;
- `mutate`: the edits a hypothesis test applies to valid files (field values, bytes, truncation, insertion);
- `LlamaGGUF`: llama.cpp's own GGUF reader (libggml-base through ctypes), the judge of what is valid;
- `Sandbox`: a worker process under an address-space limit that opens each input with llama.cpp and mdst,
  compares what they read and reports; a hang past the timeout or a dead worker is reported, not waited on.

Run as a script, this file is that worker.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import json
import math
import mmap
import os
import resource
import select
import struct
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from gguf import GGML_QUANT_SIZES, GGUFWriter
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V

REPO = Path(__file__).resolve().parents[1]
GGML_MAX_DIMS = 4
WORKER_ADDRESS_SPACE = 1 << 30  # bytes the worker may map beyond what it holds after its imports

# Every value type once, arrays of numbers, booleans and strings (an empty string included).
# "test.u8"/"test.i8" and the q/k/v tensor names have equal lengths, so one byte patch makes a duplicate.
BASE_METADATA: list[tuple[str, Any, V, V | None]] = [
    ("test.u8", 200, V.UINT8, None), ("test.i8", -100, V.INT8, None),
    ("test.u16", 60000, V.UINT16, None), ("test.i16", -30000, V.INT16, None),
    ("test.u32", 4000000000, V.UINT32, None), ("test.i32", -2000000000, V.INT32, None),
    ("test.f32", 1.5, V.FLOAT32, None), ("test.bool", True, V.BOOL, None),
    ("test.string", "h\u00e9llo", V.STRING, None), ("test.u64", 2**64 - 2, V.UINT64, None),
    ("test.i64", -(2**62), V.INT64, None), ("test.f64", -2.25, V.FLOAT64, None),
    ("test.arr_i32", [1, -2, 3], V.ARRAY, V.INT32), ("test.arr_f32", [0.5, 1.0], V.ARRAY, V.FLOAT32),
    ("test.arr_bool", [True, False, True], V.ARRAY, V.BOOL),
    ("test.arr_str", ["a", "bc", "", "d\u00e9f"], V.ARRAY, V.STRING),
]
# (name, type, GGUF shape: the row axis first). The last one is 3-D, so that its shape can be changed
# without moving any other tensor, and its 144 bytes are followed by padding; the 1-D ones serve the
# size-overflow cases.
BASE_TENSORS: list[tuple[str, Q, tuple[int, ...]]] = [
    ("blk.0.attn_q.weight", Q.Q4_0, (64, 2)), ("blk.0.attn_k.weight", Q.Q8_0, (32, 3)),
    ("blk.0.attn_v.weight", Q.Q4_K, (256, 2)), ("blk.0.norm.weight", Q.F16, (16,)),
    ("blk.0.bias", Q.F32, (8,)), ("output.weight", Q.Q8_0, (32, 2)), ("blk.0.cube", Q.F32, (4, 3, 3)),
]


def tensor_nbytes(qtype: Q | int, shape: tuple[int, ...]) -> int:
    """Bytes of a tensor of `qtype` and GGUF `shape` (gguf-py's block table)."""
    block, block_bytes = GGML_QUANT_SIZES[Q(qtype)]
    return math.prod(shape) // block * block_bytes


def write_gguf(path: Path, metadata=BASE_METADATA, tensors=BASE_TENSORS, alignment: int | None = None) -> bytes:
    """Write a valid GGUF file with gguf-py's GGUFWriter (deterministic tensor bytes) and return its bytes."""
    w = GGUFWriter(str(path), arch="test")
    if alignment is not None:
        w.add_custom_alignment(alignment)
    for key, value, vtype, etype in metadata:
        w.add_key_value(key, value, vtype, etype)
    for name, qtype, shape in tensors:
        if not shape:  # GGUFWriter writes a numpy scalar as a tensor of 0 dimensions
            w.add_tensor(name, np.zeros((), np.float32))
            continue
        nbytes = tensor_nbytes(qtype, shape)
        row_bytes = nbytes // math.prod(shape[1:])
        raw = (np.arange(nbytes) * 37 % 251).astype(np.uint8).reshape(*reversed(shape[1:]), row_bytes)
        w.add_tensor(name, raw, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path).read_bytes()


# ---- where each field sits -------------------------------------------------------------------------

@dataclass(frozen=True)
class Field:
    """One field of a GGUF header: `size` bytes at `offset`; `is_int` unless it holds text or floats."""

    name: str
    offset: int
    size: int
    is_int: bool


_VALUE_SIZES = {V.UINT8: 1, V.INT8: 1, V.UINT16: 2, V.INT16: 2, V.UINT32: 4, V.INT32: 4, V.FLOAT32: 4,
                V.BOOL: 1, V.UINT64: 8, V.INT64: 8, V.FLOAT64: 8}
_ITEMS_MAPPED = 8  # string arrays: the first few items get fields (a vocabulary would give 10^5 of them)


@dataclass
class Layout:
    """The fields of a (trusted, valid) GGUF file, by name: "n_kv", "<key>:type", "<tensor>:dim1", ..."""

    fields: dict[str, Field]
    alignment: int
    data_offset: int
    tensors: dict[str, tuple[int, int]]  # name -> (absolute offset, nbytes)

    @functools.cached_property
    def int_fields(self) -> list[Field]:
        """The integer fields (counts, lengths, types, dims, offsets, integer values), in file order."""
        return [f for f in self.fields.values() if f.is_int]


def layout(data: bytes) -> Layout:
    """Map the fields of a valid GGUF file (its header may be all there is of it)."""
    fields: dict[str, Field] = {}
    pos = 0

    def take(name: str, size: int, is_int: bool = True, keep: bool = True) -> int:
        nonlocal pos
        if keep:
            fields[name] = Field(name, pos, size, is_int)
        pos += size
        return int.from_bytes(data[pos - size:pos], "little") if is_int else 0

    def peek_string() -> str:
        n = int.from_bytes(data[pos:pos + 8], "little")
        return data[pos + 8:pos + 8 + n].decode()

    def string(name: str, keep: bool = True) -> bytes:
        n = take(name + ".len", 8, keep=keep)
        take(name, n, is_int=False, keep=keep)
        return data[pos - n:pos]

    def value(name: str, vtype: int, keep: bool = True) -> bytes:
        if vtype == V.STRING:
            return string(name, keep)
        if vtype == V.ARRAY:
            etype = take(name + ":etype", 4, keep=keep)
            count = take(name + ":count", 8, keep=keep)
            if etype == V.STRING:
                for i in range(count):
                    value(f"{name}[{i}]", etype, keep and i < _ITEMS_MAPPED)
            else:
                take(name + ":items", count * _VALUE_SIZES[V(etype)], is_int=False, keep=keep)
            return b""
        size = _VALUE_SIZES[V(vtype)]
        take(name, size, is_int=vtype not in (V.FLOAT32, V.FLOAT64), keep=keep)  # general.alignment's value, too
        return data[pos - size:pos]

    take("magic", 4, is_int=False)
    take("version", 4)
    n_tensors = take("n_tensors", 8)
    n_kv = take("n_kv", 8)
    alignment = 32
    for _ in range(n_kv):
        key = peek_string()
        string(key + ":key")
        vtype = take(key + ":type", 4)
        raw = value(key + ":value", vtype)
        if key == "general.alignment" and vtype == V.UINT32:
            alignment = int.from_bytes(raw, "little")
    infos = []
    for _ in range(n_tensors):
        name = peek_string()
        string(name + ":name")
        shape = tuple(take(f"{name}:dim{j}", 8) for j in range(take(name + ":n_dims", 4)))
        qtype = take(name + ":type", 4)
        infos.append((name, qtype, shape, take(name + ":offset", 8)))
    data_offset = -(-pos // alignment) * alignment
    tensors = {name: (data_offset + off, tensor_nbytes(qtype, shape)) for name, qtype, shape, off in infos}
    return Layout(fields, alignment, data_offset, tensors)


@dataclass(frozen=True)
class GGUFInput:
    """A file to try: `head`, then zeros up to `size` bytes (sparse: a real model's header, its data left out)."""

    head: bytes
    size: int

    def write(self, path: Path) -> None:
        """Write the file (zeros past `head` are a hole, not written)."""
        with open(path, "wb") as f:
            f.write(self.head[:self.size])
            f.truncate(self.size)


class Base:
    """A valid GGUF file, its field map, and patched copies of it."""

    def __init__(self, head: bytes, size: int | None = None):
        self.head, self.size = head, len(head) if size is None else size
        self.layout = layout(head)

    def field(self, name: str) -> Field:
        """The field called `name` (see `Layout`)."""
        return self.layout.fields[name]

    def value(self, name: str) -> int:
        """The integer in field `name`."""
        f = self.field(name)
        return int.from_bytes(self.head[f.offset:f.offset + f.size], "little")

    def patch(self, *changes: tuple[str, int | bytes], size: int | None = None) -> GGUFInput:
        """A copy with fields overwritten (integers wrap to the field's width) and optionally another size."""
        head = bytearray(self.head)
        for name, new in changes:
            f = self.field(name)
            raw = new if isinstance(new, bytes) else (new % 2 ** (8 * f.size)).to_bytes(f.size, "little")
            if len(raw) != f.size:
                raise ValueError(f"patch of {name} must be {f.size} bytes, got {len(raw)}")
            head[f.offset:f.offset + f.size] = raw
        return GGUFInput(bytes(head), self.size if size is None else size)

    def unchanged(self) -> GGUFInput:
        """The file itself."""
        return GGUFInput(self.head, self.size)


class Bases:
    """The valid files the matrix and the mutations start from, written once into `workdir`."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.plain = Base(write_gguf(workdir / "plain.gguf"))
        self.aligned = Base(write_gguf(workdir / "aligned.gguf", alignment=64))
        self.kv_only = Base(write_gguf(workdir / "kv_only.gguf", tensors=[]))
        self.type_probe = Base(write_gguf(workdir / "type_probe.gguf", metadata=[], tensors=[("t", Q.I8, (2048,))]))

    def written(self, name: str, **kw: Any) -> Base:
        """A file written by GGUFWriter with other contents (see `write_gguf`)."""
        return Base(write_gguf(self.workdir / f"{name}.gguf", **kw))

    @staticmethod
    def real(path: str | os.PathLike) -> Base:
        """A real model file's header, its tensor data left as a hole of the same size."""
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return Base(m[:layout(m).data_offset], len(m))


# ---- the corruption matrix (llama.cpp tests/test-gguf.cpp, plus mdst's own rules) ---------------------

LOAD, REJECT, REJECT_MDST_ONLY = "load", "reject", "reject (an mdst rule llama.cpp lacks)"
U64_MAX = 2**64 - 1
# Zeros after a length that claims them all: reading them as mdst once did (the file mapped, then copied,
# then decoded) exceeds the worker's limit; llama.cpp's reader, which holds two copies, stays within it.
BIG_TAIL = 384 << 20


@dataclass(frozen=True)
class Case:
    """A named input and what must happen: mdst loads it, or raises GGUFError (llama.cpp agreeing, or not)."""

    name: str
    expect: str
    build: Callable[[Bases], GGUFInput]


def _header_only(n_tensors: int = 0, n_kv: int = 0) -> GGUFInput:
    head = b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv)
    return GGUFInput(head, len(head))


def _after(b: Base, field: str, tail: int = 0) -> int:
    """How many bytes follow `field` in `b`, grown by `tail` zero bytes."""
    f = b.field(field)
    return b.size + tail - f.offset - f.size


def _with_trailing(case: GGUFInput, n: int) -> GGUFInput:
    """`case` followed by `n` zero bytes (a hole in the file)."""
    return GGUFInput(case.head, case.size + n)


def _claiming_tail(b: Base, field: str, tail: int, unit: int = 1) -> GGUFInput:
    """`b` followed by `tail` zero bytes, with `field` claiming all that follows it (in units of `unit` bytes)."""
    return b.patch((field, _after(b, field, tail) // unit), size=b.size + tail)


def _tensor_end(b: Base, name: str) -> int:
    offset, nbytes = b.layout.tensors[name]
    return offset + nbytes


Q_, K_ = "blk.0.attn_q.weight", "blk.0.attn_k.weight"
NORM, BIAS, CUBE, OUT = "blk.0.norm.weight", "blk.0.bias", "blk.0.cube", "output.weight"

# test-gguf.cpp's handcrafted files (HEADER_*, KV_*, TENSORS_*, DATA_*), valid controls, and mdst's own rules.
MATRIX: list[Case] = [
    # header
    Case("empty file", REJECT, lambda s: GGUFInput(b"", 0)),
    Case("header only (no metadata, no tensors)", LOAD, lambda s: _header_only()),
    Case("valid file", LOAD, lambda s: s.plain.unchanged()),
    Case("valid file, version 2", LOAD, lambda s: s.plain.patch(("version", 2))),
    Case("bad magic", REJECT, lambda s: s.plain.patch(("magic", b"FUGG"))),
    Case("version 0", REJECT, lambda s: s.plain.patch(("version", 0))),
    Case("version 1", REJECT, lambda s: s.plain.patch(("version", 1))),
    Case("version 4 (future)", REJECT, lambda s: s.plain.patch(("version", 4))),
    Case("version 3 big-endian", REJECT, lambda s: s.plain.patch(("version", 3 << 24))),
    Case("tensor count 2^64-1", REJECT, lambda s: s.plain.patch(("n_tensors", U64_MAX))),
    Case("tensor count 2^63", REJECT, lambda s: s.plain.patch(("n_tensors", 2**63))),
    Case("tensor count one too many", REJECT, lambda s: s.plain.patch(("n_tensors", s.plain.value("n_tensors") + 1))),
    Case("tensor count 2^64-1, header only", REJECT, lambda s: _header_only(n_tensors=U64_MAX)),
    Case("metadata count 2^64-1", REJECT, lambda s: s.plain.patch(("n_kv", U64_MAX))),
    Case("metadata count one too many", REJECT, lambda s: s.plain.patch(("n_kv", s.plain.value("n_kv") + 1))),
    Case("metadata count 2^64-1, header only", REJECT, lambda s: _header_only(n_kv=U64_MAX)),
    # metadata
    Case("metadata only (no tensors)", LOAD, lambda s: s.kv_only.unchanged()),
    Case("key length 2^64-1", REJECT, lambda s: s.plain.patch(("test.u8:key.len", U64_MAX))),
    Case("key length past the end", REJECT,
         lambda s: s.plain.patch(("test.u8:key.len", _after(s.plain, "test.u8:key.len") + 1))),
    Case("empty key", REJECT, lambda s: s.written("empty_key", metadata=[("", 1, V.UINT8, None)]).unchanged()),
    Case("key of 65535 bytes", LOAD,
         lambda s: s.written("key65535", metadata=[("k" * 65535, 1, V.UINT8, None)]).unchanged()),
    Case("key of 65536 bytes (GGUF specification)", REJECT_MDST_ONLY,
         lambda s: s.written("key65536", metadata=[("k" * 65536, 1, V.UINT8, None)]).unchanged()),
    Case("key length reaching the end of 384 MiB", REJECT,
         lambda s: _claiming_tail(s.plain, "test.u8:key.len", BIG_TAIL)),
    Case("duplicate key", REJECT, lambda s: s.plain.patch(("test.i8:key", b"test.u8"))),
    Case("key not UTF-8", REJECT_MDST_ONLY, lambda s: s.plain.patch(("test.u8:key", b"test.\xff8"))),
    Case("value type 13 (unknown)", REJECT, lambda s: s.plain.patch(("test.u32:type", 13))),
    Case("value type 2^32-1", REJECT, lambda s: s.plain.patch(("test.u32:type", 2**32 - 1))),
    Case("string length 2^64-1", REJECT, lambda s: s.plain.patch(("test.string:value.len", U64_MAX))),
    Case("string length past the end", REJECT,
         lambda s: s.plain.patch(("test.string:value.len", _after(s.plain, "test.string:value.len") + 1))),
    Case("string length reaching the end of 384 MiB", REJECT,
         lambda s: _claiming_tail(s.plain, "test.string:value.len", BIG_TAIL)),
    Case("string not UTF-8", REJECT_MDST_ONLY, lambda s: s.plain.patch(("test.string:value", b"h\xc3\xc3llo"))),
    Case("bool value 7", LOAD, lambda s: s.plain.patch(("test.bool:value", b"\x07"))),
    Case("array element type 13 (unknown)", REJECT, lambda s: s.plain.patch(("test.arr_i32:value:etype", 13))),
    Case("array of arrays", REJECT, lambda s: s.plain.patch(("test.arr_i32:value:etype", V.ARRAY))),
    Case("array count 2^64-1", REJECT, lambda s: s.plain.patch(("test.arr_i32:value:count", U64_MAX))),
    Case("array count 2^62 (bytes overflow 2^64)", REJECT,
         lambda s: s.plain.patch(("test.arr_i32:value:count", 2**62))),
    Case("array count past the end", REJECT,
         lambda s: s.plain.patch(("test.arr_i32:value:count", _after(s.plain, "test.arr_i32:value:count") // 4 + 1))),
    Case("i32 array filling 96 MiB", REJECT,
         lambda s: _claiming_tail(s.plain, "test.arr_i32:value:count", BIG_TAIL // 4, unit=4)),
    Case("string array count 2^64-1", REJECT, lambda s: s.plain.patch(("test.arr_str:value:count", U64_MAX))),
    Case("string array count 2^61 (length bytes overflow 2^64)", REJECT,
         lambda s: s.plain.patch(("test.arr_str:value:count", 2**61))),
    Case("string array item not UTF-8", REJECT_MDST_ONLY,
         lambda s: s.plain.patch(("test.arr_str:value[3]", b"d\xc3\xc3f"))),
    Case("string array item length 2^64-1", REJECT, lambda s: s.plain.patch(("test.arr_str:value[1].len", U64_MAX))),
    Case("string array item length past the end", REJECT,
         lambda s: s.plain.patch(("test.arr_str:value[1].len", _after(s.plain, "test.arr_str:value[1].len") + 1))),
    # alignment
    Case("alignment 64", LOAD, lambda s: s.aligned.unchanged()),
    Case("alignment 1", LOAD, lambda s: s.written("align1", alignment=1).unchanged()),
    Case("alignment 0", REJECT, lambda s: s.aligned.patch(("general.alignment:value", 0))),
    Case("alignment 13 (not a power of two)", REJECT, lambda s: s.aligned.patch(("general.alignment:value", 13))),
    Case("alignment 2^32-1", REJECT, lambda s: s.aligned.patch(("general.alignment:value", 2**32 - 1))),
    Case("alignment 2^31 (data starts past the end)", REJECT,
         lambda s: s.aligned.patch(("general.alignment:value", 2**31))),
    Case("alignment 13, no tensors", REJECT,
         lambda s: s.written("align64_kv", tensors=[], alignment=64).patch(("general.alignment:value", 13))),
    Case("alignment of type i32", REJECT, lambda s: s.aligned.patch(("general.alignment:type", V.INT32))),
    Case("alignment of type f32", REJECT, lambda s: s.aligned.patch(("general.alignment:type", V.FLOAT32))),
    Case("alignment of type string", REJECT,
         lambda s: s.written("align_str", metadata=[("general.alignment", "64", V.STRING, None)]).unchanged()),
    Case("alignment of type u32 array", REJECT,
         lambda s: s.written("align_arr", metadata=[("general.alignment", [64], V.ARRAY, V.UINT32)]).unchanged()),
    Case("alignment 64 changed to 32 (offsets no longer follow the padding)", REJECT,
         lambda s: s.aligned.patch(("general.alignment:value", 32))),
    # tensor table
    Case("tensor name length 2^64-1", REJECT, lambda s: s.plain.patch((Q_ + ":name.len", U64_MAX))),
    Case("tensor name length past the end", REJECT,
         lambda s: s.plain.patch((Q_ + ":name.len", _after(s.plain, Q_ + ":name.len") + 1))),
    Case("tensor name of 63 bytes", LOAD, lambda s: s.written("name63", tensors=[("n" * 63, Q.F32, (4,))]).unchanged()),
    Case("tensor name of 64 bytes (GGML_MAX_NAME)", REJECT,
         lambda s: s.written("name64", tensors=[("n" * 64, Q.F32, (4,))]).unchanged()),
    Case("tensor name not UTF-8", REJECT_MDST_ONLY, lambda s: s.plain.patch((OUT + ":name", b"output.\xffeight"))),
    Case("duplicate tensor name", REJECT, lambda s: s.plain.patch((K_ + ":name", Q_.encode()))),
    Case("n_dims 0 (a scalar)", REJECT_MDST_ONLY,
         lambda s: s.written("scalar", tensors=[("s", Q.F32, ())]).unchanged()),
    Case("n_dims 5", REJECT, lambda s: s.plain.patch((Q_ + ":n_dims", GGML_MAX_DIMS + 1))),
    Case("n_dims 2^32-1", REJECT, lambda s: s.plain.patch((Q_ + ":n_dims", 2**32 - 1))),
    Case("dimension -1", REJECT, lambda s: s.plain.patch((Q_ + ":dim0", U64_MAX), (Q_ + ":dim1", U64_MAX))),
    Case("dimension 2^63 (negative as int64)", REJECT, lambda s: s.plain.patch((CUBE + ":dim1", 2**63))),
    Case("zero rows (last tensor)", LOAD, lambda s: s.plain.patch((CUBE + ":dim2", 0))),
    Case("zero rows (first tensor, later offsets now wrong)", REJECT, lambda s: s.plain.patch((Q_ + ":dim1", 0))),
    Case("zero rows with an int64-overflowing row length", REJECT,
         lambda s: s.plain.patch((CUBE + ":dim0", 2**62), (CUBE + ":dim1", 4), (CUBE + ":dim2", 0))),
    Case("elements overflow int64 (4*INT32_MAX per dim)", REJECT,
         lambda s: s.plain.patch((Q_ + ":dim0", 4 * (2**31 - 1) // 32 * 32), (Q_ + ":dim1", 4 * (2**31 - 1)))),
    Case("bytes overflow size_t (I64, elements fit int64)", REJECT,
         lambda s: s.plain.patch((K_ + ":type", Q.I64), (K_ + ":dim0", 2**31), (K_ + ":dim1", 2**31))),
    Case("bytes wrap to 2^64-16 (F32 4 x 2^30-1 x 2^30+1)", REJECT,
         lambda s: s.plain.patch((CUBE + ":dim1", 2**30 - 1), (CUBE + ":dim2", 2**30 + 1))),
    Case("two I8 tensors of 2^63-64 bytes (total overflows)", REJECT,
         lambda s: s.plain.patch((NORM + ":type", Q.I8), (NORM + ":dim0", 0x7FFFFFFFFFFFFFC0),
                                 (BIAS + ":type", Q.I8), (BIAS + ":dim0", 0x7FFFFFFFFFFFFFC0))),
    Case("row length not a multiple of the block (Q4_0, 48)", REJECT, lambda s: s.plain.patch((Q_ + ":dim0", 48))),
    Case("tensor type 43 (GGML_TYPE_COUNT)", REJECT, lambda s: s.plain.patch((Q_ + ":type", 43))),
    Case("tensor type 4 (removed Q4_2)", REJECT, lambda s: s.plain.patch((Q_ + ":type", 4))),
    Case("tensor type 2^32-1", REJECT, lambda s: s.plain.patch((Q_ + ":type", 2**32 - 1))),
    # tensor data
    Case("tensor offset 2^64-1", REJECT, lambda s: s.plain.patch((CUBE + ":offset", U64_MAX))),
    Case("tensor offset misaligned (+1)", REJECT,
         lambda s: s.plain.patch((K_ + ":offset", s.plain.value(K_ + ":offset") + 1))),
    Case("tensor offset one alignment later (overlaps the next)", REJECT,
         lambda s: s.plain.patch((K_ + ":offset", s.plain.value(K_ + ":offset") + 32))),
    Case("gap before the last tensor (data still in the file)", REJECT,
         lambda s: _with_trailing(s.plain.patch((CUBE + ":offset", s.plain.value(CUBE + ":offset") + 32)), 64)),
    Case("tensors overlap (same offset)", REJECT,
         lambda s: s.plain.patch((K_ + ":offset", s.plain.value(Q_ + ":offset")))),
    Case("tensor offsets out of order", REJECT,
         lambda s: s.plain.patch((NORM + ":offset", s.plain.value(BIAS + ":offset")),
                                 (BIAS + ":offset", s.plain.value(NORM + ":offset")))),
    Case("last tensor past the end of the file", REJECT,
         lambda s: s.plain.patch((CUBE + ":offset", s.plain.value(CUBE + ":offset") + 64))),
    Case("data one byte short", REJECT, lambda s: s.plain.patch(size=_tensor_end(s.plain, CUBE) - 1)),
    Case("data ends with the last tensor (no padding)", LOAD, lambda s: s.plain.patch(size=_tensor_end(s.plain, CUBE))),
    Case("data section starts past the end", REJECT, lambda s: s.plain.patch(size=s.plain.layout.data_offset - 1)),
    Case("trailing bytes after the data", LOAD, lambda s: _with_trailing(s.plain.unchanged(), 100)),
]


def type_probe(bases: Bases, type_id: int) -> GGUFInput:
    """The one-tensor file with its tensor (256 elements, 2048 bytes of data) given type id `type_id`."""
    return bases.type_probe.patch(("t:type", type_id), ("t:dim0", 256))


# ---- mutations -------------------------------------------------------------------------------------

def mutate(base: Base, edits: list[tuple]) -> GGUFInput:
    """Apply edits in order: ("field", i, v) stores v into int field i (mod its width); ("add", i, d) adds d;
    ("to_end", i, d) stores the number of bytes after the field, plus d; ("bytes", offset, raw) overwrites;
    ("insert", offset, raw); ("delete", offset, n); ("truncate", n). Fields are those of `base`, where they were."""
    head, size = bytearray(base.head), base.size
    fields = base.layout.int_fields
    for edit in edits:
        kind = edit[0]
        if kind in ("field", "add", "to_end"):
            f = fields[edit[1] % len(fields)]
            if f.offset + f.size > len(head):
                continue  # cut off by an earlier edit
            old = int.from_bytes(head[f.offset:f.offset + f.size], "little")
            new = {"field": edit[2], "add": old + edit[2], "to_end": size - f.offset - f.size + edit[2]}[kind]
            head[f.offset:f.offset + f.size] = (new % 2 ** (8 * f.size)).to_bytes(f.size, "little")
        elif kind == "bytes":
            at = edit[1] % max(len(head), 1)
            raw = edit[2][:len(head) - at]
            head[at:at + len(raw)] = raw
        elif kind == "insert":
            at = edit[1] % (len(head) + 1)
            head[at:at] = edit[2]
            size += len(edit[2])
        elif kind == "delete":
            at = edit[1] % max(len(head), 1)
            n = len(head[at:at + edit[2]])
            del head[at:at + n]
            size -= n
        elif kind == "truncate":
            size = min(size, edit[1])
            del head[size:]
        else:
            raise ValueError(f"unknown edit {edit!r}")
    return GGUFInput(bytes(head), size)


# ---- llama.cpp's reader: the judge of validity --------------------------------------------------------

class _InitParams(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]


_LOG_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


def _c_string(b: bytes) -> bytes:
    """What a C API returns for a GGUF string: everything before the first NUL."""
    return b.split(b"\0", 1)[0]


def _scalar(v: Any) -> Any:
    return "nan" if isinstance(v, float) and v != v else v


class LlamaGGUF:
    """gguf_init_from_file of the libggml-base that llama-cpp-python ships, read into a comparable view."""

    _GETTERS = {V.UINT8: "u8", V.INT8: "i8", V.UINT16: "u16", V.INT16: "i16", V.UINT32: "u32", V.INT32: "i32",
                V.FLOAT32: "f32", V.BOOL: "bool", V.UINT64: "u64", V.INT64: "i64", V.FLOAT64: "f64"}
    _CTYPES = {"u8": ctypes.c_uint8, "i8": ctypes.c_int8, "u16": ctypes.c_uint16, "i16": ctypes.c_int16,
               "u32": ctypes.c_uint32, "i32": ctypes.c_int32, "f32": ctypes.c_float, "bool": ctypes.c_bool,
               "u64": ctypes.c_uint64, "i64": ctypes.c_int64, "f64": ctypes.c_double}

    def __init__(self):
        package = Path(importlib.util.find_spec("llama_cpp").origin).parent  # not imported: only ggml is needed
        lib = ctypes.CDLL(str(package / "lib" / "libggml-base.so"))
        p, i64, sz, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_size_t, ctypes.c_int
        sigs = {
            "gguf_init_from_file": (p, [ctypes.c_char_p, _InitParams]), "gguf_free": (None, [p]),
            "gguf_get_version": (ctypes.c_uint32, [p]), "gguf_get_alignment": (sz, [p]),
            "gguf_get_data_offset": (sz, [p]), "gguf_get_n_kv": (i64, [p]), "gguf_get_key": (ctypes.c_char_p, [p, i64]),
            "gguf_get_kv_type": (i32, [p, i64]), "gguf_get_arr_type": (i32, [p, i64]), "gguf_get_arr_n": (sz, [p, i64]),
            "gguf_get_arr_data": (p, [p, i64]), "gguf_get_arr_str": (ctypes.c_char_p, [p, i64, sz]),
            "gguf_get_val_str": (ctypes.c_char_p, [p, i64]), "gguf_get_n_tensors": (i64, [p]),
            "gguf_get_tensor_name": (ctypes.c_char_p, [p, i64]), "gguf_get_tensor_type": (i32, [p, i64]),
            "gguf_get_tensor_offset": (sz, [p, i64]), "gguf_get_tensor_size": (sz, [p, i64]),
            "gguf_get_tensor_ne": (ctypes.POINTER(ctypes.c_int64), [p, i64]),
            "ggml_log_set": (None, [_LOG_CALLBACK, p]),
            **{f"gguf_get_val_{t}": (c, [p, i64]) for t, c in self._CTYPES.items()},
        }
        for name, (restype, argtypes) in sigs.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
        self.lib, self.log = lib, []
        self._callback = _LOG_CALLBACK(lambda level, text, _: self.log.append(text.decode(errors="replace")))
        lib.ggml_log_set(self._callback, None)

    def read(self, path: str) -> dict | str:
        """The view of `path` (see `view_of_mdst`), or llama.cpp's reason for rejecting it."""
        self.log.clear()
        ctx = self.lib.gguf_init_from_file(os.fsencode(path), _InitParams(True, None))
        if not ctx:
            return "".join(self.log).strip() or "rejected"
        try:
            return self._view(ctx)
        finally:
            self.lib.gguf_free(ctx)

    def _view(self, ctx: int) -> dict:
        lib = self.lib
        metadata = []
        for i in range(lib.gguf_get_n_kv(ctx)):
            vtype = lib.gguf_get_kv_type(ctx, i)
            if vtype == V.STRING:
                value = lib.gguf_get_val_str(ctx, i)
            elif vtype == V.ARRAY:
                etype, n = lib.gguf_get_arr_type(ctx, i), lib.gguf_get_arr_n(ctx, i)
                if etype == V.STRING:
                    items = [lib.gguf_get_arr_str(ctx, i, j) for j in range(n)]
                else:
                    data = ctypes.string_at(lib.gguf_get_arr_data(ctx, i), n * _VALUE_SIZES[V(etype)]) if n else b""
                    items = [x != 0 for x in data] if etype == V.BOOL else data
                value = (etype, items)
            else:
                value = _scalar(getattr(lib, f"gguf_get_val_{self._GETTERS[V(vtype)]}")(ctx, i))
            metadata.append((lib.gguf_get_key(ctx, i), vtype, value))
        tensors = []
        n_tensors = lib.gguf_get_n_tensors(ctx)
        data_offset = lib.gguf_get_data_offset(ctx) if n_tensors else None
        for i in range(n_tensors):
            tensors.append((lib.gguf_get_tensor_name(ctx, i), lib.gguf_get_tensor_type(ctx, i),
                            tuple(lib.gguf_get_tensor_ne(ctx, i)[:GGML_MAX_DIMS]),
                            data_offset + lib.gguf_get_tensor_offset(ctx, i), lib.gguf_get_tensor_size(ctx, i)))
        return {"version": lib.gguf_get_version(ctx), "alignment": lib.gguf_get_alignment(ctx),
                "data_offset": data_offset, "metadata": metadata, "tensors": tensors}


_DTYPE_TO_VTYPE = {"|u1": V.UINT8, "|i1": V.INT8, "<u2": V.UINT16, "<i2": V.INT16, "<u4": V.UINT32, "<i4": V.INT32,
                   "<f4": V.FLOAT32, "|b1": V.BOOL, "<u8": V.UINT64, "<i8": V.INT64, "<f8": V.FLOAT64}


def view_of_mdst(f: Any) -> dict:
    """What mdst's GGUFFile read, in the shape of `LlamaGGUF.read`: strings as C strings, arrays as raw bytes."""
    metadata = []
    for key, value in f.metadata.items():
        vtype = f.metadata_types[key]
        if isinstance(value, str):
            value = _c_string(value.encode())
        elif isinstance(value, list):
            value = (V.STRING, [_c_string(s.encode()) for s in value])
        elif isinstance(value, np.ndarray):
            etype = _DTYPE_TO_VTYPE[value.dtype.str]
            value = (etype, [bool(x) for x in value] if etype == V.BOOL else value.tobytes())
        else:
            value = _scalar(value)
        metadata.append((_c_string(key.encode()), vtype, value))
    tensors = [(_c_string(t.name.encode()), t.type.id, tuple(t.shape) + (1,) * (GGML_MAX_DIMS - len(t.shape)),
                t.offset, t.nbytes) for t in f.tensors.values()]
    return {"version": f.version, "alignment": f.alignment, "data_offset": f.data_offset if tensors else None,
            "metadata": metadata, "tensors": tensors}


def mdst_inconsistencies(f: Any, size: int) -> list[str]:
    """What is wrong with what mdst reports, checked against the rules alone (no second reader)."""
    problems = []
    a = f.alignment
    if f.version not in (2, 3) or a <= 0 or a & (a - 1):
        problems.append(f"version {f.version} / alignment {a}")
    end = f.data_offset
    for t in f.tensors.values():  # in table order, each where the previous one's padded data ends
        expected_bytes = math.prod(t.shape) // t.type.block * t.type.block_bytes
        if not 1 <= len(t.shape) <= GGML_MAX_DIMS or t.shape[0] % t.type.block or t.nbytes != expected_bytes:
            problems.append(f"tensor {t.name!r}: shape {t.shape}, {t.nbytes} bytes of {t.type.name}")
        if t.offset != end or t.offset + t.nbytes > size or len(f.tensor_bytes(t.name)) != t.nbytes:
            problems.append(f"tensor {t.name!r}: {t.nbytes} bytes at {t.offset}, expected at {end} within {size}")
        end = t.offset + -(-t.nbytes // a) * a
    return problems


# ---- the worker --------------------------------------------------------------------------------------

def judge(path: str, llama: LlamaGGUF, phase: Callable[[str], None]) -> dict:
    """Open `path` with llama.cpp, then with mdst (`phase` announces each); say how they disagree if mdst loads it.
    llama.cpp goes first so that nothing mdst leaves behind can starve it of memory."""
    from mdst.errors import GGUFError
    from mdst.format.gguf import GGUFFile

    result: dict[str, Any] = {"problems": []}
    size = os.path.getsize(path)
    phase("llama.cpp")
    llama_view = llama.read(path)
    if isinstance(llama_view, str):
        result["llama"], result["llama_detail"] = "rejected", llama_view
    else:
        out_of_file = [t[0] for t in llama_view["tensors"] if t[3] + t[4] > size]  # llama.cpp's model loader rule
        result["llama"] = "rejected" if out_of_file else "accepted"
        result["llama_detail"] = f"tensor data past the end of the file: {out_of_file}" if out_of_file else ""
    phase("mdst")
    mdst_view = None
    try:
        with GGUFFile(path) as f:
            mdst_view = view_of_mdst(f)
            result["problems"] += mdst_inconsistencies(f, size)
        result["mdst"], result["mdst_detail"] = "loaded", ""
    except GGUFError as e:
        result["mdst"], result["mdst_detail"] = "GGUFError", str(e)
    except Exception as e:  # noqa: BLE001 - anything else is what the test looks for
        result["mdst"], result["mdst_detail"] = "other", "".join(traceback.format_exception(e))
    if mdst_view is not None:
        if result["llama"] != "accepted":
            result["problems"].append(f"llama.cpp rejects it: {result['llama_detail']}")
        elif mdst_view != llama_view:
            diff = [k for k in mdst_view if mdst_view[k] != llama_view[k]]
            result["problems"].append(f"mdst and llama.cpp read different {diff}: "
                                      f"{[(mdst_view[k], llama_view[k]) for k in diff]}"[:2000])
    return result


def _address_space_in_use() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def worker_main() -> None:
    """Serve requests, one JSON line each on stdin: {"path": p} to judge a file; {"alloc": n} and {"sleep": s}
    to prove the limits hold. Each answer is zero or more phase names, then one JSON line."""
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever a library or a crash handler prints goes to stderr, not into the answers
    sys.path.insert(0, str(REPO))
    import mdst.format.gguf  # noqa: F401 - imported before the limit, like everything the worker needs
    llama = LlamaGGUF()
    limit = _address_space_in_use() + WORKER_ADDRESS_SPACE
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    def phase(name: str) -> None:
        replies.write(name + "\n")
        replies.flush()

    for line in sys.stdin:
        request = json.loads(line)
        if "alloc" in request:
            try:
                reply = {"allocated": len(bytearray(request["alloc"]))}
            except MemoryError:
                reply = {"allocated": 0}
        elif "sleep" in request:
            time.sleep(request["sleep"])
            reply = {}
        else:
            reply = judge(request["path"], llama, phase)
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


class Sandbox:
    """Drives a worker process (see `worker_main`); a hang or a death is reported as the case's outcome."""

    def __init__(self, workdir: Path, timeout_s: float = 30.0):
        self.workdir, self.timeout_s = workdir, timeout_s
        self.case_path = workdir / "case.gguf"
        self.stderr_path = workdir / "worker.stderr"
        self.proc: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
                   GGML_NO_BACKTRACE="1")  # no gdb attaching to a worker that llama.cpp aborts
        with open(self.stderr_path, "wb") as err:
            return subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=err, env=env, bufsize=0)

    def request(self, request: dict, timeout_s: float | None = None) -> dict:
        """Send one request: the reply, or {"mdst": "hang" | "crash", ...} (and the worker is replaced)."""
        if self.proc is None:
            self.proc = self._start()
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
        except BrokenPipeError:
            return self._lost("crash", f"the worker had died (exit status {self.proc.wait()})")
        deadline = time.monotonic() + timeout_s
        pending, phase = b"", "start"
        while True:
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                if line.startswith(b"{"):
                    return json.loads(line)
                phase = line.decode()
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                return self._lost("hang", f"no answer within {timeout_s} s (in the {phase} phase)")
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
            if not chunk:
                return self._lost("crash", f"the worker died (exit status {self.proc.wait()}, in the {phase} phase)")
            pending += chunk

    def judge(self, case: GGUFInput) -> dict:
        """Write `case` and have the worker open it."""
        case.write(self.case_path)
        return self.request({"path": str(self.case_path)})

    def _lost(self, outcome: str, why: str) -> dict:
        self.proc.kill()
        self.proc.wait()
        self.proc = None
        tail = self.stderr_path.read_text(errors="replace")[-3000:]
        return {"mdst": outcome, "mdst_detail": f"{why}; worker stderr: {tail}", "problems": []}

    def close(self) -> None:
        """Stop the worker."""
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait(timeout=self.timeout_s)
            self.proc = None


if __name__ == "__main__":
    worker_main()
