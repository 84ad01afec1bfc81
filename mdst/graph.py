"""The op builder that family modules write their forward pass against.

A forward pass is recorded once as a list of `Node`s over symbolic `Value`s. Every value is a
row-major float32 matrix [rows, cols]; rows is "n" (one per token of the step) or 1 (after
`last_row`). The same graph is executed by `mdst.reference` (numpy) and compiled to GPU
dispatches by `mdst.plan`, so the two backends cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .errors import UnsupportedModelError
from .gguf import TensorInfo


@dataclass(frozen=True)
class Value:
    """A symbolic activation: `rows` x `cols` float32."""

    id: int
    rows: str | int  # "n" or 1
    cols: int
    label: str


@dataclass
class Node:
    """One op: `op` name, input values, output value, weight names and attributes."""

    op: str
    inputs: tuple[Value, ...]
    out: Value | None
    weights: tuple[str, ...] = ()
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RopeSpec:
    """Rotary embedding settings, as llama.cpp names them (YaRN included)."""

    n_rot: int
    base: float
    neox: bool
    freq_scale: float = 1.0
    ext_factor: float = 0.0
    attn_factor: float = 1.0
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    n_ctx_orig: int = 0
    freq_factors: str | None = None  # name of a per-pair frequency divisor tensor (rope_freqs.weight)

    def table(self, freq_factors: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """Per-pair angular frequency (theta = pos * freq[i]) and the magnitude scale, in float64 math."""
        half = self.n_rot // 2
        i0 = 2.0 * np.arange(half, dtype=np.float64)  # even dimension index, as in ggml
        extrap = self.base ** (-i0 / self.n_rot)
        if freq_factors is not None:
            extrap = extrap / np.asarray(freq_factors, dtype=np.float64)[:half]
        freq = extrap * self.freq_scale
        mscale = self.attn_factor
        if self.ext_factor != 0.0:
            lo, hi = self.corr_dims()
            ramp = 1.0 - np.clip((i0 / 2.0 - lo) / max(0.001, hi - lo), 0.0, 1.0)
            mix = ramp * self.ext_factor
            freq = freq * (1.0 - mix) + extrap * mix
            mscale *= 1.0 + 0.1 * math.log(1.0 / self.freq_scale)
        return freq.astype(np.float32), float(mscale)

    def corr_dims(self) -> tuple[float, float]:
        """YaRN's correction range in dimension pairs (ggml_rope_yarn_corr_dims)."""
        def corr_dim(n_rot: float) -> float:
            return self.n_rot * math.log(self.n_ctx_orig / (n_rot * 2 * math.pi)) / (2 * math.log(self.base))
        start = math.floor(corr_dim(self.beta_fast))
        end = math.ceil(corr_dim(self.beta_slow))
        return float(max(0, start)), float(min(self.n_rot - 1, end))


@dataclass(frozen=True)
class AttentionSpec:
    """A layer's attention shape; also what its KV cache must hold."""

    layer: int
    heads: int
    kv_heads: int
    head_dim: int
    scale: float
    window: int = 0      # sliding window in positions; 0 = full causal
    softcap: float = 0.0
    # Llama 4 / Ministral 3 attention temperature: queries at position p are scaled by
    # 1 + temp_scale * log(1 + floor(p / temp_floor)); temp_scale 0 turns it off.
    temp_scale: float = 0.0
    temp_floor: int = 1

    def query_scale(self, positions: np.ndarray) -> np.ndarray:
        """The factor applied to each position's query (scale and temperature)."""
        t = 1.0 + self.temp_scale * np.log(np.floor(np.asarray(positions, np.float64) / self.temp_floor) + 1.0)
        return self.scale * t


@dataclass(frozen=True)
class ConvSpec:
    """A short causal depthwise convolution layer (LFM2): its rolling state is kernel - 1 rows."""

    layer: int
    channels: int
    kernel: int

    @property
    def state_rows(self) -> int:
        return self.kernel - 1


class Graph:
    """A recorded forward pass."""

    def __init__(self, output_rows: str):
        self.nodes: list[Node] = []
        self.output: Value | None = None
        self.output_rows = output_rows
        self._next = 0

    def value(self, rows: str | int, cols: int, label: str) -> Value:
        v = Value(self._next, rows, cols, label)
        self._next += 1
        return v

    @property
    def attention_layers(self) -> list[AttentionSpec]:
        """The attention specs in layer order (one KV cache each)."""
        return [n.attrs["spec"] for n in self.nodes if n.op == "attention"]

    @property
    def conv_layers(self) -> list[ConvSpec]:
        """The short-convolution specs in layer order (one rolling state each)."""
        return [n.attrs["spec"] for n in self.nodes if n.op == "shortconv"]

    def producer(self, v: Value) -> Node:
        """The node that computes v."""
        return next(n for n in self.nodes if n.out is v)

    def weight_names(self) -> list[str]:
        """Every weight tensor the graph reads, in first-use order."""
        seen: dict[str, None] = {}
        for n in self.nodes:
            for w in n.weights:
                seen.setdefault(w)
        return list(seen)

    def _weights_of(self, keep: Callable[[Node], bool]) -> list[str]:
        return list(dict.fromkeys(w for n in self.nodes if keep(n) for w in n.weights))

    def embedding_names(self) -> list[str]:
        """Tables the graph looks rows up in, in first-use order."""
        return self._weights_of(lambda n: n.op == "embed")

    def matmul_names(self) -> list[str]:
        """Weights matmuls read in full, in first-use order."""
        return self._weights_of(lambda n: n.op == "matmul")

    def matrix_names(self) -> list[str]:
        """Weights read as matrices (embedding tables and matmul weights), in first-use order."""
        return self._weights_of(lambda n: n.op in ("embed", "matmul"))

    def vector_names(self) -> list[str]:
        """Weights other ops read whole (norm scales, RoPE factors, convolution kernels), in first-use order."""
        return self._weights_of(lambda n: n.op not in ("embed", "matmul"))

    def output_matrix(self) -> str | None:
        """The weight of the matmul that computes the output, if a matmul does."""
        head = self.producer(self.output)
        return head.weights[0] if head.op == "matmul" else None

    def last_uses(self) -> dict[int, int]:
        """For each value id, the index of the last node that reads it."""
        last: dict[int, int] = {}
        for i, n in enumerate(self.nodes):
            for v in n.inputs:
                last[v.id] = i
        if self.output is not None:
            last[self.output.id] = len(self.nodes)
        return last


class Builder:
    """Records ops into a `Graph`. `output_rows` is "all" (logits for every row) or "last"."""

    def __init__(self, tensors: dict[str, TensorInfo], output_rows: str = "last"):
        if output_rows not in ("all", "last"):
            raise ValueError(f"output_rows must be 'all' or 'last', got {output_rows!r}")
        self.tensors = tensors
        self.graph = Graph(output_rows)

    # ---- helpers ------------------------------------------------------------------------------
    def has(self, name: str) -> bool:
        """Whether the file holds tensor `name`."""
        return name in self.tensors

    def _tensor(self, name: str) -> TensorInfo:
        t = self.tensors.get(name)
        if t is None:
            raise UnsupportedModelError(f"the model file has no tensor {name!r}, which this architecture needs")
        return t

    def _add(self, op: str, inputs: tuple[Value, ...], rows: str | int, cols: int, label: str,
             weights: tuple[str, ...] = (), **attrs: Any) -> Value:
        out = self.graph.value(rows, cols, label)
        self.graph.nodes.append(Node(op, inputs, out, weights, attrs))
        return out

    def _vector(self, name: str, n: int) -> str:
        t = self._tensor(name)
        if t.n_elements != n:
            raise UnsupportedModelError(f"tensor {name!r} has {t.n_elements} elements, expected {n}")
        return name

    # ---- ops ----------------------------------------------------------------------------------
    def embed(self, weight: str, scale: float = 1.0) -> Value:
        """Look up the step's token ids in embedding table `weight` [vocab, d] (times `scale`)."""
        t = self._tensor(weight)
        return self._add("embed", (), "n", t.row_elems, weight, (weight,), scale=float(scale))

    def matmul(self, x: Value, weight: str) -> Value:
        """x [r, k] @ weight[out, k]^T -> [r, out]."""
        t = self._tensor(weight)
        if len(t.shape) != 2 or t.row_elems != x.cols:
            raise UnsupportedModelError(f"tensor {weight!r} has shape {list(t.shape)}, expected [{x.cols}, *]")
        return self._add("matmul", (x,), x.rows, t.n_rows, weight, (weight,))

    def rms_norm(self, x: Value, weight: str, eps: float, dim: int | None = None) -> Value:
        """RMSNorm over groups of `dim` columns (default: the whole row), scaled by `weight`."""
        dim = x.cols if dim is None else dim
        if x.cols % dim:
            raise UnsupportedModelError(f"cannot normalize {x.cols} columns in groups of {dim}")
        self._vector(weight, dim)
        return self._add("rms_norm", (x,), x.rows, x.cols, weight, (weight,), eps=float(eps), dim=dim)

    def add(self, a: Value, b: Value) -> Value:
        """a + b, same shape."""
        return self._binary("add", a, b)

    def mul(self, a: Value, b: Value) -> Value:
        """a * b, same shape."""
        return self._binary("mul", a, b)

    def _binary(self, op: str, a: Value, b: Value) -> Value:
        if (a.rows, a.cols) != (b.rows, b.cols):
            raise ValueError(f"{op}: shapes differ ({a.rows}x{a.cols} vs {b.rows}x{b.cols})")
        return self._add(op, (a, b), a.rows, a.cols, op)

    def glu(self, gate: Value, up: Value, act: str) -> Value:
        """act(gate) * up; act is "silu" or "gelu_tanh"."""
        if act not in ("silu", "gelu_tanh"):
            raise ValueError(f"unknown activation {act!r}")
        if (gate.rows, gate.cols) != (up.rows, up.cols):
            raise ValueError("glu: gate and up differ in shape")
        return self._add("glu", (gate, up), gate.rows, gate.cols, f"glu_{act}", act=act)

    def rope(self, x: Value, spec: RopeSpec, head_dim: int) -> Value:
        """Rotate the first spec.n_rot dims of each head of x [r, heads * head_dim] by position."""
        if x.cols % head_dim or spec.n_rot > head_dim or spec.n_rot % 2:
            raise UnsupportedModelError(f"rope: {x.cols} columns, head size {head_dim}, n_rot {spec.n_rot}")
        weights = (spec.freq_factors,) if spec.freq_factors else ()
        if spec.freq_factors:
            self._tensor(spec.freq_factors)
        return self._add("rope", (x,), x.rows, x.cols, "rope", weights, spec=spec, head_dim=head_dim)

    def attention(self, q: Value, k: Value, v: Value, spec: AttentionSpec) -> Value:
        """Append k, v to layer spec.layer's cache, then causal attention of q over the cache."""
        if q.cols != spec.heads * spec.head_dim or k.cols != v.cols or k.cols != spec.kv_heads * spec.head_dim:
            raise UnsupportedModelError(f"attention layer {spec.layer}: q {q.cols}, k {k.cols}, v {v.cols} columns "
                                        f"do not match {spec.heads}/{spec.kv_heads} heads of {spec.head_dim}")
        if spec.heads % spec.kv_heads:
            raise UnsupportedModelError(f"{spec.heads} query heads cannot share {spec.kv_heads} KV heads evenly")
        if spec.head_dim > 512 or spec.head_dim % 4:
            raise UnsupportedModelError(f"head size {spec.head_dim}: mdst's attention takes multiples of 4 up to 512")
        return self._add("attention", (q, k, v), q.rows, q.cols, f"attn.{spec.layer}", spec=spec)

    def shortconv(self, bcx: Value, weight: str, spec: ConvSpec) -> Value:
        """LFM2's gated short convolution: bcx = [b | c | x] (3 * channels columns) ->
        c * conv(b * x), causal over positions, continuing from the layer's rolling state."""
        if bcx.cols != 3 * spec.channels:
            raise UnsupportedModelError(f"shortconv layer {spec.layer}: input has {bcx.cols} columns, "
                                        f"expected 3 x {spec.channels}")
        t = self._tensor(weight)
        if t.shape != (spec.kernel, spec.channels):
            raise UnsupportedModelError(f"tensor {weight!r} has shape {list(t.shape)}, "
                                        f"expected [{spec.kernel}, {spec.channels}]")
        if spec.kernel < 2:
            raise UnsupportedModelError(f"shortconv kernel size {spec.kernel} must be at least 2")
        return self._add("shortconv", (bcx,), bcx.rows, spec.channels, f"conv.{spec.layer}", (weight,), spec=spec)

    def last_row(self, x: Value) -> Value:
        """The step's last row only when the graph outputs last-row logits; else x unchanged."""
        if self.graph.output_rows == "all":
            return x
        return self._add("last_row", (x,), 1, x.cols, "last_row")

    def logits(self, x: Value) -> None:
        """Mark x as the graph's output."""
        self.graph.output = x


def build(forward: Callable[[Builder], None], tensors: dict[str, TensorInfo], output_rows: str) -> Graph:
    """Record `forward` into a graph."""
    b = Builder(tensors, output_rows)
    forward(b)
    if b.graph.output is None:
        raise RuntimeError("the forward pass set no output")
    return b.graph
