"""KV caches: per attention layer, K and V as [ring, kv_heads * head_dim], preallocated.

A full-attention layer keeps `context` slots. A sliding-window layer keeps a ring of
window + chunk - 1 slots (position p lives in slot p % ring): a step of `chunk` rows writes its
rows before attending, and the ring must still hold the window of the step's first row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..graph import AttentionSpec


@dataclass(frozen=True)
class LayerKV:
    """One layer's cache geometry."""

    spec: AttentionSpec
    ring: int

    @property
    def kv_dim(self) -> int:
        return self.spec.kv_heads * self.spec.head_dim


def ring_size(spec: AttentionSpec, context: int, chunk: int) -> int:
    """Slots a layer needs for `context` positions written `chunk` rows at a time."""
    if spec.window and spec.window + chunk - 1 < context:
        return spec.window + chunk - 1
    return context


def layout(specs: list[AttentionSpec], context: int, chunk: int) -> list[LayerKV]:
    """The cache geometry of every attention layer."""
    return [LayerKV(s, ring_size(s, context, chunk)) for s in specs]


def cache_bytes(layers: list[LayerKV], elem_bytes: int) -> int:
    """Bytes of K and V over all layers."""
    return sum(2 * lk.ring * lk.kv_dim * elem_bytes for lk in layers)


@dataclass
class GpuKVCache:
    """K and V buffers per layer on the GPU, and the bind groups plans built over them."""

    layers: list[LayerKV]
    k: list[Any]
    v: list[Any]
    bind_groups: dict[int, list[Any]] = field(default_factory=dict)

    @classmethod
    def allocate(cls, layers: list[LayerKV], elem_bytes: int, create: Callable[[int, str], Any]) -> "GpuKVCache":
        """Create the buffers (contents undefined until written)."""
        k = [create(lk.ring * lk.kv_dim * elem_bytes, f"kv.{lk.spec.layer}.k") for lk in layers]
        v = [create(lk.ring * lk.kv_dim * elem_bytes, f"kv.{lk.spec.layer}.v") for lk in layers]
        return cls(layers, k, v)

    def release(self) -> None:
        """Destroy the buffers."""
        for b in self.k + self.v:
            try:
                b.destroy()
            except Exception:
                pass
        self.k, self.v, self.bind_groups = [], [], {}


@dataclass
class CpuKVCache:
    """K and V arrays per layer for the numpy engine."""

    layers: list[LayerKV]
    k: list[np.ndarray]
    v: list[np.ndarray]

    @classmethod
    def allocate(cls, layers: list[LayerKV]) -> "CpuKVCache":
        k = [np.zeros((lk.ring, lk.kv_dim), np.float32) for lk in layers]
        v = [np.zeros((lk.ring, lk.kv_dim), np.float32) for lk in layers]
        return cls(layers, k, v)

    def release(self) -> None:
        self.k, self.v = [], []
