"""Numeric formats on the host: GGUF tensors dequantized to float32, and the KV cache's row formats
(f32, f16, and 8-bit blocks as kernels/kv/Q8_0.wgsl stores them)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import UnsupportedModelError
from .gguf import GGMLType


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


def kv_row_bytes(kv_dim: int, kv_type: str) -> int:
    """Bytes of one cached row of kv_dim values."""
    if kv_type == "q8_0":
        return kv_dim // 32 * 4 + kv_dim
    return kv_dim * (2 if kv_type == "f16" else 4)


def encode_rows(x: np.ndarray, kv_type: str) -> np.ndarray:
    """Rows [n, kv_dim] in the cache's byte format (as uint8 [n, row_bytes])."""
    x = np.asarray(x, np.float32)
    if kv_type == "f32":
        return x.view(np.uint8).reshape(len(x), -1)
    if kv_type == "f16":
        return x.astype(np.float16).view(np.uint8).reshape(len(x), -1)
    blocks = x.reshape(len(x), -1, 32)
    d = np.abs(blocks).max(axis=2) / np.float32(127.0)
    inv = np.divide(np.float32(1.0), d, out=np.zeros_like(d), where=d > 0)
    q = np.clip(np.round(blocks * inv[:, :, None]), -127, 127).astype(np.int8)
    scale = d.astype(np.float16).astype(np.float32)
    return np.concatenate([scale.view(np.uint8), q.reshape(len(x), -1).view(np.uint8)], axis=1)


def decode_rows(raw: np.ndarray, kv_dim: int, kv_type: str) -> np.ndarray:
    """Float32 rows [n, kv_dim] from the cache's byte format."""
    raw = np.ascontiguousarray(raw, np.uint8).reshape(-1, kv_row_bytes(kv_dim, kv_type))
    if kv_type == "f32":
        return raw.view(np.float32).copy()
    if kv_type == "f16":
        return raw.view(np.float16).astype(np.float32)
    scale = raw[:, :kv_dim // 8].view(np.float32)
    q = raw[:, kv_dim // 8:].view(np.int8).astype(np.float32).reshape(len(raw), -1, 32)
    return (q * scale[:, :, None]).reshape(len(raw), kv_dim)


def round_rows(x: np.ndarray, kv_type: str) -> np.ndarray:
    """What storing rows in the cache and reading them back gives."""
    return x if kv_type == "f32" else decode_rows(encode_rows(x, kv_type), x.shape[1], kv_type)
