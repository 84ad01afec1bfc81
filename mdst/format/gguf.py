"""Strict GGUF (v2/v3) reading over mmap: header, metadata, tensor table; tensor bytes are views, never copies.

Every count and length is checked against the bytes left in the file before it is used, and strings
and arrays are read only once the whole header (metadata, tensor table, data layout) is known to be
sound, so a malformed file ends in `GGUFError` naming the offset and the reason, never in a crash, a
hang or an allocation sized by a corrupt number.
"""

from __future__ import annotations

import math
import mmap
import os
import re
import struct
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from ..errors import GGUFError

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4
MAX_NAME_BYTES = 63  # ggml keeps a tensor name in 64 bytes, the terminating NUL included
MAX_KEY_BYTES = 2**16 - 1  # the GGUF specification's limit on metadata keys (llama.cpp does not check it)
INT64_MAX = 2**63 - 1  # dimensions and element counts are int64 in ggml
# llama.cpp's split models (gguf-split): every file says which part it is; the first holds the metadata.
SPLIT_NO, SPLIT_COUNT, SPLIT_TENSORS = "split.no", "split.count", "split.tensors.count"
SPLIT_NAME = re.compile(r"^(?P<prefix>.+)-(?P<no>[0-9]{5})-of-(?P<count>[0-9]{5})\.gguf$")

# GGUF metadata value types.
T_UINT8, T_INT8, T_UINT16, T_INT16, T_UINT32, T_INT32, T_FLOAT32, T_BOOL = range(8)
T_STRING, T_ARRAY, T_UINT64, T_INT64, T_FLOAT64 = range(8, 13)

_U64 = struct.Struct("<Q")
_SCALAR = {  # value type -> (struct format, numpy dtype)
    T_UINT8: ("<B", "<u1"), T_INT8: ("<b", "<i1"), T_UINT16: ("<H", "<u2"), T_INT16: ("<h", "<i2"),
    T_UINT32: ("<I", "<u4"), T_INT32: ("<i", "<i4"), T_FLOAT32: ("<f", "<f4"), T_BOOL: ("<?", "?"),
    T_UINT64: ("<Q", "<u8"), T_INT64: ("<q", "<i8"), T_FLOAT64: ("<d", "<f8"),
}


@dataclass(frozen=True)
class GGMLType:
    """A tensor element type: `block` elements are stored in `block_bytes` bytes."""

    id: int
    name: str
    block: int
    block_bytes: int


# ggml tensor types by id (ggml.h). Listed so that the table can be read; which ones mdst can
# compute with is decided by the kernels (mdst.kernels.WEIGHT_TYPES).
GGML_TYPES = {t.id: t for t in [
    GGMLType(0, "F32", 1, 4), GGMLType(1, "F16", 1, 2), GGMLType(2, "Q4_0", 32, 18),
    GGMLType(3, "Q4_1", 32, 20), GGMLType(6, "Q5_0", 32, 22), GGMLType(7, "Q5_1", 32, 24),
    GGMLType(8, "Q8_0", 32, 34), GGMLType(9, "Q8_1", 32, 36), GGMLType(10, "Q2_K", 256, 84),
    GGMLType(11, "Q3_K", 256, 110), GGMLType(12, "Q4_K", 256, 144), GGMLType(13, "Q5_K", 256, 176),
    GGMLType(14, "Q6_K", 256, 210), GGMLType(15, "Q8_K", 256, 292), GGMLType(16, "IQ2_XXS", 256, 66),
    GGMLType(17, "IQ2_XS", 256, 74), GGMLType(18, "IQ3_XXS", 256, 98), GGMLType(19, "IQ1_S", 256, 50),
    GGMLType(20, "IQ4_NL", 32, 18), GGMLType(21, "IQ3_S", 256, 110), GGMLType(22, "IQ2_S", 256, 82),
    GGMLType(23, "IQ4_XS", 256, 136), GGMLType(24, "I8", 1, 1), GGMLType(25, "I16", 1, 2),
    GGMLType(26, "I32", 1, 4), GGMLType(27, "I64", 1, 8), GGMLType(28, "F64", 1, 8),
    GGMLType(29, "IQ1_M", 256, 56), GGMLType(30, "BF16", 1, 2), GGMLType(34, "TQ1_0", 256, 54),
    GGMLType(35, "TQ2_0", 256, 66), GGMLType(39, "MXFP4", 32, 17), GGMLType(40, "NVFP4", 64, 36),
    GGMLType(41, "Q1_0", 128, 18), GGMLType(42, "Q2_0", 64, 18),
]}
GGML_TYPE_BY_NAME = {t.name: t for t in GGML_TYPES.values()}


@dataclass(frozen=True)
class TensorInfo:
    """One entry of the tensor table. `shape` is in GGUF order: shape[0] is the contiguous (row) axis."""

    name: str
    type: GGMLType
    shape: tuple[int, ...]
    offset: int  # absolute byte offset in the file that holds it
    nbytes: int
    file: int = 0  # which file of a split model holds it (GGUFFile.paths); 0 unless split

    @property
    def n_elements(self) -> int:
        """Number of elements."""
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def row_elems(self) -> int:
        """Elements per row (the contiguous axis)."""
        return self.shape[0]

    @property
    def n_rows(self) -> int:
        """Number of rows: the product of every axis but the first."""
        return self.n_elements // self.shape[0] if self.shape[0] else 0

    @property
    def row_bytes(self) -> int:
        """Bytes per row."""
        return self.shape[0] // self.type.block * self.type.block_bytes


@dataclass(frozen=True)
class _Deferred:
    """A string or array whose bytes are known to lie in the file but are not read yet (see `_Cursor.value`)."""

    pos: int  # where its length (string) or its first element (array) is
    etype: int  # T_STRING for a string; else the array's element type
    count: int | None  # None for a string, else the number of array elements
    what: str


class _Cursor:
    """Bounds-checked little-endian reader over a buffer."""

    def __init__(self, buf: memoryview, path: str):
        self.buf, self.pos, self.path = buf, 0, path

    def fail(self, why: str) -> GGUFError:
        return GGUFError(f"{self.path}: {why} (at byte {self.pos}); the file is not valid GGUF - re-download or re-convert it")

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > len(self.buf):
            raise self.fail(f"{what} needs {n} bytes but only {len(self.buf) - self.pos} remain (truncated or corrupt file)")

    def scalar(self, fmt: str, what: str) -> Any:
        size = struct.calcsize(fmt)
        self.need(size, what)
        v = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += size
        return v

    def string(self, what: str, decode: bool = True, max_bytes: int | None = None) -> str | None:
        """A length-prefixed string, its bytes checked to be in the file; decoded as UTF-8 if `decode`."""
        n = self.scalar("<Q", f"length of {what}")
        if max_bytes is not None and n > max_bytes:
            raise self.fail(f"{what} is {n} bytes long, more than the {max_bytes} allowed")
        self.need(n, what)
        start, self.pos = self.pos, self.pos + n
        if not decode:
            return None
        try:
            return str(self.buf[start:self.pos], "utf-8")
        except UnicodeDecodeError as e:
            raise self.fail(f"{what} is not valid UTF-8 ({e.reason})") from None

    def strings(self, count: int, what: str, decode: bool) -> list[str]:
        """The `count` strings of array `what` (as `string` reads them, in one tight loop: a vocabulary
        holds 10^5 of them); an empty list unless `decode`."""
        buf, end, pos, items = self.buf, len(self.buf), self.pos, []
        for i in range(count):
            n = _U64.unpack_from(buf, pos)[0] if end - pos >= 8 else -1
            if not 0 <= n <= end - pos - 8:
                break
            if decode:
                try:
                    items.append(str(buf[pos + 8:pos + 8 + n], "utf-8"))
                except UnicodeDecodeError:
                    break
            pos += 8 + n
        else:
            self.pos = pos
            return items
        self.pos = pos
        self.string(f"{what}[{i}]")  # item i is bad: `string` raises, saying how
        raise AssertionError("unreachable")

    def value(self, vtype: int, what: str) -> Any:
        """A scalar; a string or an array as `_Deferred`, so that a corrupt length that happens to fit in the
        file costs no memory: `read_deferred` reads them once the whole header has proved sound."""
        if vtype in _SCALAR:
            v = self.scalar(_SCALAR[vtype][0], what)
            return bool(v) if vtype == T_BOOL else v
        if vtype == T_STRING:
            deferred = _Deferred(self.pos, T_STRING, None, what)
            self.string(what, decode=False)
            return deferred
        if vtype == T_ARRAY:
            etype = self.scalar("<I", f"element type of {what}")
            count = self.scalar("<Q", f"element count of {what}")
            deferred = _Deferred(self.pos, etype, count, what)
            if etype in _SCALAR:
                size = struct.calcsize(_SCALAR[etype][0])
                if count > (len(self.buf) - self.pos) // size:
                    raise self.fail(f"{what} claims {count} elements of {size} bytes, more than the file holds")
                self.pos += count * size
                return deferred
            if etype == T_STRING:
                if count > (len(self.buf) - self.pos) // 8:  # each string needs at least its 8-byte length
                    raise self.fail(f"{what} claims {count} strings, more than the file holds")
                self.strings(count, what, decode=False)
                return deferred
            if etype == T_ARRAY:
                raise self.fail(f"{what} is an array of arrays, which GGUF does not allow")
            raise self.fail(f"{what} has unknown element type {etype}")
        raise self.fail(f"{what} has unknown value type {vtype}")

    def read_deferred(self, d: _Deferred) -> Any:
        """The value of a `_Deferred`: a str, a list of str, or a numpy array (a copy, not a view of the file)."""
        self.pos = d.pos
        if d.count is None:
            return self.string(d.what)
        if d.etype == T_STRING:
            return self.strings(d.count, d.what, decode=True)
        return np.frombuffer(self.buf, dtype=_SCALAR[d.etype][1], count=d.count, offset=d.pos).copy()


def split_path(prefix: str, no: int, count: int) -> str:
    """The name llama.cpp's gguf-split gives part `no` (0-based) of `count`: PREFIX-0000N-of-0000C.gguf."""
    return f"{prefix}-{no + 1:05d}-of-{count:05d}.gguf"


class _Part:
    """One GGUF file opened over mmap and parsed: header, metadata, tensor table (offsets in this file)."""

    def __init__(self, path: str, index: int):
        self.path, self.index = path, index
        try:
            self.file = open(self.path, "rb")
        except OSError as e:
            raise GGUFError(f"cannot open {self.path}: {e.strerror}; check the path") from None
        try:
            size = os.fstat(self.file.fileno()).st_size
            if size == 0:
                raise GGUFError(f"{self.path}: the file is empty; it is not a GGUF file")
            self.mmap = mmap.mmap(self.file.fileno(), 0, access=mmap.ACCESS_READ)
            self.view = memoryview(self.mmap)
            self._parse()
        except BaseException:
            self.close()
            raise

    def _parse(self) -> None:
        c = _Cursor(self.view, self.path)
        n_tensors, n_kv = self._read_header(c)
        self._read_metadata(c, n_kv)
        self.alignment = self._read_alignment(c)
        self._place_tensors(c, self._read_tensor_table(c, n_tensors))
        # Only now that the whole header is sound are strings and arrays read.
        for key, value in self.metadata.items():
            if isinstance(value, _Deferred):
                self.metadata[key] = c.read_deferred(value)

    def _read_header(self, c: _Cursor) -> tuple[int, int]:
        """Magic and version checked; the tensor and metadata counts, checked against the file's size."""
        c.need(4, "magic")
        if bytes(self.view[:4]) != MAGIC:
            raise c.fail(f"bad magic {bytes(self.view[:4])!r}, expected b'GGUF'")
        c.pos = 4
        self.version = c.scalar("<I", "version")
        if self.version not in (2, 3):
            hint = " (a big-endian file?)" if self.version > 0xFFFF else ""
            raise c.fail(f"unsupported GGUF version {self.version}{hint}; mdst reads versions 2 and 3")
        n_tensors = c.scalar("<Q", "tensor count")
        n_kv = c.scalar("<Q", "metadata count")
        left = len(self.view) - c.pos
        if n_kv > left // 13:  # key length (8) + 1-byte key + type (4) at least
            raise c.fail(f"metadata count {n_kv} exceeds what the file can hold")
        if n_tensors > left // 24:  # name length (8) + n_dims (4) + type (4) + offset (8) at least
            raise c.fail(f"tensor count {n_tensors} exceeds what the file can hold")
        return n_tensors, n_kv

    def _read_metadata(self, c: _Cursor, n_kv: int) -> None:
        self.metadata: dict[str, Any] = {}
        self.metadata_types: dict[str, int] = {}
        for i in range(n_kv):
            key = c.string(f"key of metadata entry {i}", max_bytes=MAX_KEY_BYTES)
            if not key:
                raise c.fail(f"metadata entry {i} has an empty key")
            if key in self.metadata:
                raise c.fail(f"duplicate metadata key {key!r}")
            vtype = c.scalar("<I", f"type of {key!r}")
            self.metadata[key] = c.value(vtype, repr(key))
            self.metadata_types[key] = vtype

    def _read_alignment(self, c: _Cursor) -> int:
        if "general.alignment" not in self.metadata:
            return DEFAULT_ALIGNMENT
        a, atype = self.metadata["general.alignment"], self.metadata_types["general.alignment"]
        if atype != T_UINT32:
            raise c.fail(f"general.alignment must be a u32 (type {T_UINT32}), got value type {atype}")
        if a == 0 or a & (a - 1):
            raise c.fail(f"general.alignment must be a non-zero power of two, got {a}")
        return a

    def _read_tensor_table(self, c: _Cursor, n_tensors: int) -> list[tuple[str, GGMLType, tuple[int, ...], int]]:
        """(name, type, shape, offset in the data section) per tensor, each checked on its own."""
        table = []
        names = set()
        for i in range(n_tensors):
            name = c.string(f"name of tensor {i}", max_bytes=MAX_NAME_BYTES)
            if name in names:
                raise c.fail(f"duplicate tensor name {name!r}")
            names.add(name)
            n_dims = c.scalar("<I", f"n_dims of {name!r}")
            if not 1 <= n_dims <= MAX_DIMS:
                raise c.fail(f"tensor {name!r} has {n_dims} dimensions; GGUF allows 1 to {MAX_DIMS}")
            shape = tuple(c.scalar("<Q", f"dimension of {name!r}") for _ in range(n_dims))
            gtype = self._tensor_type(c, name, shape, c.scalar("<I", f"type of {name!r}"))
            table.append((name, gtype, shape, c.scalar("<Q", f"offset of {name!r}")))
        return table

    def _place_tensors(self, c: _Cursor, table: list[tuple[str, GGMLType, tuple[int, ...], int]]) -> None:
        """`data_offset` and `tensors`. Tensor data follows the table's order, each tensor padded to the
        alignment: what writers produce and llama.cpp requires; so overlaps, gaps and misaligned offsets
        are all corruption."""
        self.data_offset = -(-c.pos // self.alignment) * self.alignment
        if self.data_offset > len(self.view) and table:
            raise c.fail("tensor data section starts past the end of the file")
        self.tensors: dict[str, TensorInfo] = {}
        expected = 0
        for name, gtype, shape, offset in table:
            nbytes = math.prod(shape) // gtype.block * gtype.block_bytes
            if offset != expected:
                raise c.fail(f"tensor {name!r} is at data offset {offset}, expected {expected} (tensor data must "
                             f"follow the table's order, each tensor padded to the alignment of {self.alignment})")
            if self.data_offset + offset + nbytes > len(self.view):
                raise c.fail(f"tensor {name!r} ({nbytes} bytes at data offset {offset}) extends past the end of "
                             "the file")
            self.tensors[name] = TensorInfo(name, gtype, shape, self.data_offset + offset, nbytes, self.index)
            expected = offset + -(-nbytes // self.alignment) * self.alignment

    @staticmethod
    def _tensor_type(c: _Cursor, name: str, shape: tuple[int, ...], type_id: int) -> GGMLType:
        """The tensor's type, once its shape is known to be countable in int64 and whole blocks."""
        n = 1
        for d in shape:
            n *= d
            if d > INT64_MAX or n > INT64_MAX:
                raise c.fail(f"tensor {name!r} has shape {list(shape)}, whose element count overflows int64")
        if type_id not in GGML_TYPES:
            raise c.fail(f"tensor {name!r} has unknown type id {type_id}")
        gtype = GGML_TYPES[type_id]
        if shape[0] % gtype.block:
            raise c.fail(f"tensor {name!r}: row length {shape[0]} is not a multiple of {gtype.name}'s block of "
                         f"{gtype.block}")
        return gtype

    def close(self) -> None:
        """Release the mapping (views still held elsewhere keep it alive until they go)."""
        view = getattr(self, "view", None)
        if view is not None:
            try:
                view.release()
            except BufferError:
                pass
        m = getattr(self, "mmap", None)
        if m is not None:
            try:
                m.close()
            except BufferError:  # a numpy view still refers to it; it closes when collected
                pass
        f = getattr(self, "file", None)
        if f is not None:
            f.close()
        self.view = self.mmap = self.file = None

    def split_count(self) -> int:
        """`split.count` (1 for a file that is not part of a split model), checked to be a u16 of at least 1."""
        return self._split_key(SPLIT_COUNT, default=1, least=1)

    def split_no(self) -> int:
        """`split.no`: this file's 0-based part number (0 when absent)."""
        return self._split_key(SPLIT_NO, default=0, least=0)

    def _split_key(self, key: str, default: int, least: int) -> int:
        if key not in self.metadata:
            return default
        v = self.metadata[key]
        if self.metadata_types[key] not in (T_UINT8, T_UINT16, T_UINT32) or v < least:
            raise GGUFError(f"{self.path}: {key} must be an unsigned integer of at least {least}, got {v!r}; the "
                            "split file is corrupt - re-download it")
        return v


class GGUFFile:
    """A GGUF model opened over mmap: `metadata` (key -> value), `tensors` (name -> TensorInfo).

    A model split by llama.cpp's gguf-split (NAME-00001-of-00003.gguf ...) is opened from its first file:
    the other parts are found beside it, and `tensors` spans them all (`TensorInfo.file` says which).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._parts: list[_Part] = []
        try:
            first = _Part(self.path, 0)
            self._parts.append(first)
            self.version, self.alignment, self.data_offset = first.version, first.alignment, first.data_offset
            self.metadata, self.metadata_types = first.metadata, first.metadata_types
            self.tensors: dict[str, TensorInfo] = dict(first.tensors)
            count = first.split_count()
            if count > 1:
                self._join_parts(count)
        except BaseException:
            self.close()
            raise

    def _join_parts(self, count: int) -> None:
        """Open parts 2..count of a split model beside the first and merge their tensor tables, checking each
        part's number and count, and the total tensor count that the first part records."""
        first = self._parts[0]
        named = SPLIT_NAME.match(os.path.basename(self.path))
        if first.split_no() != 0:
            prefix = named["prefix"] if named else "NAME"
            raise GGUFError(f"{self.path} is part {first.split_no() + 1} of a model split into {count} files; "
                            f"open its first part, {split_path(prefix, 0, count)}")
        if named is None or int(named["no"]) != 1 or int(named["count"]) != count:
            raise GGUFError(f"{self.path} is the first of {count} split files, but is not named "
                            f"NAME-00001-of-{count:05d}.gguf, so its other parts cannot be found; rename the parts "
                            "as llama.cpp's gguf-split names them")
        prefix = os.path.join(os.path.dirname(self.path), named["prefix"])
        for i in range(1, count):
            path = split_path(prefix, i, count)
            if not os.path.exists(path):
                raise GGUFError(f"{self.path}: part {i + 1} of {count} is missing (expected {path}); put all "
                                f"{count} parts in one folder (mdst pull downloads them together)")
            part = _Part(path, i)
            self._parts.append(part)
            if part.split_no() != i or part.split_count() != count:
                raise GGUFError(f"{path} says it is part {part.split_no() + 1} of {part.split_count()}, expected "
                                f"part {i + 1} of {count}; the files come from different splits - download them "
                                "again together")
            for name, t in part.tensors.items():
                if name in self.tensors:
                    raise GGUFError(f"{path}: tensor {name!r} is also in {self._parts[self.tensors[name].file].path}; "
                                    "the parts come from different splits - download them again together")
                self.tensors[name] = t
        expected = first.metadata.get(SPLIT_TENSORS)
        if expected is not None and expected != len(self.tensors):
            raise GGUFError(f"{self.path}: the split model should hold {expected} tensors but its {count} parts hold "
                            f"{len(self.tensors)}; a part is from another split or damaged - download them again")

    @property
    def paths(self) -> list[str]:
        """The files the model is read from: one, or every part of a split model in order."""
        return [p.path for p in self._parts]

    # ---- access -------------------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        """Metadata value for `key`, or `default`."""
        return self.metadata.get(key, default)

    def tensor_bytes(self, name: str, start: int = 0, stop: int | None = None) -> memoryview:
        """A zero-copy view of a tensor's bytes (optionally the byte range [start, stop))."""
        t = self.tensors[name]
        stop = t.nbytes if stop is None else min(stop, t.nbytes)
        return self._parts[t.file].view[t.offset + start:t.offset + stop]

    def read(self, name: str, start: int = 0, stop: int | None = None) -> bytearray:
        """A copy of a tensor's bytes [start, stop), read as read_into does."""
        t = self.tensors[name]
        stop = t.nbytes if stop is None else min(stop, t.nbytes)
        out = bytearray(max(0, stop - start))
        self.read_into(memoryview(out), name, start)
        return out

    def read_into(self, dest: memoryview, name: str, start: int = 0) -> None:
        """Fill `dest` with a tensor's bytes from byte `start` on, read from the file where the OS has
        preadv, else copied from the mapping. Reading the file touches no page of the mapping (a
        touch maps in up to a megabyte around it, which then stays in this process's RSS)."""
        t = self.tensors[name]
        part, at = self._parts[t.file], t.offset + start
        if not hasattr(os, "preadv"):
            dest[:] = part.view[at:at + len(dest)]
            return
        done = 0
        while done < len(dest):
            n = os.preadv(part.file.fileno(), [dest[done:]], at + done)
            if n <= 0:
                raise GGUFError(f"{part.path}: the file ended while reading tensor {name}; was it truncated?")
            done += n

    def release_pages(self, name: str, start: int = 0, stop: int | None = None) -> None:
        """Tell the OS the mapped pages of a tensor's byte range [start, stop) are not needed now: they
        leave this process's RSS, and reading them again faults them back in from the page cache."""
        t = self.tensors[name]
        stop = t.nbytes if stop is None else stop
        page = mmap.PAGESIZE
        a = -(-(t.offset + start) // page) * page
        b = (t.offset + stop) // page * page
        m = self._parts[t.file].mmap
        if b > a and hasattr(mmap, "MADV_DONTNEED") and m is not None:
            m.madvise(mmap.MADV_DONTNEED, a, b - a)

    def __iter__(self) -> Iterator[TensorInfo]:
        return iter(self.tensors.values())

    @property
    def architecture(self) -> str:
        """`general.architecture`, checked to be a string."""
        arch = self.metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise GGUFError(f"{self.path}: general.architecture is missing or not a string")
        return arch

    def close(self) -> None:
        """Release the mappings (views still held elsewhere keep them alive until they go)."""
        for part in self._parts:
            part.close()

    def __enter__(self) -> "GGUFFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def describe(f: GGUFFile, max_array: int = 8) -> str:
    """Human-readable metadata and tensor table (for `mdst inspect`)."""
    lines = [f"{f.path}: GGUF v{f.version}, {len(f.metadata)} metadata entries, {len(f.tensors)} tensors, "
             f"alignment {f.alignment}", *(f"  part {i + 1}: {p}" for i, p in enumerate(f.paths) if len(f.paths) > 1),
             "", "metadata:"]
    for k, v in f.metadata.items():
        if isinstance(v, (list, np.ndarray)):
            head = v[:max_array].tolist() if isinstance(v, np.ndarray) else list(v[:max_array])
            s = f"[{len(v)} items] {head}{' ...' if len(v) > max_array else ''}"
        else:
            s = repr(v)
        if len(s) > 160:
            s = s[:157] + "..."
        lines.append(f"  {k} = {s}")
    lines += ["", f"{'tensor':<40} {'type':<8} {'shape':<22} {'part':>4} {'offset':>12} {'bytes':>12}"]
    for t in f:
        lines.append(f"{t.name:<40} {t.type.name:<8} {str(list(t.shape)):<22} {t.file + 1:>4} {t.offset:>12} "
                     f"{t.nbytes:>12}")
    total = sum(t.nbytes for t in f)
    lines.append(f"{len(f.tensors)} tensors, {total / 2**20:.1f} MiB of tensor data")
    return "\n".join(lines)
