"""The ops a recorded graph is made of: one small class per op, owning its shape rule and its numpy
reference (the math itself is in `mdst.reference`). The compiler lowers each class to its kernel
(`mdst.compile.plan`); fusion (`mdst.ir.fusion`) produces the fused forms, which have references too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Sequence

import numpy as np

from .. import reference
from ..format.quants import round_rows
from ..reference import Step

if TYPE_CHECKING:
    from .graph import Value

Shape = tuple  # (rows, cols): rows is "n" (one per token of the step) or 1


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


@dataclass(frozen=True)
class Op:
    """One operation of a graph: a `Node` holds it with its input and output values."""

    name: ClassVar[str]

    @property
    def weights(self) -> tuple[str, ...]:
        """The weight tensors the op reads, in the order kernels bind them."""
        return ()

    def shape(self, inputs: Sequence[Value]) -> Shape:
        """(rows, cols) of the output, from the inputs' shapes."""
        return inputs[0].rows, inputs[0].cols

    def evaluate(self, step: Step, x: list[np.ndarray]) -> np.ndarray:
        """The numpy reference: the output from the inputs' values."""
        raise NotImplementedError


@dataclass(frozen=True)
class Embed(Op):
    """Rows of embedding table `table` [vocab, cols] for the step's token ids, times `scale`."""

    name: ClassVar[str] = "embed"
    table: str
    cols: int
    scale: float = 1.0

    @property
    def weights(self) -> tuple[str, ...]:
        return (self.table,)

    def shape(self, inputs: Sequence[Value]) -> Shape:
        return "n", self.cols

    def evaluate(self, step: Step, x: list[np.ndarray]) -> np.ndarray:
        return step.weights[self.table][step.ids] * np.float32(self.scale)


@dataclass(frozen=True)
class Matmul(Op):
    """x [r, k] @ weight[n_out, k]^T, with the fusions a matmul kernel can do: RMSNorm of x first
    (`norm`, `eps`), act(x W^T) * (x U^T) for `up` (`act`), and adding the last input (`res`).
    `members`: the matrices a sibling run stores as `weight`, one after the other. `q8`: x (after the norm)
    goes through its 8-bit round trip first (reference.q8_round_trip; the load option activations="q8")."""

    name: ClassVar[str] = "matmul"
    weight: str
    n_out: int
    up: str | None = None
    act: str | None = None
    norm: str | None = None
    eps: float = 0.0
    res: bool = False
    members: tuple[str, ...] = ()
    q8: bool = False

    @property
    def plain(self) -> bool:
        """No fusion and a single matrix."""
        return self.up is None and self.norm is None and not self.res and not self.members

    @property
    def weights(self) -> tuple[str, ...]:
        return tuple(w for w in (self.weight, self.up, self.norm) if w is not None)

    def shape(self, inputs: Sequence[Value]) -> Shape:
        return inputs[0].rows, self.n_out

    def evaluate(self, step: Step, x: list[np.ndarray]) -> np.ndarray:
        w = step.weights
        h = reference.rms_norm(x[0], w[self.norm].ravel(), self.eps) if self.norm else x[0]
        h = reference.q8_round_trip(h) if self.q8 else h
        # a run's members one product each, as unfused: one product over the stacked matrices can round
        # differently (BLAS blocks by shape), which the 8-bit round trip of the next matmul can turn into a step
        y = (np.concatenate([reference.matmul(h, w[m]) for m in self.members], axis=1) if self.members
             else reference.matmul(h, w[self.weight]))
        if self.up is not None:
            y = reference.glu(y, reference.matmul(h, w[self.up]), self.act)
        return y + x[-1] if self.res else y


@dataclass(frozen=True)
class View(Op):
    """Columns [col0, col0 + cols) of a sibling run's output (no work: the GPU binds a range)."""

    name: ClassVar[str] = "view"
    col0: int
    cols: int

    def shape(self, inputs: Sequence[Value]) -> Shape:
        return inputs[0].rows, self.cols

    def evaluate(self, step: Step, x: list[np.ndarray]) -> np.ndarray:
        return x[0][:, self.col0:self.col0 + self.cols]


@dataclass(frozen=True)
class RmsNorm(Op):
    """RMSNorm over groups of `dim` columns, scaled by `weight`; `add`: plus the second input."""

    name: ClassVar[str] = "rms_norm"
    weight: str
    eps: float
    dim: int
    add: bool = False

    @property
    def weights(self) -> tuple[str, ...]:
        return (self.weight,)

    def evaluate(self, step: Step, x: list[np.ndarray]) -> np.ndarray:
        y = reference.rms_norm(x[0], step.weights[self.weight].ravel(), self.eps, self.dim)
        return y + x[1] if self.add else y


@dataclass(frozen=True)
class Add(Op):
    """a + b, same shape."""

    name: ClassVar[str] = "add"

    def evaluate(self, step: Step, x: list[np.ndarray]) -> np.ndarray:
        return x[0] + x[1]


@dataclass(frozen=True)
class Mul(Op):
    """a * b, same shape."""

    name: ClassVar[str] = "mul"

    def evaluate(self, step: Step, x: list[np.ndarray]) -> np.ndarray:
        return x[0] * x[1]


@dataclass(frozen=True)
class Glu(Op):
    """act(gate) * up; act is "silu" or "gelu_tanh"."""

    name: ClassVar[str] = "glu"
    act: str

    def evaluate(self, step: Step, x: list[np.ndarray]) -> np.ndarray:
        return reference.glu(x[0], x[1], self.act)


def _rope(step: Step, spec: RopeSpec, head_dim: int, x: np.ndarray) -> np.ndarray:
    freq, mscale = step.weights.rope_table(spec)
    return reference.rope(x, step.positions, freq, mscale, head_dim, spec.n_rot, spec.neox)


def _store(step: Step, layer: int, k: np.ndarray, v: np.ndarray) -> None:
    """Append each sequence's k and v rows to its layer's ring cache, rounded as its type stores them."""
    for rows, one in step.split():
        cache = one.cache
        li = cache.layout.kv_index(layer)
        slots = one.positions % cache.k[li].shape[0]
        cache.k[li][slots] = round_rows(k[rows], cache.layout.kv_type)
        cache.v[li][slots] = round_rows(v[rows], cache.layout.kv_type)


@dataclass(frozen=True)
class Rope(Op):
    """Rotate the first spec.n_rot dims of each head (of `head_dim`) by position."""

    name: ClassVar[str] = "rope"
    spec: RopeSpec
    head_dim: int

    @property
    def weights(self) -> tuple[str, ...]:
        return (self.spec.freq_factors,) if self.spec.freq_factors else ()

    def evaluate(self, step: Step, x: list[np.ndarray]) -> np.ndarray:
        return _rope(step, self.spec, self.head_dim, x[0])


@dataclass(frozen=True)
class RopeStore:
    """Attention's inputs in one pass (fused, so carried by `Attention.rope` rather than a node of its own):
    per-head RMSNorm of q and k (where `q_norm`/`k_norm` name a weight), RoPE of both, and the append of k and
    v to the cache."""

    rope: RopeSpec
    head_dim: int
    attention: AttentionSpec
    q_norm: str | None
    k_norm: str | None
    eps: float

    @property
    def weights(self) -> tuple[str, ...]:
        return tuple(w for w in (self.q_norm, self.k_norm, self.rope.freq_factors) if w)

    def evaluate(self, step: Step, x: list[np.ndarray]) -> np.ndarray:
        """Stores x = [q, k, v]'s k and v; returns q, normalized and rotated."""
        q, k = (reference.rms_norm(a, step.weights[n].ravel(), self.eps, self.head_dim) if n else a
                for a, n in ((x[0], self.q_norm), (x[1], self.k_norm)))
        _store(step, self.attention.layer, _rope(step, self.rope, self.head_dim, k), x[2])
        return _rope(step, self.rope, self.head_dim, q)


@dataclass(frozen=True)
class Attention(Op):
    """Append k, v to layer spec.layer's cache, then causal attention of q over the cache.
    `rope`: q and k are first normalized and rotated by it (fusion.py), and it appends them."""

    name: ClassVar[str] = "attention"
    spec: AttentionSpec
    rope: RopeStore | None = None

    @property
    def weights(self) -> tuple[str, ...]:
        return self.rope.weights if self.rope else ()

    def evaluate(self, step: Step, x: list[np.ndarray]) -> np.ndarray:
        if self.rope:
            q = self.rope.evaluate(step, x)
        else:
            _store(step, self.spec.layer, x[1], x[2])
            q = x[0]
        return reference.per_sequence(step, self._one, q)

    def _one(self, step: Step, q: np.ndarray) -> np.ndarray:
        li = step.cache.layout.kv_index(self.spec.layer)
        return reference.attention(q, step.cache.k[li], step.cache.v[li], step.positions, self.spec)


@dataclass(frozen=True)
class ShortConv(Op):
    """LFM2's gated short convolution: bcx = [b | c | x] -> c * conv(b * x), causal over positions,
    continuing from the layer's rolling state."""

    name: ClassVar[str] = "shortconv"
    spec: ConvSpec
    weight: str

    @property
    def weights(self) -> tuple[str, ...]:
        return (self.weight,)

    def shape(self, inputs: Sequence[Value]) -> Shape:
        return inputs[0].rows, self.spec.channels

    def evaluate(self, step: Step, x: list[np.ndarray]) -> np.ndarray:
        return reference.per_sequence(step, self._one, x[0])

    def _one(self, step: Step, bcx: np.ndarray) -> np.ndarray:
        cache = step.cache
        ci = cache.layout.conv_index(self.spec.layer)
        y, cache.conv[ci] = reference.shortconv(bcx, step.weights[self.weight], cache.conv[ci], step.pos0, self.spec)
        return y


@dataclass(frozen=True)
class Route(Op):
    """A mixture-of-experts router on logits [r, n_expert]: `gating` ("softmax" or "sigmoid") probabilities,
    the `k` best (by probability plus the `bias` vector, if named), their probabilities normalized to sum 1
    when `norm`. Output [r, 2k]: the k weights, then the k expert ids as floats."""

    name: ClassVar[str] = "route"
    k: int
    gating: str
    norm: bool
    bias: str | None = None

    @property
    def weights(self) -> tuple[str, ...]:
        return (self.bias,) if self.bias else ()

    def shape(self, inputs: Sequence[Value]) -> Shape:
        return inputs[0].rows, 2 * self.k

    def evaluate(self, step: Step, x: list[np.ndarray]) -> np.ndarray:
        bias = step.weights[self.bias].ravel() if self.bias else None
        return reference.route(x[0], self.k, self.gating, self.norm, bias)


@dataclass(frozen=True)
class ExpertMatmul(Op):
    """x [r, K or k * K] through the k experts the route (second input, `Route`'s output) picked for each
    row: `weight` holds n_expert matrices [n_out, K] one after another and only the chosen ones are read.
    Output [r, k * n_out] (slot j: expert j of the row, on x or x's j-th K columns), or with `combine`
    the slots' sum weighted by the router's weights, [r, n_out]. With `up` (fusion.py; layout.py stores it
    right after `weight`): act(x through weight) * (x through up), slot by slot. `q8`: as Matmul's."""

    name: ClassVar[str] = "expert_matmul"
    weight: str
    n_out: int
    k: int
    combine: bool = False
    up: str | None = None
    act: str | None = None
    q8: bool = False

    @property
    def weights(self) -> tuple[str, ...]:
        return (self.weight,) if self.up is None else (self.weight, self.up)

    def shape(self, inputs: Sequence[Value]) -> Shape:
        return inputs[0].rows, self.n_out if self.combine else self.k * self.n_out

    def evaluate(self, step: Step, x: list[np.ndarray]) -> np.ndarray:
        h = reference.q8_round_trip(x[0]) if self.q8 else x[0]
        y = reference.expert_matmul(h, x[1], step.weights[self.weight], self.n_out, self.combine)
        if self.up is not None:
            y = reference.glu(y, reference.expert_matmul(h, x[1], step.weights[self.up], self.n_out, False), self.act)
        return y


@dataclass(frozen=True)
class LastRow(Op):
    """The step's last row (each sequence's, in a batched step)."""

    name: ClassVar[str] = "last_row"

    def shape(self, inputs: Sequence[Value]) -> Shape:
        return 1, inputs[0].cols

    def evaluate(self, step: Step, x: list[np.ndarray]) -> np.ndarray:
        return reference.per_sequence(step, lambda one, a: a[-1:], x[0])

