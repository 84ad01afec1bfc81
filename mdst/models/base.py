"""What family modules share: typed metadata access with clear errors."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import GGUFError, UnsupportedModelError
from ..format.gguf import GGUFFile
from ..ir.graph import Builder, Value
from ..ir.ops import RopeSpec

_REQUIRED = object()


class Meta:
    """Reads `<arch>.<key>` metadata with type checks; a missing required key names itself."""

    def __init__(self, gguf: GGUFFile, arch: str):
        self.gguf, self.arch = gguf, arch

    def _get(self, key: str, default: Any) -> Any:
        full = f"{self.arch}.{key}"
        if full in self.gguf.metadata:
            return full, self.gguf.metadata[full]
        if default is _REQUIRED:
            raise UnsupportedModelError(f"{self.gguf.path}: metadata {full!r} is missing; the file is incomplete")
        return full, default

    def int(self, key: str, default: Any = _REQUIRED) -> int:
        """An integer, at least 0."""
        full, v = self._get(key, default)
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 0:
            raise GGUFError(f"{self.gguf.path}: {full!r} must be a non-negative integer, got {v!r}")
        return int(v)

    def float(self, key: str, default: Any = _REQUIRED) -> float:
        """A finite number."""
        full, v = self._get(key, default)
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)) \
                or not np.isfinite(v):
            raise GGUFError(f"{self.gguf.path}: {full!r} must be a finite number, got {v!r}")
        return float(v)

    def int_or_list(self, key: str, n: int, default: Any = _REQUIRED) -> list[int]:
        """A per-layer integer: one value for all layers or an array of n."""
        full, v = self._get(key, default)
        if isinstance(v, np.ndarray):
            if v.shape != (n,) or v.dtype.kind not in "iu" or (v < 0).any():
                raise GGUFError(f"{self.gguf.path}: {full!r} must hold {n} non-negative integers")
            return [int(x) for x in v]
        return [self.int(key, default)] * n

    def positive(self, key: str, default: Any = _REQUIRED) -> int:
        """An integer of at least 1."""
        v = self.int(key, default)
        if v < 1:
            raise GGUFError(f"{self.gguf.path}: {self.arch}.{key} must be at least 1, got {v}")
        return v


def output_weight(tensors: dict) -> str:
    """The LM head: `output.weight`, or the tied embedding table."""
    return "output.weight" if "output.weight" in tensors else "token_embd.weight"


def rope_from_gguf(m: Meta, head_dim: int, neox: bool) -> RopeSpec:
    """RoPE settings as llama.cpp derives them from `<arch>.rope.*` (linear and YaRN scaling included)."""
    f = m.gguf
    scaling = f.get(f"{m.arch}.rope.scaling.type", "linear")
    if scaling not in ("none", "linear", "yarn"):
        raise UnsupportedModelError(f"rope scaling type {scaling!r} is not supported (none, linear, yarn are)")
    factor = m.float("rope.scaling.factor", 0.0) or m.float("rope.scale_linear", 0.0)
    freq_scale = 1.0 if scaling == "none" or factor == 0.0 else 1.0 / factor
    ext_factor = 1.0 if scaling == "yarn" else 0.0
    attn_factor = 1.0
    if ext_factor:
        def mscale(scale: float, mul: float) -> float:
            return 1.0 if scale <= 1.0 else 0.1 * mul * math.log(scale) + 1.0
        fac = 1.0 / freq_scale
        log_mul = m.float("rope.scaling.yarn_log_multiplier", 0.0)
        attn_factor = mscale(fac, 1.0) / mscale(fac, log_mul) if log_mul else mscale(fac, 1.0)
        attn_factor /= 1.0 + 0.1 * math.log(fac)  # the rope kernel multiplies this back (as ggml does)
    attn_factor *= m.float("rope.scaling.attn_factor", 1.0)
    return RopeSpec(
        n_rot=m.positive("rope.dimension_count", head_dim), base=m.float("rope.freq_base", 10000.0), neox=neox,
        freq_scale=freq_scale, ext_factor=ext_factor, attn_factor=attn_factor,
        beta_fast=m.float("rope.scaling.yarn_beta_fast", 32.0), beta_slow=m.float("rope.scaling.yarn_beta_slow", 1.0),
        n_ctx_orig=m.positive("rope.scaling.original_context_length", m.positive("context_length")),
        freq_factors="rope_freqs.weight" if "rope_freqs.weight" in f.tensors else None)


GATING = {1: "softmax", 2: "sigmoid"}   # llama.cpp's expert_gating_func codes that mdst runs


@dataclass(frozen=True)
class Moe:
    """A mixture-of-experts feed-forward's settings, as llama.cpp reads them from `<arch>.expert_*`."""

    experts: int
    used: int
    gating: str              # "softmax" or "sigmoid"
    dense_lead: int          # leading layers with a dense feed-forward instead

    @classmethod
    def from_gguf(cls, m: Meta, gating: int | None = None) -> "Moe":
        """The settings; `gating`: the family's fixed gating function (else the file's expert_gating_func)."""
        code = m.int("expert_gating_func") if gating is None else gating
        if code not in GATING:
            raise UnsupportedModelError(f"{m.arch}.expert_gating_func {code} is not supported "
                                        f"(1 softmax and 2 sigmoid are)")
        experts = m.positive("expert_count")
        used = m.positive("expert_used_count")
        if used > experts:
            raise GGUFError(f"{m.gguf.path}: {m.arch}.expert_used_count {used} exceeds expert_count {experts}")
        return cls(experts, used, GATING[code], m.int("leading_dense_block_count", 0))


def dense_ffn(b: Builder, h: Value, p: str) -> Value:
    """The SiLU-gated MLP of layer prefix `p`."""
    g = b.glu(b.matmul(h, p + "ffn_gate.weight"), b.matmul(h, p + "ffn_up.weight"), "silu")  # [n, d_ff]
    return b.matmul(g, p + "ffn_down.weight")


def moe_ffn(b: Builder, h: Value, p: str, moe: Moe, bias: bool = False) -> Value:
    """The experts' SiLU-gated feed-forward of layer prefix `p`: the router picks `moe.used` experts a token
    (by probability plus `exp_probs_b` when `bias`; weights normalized to sum 1), whose outputs are summed."""
    logits = b.matmul(h, p + "ffn_gate_inp.weight")                        # [n, experts]
    routes = b.route(logits, moe.used, moe.gating, norm=True, bias=p + "exp_probs_b.bias" if bias else None)
    gate = b.expert_matmul(h, routes, p + "ffn_gate_exps.weight")          # [n, used * d_ff_exp]
    up = b.expert_matmul(h, routes, p + "ffn_up_exps.weight")
    return b.expert_matmul(b.glu(gate, up, "silu"), routes, p + "ffn_down_exps.weight", combine=True)
