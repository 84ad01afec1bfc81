"""Llama (and Llama-style: SmolLM2, Mistral 1, TinyLlama...), as llama.cpp runs `llama` GGUFs.

Pre-norm blocks: RMSNorm -> attention (RoPE, grouped-query heads) -> residual add,
RMSNorm -> SiLU-gated MLP -> residual add; final RMSNorm; LM head (or tied embeddings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
    rope: RopeSpec
    context_length: int
    output: str

    @classmethod
    def from_gguf(cls, f: GGUFFile) -> "Config":
        m = Meta(f, "llama")
        d = m.positive("embedding_length")
        heads = m.positive("attention.head_count")
        head_dim = m.positive("attention.key_length", d // heads)
        return cls(n_layers=m.positive("block_count"), d_model=d, n_heads=heads,
                   n_kv_heads=m.positive("attention.head_count_kv", heads), head_dim=head_dim,
                   eps=m.float("attention.layer_norm_rms_epsilon", 1e-5), rope=rope_from_gguf(m, head_dim, neox=False),
                   context_length=m.positive("context_length"), output=output_weight(f.tensors))


def forward(b: Builder, c: Config) -> None:
    """The forward pass, written against the op builder."""
    x = b.embed("token_embd.weight")                                  # [n, d_model]
    for i in range(c.n_layers):
        p = f"blk.{i}."
        h = b.rms_norm(x, p + "attn_norm.weight", c.eps)
        q = b.rope(b.matmul(h, p + "attn_q.weight"), c.rope, c.head_dim)    # [n, heads * head_dim]
        k = b.rope(b.matmul(h, p + "attn_k.weight"), c.rope, c.head_dim)    # [n, kv_heads * head_dim]
        v = b.matmul(h, p + "attn_v.weight")
        a = b.attention(q, k, v, AttentionSpec(i, c.n_heads, c.n_kv_heads, c.head_dim, 1.0 / math.sqrt(c.head_dim)))
        x = b.add(x, b.matmul(a, p + "attn_output.weight"))
        h = b.rms_norm(x, p + "ffn_norm.weight", c.eps)
        g = b.glu(b.matmul(h, p + "ffn_gate.weight"), b.matmul(h, p + "ffn_up.weight"), "silu")  # [n, d_ff]
        x = b.add(x, b.matmul(g, p + "ffn_down.weight"))
    x = b.rms_norm(b.last_row(x), "output_norm.weight", c.eps)
    b.logits(b.matmul(x, c.output))                                   # [rows, vocab]
