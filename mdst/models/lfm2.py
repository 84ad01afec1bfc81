"""LFM 2 / 2.5 (dense hybrid), as llama.cpp runs `lfm2` GGUFs.

Layers whose `attention.head_count_kv` entry is 0 are gated short-convolution blocks
(in-projection to [b | c | x], c * conv(b * x) over the last `shortconv.l_cache` positions,
out-projection); the others are attention blocks with q/k RMSNorm and NeoX RoPE, optionally
over a sliding window. Every layer ends with a SiLU-gated MLP. `token_embd_norm` is the final
norm; the LM head is tied to the embeddings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import UnsupportedModelError
from ..format.gguf import GGUFFile
from ..ir.graph import Builder, Value
from ..ir.ops import AttentionSpec, ConvSpec, RopeSpec
from .base import Meta, dense_ffn, output_weight, rope_from_gguf


@dataclass(frozen=True)
class Config:
    n_layers: int
    d_model: int
    n_heads: int
    kv_heads: tuple[int, ...]   # per layer; 0 marks a convolution layer
    head_dim: int
    conv_kernel: int
    window: int
    eps: float
    rope: RopeSpec
    context_length: int
    output: str

    @classmethod
    def from_gguf(cls, f: GGUFFile) -> "Config":
        m = Meta(f, f.architecture)   # lfm2, or lfm2moe around its experts
        if m.arch == "lfm2" and m.int("expert_count", 0):
            raise UnsupportedModelError("an lfm2 file with experts: its architecture should be lfm2moe")
        n_layers = m.positive("block_count")
        d = m.positive("embedding_length")
        heads = m.positive("attention.head_count")
        head_dim = d // heads
        return cls(n_layers=n_layers, d_model=d, n_heads=heads,
                   kv_heads=tuple(m.int_or_list("attention.head_count_kv", n_layers)), head_dim=head_dim,
                   conv_kernel=m.positive("shortconv.l_cache"), window=m.int("attention.sliding_window", 0),
                   eps=m.float("attention.layer_norm_rms_epsilon"), rope=rope_from_gguf(m, head_dim, neox=True),
                   context_length=m.positive("context_length"), output=output_weight(f.tensors))


def mixer(b: Builder, c: Config, h: Value, i: int) -> Value:
    """Layer i's short convolution or attention block on the normed h, through its output projection."""
    hd, p = c.head_dim, f"blk.{i}."
    if c.kv_heads[i] == 0:
        bcx = b.matmul(h, p + "shortconv.in_proj.weight")              # [n, 3 * d_model]
        y = b.shortconv(bcx, p + "shortconv.conv.weight", ConvSpec(i, c.d_model, c.conv_kernel))
        return b.matmul(y, p + "shortconv.out_proj.weight")
    q = b.rms_norm(b.matmul(h, p + "attn_q.weight"), p + "attn_q_norm.weight", c.eps, dim=hd)
    k = b.rms_norm(b.matmul(h, p + "attn_k.weight"), p + "attn_k_norm.weight", c.eps, dim=hd)
    v = b.matmul(h, p + "attn_v.weight")
    spec = AttentionSpec(i, c.n_heads, c.kv_heads[i], hd, 1.0 / math.sqrt(hd), c.window)
    a = b.attention(b.rope(q, c.rope, hd), b.rope(k, c.rope, hd), v, spec)
    return b.matmul(a, p + "attn_output.weight")


def forward(b: Builder, c: Config) -> None:
    """The forward pass, written against the op builder."""
    x = b.embed("token_embd.weight")                                   # [n, d_model]
    for i in range(c.n_layers):
        p = f"blk.{i}."
        x = b.add(x, mixer(b, c, b.rms_norm(x, p + "attn_norm.weight", c.eps), i))
        x = b.add(x, dense_ffn(b, b.rms_norm(x, p + "ffn_norm.weight", c.eps), p))
    x = b.rms_norm(b.last_row(x), "token_embd_norm.weight", c.eps)
    b.logits(b.matmul(x, c.output))                                    # [rows, vocab]
