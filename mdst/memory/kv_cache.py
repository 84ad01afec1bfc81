"""Per-sequence caches: K/V for attention layers, rolling state for short-convolution layers.

K and V are [ring, kv_heads * head_dim] per layer, preallocated. A full-attention layer keeps
`context` slots; a sliding-window layer keeps a ring of window + chunk - 1 slots (position p
lives in slot p % ring): a step of `chunk` rows writes its rows before attending, and the ring
must still hold the window of the step's first row. A convolution layer keeps the last
kernel - 1 inputs of its convolution, [kernel - 1, channels].

K/V values are stored as f32, f16 or 8-bit blocks (`kv_type`; the formats of kernels/kv/*.wgsl).
The numpy engine keeps float32 arrays but rounds what it stores exactly as the GPU format does.

On the GPU a sequence's K/V is a slot of a `KVPool`: per layer one buffer of `slots` rings end to end, so that
a batched step's attention reads every sequence's cache through one binding. A sequence alone has a pool of
one slot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..ir.graph import Graph
from ..ir.ops import AttentionSpec, ConvSpec
from ..format.quants import kv_row_bytes

# kv_type -> (kernel format, f16 variant)
KV_TYPES = {"f32": ("F", False), "f16": ("F", True), "q8_0": ("Q8_0", False)}

# A slot's bytes are a multiple of this, so that a slot can be bound on its own (WebGPU's largest
# minStorageBufferOffsetAlignment).
SLOT_ALIGN = 256


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
        """Bytes of one layer's K (or V) for one sequence: `stride` rows (its slot of a pool)."""
        return self.stride(lk) * kv_row_bytes(lk.kv_dim, self.kv_type)

    def stride(self, lk: LayerKV) -> int:
        """Rows from one slot of a pool to the next: the ring, rounded up to whole SLOT_ALIGN bytes."""
        row = kv_row_bytes(lk.kv_dim, self.kv_type)
        step = SLOT_ALIGN // math.gcd(row, SLOT_ALIGN)
        return -(-lk.ring // step) * step

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
class KVPool:
    """K/V of `slots` sequences on the GPU: layer i's K (and V) is one buffer [slots, stride(i), row]."""

    layout: CacheLayout
    slots: int
    k: list[Any]
    v: list[Any]
    free: list[int] = field(default_factory=list)   # slots no cache holds

    @classmethod
    def allocate(cls, layout: CacheLayout, slots: int, create: Callable[[int, str], Any]) -> "KVPool":
        """Create the buffers, every slot free."""
        def make(which: str) -> list[Any]:
            return [create(slots * layout.layer_bytes(lk), f"kv.{lk.spec.layer}.{which}") for lk in layout.kv]
        return cls(layout, slots, make("k"), make("v"), list(range(slots - 1, -1, -1)))

    def binding(self, which: str, index: int) -> tuple[Any, int, int]:
        """Buffer `index` of kind "k" or "v", whole: (buffer, offset, size)."""
        buf = getattr(self, which)[index]
        return buf, 0, buf.size

    def buffers(self) -> list[Any]:
        return self.k + self.v


@dataclass(eq=False)
class GpuKVCache:
    """A sequence's cache on the GPU: slot `slot` of `pool` and its convolution states.

    `give_back` is its engine's: it frees the convolution states and whatever the engine keeps for this
    cache (bind groups, decode's buffers), and returns the slot to the pool.
    """

    layout: CacheLayout
    pool: KVPool | None
    slot: int
    conv: list[Any]
    give_back: Callable[["GpuKVCache"], None]

    @classmethod
    def allocate(cls, layout: CacheLayout, pool: KVPool, create: Callable[[int, str], Any],
                 give_back: Callable[["GpuKVCache"], None]) -> "GpuKVCache":
        """Take a free slot of `pool` and create the convolution states (a state is ignored at position 0, so
        contents do not matter)."""
        conv = [create(4 * c.state_rows * c.channels, f"conv.{c.layer}") for c in layout.conv]
        return cls(layout, pool, pool.free.pop(), conv, give_back)

    def binding(self, which: str, index: int) -> Any:
        """Buffer `index` of kind "k", "v" (this cache's slot of it: (buffer, offset, size)) or "conv"."""
        if which == "conv":
            return self.conv[index]
        size = self.layout.layer_bytes(self.layout.kv[index])
        return getattr(self.pool, which)[index], self.slot * size, size

    def release(self) -> None:
        """Give everything back to the engine; the cache then holds nothing of it (a session may outlive it)."""
        give_back, self.give_back = self.give_back, lambda cache: None
        give_back(self)
        self.pool, self.conv = None, []


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
