"""Gemma 3 (text), as llama.cpp runs `gemma3` GGUFs.

Embeddings scaled by sqrt(d_model); per block four RMSNorms (before and after attention, before
and after the MLP), RMSNorm on each query and key head, GELU(tanh)-gated MLP. Five of every six
layers attend over a sliding window with their own RoPE base (10,000 unless the file says);
the rest are global. Queries are scaled by 1/sqrt(key length). The LM head is the embedding
table unless the file has `output.weight`. (GGUF norm weights already include Gemma's +1.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import GGUFError, UnsupportedModelError
from ..format.gguf import GGUFFile
from ..ir.graph import Builder
from ..ir.ops import AttentionSpec, RopeSpec
from .base import Meta, output_weight, rope_from_gguf


@dataclass(frozen=True)
class Config:
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    eps: float
    rope_global: RopeSpec
    rope_local: RopeSpec
    window: int
    sliding: tuple[bool, ...]   # per layer: attends over the window
    context_length: int
    output: str

    @classmethod
    def from_gguf(cls, f: GGUFFile) -> "Config":
        m = Meta(f, "gemma3")
        n_layers = m.positive("block_count")
        d = m.positive("embedding_length")
        heads = m.positive("attention.head_count")
        head_dim = m.positive("attention.key_length", d // heads)
        if m.int("attention.value_length", head_dim) != head_dim:
            raise UnsupportedModelError("gemma3 with value_length != key_length is not supported")
        if m.float("final_logit_softcapping", 0.0):
            raise UnsupportedModelError("gemma3 with final_logit_softcapping is not supported")
        window = m.int("attention.sliding_window", 0)
        sliding = (False,) * n_layers
        if window:
            pattern = f.get("gemma3.attention.sliding_window_pattern", 6)
            if isinstance(pattern, np.ndarray):
                if pattern.shape != (n_layers,):
                    raise GGUFError(f"gemma3.attention.sliding_window_pattern must hold {n_layers} flags")
                sliding = tuple(bool(x) for x in pattern)
            else:
                n = m.int("attention.sliding_window_pattern", 6)
                sliding = tuple(n == 0 or i % n < n - 1 for i in range(n_layers))
        rope = rope_from_gguf(m, head_dim, neox=True)
        return cls(n_layers=n_layers, d_model=d, n_heads=heads, n_kv_heads=m.positive("attention.head_count_kv", heads),
                   head_dim=head_dim, eps=m.float("attention.layer_norm_rms_epsilon", 1e-6),
                   rope_global=rope,
                   rope_local=RopeSpec(rope.n_rot, m.float("rope.freq_base_swa", 10000.0), neox=True),
                   window=window, sliding=sliding, context_length=m.positive("context_length"),
                   output=output_weight(f.tensors))


def forward(b: Builder, c: Config) -> None:
    """The forward pass, written against the op builder."""
    hd = c.head_dim
    x = b.embed("token_embd.weight", scale=math.sqrt(c.d_model))       # [n, d_model]
    for i in range(c.n_layers):
        p = f"blk.{i}."
        rope = c.rope_local if c.sliding[i] else c.rope_global
        h = b.rms_norm(x, p + "attn_norm.weight", c.eps)
        q = b.rms_norm(b.matmul(h, p + "attn_q.weight"), p + "attn_q_norm.weight", c.eps, dim=hd)  # [n, heads * hd]
        k = b.rms_norm(b.matmul(h, p + "attn_k.weight"), p + "attn_k_norm.weight", c.eps, dim=hd)  # [n, kv_heads * hd]
        v = b.matmul(h, p + "attn_v.weight")
        spec = AttentionSpec(i, c.n_heads, c.n_kv_heads, hd, 1.0 / math.sqrt(hd), c.window if c.sliding[i] else 0)
        a = b.attention(b.rope(q, rope, hd), b.rope(k, rope, hd), v, spec)
        x = b.add(x, b.rms_norm(b.matmul(a, p + "attn_output.weight"), p + "post_attention_norm.weight", c.eps))
        h = b.rms_norm(x, p + "ffn_norm.weight", c.eps)
        g = b.glu(b.matmul(h, p + "ffn_gate.weight"), b.matmul(h, p + "ffn_up.weight"), "gelu_tanh")  # [n, d_ff]
        x = b.add(x, b.rms_norm(b.matmul(g, p + "ffn_down.weight"), p + "post_ffw_norm.weight", c.eps))
    x = b.rms_norm(b.last_row(x), "output_norm.weight", c.eps)
    b.logits(b.matmul(x, c.output))                                    # [rows, vocab]
