"""Per-sequence caches: K/V for attention layers, rolling state for short-convolution layers.

K and V are [ring, kv_heads * head_dim] per layer, preallocated. A full-attention layer keeps
`context` slots; a sliding-window layer keeps a ring of window + chunk - 1 slots (position p
lives in slot p % ring): a step of `chunk` rows writes its rows before attending, and the ring
must still hold the window of the step's first row. A convolution layer keeps the last
kernel - 1 inputs of its convolution, [kernel - 1, channels].

K/V values are stored as f32, f16 or 8-bit blocks (`kv_type`; the formats of kernels/kv/*.wgsl).
The numpy engine keeps float32 arrays but rounds what it stores exactly as the GPU format does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..ir.graph import Graph
from ..ir.ops import AttentionSpec, ConvSpec
from ..format.quants import kv_row_bytes

# kv_type -> (kernel format, f16 variant)
KV_TYPES = {"f32": ("F", False), "f16": ("F", True), "q8_0": ("Q8_0", False)}


@dataclass(frozen=True)
class LayerKV:
    """One attention layer's cache geometry."""

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


@dataclass(frozen=True)
class CacheLayout:
    """What a sequence's cache holds, derived from the graph."""

    kv: tuple[LayerKV, ...]
    conv: tuple[ConvSpec, ...]
    chunk: int
    kv_type: str = "f32"

    @classmethod
    def of(cls, graph: Graph, context: int, chunk: int, kv_type: str = "f32") -> "CacheLayout":
        if kv_type not in KV_TYPES:
            raise ValueError(f"kv_type must be one of {', '.join(KV_TYPES)}, got {kv_type!r}")
        layers = tuple(LayerKV(s, ring_size(s, context, chunk)) for s in graph.attention_layers)
        if kv_type == "q8_0":
            bad = [lk.kv_dim for lk in layers if lk.kv_dim % 32]
            if bad:
                raise ValueError(f'kv_type="q8_0" needs K/V rows of a multiple of 32 values; this model has {bad[0]}')
        return cls(layers, tuple(graph.conv_layers), chunk, kv_type)

    def kv_index(self, layer: int) -> int:
        return next(i for i, lk in enumerate(self.kv) if lk.spec.layer == layer)

    def conv_index(self, layer: int) -> int:
        return next(i for i, c in enumerate(self.conv) if c.layer == layer)

    def layer_bytes(self, lk: LayerKV) -> int:
        """Bytes of one layer's K (or V) buffer."""
        return lk.ring * kv_row_bytes(lk.kv_dim, self.kv_type)

    def kv_bytes(self) -> int:
        """Bytes of K and V over all layers."""
        return sum(2 * self.layer_bytes(lk) for lk in self.kv)

    def conv_bytes(self) -> int:
        return sum(4 * c.state_rows * c.channels for c in self.conv)

    def can_rewind(self, n_past: int, n: int) -> bool:
        """Whether a cache holding n_past positions can continue from position n < n_past.

        A convolution state only holds the latest inputs; a ring has overwritten positions older
        than n_past - ring, which continuing from n may need.
        """
        if n >= n_past:
            return True
        if self.conv:
            return False
        return all(lk.ring >= n_past or n_past <= n + self.chunk for lk in self.kv)


@dataclass(eq=False)
class GpuKVCache:
    """A sequence's cache buffers on the GPU.

    `give_back` is its engine's: it frees the buffers, and whatever the engine keeps for this cache
    (bind groups, decode's buffers).
    """

    layout: CacheLayout
    k: list[Any]
    v: list[Any]
    conv: list[Any]
    give_back: Callable[["GpuKVCache"], None]

    @classmethod
    def allocate(cls, layout: CacheLayout, create: Callable[[int, str], Any],
                 give_back: Callable[["GpuKVCache"], None]) -> "GpuKVCache":
        """Create the buffers (a convolution state is ignored at position 0, so contents do not matter)."""
        k = [create(layout.layer_bytes(lk), f"kv.{lk.spec.layer}.k") for lk in layout.kv]
        v = [create(layout.layer_bytes(lk), f"kv.{lk.spec.layer}.v") for lk in layout.kv]
        conv = [create(4 * c.state_rows * c.channels, f"conv.{c.layer}") for c in layout.conv]
        return cls(layout, k, v, conv, give_back)

    def buffers(self) -> list[Any]:
        """Every buffer the cache holds."""
        return self.k + self.v + self.conv

    def release(self) -> None:
        """Give everything back to the engine; the cache then holds nothing of it (a session may outlive it)."""
        give_back, self.give_back = self.give_back, lambda cache: None
        give_back(self)
        self.k, self.v, self.conv = [], [], []


@dataclass(eq=False)
class CpuKVCache:
    """A sequence's cache arrays for the numpy engine."""

    layout: CacheLayout
    k: list[np.ndarray]
    v: list[np.ndarray]
    conv: list[np.ndarray]

    @classmethod
    def allocate(cls, layout: CacheLayout) -> "CpuKVCache":
        k = [np.zeros((lk.ring, lk.kv_dim), np.float32) for lk in layout.kv]
        v = [np.zeros((lk.ring, lk.kv_dim), np.float32) for lk in layout.kv]
        conv = [np.zeros((c.state_rows, c.channels), np.float32) for c in layout.conv]
        return cls(layout, k, v, conv)

    def release(self) -> None:
        self.k, self.v, self.conv = [], [], []
