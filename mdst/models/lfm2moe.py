"""LFM2 mixture-of-experts (LFM2-8B-A1B, 24B-A2B), as llama.cpp runs `lfm2moe` GGUFs.

LFM2's convolution and attention blocks; the first `leading_dense_block_count` layers keep a dense
SiLU-gated MLP, the others a mixture of experts whose router gates by `expert_gating_func`
(sigmoid in the published models) and selects by probability plus a per-expert bias
(`exp_probs_b`), weighting the chosen experts by their unbiased probabilities renormalized to sum 1.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..format.gguf import GGUFFile
from ..ir.graph import Builder
from . import lfm2
from .base import Meta, Moe, dense_ffn, moe_ffn


@dataclass(frozen=True)
class Config(lfm2.Config):
    moe: Moe

    @classmethod
    def from_gguf(cls, f: GGUFFile) -> "Config":
        dense = lfm2.Config.from_gguf(f)
        return cls(**{k.name: getattr(dense, k.name) for k in fields(dense)}, moe=Moe.from_gguf(Meta(f, "lfm2moe")))


def forward(b: Builder, c: Config) -> None:
    """The forward pass, written against the op builder."""
    x = b.embed("token_embd.weight")                                   # [n, d_model]
    for i in range(c.n_layers):
        p = f"blk.{i}."
        x = b.add(x, lfm2.mixer(b, c, b.rms_norm(x, p + "attn_norm.weight", c.eps), i))
        h = b.rms_norm(x, p + "ffn_norm.weight", c.eps)
        x = b.add(x, dense_ffn(b, h, p) if i < c.moe.dense_lead else moe_ffn(b, h, p, c.moe, bias=True))
    x = b.rms_norm(b.last_row(x), "token_embd_norm.weight", c.eps)
    b.logits(b.matmul(x, c.output))                                    # [rows, vocab]
