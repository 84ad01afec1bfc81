"""llama.cpp (through llama-cpp-python) as the judge, and derived files cached by content hash.

`f32_copy` dequantizes a GGUF into an all-F32 GGUF (the exactness gate compares architectures,
not quantized arithmetic). `logits` and `greedy` run llama.cpp's CPU path with an F32 KV cache
and no flash attention, and cache the result beside the F32 copies.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..format.gguf import GGUFFile
from ..format.quants import dequantize

GGML_TYPE_F32 = 0


def file_hash(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (hex, first 16 digits)."""
    st = os.stat(path)
    return _hash(os.path.realpath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _hash(path: str, size: int, mtime_ns: int) -> str:
    """file_hash, once per file version: every llama.cpp result is keyed by it (1 GB for Gemma's F32 copy)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _copy_metadata(writer: Any, src: GGUFFile) -> None:
    import gguf

    for key, value in src.metadata.items():
        if key in ("general.architecture", "general.alignment", "general.file_type") or key.startswith("GGUF."):
            continue
        vtype = gguf.GGUFValueType(src.metadata_types[key])
        if vtype == gguf.GGUFValueType.ARRAY:
            if isinstance(value, list):
                writer.add_array(key, value)
            else:
                writer.add_key_value(key, value.tolist(), vtype,
                                     sub_type=gguf.GGUFValueType(_ELEM_TYPES[value.dtype.str]))
        else:
            writer.add_key_value(key, value, vtype)


_ELEM_TYPES = {"|u1": 0, "|i1": 1, "<u2": 2, "<i2": 3, "<u4": 4, "<i4": 5, "<f4": 6, "|b1": 7, "<u8": 10,
               "<i8": 11, "<f8": 12}


def f32_copy(src: str | os.PathLike, cache_dir: str | os.PathLike) -> Path:
    """An F32 copy of `src` (every tensor dequantized), made once per content hash."""
    import gguf

    out = Path(cache_dir) / f"f32-{file_hash(src)}.gguf"
    if out.exists():
        return out
    tmp = out.with_suffix(".tmp")
    with GGUFFile(src) as f:
        w = gguf.GGUFWriter(str(tmp), f.architecture)
        _copy_metadata(w, f)
        w.add_file_type(gguf.LlamaFileType.ALL_F32)
        for t in f:
            data = dequantize(f.tensor_bytes(t.name), t.type, t.shape)
            w.add_tensor(t.name, data.reshape(tuple(reversed(t.shape))), raw_dtype=gguf.GGMLQuantizationType.F32)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    tmp.rename(out)
    return out


def _llama(path: str | os.PathLike, n_ctx: int, **kw: Any) -> Any:
    import llama_cpp

    return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, logits_all=True,
                           type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32, flash_attn=False, n_threads=os.cpu_count(),
                           verbose=False, **kw)


def _cached(cache_dir: str | os.PathLike, path: str | os.PathLike, what: str, ids: Sequence[int], extra: Any,
            compute: Any) -> np.ndarray:
    key = hashlib.sha256(json.dumps([file_hash(path), what, list(map(int, ids)), extra]).encode()).hexdigest()[:20]
    f = Path(cache_dir) / f"llamacpp-{what}-{key}.npy"
    if f.exists():
        return np.load(f)
    value = np.asarray(compute())
    np.save(f.with_suffix(".tmp.npy"), value)
    f.with_suffix(".tmp.npy").rename(f)
    return value


def logits(path: str | os.PathLike, ids: Sequence[int], cache_dir: str | os.PathLike) -> np.ndarray:
    """llama.cpp's next-token logits at every position of ids: float32 (len(ids), n_vocab)."""
    def compute() -> np.ndarray:
        llm = _llama(path, n_ctx=max(64, len(ids)))
        llm.eval(list(ids))
        return np.array(llm.scores[:len(ids)], dtype=np.float32)
    return _cached(cache_dir, path, "logits", ids, None, compute)


def windows_logits(path: str | os.PathLike, windows: np.ndarray) -> Iterator[np.ndarray]:
    """llama.cpp's logits at every position of each window (rows of `windows`), each from an empty cache; not
    cached (a window of Gemma's vocabulary is half a GB)."""
    llm = _llama(path, n_ctx=windows.shape[1])
    for w in windows:
        llm.reset()   # the next eval drops every cached position from n_tokens = 0 on
        llm.eval(list(map(int, w)))
        yield np.array(llm.scores[:len(w)], dtype=np.float32)


def greedy(path: str | os.PathLike, ids: Sequence[int], n: int, cache_dir: str | os.PathLike) -> np.ndarray:
    """llama.cpp's greedy continuation of ids: n token ids (it stops early at end-of-generation)."""
    def compute() -> np.ndarray:
        import llama_cpp

        llm = _llama(path, n_ctx=len(ids) + n + 8)
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        out = []
        for tok in llm.generate(list(ids), temp=0.0, top_k=1, reset=True):
            out.append(tok)
            if len(out) == n or llama_cpp.llama_vocab_is_eog(vocab, tok):
                break
        return np.array(out, dtype=np.int64)
    return _cached(cache_dir, path, "greedy", ids, n, compute)

