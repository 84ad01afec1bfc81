"""Qwen 3 mixture-of-experts (Qwen3-30B-A3B, 235B-A22B), as llama.cpp runs `qwen3moe` GGUFs.

Qwen 3's attention blocks; every feed-forward is a mixture of experts: a softmax router picks
`expert_used_count` of `expert_count` SiLU-gated experts a token, weighted by their probabilities
renormalized to sum 1. No shared experts.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..format.gguf import GGUFFile
from ..ir.graph import Builder
from . import qwen3
from .base import Meta, Moe, moe_ffn

SOFTMAX = 1   # llama.cpp's gating code: qwen3moe always routes by softmax


@dataclass(frozen=True)
class Config(qwen3.Config):
    moe: Moe

    @classmethod
    def from_gguf(cls, f: GGUFFile) -> "Config":
        dense = qwen3.Config.from_gguf(f)
        return cls(**{k.name: getattr(dense, k.name) for k in fields(dense)},
                   moe=Moe.from_gguf(Meta(f, "qwen3moe"), gating=SOFTMAX))


def forward(b: Builder, c: Config) -> None:
    """The forward pass, written against the op builder."""
    x = b.embed("token_embd.weight")                                   # [n, d_model]
    for i in range(c.n_layers):
        p = f"blk.{i}."
        x = b.add(x, qwen3.attention(b, c, b.rms_norm(x, p + "attn_norm.weight", c.eps), i))
        x = b.add(x, moe_ffn(b, b.rms_norm(x, p + "ffn_norm.weight", c.eps), p, c.moe))
    x = b.rms_norm(b.last_row(x), "output_norm.weight", c.eps)
    b.logits(b.matmul(x, c.output))                                    # [rows, vocab]
