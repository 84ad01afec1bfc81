"""The op builder that family modules write their forward pass against.

A forward pass is recorded once as a list of `Node`s over symbolic `Value`s. Every value is a
row-major float32 matrix [rows, cols]; rows is "n" (one per token of the step) or 1 (after
`last_row`). The same graph is executed by `mdst.reference` (numpy) and compiled to GPU
dispatches by `mdst.compile.plan`, so the two backends cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import UnsupportedModelError
from ..format.gguf import TensorInfo
from .ops import (Add, Attention, AttentionSpec, ConvSpec, Embed, ExpertMatmul, Glu, LastRow, Matmul, Mul, Op, RmsNorm,
                  Rope, RopeSpec, Route, ShortConv)


@dataclass(frozen=True)
class Value:
    """A symbolic activation: `rows` x `cols` float32."""

    id: int
    rows: str | int  # "n" or 1
    cols: int
    label: str


@dataclass
class Node:
    """One op applied to input values, giving the output value."""

    op: Op
    inputs: tuple[Value, ...]
    out: Value

    @property
    def weights(self) -> tuple[str, ...]:
        """The weight tensors the op reads."""
        return self.op.weights


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
        return [n.op.spec for n in self.nodes if isinstance(n.op, Attention)]

    @property
    def conv_layers(self) -> list[ConvSpec]:
        """The short-convolution specs in layer order (one rolling state each)."""
        return [n.op.spec for n in self.nodes if isinstance(n.op, ShortConv)]

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
        return self._weights_of(lambda n: isinstance(n.op, Embed))

    def matmul_names(self) -> list[str]:
        """Weights matmuls read in full, in first-use order."""
        return self._weights_of(lambda n: isinstance(n.op, Matmul))

    def expert_weights(self) -> dict[str, int]:
        """Expert tensors by name, with the experts a token reads of each."""
        return {n.op.weight: n.op.k for n in self.nodes if isinstance(n.op, ExpertMatmul)}

    def matrix_names(self) -> list[str]:
        """Weights read as matrices (embedding tables, matmul and expert weights), in first-use order."""
        return self._weights_of(lambda n: isinstance(n.op, (Embed, Matmul, ExpertMatmul)))

    def vector_names(self) -> list[str]:
        """Weights other ops read whole (norm scales, RoPE factors, convolution kernels, router biases), in
        first-use order."""
        return self._weights_of(lambda n: not isinstance(n.op, (Embed, Matmul, ExpertMatmul)))

    def output_matrix(self) -> str | None:
        """The weight of the matmul that computes the output, if a matmul does."""
        head = self.producer(self.output)
        return head.op.weight if isinstance(head.op, Matmul) else None

    def hidden_states(self) -> "Graph":
        """The same pass ending before the LM head: its output is the final norm's, [rows, d_model]."""
        head = self.nodes[-1] if self.nodes else None
        if head is None or head.out is not self.output or not isinstance(head.op, Matmul):
            raise UnsupportedModelError("the forward pass does not end in the LM head's matmul, so its hidden "
                                        "states cannot be taken")
        g = Graph(self.output_rows)
        g.nodes, g.output, g._next = self.nodes[:-1], head.inputs[0], self._next
        return g

    def last_uses(self) -> dict[int, int]:
        """For each value id, the index of the last node that reads it."""
        last: dict[int, int] = {}
        for i, n in enumerate(self.nodes):
            for v in n.inputs:
                last[v.id] = i
        if self.output is not None:
            last[self.output.id] = len(self.nodes)
        return last


# The load option `activations`: what matmuls on quantized weights multiply. "f32": x as it is; "q8": x through
# its 8-bit round trip (Matmul.q8), which lets GPU kernels use packed 8-bit integer dot products.
ACTIVATION_TYPES = ("f32", "q8")


def check_activations(activations: str) -> str:
    """`activations` if it is one of ACTIVATION_TYPES, else a ValueError naming them."""
    if activations not in ACTIVATION_TYPES:
        raise ValueError(f"activations must be one of {', '.join(map(repr, ACTIVATION_TYPES))}, got {activations!r}")
    return activations


class Builder:
    """Records ops into a `Graph`. `output_rows` is "all" (logits for every row) or "last"; `activations` is
    the load option of that name (ACTIVATION_TYPES)."""

    def __init__(self, tensors: dict[str, TensorInfo], output_rows: str = "last", activations: str = "f32"):
        if output_rows not in ("all", "last"):
            raise ValueError(f"output_rows must be 'all' or 'last', got {output_rows!r}")
        self.tensors = tensors
        self.activations = check_activations(activations)
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

    def _add(self, op: Op, inputs: tuple[Value, ...], label: str) -> Value:
        out = self.graph.value(*op.shape(inputs), label)
        self.graph.nodes.append(Node(op, inputs, out))
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
        return self._add(Embed(weight, t.row_elems, float(scale)), (), weight)

    def matmul(self, x: Value, weight: str) -> Value:
        """x [r, k] @ weight[out, k]^T -> [r, out]."""
        t = self._tensor(weight)
        if len(t.shape) != 2 or t.row_elems != x.cols:
            raise UnsupportedModelError(f"tensor {weight!r} has shape {list(t.shape)}, expected [{x.cols}, *]")
        return self._add(Matmul(weight, t.n_rows, q8=self._q8(t)), (x,), weight)

    def _q8(self, t: TensorInfo) -> bool:
        """Whether a matmul on tensor t takes 8-bit activations: the one place that decides (those on
        block-quantized weights, with activations="q8")."""
        return self.activations == "q8" and t.type.block > 1

    def rms_norm(self, x: Value, weight: str, eps: float, dim: int | None = None) -> Value:
        """RMSNorm over groups of `dim` columns (default: the whole row), scaled by `weight`."""
        dim = x.cols if dim is None else dim
        if x.cols % dim:
            raise UnsupportedModelError(f"cannot normalize {x.cols} columns in groups of {dim}")
        self._vector(weight, dim)
        return self._add(RmsNorm(weight, float(eps), dim), (x,), weight)

    def add(self, a: Value, b: Value) -> Value:
        """a + b, same shape."""
        return self._binary(Add(), a, b)

    def mul(self, a: Value, b: Value) -> Value:
        """a * b, same shape."""
        return self._binary(Mul(), a, b)

    def _binary(self, op: Op, a: Value, b: Value) -> Value:
        if (a.rows, a.cols) != (b.rows, b.cols):
            raise ValueError(f"{op.name}: shapes differ ({a.rows}x{a.cols} vs {b.rows}x{b.cols})")
        return self._add(op, (a, b), op.name)

    def glu(self, gate: Value, up: Value, act: str) -> Value:
        """act(gate) * up; act is "silu" or "gelu_tanh"."""
        if act not in ("silu", "gelu_tanh"):
            raise ValueError(f"unknown activation {act!r}")
        if (gate.rows, gate.cols) != (up.rows, up.cols):
            raise ValueError("glu: gate and up differ in shape")
        return self._add(Glu(act), (gate, up), f"glu_{act}")

    def rope(self, x: Value, spec: RopeSpec, head_dim: int) -> Value:
        """Rotate the first spec.n_rot dims of each head of x [r, heads * head_dim] by position."""
        if x.cols % head_dim or spec.n_rot > head_dim or spec.n_rot % 2:
            raise UnsupportedModelError(f"rope: {x.cols} columns, head size {head_dim}, n_rot {spec.n_rot}")
        if spec.freq_factors:
            self._tensor(spec.freq_factors)
        return self._add(Rope(spec, head_dim), (x,), "rope")

    def attention(self, q: Value, k: Value, v: Value, spec: AttentionSpec) -> Value:
        """Append k, v to layer spec.layer's cache, then causal attention of q over the cache."""
        if q.cols != spec.heads * spec.head_dim or k.cols != v.cols or k.cols != spec.kv_heads * spec.head_dim:
            raise UnsupportedModelError(f"attention layer {spec.layer}: q {q.cols}, k {k.cols}, v {v.cols} columns "
                                        f"do not match {spec.heads}/{spec.kv_heads} heads of {spec.head_dim}")
        if spec.heads % spec.kv_heads:
            raise UnsupportedModelError(f"{spec.heads} query heads cannot share {spec.kv_heads} KV heads evenly")
        if spec.head_dim > 512 or spec.head_dim % 4:
            raise UnsupportedModelError(f"head size {spec.head_dim}: mdst's attention takes multiples of 4 up to 512")
        return self._add(Attention(spec), (q, k, v), f"attn.{spec.layer}")

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
        return self._add(ShortConv(spec, weight), (bcx,), f"conv.{spec.layer}")

    def route(self, logits: Value, k: int, gating: str, norm: bool, bias: str | None = None) -> Value:
        """A mixture-of-experts router on logits [r, n_expert]: [r, 2k], the k chosen experts' weights, then their ids."""
        if gating not in ("softmax", "sigmoid"):
            raise UnsupportedModelError(f"expert gating {gating!r} is not supported (softmax, sigmoid are)")
        if not 0 < k <= logits.cols:
            raise UnsupportedModelError(f"{k} experts per token out of {logits.cols}: expected 1..{logits.cols}")
        if bias is not None:
            self._vector(bias, logits.cols)
        return self._add(Route(k, gating, norm, bias), (logits,), "route")

    def expert_matmul(self, x: Value, routes: Value, weight: str, combine: bool = False) -> Value:
        """x [r, K or k * K] through each row's k chosen experts of `weight` [n_expert, n_out, K] (GGUF: K, n_out,
        n_expert): [r, k * n_out], or with `combine` their sum weighted by the router, [r, n_out]."""
        t = self._tensor(weight)
        k = routes.cols // 2
        if len(t.shape) != 3 or x.cols not in (t.row_elems, k * t.row_elems):
            raise UnsupportedModelError(f"tensor {weight!r} has shape {list(t.shape)}, expected [{x.cols} or "
                                        f"{x.cols // k}, *, n_expert] for {k} experts per token")
        router = self.graph.producer(routes)
        if not isinstance(router.op, Route) or router.inputs[0].cols != t.shape[2]:
            raise UnsupportedModelError(f"tensor {weight!r} holds {t.shape[2]} experts; its route must come from a "
                                        f"router over as many")
        if t.shape[2] > 1 << 24:
            raise UnsupportedModelError(f"tensor {weight!r} has {t.shape[2]} experts; ids are exact below 2^24")
        return self._add(ExpertMatmul(weight, t.shape[1], k, combine, q8=self._q8(t)), (x, routes), weight)

    def last_row(self, x: Value) -> Value:
        """The step's last row only when the graph outputs last-row logits; else x unchanged."""
        if self.graph.output_rows == "all":
            return x
        return self._add(LastRow(), (x,), "last_row")

    def logits(self, x: Value) -> None:
        """Mark x as the graph's output."""
        self.graph.output = x


def build(forward: Callable[[Builder], None], tensors: dict[str, TensorInfo], output_rows: str,
          activations: str = "f32") -> Graph:
    """Record `forward` into a graph."""
    b = Builder(tensors, output_rows, activations)
    forward(b)
    if b.graph.output is None:
        raise RuntimeError("the forward pass set no output")
    return b.graph
