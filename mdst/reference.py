"""The numpy forward pass: the kernels' oracle and the CPU fallback behind device="cpu".

Each function below is the plain float32 definition of what a kernel computes; each op class of
`mdst.ir.ops` evaluates with them, and `run` executes a recorded graph (mdst.ir.graph) op by op,
including the same ring-buffer KV cache as the GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .format.quants import dequantize

if TYPE_CHECKING:
    from .ir.graph import Graph, Node
    from .ir.ops import AttentionSpec, ConvSpec, RopeSpec

# ---- ops ----------------------------------------------------------------------------------------


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float, dim: int | None = None) -> np.ndarray:
    """x / sqrt(mean(x^2) + eps) * w over groups of `dim` columns."""
    dim = x.shape[-1] if dim is None else dim
    g = x.reshape(-1, dim).astype(np.float32)
    inv = 1.0 / np.sqrt(np.mean(g.astype(np.float64) ** 2, axis=1, keepdims=True) + eps)
    return (g * inv.astype(np.float32) * w.reshape(1, dim)).reshape(x.shape).astype(np.float32)


def matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x [r, k] @ w[out, k]^T."""
    return (x @ w.T).astype(np.float32)


Q8_BLOCK = 32   # values of an activation row that share one 8-bit scale


def q8_round_trip(x: np.ndarray) -> np.ndarray:
    """x through 8-bit activations (llama.cpp's q8_1 blocks): per 32 values of a row, d = amax / 127 and
    q = round(x / d) (ties to even, as WGSL's round), back as q * d. Rows are a multiple of 32 long."""
    b = x.reshape(*x.shape[:-1], -1, Q8_BLOCK).astype(np.float32)
    d = np.abs(b).max(axis=-1, keepdims=True) / np.float32(127)
    inv = np.divide(np.float32(1), d, out=np.zeros_like(d), where=d > 0)
    return (np.round(b * inv) * d).reshape(x.shape).astype(np.float32)


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * x ** 3)))


def glu(gate: np.ndarray, up: np.ndarray, act: str) -> np.ndarray:
    """act(gate) * up."""
    with np.errstate(over="ignore"):
        a = silu(gate) if act == "silu" else gelu_tanh(gate)
    return (a * up).astype(np.float32)


def rope(x: np.ndarray, positions: np.ndarray, freq: np.ndarray, mscale: float, head_dim: int,
         n_rot: int, neox: bool) -> np.ndarray:
    """Rotate the first n_rot dims of each head of x [rows, heads * head_dim]."""
    rows = x.shape[0]
    h = x.reshape(rows, -1, head_dim).astype(np.float64).copy()
    theta = positions.astype(np.float64)[:, None] * freq.astype(np.float64)[None, :]  # [rows, n_rot/2]
    c = (np.cos(theta) * mscale)[:, None, :]
    s = (np.sin(theta) * mscale)[:, None, :]
    half = n_rot // 2
    if neox:
        a, b = h[..., :half].copy(), h[..., half:n_rot].copy()
        h[..., :half], h[..., half:n_rot] = a * c - b * s, a * s + b * c
    else:
        a, b = h[..., 0:n_rot:2].copy(), h[..., 1:n_rot:2].copy()
        h[..., 0:n_rot:2], h[..., 1:n_rot:2] = a * c - b * s, a * s + b * c
    return h.reshape(x.shape).astype(np.float32)


def attention(q: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, positions: np.ndarray,
              spec: AttentionSpec) -> np.ndarray:
    """Causal GQA attention of q [rows, heads * hd] over ring caches [ring, kv_heads * hd]."""
    hd, heads, kvh = spec.head_dim, spec.heads, spec.kv_heads
    ring = k_cache.shape[0]
    out = np.empty_like(q, dtype=np.float32)
    group = heads // kvh
    qscale = spec.query_scale(positions)
    for r, pos in enumerate(positions):
        first = max(0, pos + 1 - spec.window) if spec.window else 0
        slots = np.arange(first, pos + 1) % ring
        kk = k_cache[slots].reshape(-1, kvh, hd).astype(np.float64)
        vv = v_cache[slots].reshape(-1, kvh, hd).astype(np.float64)
        qr = q[r].reshape(kvh, group, hd).astype(np.float64) * qscale[r]
        s = np.einsum("kgd,lkd->kgl", qr, kk)
        if spec.softcap:
            s = spec.softcap * np.tanh(s / spec.softcap)
        s -= s.max(axis=-1, keepdims=True)
        p = np.exp(s)
        p /= p.sum(axis=-1, keepdims=True)
        out[r] = np.einsum("kgl,lkd->kgd", p, vv).reshape(-1)
    return out


def split_keys(keys: int, split: int, splits: int) -> int:
    """Keys a range of split decode attention takes: `splits` ranges cover the `keys` filled ones, at least
    `split` each (the kernel's rule; ranges past the keys are empty)."""
    return max(split, -(-keys // splits))


def attention_partials(q: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, pos: int, spec: AttentionSpec,
                       split: int, splits: int) -> np.ndarray:
    """One row's attention in `splits` key ranges of split_keys (the SPLIT kernel's output): per head and range,
    (running max, sum of exponentials, unnormalized output) [heads, splits, head_dim + 2]."""
    hd, kvh = spec.head_dim, spec.kv_heads
    group = spec.heads // kvh
    ring = k_cache.shape[0]
    first = max(0, pos + 1 - spec.window) if spec.window else 0
    qs = q.reshape(spec.heads, hd).astype(np.float64) * spec.query_scale(np.array([pos]))[0]
    out = np.zeros((spec.heads, splits, hd + 2))
    out[:, :, 0] = -3.0e38
    n = split_keys(pos + 1 - first, split, splits)
    for z in range(splits):
        lo, hi = first + z * n, min(pos, first + (z + 1) * n - 1)
        if lo > hi:
            continue
        slots = np.arange(lo, hi + 1) % ring
        for h in range(spec.heads):
            kk = k_cache[slots].reshape(-1, kvh, hd)[:, h // group].astype(np.float64)
            vv = v_cache[slots].reshape(-1, kvh, hd)[:, h // group].astype(np.float64)
            sc = kk @ qs[h]
            if spec.softcap:
                sc = spec.softcap * np.tanh(sc / spec.softcap)
            m = sc.max()
            p = np.exp(sc - m)
            out[h, z, 0], out[h, z, 1], out[h, z, 2:] = m, p.sum(), p @ vv
    return out.astype(np.float32)


def merge_partials(partials: np.ndarray) -> np.ndarray:
    """Attention output [heads * head_dim] from one row's partials [heads, splits, head_dim + 2]."""
    p = partials.astype(np.float64)
    live = p[:, :, 1] > 0
    big = np.where(live, p[:, :, 0], -np.inf).max(axis=1, keepdims=True)
    w = np.where(live, np.exp(p[:, :, 0] - big), 0.0)
    return ((w[:, :, None] * p[:, :, 2:]).sum(axis=1) / (w * p[:, :, 1]).sum(axis=1)[:, None]).reshape(-1).astype(
        np.float32)


def shortconv(bcx: np.ndarray, w: np.ndarray, state: np.ndarray, pos0: int, spec: ConvSpec) -> tuple[np.ndarray, np.ndarray]:
    """LFM2 short convolution of bcx [rows, 3 * ch] with kernel w [ch, kernel] after `state`
    [kernel - 1, ch] (the inputs before pos0; none before position 0). Returns (y, new state)."""
    ch, k = spec.channels, spec.kernel
    b, c, x = bcx[:, :ch], bcx[:, ch:2 * ch], bcx[:, 2 * ch:]
    past = state if pos0 > 0 else np.zeros_like(state)
    seq = np.concatenate([past, b * x]).astype(np.float64)   # [k - 1 + rows, ch]
    rows = bcx.shape[0]
    conv = sum(seq[j:j + rows] * w[:, j].astype(np.float64) for j in range(k))
    return (c * conv).astype(np.float32), seq[-(k - 1):].astype(np.float32)


ROUTE_SUM_MIN = 6.103515625e-5   # llama.cpp clamps the chosen experts' probability sum to this (f16's smallest normal)


def route(logits: np.ndarray, k: int, gating: str, norm: bool, bias: np.ndarray | None = None) -> np.ndarray:
    """A mixture-of-experts router over logits [rows, n_expert]: probabilities (softmax or sigmoid), the k
    experts of highest probability plus `bias` (the bias only selects; first index on ties), their
    probabilities divided by their sum when `norm`. Returns [rows, 2k]: the k weights, then the k ids."""
    z = logits.astype(np.float32)
    if gating == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        probs = e / e.sum(axis=1, keepdims=True)
    else:
        probs = 1.0 / (1.0 + np.exp(-z))
    score = probs + bias.reshape(1, -1) if bias is not None else probs
    ids = np.argsort(-score, axis=1, kind="stable")[:, :k]
    w = np.take_along_axis(probs, ids, axis=1)
    if norm:
        w = w / np.maximum(w.sum(axis=1, keepdims=True), ROUTE_SUM_MIN)
    return np.concatenate([w, ids.astype(np.float32)], axis=1).astype(np.float32)


def expert_matmul(x: np.ndarray, routes: np.ndarray, w: np.ndarray, n_out: int, combine: bool) -> np.ndarray:
    """Row r's k chosen experts (routes [rows, 2k], from `route`) applied to x: w holds the experts' [n_out, K]
    matrices one after another. Slot j reads x[r] (x of K columns) or its j-th K columns (x of k * K);
    output [rows, k * n_out], or with `combine` the slots' sum weighted by the router, [rows, n_out]."""
    k = routes.shape[1] // 2
    kk = w.shape[1]
    rows = x.shape[0]
    ids = routes[:, k:].astype(np.int64)
    xs = x.reshape(rows, k if x.shape[1] != kk else 1, kk)
    out = np.empty((rows, k, n_out), np.float32)
    for r in range(rows):
        for j in range(k):
            e = ids[r, j]
            out[r, j] = w[e * n_out:(e + 1) * n_out] @ xs[r, j if xs.shape[1] > 1 else 0]
    if combine:
        return (out * routes[:, :k, None]).sum(axis=1, dtype=np.float32)
    return out.reshape(rows, k * n_out)


def argmax(logits: np.ndarray) -> np.ndarray:
    """Index of the largest logit per row (first on ties)."""
    return np.argmax(logits, axis=-1).astype(np.int64)


# ---- the CPU engine ----------------------------------------------------------------------------


class ReferenceWeights:
    """Weights dequantized to float32 on first use (row-major [rows, row_elems])."""

    def __init__(self, gguf: Any):
        self.gguf = gguf
        self._cache: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        w = self._cache.get(name)
        if w is None:
            t = self.gguf.tensors[name]
            w = dequantize(self.gguf.tensor_bytes(name), t.type, t.shape)
            self._cache[name] = w
        return w

    def rope_table(self, spec: RopeSpec) -> tuple[np.ndarray, float]:
        ff = self[spec.freq_factors].ravel() if spec.freq_factors else None
        return spec.table(ff)


@dataclass
class Step:
    """What the ops' references read besides their inputs: the step's tokens and positions, the
    weights (float32 [rows, row_elems] by name, with `rope_table(spec)`) and the sequence's cache.

    A batched step holds several sequences' rows (`parts`: consecutive row ranges, each a one-sequence
    Step with its own cache and positions); ops that read a cache evaluate each part on its own rows."""

    ids: np.ndarray
    positions: np.ndarray
    pos0: int
    weights: ReferenceWeights
    cache: Any
    parts: tuple[tuple[slice, "Step"], ...] = ()

    def split(self) -> tuple[tuple[slice, "Step"], ...]:
        """(rows, one-sequence step) for each sequence of the step."""
        return self.parts or ((slice(None), self),)


def per_sequence(step: Step, fn: Callable[..., np.ndarray], *x: np.ndarray) -> np.ndarray:
    """fn(one-sequence step, its rows of each x) for every sequence of `step`, rows joined back in order."""
    parts = step.split()
    if len(parts) == 1:   # its rows are all of them
        return fn(parts[0][1], *x)
    return np.concatenate([fn(sub, *(a[rows] for a in x)) for rows, sub in parts])


def run(graph: Graph, weights: ReferenceWeights, cache: Any, ids: np.ndarray, pos0: int,
        on_node: Callable[[int, Node, np.ndarray], None] | None = None) -> np.ndarray:
    """Execute `graph` for tokens `ids` at positions pos0..; appends to `cache`; returns the output.

    `on_node(index, node, value)`, if given, sees every node's output as it is computed (the
    oracle's per-layer activations); it must not modify the value.
    """
    ids = np.asarray(ids, dtype=np.int64)
    return execute(graph, Step(ids, pos0 + np.arange(len(ids)), pos0, weights, cache), on_node)


def run_batch(graph: Graph, weights: ReferenceWeights, caches: list[Any], ids: list[np.ndarray],
              pos0s: list[int]) -> np.ndarray:
    """Execute `graph` once over several sequences: ids[i] at positions pos0s[i].. appended to caches[i];
    the output's rows follow the sequences' rows in order (an all-rows graph: every row's output)."""
    parts, r = [], 0
    for cache, tok, p0 in zip(caches, ids, pos0s):
        tok = np.asarray(tok, dtype=np.int64)
        parts.append((slice(r, r + len(tok)), Step(tok, p0 + np.arange(len(tok)), p0, weights, cache)))
        r += len(tok)
    all_ids = np.concatenate([s.ids for _, s in parts])
    positions = np.concatenate([s.positions for _, s in parts])
    return execute(graph, Step(all_ids, positions, pos0s[0], weights, None, tuple(parts)))


def execute(graph: Graph, step: Step, on_node: Callable[[int, Node, np.ndarray], None] | None = None) -> np.ndarray:
    """Evaluate `graph`'s nodes in order for `step`; the graph's output."""
    env: dict[int, np.ndarray] = {}
    last = graph.last_uses()
    for i, node in enumerate(graph.nodes):
        y = node.op.evaluate(step, [env[v.id] for v in node.inputs])
        env[node.out.id] = y.astype(np.float32, copy=False)
        if on_node is not None:
            on_node(i, node, env[node.out.id])
        for v in node.inputs:
            if last.get(v.id) == i:
                env.pop(v.id, None)
    return env[graph.output.id]
