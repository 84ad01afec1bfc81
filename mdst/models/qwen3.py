"""Qwen 3 (dense), as llama.cpp runs `qwen3` GGUFs.

Llama-shaped pre-norm blocks with grouped-query attention, plus an RMSNorm on every query and
key head before RoPE (NeoX ordering). The LM head is tied to the embeddings in the small models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..format.gguf import GGUFFile
from ..ir.graph import Builder, Value
from ..ir.ops import AttentionSpec, RopeSpec
from .base import Meta, dense_ffn, output_weight, rope_from_gguf


@dataclass(frozen=True)
class Config:
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    eps: float
    rope: RopeSpec
    context_length: int
    output: str

    @classmethod
    def from_gguf(cls, f: GGUFFile) -> "Config":
        m = Meta(f, f.architecture)   # qwen3, or qwen3moe around its experts
        heads = m.positive("attention.head_count")
        head_dim = m.positive("attention.key_length", m.positive("embedding_length") // heads)
        return cls(n_layers=m.positive("block_count"), n_heads=heads,
                   n_kv_heads=m.positive("attention.head_count_kv", heads), head_dim=head_dim,
                   eps=m.float("attention.layer_norm_rms_epsilon"), rope=rope_from_gguf(m, head_dim, neox=True),
                   context_length=m.positive("context_length"), output=output_weight(f.tensors))


def attention(b: Builder, c: Config, h: Value, i: int) -> Value:
    """Layer i's attention block on the normed h, through its output projection."""
    hd, p = c.head_dim, f"blk.{i}."
    q = b.rms_norm(b.matmul(h, p + "attn_q.weight"), p + "attn_q_norm.weight", c.eps, dim=hd)  # [n, heads * hd]
    k = b.rms_norm(b.matmul(h, p + "attn_k.weight"), p + "attn_k_norm.weight", c.eps, dim=hd)  # [n, kv_heads * hd]
    v = b.matmul(h, p + "attn_v.weight")
    a = b.attention(b.rope(q, c.rope, hd), b.rope(k, c.rope, hd), v,
                    AttentionSpec(i, c.n_heads, c.n_kv_heads, hd, 1.0 / math.sqrt(hd)))
    return b.matmul(a, p + "attn_output.weight")


def forward(b: Builder, c: Config) -> None:
    """The forward pass, written against the op builder."""
    x = b.embed("token_embd.weight")                                   # [n, d_model]
    for i in range(c.n_layers):
        p = f"blk.{i}."
        x = b.add(x, attention(b, c, b.rms_norm(x, p + "attn_norm.weight", c.eps), i))
        x = b.add(x, dense_ffn(b, b.rms_norm(x, p + "ffn_norm.weight", c.eps), p))
    x = b.rms_norm(b.last_row(x), "output_norm.weight", c.eps)
    b.logits(b.matmul(x, c.output))                                    # [rows, vocab]
