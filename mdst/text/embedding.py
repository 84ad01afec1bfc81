"""Pooling a text's final hidden states into one embedding vector, as the GGUF's pooling type says."""

from __future__ import annotations

from typing import Any

import numpy as np

POOLINGS = ("mean", "cls", "last")
GGUF_POOLING = {1: "mean", 2: "cls", 3: "last"}   # llama.cpp's enum llama_pooling_type (0 none, 4 rank)


def check_pooling(pooling: str | None, gguf: Any) -> str:
    """`pooling`, or with None the file's `{arch}.pooling_type` where it names one of ours (else mean)."""
    if pooling is None:
        kind = gguf.get(f"{gguf.architecture}.pooling_type", 1)
        return GGUF_POOLING.get(int(kind) if isinstance(kind, (int, np.integer)) else 1, "mean")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)} or None (the file's), got {pooling!r}")
    return pooling


def pool(hidden: np.ndarray, pooling: str, normalize: bool) -> np.ndarray:
    """One vector from hidden states [tokens, d]: their mean, the first row or the last; unit length if asked."""
    v = {"mean": lambda h: h.mean(axis=0, dtype=np.float64), "cls": lambda h: h[0],
         "last": lambda h: h[-1]}[pooling](hidden).astype(np.float32)
    if normalize:
        v /= max(float(np.linalg.norm(v)), 1e-12)
    return v
