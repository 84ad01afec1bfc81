"""Random-weight GGUF files with the metadata keys, tensor names and shapes of real models.

Tiny presets are for tests (they exercise each family's features within 32 positions);
the others are shape-faithful replicas of real models for benchmarks. Weights are random
but scaled so activations stay finite and logits are O(1..10) through every layer.
Files are written tensor by tensor, in row chunks, so memory stays bounded for 8B models.

    write("q.gguf", "qwen3-8b", types="Q4_K_M")       # or: mdst synth qwen3-8b q.gguf
    plan("gemma3-270m")                               # the tensor table, without writing

Weight type mixes: a type name applied to every matrix ("F32", "Q8_0", "Q4_K", ...),
"Q4_K_M" (the rule below), or a dict {fnmatch pattern: type}, first match wins.
Norm weights, LFM2's convolution kernels and expert biases are always F32; expert routers follow the
mix except in Q4_K_M (F32 there, as llama-quantize keeps them). A type whose block does not
divide a row falls back as llama-quantize does (Q4_K -> Q5_0, Q6_K -> Q8_0, ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import functools
import os
import re
import sys
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import gguf
import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T, GGUFValueType as V, LlamaFileType

from .kquants import RANDOM_BLOCK_TYPES, random_blocks

ARCHES = ("llama", "qwen3", "gemma3", "lfm2", "mistral3", "qwen3moe", "lfm2moe")
MOE_ARCHES = ("qwen3moe", "lfm2moe")
LFM2_ARCHES = ("lfm2", "lfm2moe")
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
MIN_VOCAB = 256 + len(SPECIALS) + 1     # bytes, specials and at least one merge (llama.cpp needs merges)


@dataclass(frozen=True)
class Preset:
    """A model's shape and hyperparameters: what its GGUF metadata records."""

    name: str
    arch: str                    # general.architecture
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    n_vocab: int
    context_length: int
    tied: bool                   # no output.weight: the LM head is token_embd
    rope_base: float = 10000.0
    eps: float = 1e-5
    sliding_window: int = 0      # gemma3: window of the local layers (5 of every 6); 0 = none
    attn_layers: tuple[int, ...] = ()   # lfm2: attention layers; the others are short convolutions
    conv_l_cache: int = 0        # lfm2: convolution length
    rope_scaling_factor: float = 0.0    # mistral3: YaRN factor; 0 = no scaling
    rope_original_context: int = 0      # mistral3: YaRN original_context_length
    yarn_beta_fast: float = 32.0
    yarn_beta_slow: float = 1.0
    yarn_log_mul: float = 0.0
    attn_temperature_scale: float = 0.0  # mistral3: Llama-4 style query scaling by position
    n_experts: int = 0           # qwen3moe, lfm2moe: experts a layer, of which n_experts_used run a token
    n_experts_used: int = 0
    d_ff_exp: int = 0            # an expert's hidden size (d_ff is the dense layers')
    dense_lead: int = 0          # lfm2moe: leading layers with a dense MLP
    tokenizer_pre: str = "default"
    add_bos: bool = False
    # Negative control: q/k rows (and q/k norm weights) reordered between the interleaved and the
    # half-split rotary layouts, so a correct runtime computes what the wrong RoPE ordering would.
    wrong_rope_order: bool = False

    def __post_init__(self) -> None:
        if self.arch not in ARCHES:
            raise ValueError(f"arch {self.arch!r} is not one of {', '.join(ARCHES)}")
        for f in ("n_layers", "d_model", "n_heads", "n_kv_heads", "head_dim", "d_ff", "n_vocab", "context_length"):
            if getattr(self, f) <= 0:
                raise ValueError(f"{f} must be positive, got {getattr(self, f)}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for RoPE, got {self.head_dim}")
        if self.n_vocab < MIN_VOCAB:
            raise ValueError(f"n_vocab must be at least {MIN_VOCAB}: 256 bytes, {len(SPECIALS)} specials, a merge")
        if (self.arch in MOE_ARCHES) != (self.n_experts > 0):
            raise ValueError("n_experts > 0 exactly for the mixture-of-experts arches " + ", ".join(MOE_ARCHES))
        if self.n_experts and not (0 < self.n_experts_used <= self.n_experts and self.d_ff_exp > 0):
            raise ValueError("a mixture of experts needs 0 < n_experts_used <= n_experts and d_ff_exp > 0")
        if self.dense_lead and self.arch != "lfm2moe":
            raise ValueError("dense_lead is an lfm2moe setting")
        if self.arch in LFM2_ARCHES:
            if self.n_heads * self.head_dim != self.d_model:
                raise ValueError("lfm2 needs n_heads * head_dim == d_model (llama.cpp derives head_dim from them)")
            if self.conv_l_cache < 2:
                raise ValueError(f"lfm2 needs conv_l_cache >= 2, got {self.conv_l_cache}")
            if any(not 0 <= i < self.n_layers for i in self.attn_layers):
                raise ValueError(f"attn_layers {self.attn_layers} must lie in 0..{self.n_layers - 1}")
        elif self.attn_layers or self.conv_l_cache:
            raise ValueError("attn_layers and conv_l_cache are lfm2 settings")
        if self.sliding_window and self.arch != "gemma3":
            raise ValueError("sliding_window is a gemma3 setting here")
        if (self.rope_scaling_factor or self.attn_temperature_scale) and self.arch != "mistral3":
            raise ValueError("YaRN and attention temperature are mistral3 settings here")
        if self.rope_scaling_factor and self.rope_original_context <= 0:
            raise ValueError("YaRN (rope_scaling_factor) needs rope_original_context > 0")


PRESETS: dict[str, Preset] = {p.name: p for p in [
    # Tiny: d_model 256 so every K-quant applies unchanged; 32 test positions exceed each window.
    Preset("llama-tiny", "llama", 4, 256, 4, 2, 64, 512, 512, 2048, tied=False, rope_base=10000.0,
           tokenizer_pre="smollm"),
    Preset("qwen3-tiny", "qwen3", 4, 256, 4, 2, 128, 512, 512, 4096, tied=True, rope_base=1e6, eps=1e-6,
           tokenizer_pre="qwen2"),
    Preset("gemma3-tiny", "gemma3", 6, 256, 4, 1, 128, 512, 512, 4096, tied=True, rope_base=1e6, eps=1e-6,
           sliding_window=8, add_bos=True),
    Preset("lfm2-tiny", "lfm2", 6, 256, 4, 2, 64, 512, 512, 4096, tied=True, rope_base=1e6,
           attn_layers=(2, 5), conv_l_cache=3, tokenizer_pre="lfm2", add_bos=True),
    # 8 experts, 2 (qwen3moe) or 3 (lfm2moe, after one dense layer) a token.
    Preset("qwen3moe-tiny", "qwen3moe", 2, 256, 4, 2, 64, 512, 512, 4096, tied=False, rope_base=1e6, eps=1e-6,
           tokenizer_pre="qwen2", n_experts=8, n_experts_used=2, d_ff_exp=256),
    Preset("lfm2moe-tiny", "lfm2moe", 3, 256, 4, 2, 64, 512, 512, 4096, tied=True, rope_base=1e6,
           attn_layers=(1,), conv_l_cache=3, tokenizer_pre="lfm2", add_bos=True, n_experts=8, n_experts_used=3,
           d_ff_exp=256, dense_lead=1),
    Preset("ministral3-tiny", "mistral3", 4, 256, 4, 2, 64, 512, 512, 128, tied=True, rope_base=1e6,
           rope_scaling_factor=16.0, rope_original_context=8, yarn_log_mul=1.0, attn_temperature_scale=0.1,
           tokenizer_pre="tekken", add_bos=True),
    # Real shapes (configs of the published models; gemma3-270m from the real GGUF).
    Preset("smollm2-135m", "llama", 30, 576, 9, 3, 64, 1536, 49152, 8192, tied=True, rope_base=100000.0,
           tokenizer_pre="smollm"),
    Preset("qwen3-0.6b", "qwen3", 28, 1024, 16, 8, 128, 3072, 151936, 40960, tied=True, rope_base=1e6, eps=1e-6,
           tokenizer_pre="qwen2"),
    Preset("qwen3-8b", "qwen3", 36, 4096, 32, 8, 128, 12288, 151936, 40960, tied=False, rope_base=1e6, eps=1e-6,
           tokenizer_pre="qwen2"),
    Preset("gemma3-270m", "gemma3", 18, 640, 4, 1, 256, 2048, 262144, 32768, tied=True, rope_base=1e6, eps=1e-6,
           sliding_window=512, add_bos=True),
    Preset("lfm2-1.2b", "lfm2", 16, 2048, 32, 8, 64, 8192, 65536, 128000, tied=True, rope_base=1e6,
           attn_layers=(2, 5, 8, 10, 12, 14), conv_l_cache=3, tokenizer_pre="lfm2", add_bos=True),
    Preset("ministral3-3b", "mistral3", 26, 3072, 32, 8, 128, 9216, 131072, 262144, tied=True, rope_base=1e6,
           rope_scaling_factor=16.0, rope_original_context=16384, yarn_log_mul=1.0, attn_temperature_scale=0.1,
           tokenizer_pre="tekken", add_bos=True),
    Preset("qwen3-30b-a3b", "qwen3moe", 48, 2048, 32, 4, 128, 6144, 151936, 40960, tied=False, rope_base=1e6,
           eps=1e-6, tokenizer_pre="qwen2", n_experts=128, n_experts_used=8, d_ff_exp=768),
    Preset("lfm2-8b-a1b", "lfm2moe", 24, 2048, 32, 8, 64, 7168, 65536, 128000, tied=True, rope_base=1e6,
           attn_layers=(2, 6, 10, 14, 18, 21), conv_l_cache=3, tokenizer_pre="lfm2", add_bos=True,
           n_experts=32, n_experts_used=4, d_ff_exp=1792, dense_lead=2),
]}


def resolve(preset: str | Preset, **overrides: Any) -> Preset:
    """The preset named (or given), with fields replaced by `overrides`."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
        preset = PRESETS[preset]
    names = {f.name for f in dataclasses.fields(Preset)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown preset field(s) {', '.join(unknown)}; fields: {', '.join(sorted(names))}")
    return dataclasses.replace(preset, **overrides) if overrides else preset


# ---------------------------------------------------------------- tensor table

LOGIT_STD = 3.0     # std of the logits: LM head (and tied embedding) entries have std LOGIT_STD/sqrt(d_model)
BIAS_STD = 0.1     # lfm2moe's expert selection biases: about a sigmoid probability's spread
NORM_NOISE = 0.2    # norm weights are 1 + N(0, NORM_NOISE^2): non-trivial, so a skipped or misapplied norm shows

# Types gguf-py quantizes from floats; the K-quants and IQ types come from kquants.random_blocks.
_FLOAT_QUANT_TYPES = (T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.MXFP4, T.TQ1_0, T.TQ2_0)
WEIGHT_TYPES: tuple[str, ...] = tuple(t.name for t in _FLOAT_QUANT_TYPES) + tuple(
    t.name for t in sorted(RANDOM_BLOCK_TYPES))
MIXES: tuple[str, ...] = WEIGHT_TYPES + ("Q4_K_M",)

# llama-quantize's substitutes when a type's block does not divide a row (llama-quant.cpp).
_FALLBACK = {T.Q2_K: T.Q4_0, T.Q3_K: T.Q4_0, T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0, T.IQ4_XS: T.IQ4_NL,
             T.TQ1_0: T.Q4_0, T.TQ2_0: T.Q4_0, T.IQ2_XXS: T.IQ4_NL, T.IQ2_XS: T.IQ4_NL, T.IQ3_XXS: T.IQ4_NL,
             T.IQ3_S: T.IQ4_NL, T.IQ2_S: T.IQ4_NL, T.IQ1_S: T.IQ4_NL, T.IQ1_M: T.IQ4_NL}

_FILE_TYPES = {
    "F32": LlamaFileType.ALL_F32, "F16": LlamaFileType.MOSTLY_F16, "BF16": LlamaFileType.MOSTLY_BF16,
    "Q8_0": LlamaFileType.MOSTLY_Q8_0, "Q4_0": LlamaFileType.MOSTLY_Q4_0, "Q4_1": LlamaFileType.MOSTLY_Q4_1,
    "Q5_0": LlamaFileType.MOSTLY_Q5_0, "Q5_1": LlamaFileType.MOSTLY_Q5_1, "Q2_K": LlamaFileType.MOSTLY_Q2_K,
    "Q3_K": LlamaFileType.MOSTLY_Q3_K_S, "Q4_K": LlamaFileType.MOSTLY_Q4_K_S, "Q5_K": LlamaFileType.MOSTLY_Q5_K_S,
    "Q6_K": LlamaFileType.MOSTLY_Q6_K, "IQ4_NL": LlamaFileType.MOSTLY_IQ4_NL, "IQ4_XS": LlamaFileType.MOSTLY_IQ4_XS,
    "MXFP4": LlamaFileType.MOSTLY_MXFP4_MOE, "TQ1_0": LlamaFileType.MOSTLY_TQ1_0,
    "TQ2_0": LlamaFileType.MOSTLY_TQ2_0, "IQ2_XXS": LlamaFileType.MOSTLY_IQ2_XXS,
    "IQ2_XS": LlamaFileType.MOSTLY_IQ2_XS, "IQ3_XXS": LlamaFileType.MOSTLY_IQ3_XXS, "IQ3_S": LlamaFileType.MOSTLY_IQ3_S,
    "IQ2_S": LlamaFileType.MOSTLY_IQ2_S, "IQ1_S": LlamaFileType.MOSTLY_IQ1_S, "IQ1_M": LlamaFileType.MOSTLY_IQ1_M,
    "Q4_K_M": LlamaFileType.MOSTLY_Q4_K_M,
}

Types = str | Mapping[str, str | T]


@dataclass(frozen=True)
class TensorPlan:
    """One tensor of the file: name, numpy shape (rows, row length; GGUF lists dims reversed), type, init."""

    name: str
    shape: tuple[int, ...]
    qtype: T
    init: str                    # "normal" (and "router"): N(0, std^2); "norm": 1 + N(0, std^2); "conv", "bias":
                                 # N(0, std^2), kept F32
    std: float

    @property
    def n_params(self) -> int:
        """Number of weights."""
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        """Bytes of data in the file (before alignment padding)."""
        block, size = GGML_QUANT_SIZES[self.qtype]
        return self.n_params // block * size


def _tensor_shapes(p: Preset) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, numpy shape, init) of every tensor, in llama.cpp's names for the arch."""
    d, hd = p.d_model, p.head_dim
    q_dim, kv_dim = p.n_heads * hd, p.n_kv_heads * hd
    out: list[tuple[str, tuple[int, ...], str]] = [("token_embd.weight", (p.n_vocab, d), "normal")]
    for i in range(p.n_layers):
        b = f"blk.{i}."
        attention = p.arch not in LFM2_ARCHES or i in p.attn_layers
        layer = [(b + "attn_norm.weight", (d,), "norm")]
        if attention:
            layer += [(b + "attn_q.weight", (q_dim, d), "normal"), (b + "attn_k.weight", (kv_dim, d), "normal"),
                      (b + "attn_v.weight", (kv_dim, d), "normal"), (b + "attn_output.weight", (d, q_dim), "normal")]
            if p.arch in ("qwen3", "gemma3", "lfm2", "qwen3moe", "lfm2moe"):
                layer += [(b + "attn_q_norm.weight", (hd,), "norm"), (b + "attn_k_norm.weight", (hd,), "norm")]
        else:
            layer += [(b + "shortconv.conv.weight", (d, p.conv_l_cache), "conv"),
                      (b + "shortconv.in_proj.weight", (3 * d, d), "normal"),
                      (b + "shortconv.out_proj.weight", (d, d), "normal")]
        if p.arch == "gemma3":
            layer.append((b + "post_attention_norm.weight", (d,), "norm"))
        layer.append((b + "ffn_norm.weight", (d,), "norm"))
        if p.n_experts and i >= p.dense_lead:   # numpy shapes [experts, rows, row length]
            e, f = p.n_experts, p.d_ff_exp
            layer += [(b + "ffn_gate_inp.weight", (e, d), "router"), (b + "ffn_gate_exps.weight", (e, f, d), "normal"),
                      (b + "ffn_up_exps.weight", (e, f, d), "normal"), (b + "ffn_down_exps.weight", (e, d, f), "normal")]
            if p.arch == "lfm2moe":
                layer.append((b + "exp_probs_b.bias", (e,), "bias"))
        else:
            layer += [(b + "ffn_gate.weight", (p.d_ff, d), "normal"), (b + "ffn_up.weight", (p.d_ff, d), "normal"),
                      (b + "ffn_down.weight", (d, p.d_ff), "normal")]
        if p.arch == "gemma3":
            layer.append((b + "post_ffw_norm.weight", (d,), "norm"))
        out += layer
    out.append(("token_embd_norm.weight" if p.arch in LFM2_ARCHES else "output_norm.weight", (d,), "norm"))
    if not p.tied:
        out.append(("output.weight", (p.n_vocab, d), "normal"))
    return out


def _q4_k_m(name: str, tied: bool) -> T:
    """The Q4_K_M-like rule: Q6_K for attn_v, ffn_down (the experts' too), the output and a tied embedding;
    Q4_K elsewhere (routers stay F32, as llama-quantize leaves them)."""
    if name.endswith(".ffn_gate_inp.weight"):
        return T.F32
    if name == "token_embd.weight":
        return T.Q6_K if tied else T.Q4_K
    if name == "output.weight" or name.endswith((".attn_v.weight", ".ffn_down.weight", ".ffn_down_exps.weight")):
        return T.Q6_K
    return T.Q4_K


def _weight_type(t: str | T) -> T:
    name = t.name if isinstance(t, T) else str(t)
    if name not in WEIGHT_TYPES:
        raise ValueError(f"weight type {name!r} is not supported; supported: {', '.join(WEIGHT_TYPES)}")
    return T[name]


def _matrix_type(types: Types, name: str, tied: bool) -> T:
    if isinstance(types, Mapping):
        for pattern, t in types.items():
            if fnmatch.fnmatchcase(name, pattern):
                return _weight_type(t)
        raise ValueError(f"no pattern of the type mix matches tensor {name!r}; add a catch-all '*' entry")
    if types == "Q4_K_M":
        return _q4_k_m(name, tied)
    return _weight_type(types)


def _fit(qtype: T, row_len: int) -> T:
    """`qtype`, or llama-quantize's substitute when its block does not divide the row."""
    if row_len % GGML_QUANT_SIZES[qtype][0] == 0:
        return qtype
    alt = _FALLBACK.get(qtype)
    if alt is not None and row_len % GGML_QUANT_SIZES[alt][0] == 0:
        return alt
    return T.F16


def _check_types(types: Types) -> None:
    if isinstance(types, Mapping):
        for t in types.values():
            _weight_type(t)
    elif types not in MIXES:
        raise ValueError(f"unknown type mix {types!r}; mixes: {', '.join(MIXES)}, or a dict {{pattern: type}}")


def plan(preset: str | Preset, types: Types = "Q4_K_M", **overrides: Any) -> list[TensorPlan]:
    """The tensor table a `write` with these arguments produces, computed without writing."""
    p = resolve(preset, **overrides)
    _check_types(types)
    table = []
    for name, shape, init in _tensor_shapes(p):
        if init in ("normal", "router"):
            qtype = _fit(_matrix_type(types, name, p.tied), shape[-1])
            # router logits spread like the LM head's, so the experts' ranking is rarely a near tie
            on_logits = init == "router" or name in ("output.weight", "token_embd.weight")
            std = (LOGIT_STD if on_logits else 1.0) / np.sqrt(shape[-1])
        else:
            qtype = T.F32
            std = {"norm": NORM_NOISE, "bias": BIAS_STD}.get(init, 1.0 / np.sqrt(shape[-1]))
        table.append(TensorPlan(name, shape, qtype, init, float(std)))
    return table


# ---------------------------------------------------------------- vocabulary

_MAX_MERGES = 256
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

# Text the byte-level BPE merges are learned from.
_CORPUS = """\
The weather was mild and the river ran slowly past the old mill. In the morning the children walked to
school along the water, counting boats and naming the birds they saw: herons, ducks, a kingfisher once.
Their teacher asked them to write what they had seen, and most of them wrote about the kingfisher.
A model reads the text one token at a time and predicts the next one. The tokenizer splits words into
pieces that the model has seen often, so common words become single tokens and rare words become several.
There are 24 hours in a day, 7 days in a week and 365 days in most years; 2 + 2 = 4 and 10 * 10 = 100.
def add(a, b):
    return a + b
for i in range(10):
    print(i, add(i, 1))
Questions and answers: What is the capital of France? Paris. How many legs does a spider have? Eight.
She said that the results were better than they had expected, and that the next version would be faster.
"""

# The words regex: contractions, letter runs, single digits, punctuation runs, whitespace (GPT-2 style).
_PRETOKEN = re.compile(r"'(?:s|t|re|ve|m|ll|d)| ?[A-Za-z]+| ?[0-9]| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+")


@functools.lru_cache(maxsize=1)
def byte_chars() -> tuple[str, ...]:
    """GPT-2's byte-to-character map: printable bytes map to themselves, the rest to code points from 256."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return tuple(chars[b] for b in range(256))


@functools.lru_cache(maxsize=1)
def _merges() -> tuple[tuple[str, str], ...]:
    """BPE merges learned greedily from `_CORPUS` (most frequent pair first, ties by text)."""
    bc = byte_chars()
    words = Counter(tuple(bc[b] for b in w.encode()) for w in _PRETOKEN.findall(_CORPUS))
    merges: list[tuple[str, str]] = []
    while len(merges) < _MAX_MERGES:
        pairs: Counter[tuple[str, str]] = Counter()
        for w, n in words.items():
            for pair in zip(w, w[1:], strict=False):
                pairs[pair] += n
        if not pairs:
            break
        best = min(pairs, key=lambda pr: (-pairs[pr], pr))
        if pairs[best] < 2:
            break
        merges.append(best)
        joined = best[0] + best[1]
        merged: Counter[tuple[str, ...]] = Counter()
        for w, n in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] += n
        words = merged
    return tuple(merges)


@dataclass(frozen=True)
class Vocab:
    """A byte-level BPE vocabulary: bytes, merged tokens, special tokens, then [PADn] fillers to n_vocab."""

    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    bos: int
    eos: int
    pad: int


def vocab(n_vocab: int) -> Vocab:
    """A byte-level BPE vocabulary of exactly `n_vocab` tokens that llama.cpp's "gpt2" tokenizer loads."""
    if n_vocab < MIN_VOCAB:
        raise ValueError(f"n_vocab must be at least {MIN_VOCAB}, got {n_vocab}")
    merges = _merges()[: n_vocab - MIN_VOCAB]
    tokens = [*byte_chars(), *(a + b for a, b in merges)]
    types = [gguf.TokenType.NORMAL] * len(tokens)
    first_special = len(tokens)
    tokens += SPECIALS
    types += [gguf.TokenType.CONTROL] * len(SPECIALS)
    # Padding as convert_hf_to_gguf writes it when a model's vocab_size exceeds its tokenizer.
    tokens += [f"[PAD{i}]" for i in range(len(tokens), n_vocab)]
    types += [gguf.TokenType.UNUSED] * (n_vocab - len(types))
    endoftext, im_end = first_special, first_special + 2
    return Vocab(tokens, [int(t) for t in types], [f"{a} {b}" for a, b in merges],
                 bos=endoftext, eos=im_end, pad=endoftext)


# ---------------------------------------------------------------- metadata

Meta = dict[str, tuple[Any, V]]


def metadata(preset: str | Preset, types: Types = "Q4_K_M", seed: int = 0) -> Meta:
    """Every KV pair of the file: key -> (value, GGUF value type), as convert_hf_to_gguf names them."""
    p = resolve(preset)
    _check_types(types)
    a = p.arch
    m: Meta = {
        "general.type": ("model", V.STRING),
        "general.name": (f"synthetic {p.name}", V.STRING),
        "general.description": (f"random weights from mdst.dev.synth: preset {p.name}, "
                                f"types {types if isinstance(types, str) else dict(types)}, seed {seed}"
                                + (", wrong RoPE order (negative control)" if p.wrong_rope_order else ""), V.STRING),
        f"{a}.context_length": (p.context_length, V.UINT32),
        f"{a}.embedding_length": (p.d_model, V.UINT32),
        f"{a}.block_count": (p.n_layers, V.UINT32),
        f"{a}.feed_forward_length": (p.d_ff, V.UINT32),
        f"{a}.attention.head_count": (p.n_heads, V.UINT32),
    }
    if a in LFM2_ARCHES:   # per-layer KV heads; 0 marks a convolution layer
        m[f"{a}.attention.head_count_kv"] = (
            [p.n_kv_heads if i in p.attn_layers else 0 for i in range(p.n_layers)], V.INT32)
    else:
        m[f"{a}.attention.head_count_kv"] = (p.n_kv_heads, V.UINT32)
    m[f"{a}.rope.freq_base"] = (p.rope_base, V.FLOAT32)
    m[f"{a}.attention.layer_norm_rms_epsilon"] = (p.eps, V.FLOAT32)
    if a in ("qwen3", "gemma3", "mistral3", "qwen3moe") or (a == "llama" and p.head_dim * p.n_heads != p.d_model):
        m[f"{a}.attention.key_length"] = (p.head_dim, V.UINT32)
        m[f"{a}.attention.value_length"] = (p.head_dim, V.UINT32)
    if a in ("llama", "mistral3", "lfm2", "lfm2moe"):
        m[f"{a}.vocab_size"] = (p.n_vocab, V.UINT32)
    if a in ("llama", "mistral3"):
        m[f"{a}.rope.dimension_count"] = (p.head_dim, V.UINT32)
    if a == "gemma3" and p.sliding_window:
        m[f"{a}.attention.sliding_window"] = (p.sliding_window, V.UINT32)
    if a in LFM2_ARCHES:
        m[f"{a}.shortconv.l_cache"] = (p.conv_l_cache, V.UINT32)
    if p.n_experts:
        m[f"{a}.expert_count"] = (p.n_experts, V.UINT32)
        m[f"{a}.expert_used_count"] = (p.n_experts_used, V.UINT32)
        m[f"{a}.expert_feed_forward_length"] = (p.d_ff_exp, V.UINT32)
    if a == "lfm2moe":
        m[f"{a}.leading_dense_block_count"] = (p.dense_lead, V.UINT32)
        m[f"{a}.expert_gating_func"] = (2, V.UINT32)   # sigmoid, as in the published models
    if p.rope_scaling_factor:
        m[f"{a}.rope.scaling.type"] = ("yarn", V.STRING)
        m[f"{a}.rope.scaling.factor"] = (p.rope_scaling_factor, V.FLOAT32)
        m[f"{a}.rope.scaling.original_context_length"] = (p.rope_original_context, V.UINT32)
        m[f"{a}.rope.scaling.yarn_beta_fast"] = (p.yarn_beta_fast, V.FLOAT32)
        m[f"{a}.rope.scaling.yarn_beta_slow"] = (p.yarn_beta_slow, V.FLOAT32)
        if p.yarn_log_mul:
            m[f"{a}.rope.scaling.yarn_log_multiplier"] = (p.yarn_log_mul, V.FLOAT32)
    if p.attn_temperature_scale:
        m[f"{a}.attention.temperature_scale"] = (p.attn_temperature_scale, V.FLOAT32)
    v = vocab(p.n_vocab)
    m.update({
        "tokenizer.ggml.model": ("gpt2", V.STRING),
        "tokenizer.ggml.pre": (p.tokenizer_pre, V.STRING),
        "tokenizer.ggml.tokens": (v.tokens, V.STRING),
        "tokenizer.ggml.token_type": (v.token_types, V.INT32),
        "tokenizer.ggml.merges": (v.merges, V.STRING),
        "tokenizer.ggml.bos_token_id": (v.bos, V.UINT32),
        "tokenizer.ggml.eos_token_id": (v.eos, V.UINT32),
        "tokenizer.ggml.padding_token_id": (v.pad, V.UINT32),
        "tokenizer.ggml.add_bos_token": (p.add_bos, V.BOOL),
        "tokenizer.ggml.add_eos_token": (False, V.BOOL),
        "tokenizer.chat_template": (CHAT_TEMPLATE, V.STRING),
    })
    file_type = _FILE_TYPES[types] if isinstance(types, str) else LlamaFileType.GUESSED
    m["general.file_type"] = (int(file_type), V.UINT32)
    if types != "F32":
        m["general.quantization_version"] = (gguf.GGML_QUANT_VERSION, V.UINT32)
    return m


# ---------------------------------------------------------------- tensor data

_CHUNK_ELEMENTS = 1 << 22   # rows are generated and written in chunks of about this many weights


def _rope_reorder(p: Preset, name: str) -> np.ndarray | None:
    """Row order of the wrong-RoPE-ordering twin for q/k weights and q/k norms; None for other tensors."""
    if not p.wrong_rope_order:
        return None
    kind = name.split(".")[-2]
    if kind not in ("attn_q", "attn_k", "attn_q_norm", "attn_k_norm"):
        return None
    half = p.head_dim // 2
    i = np.arange(half)
    within = np.empty(p.head_dim, dtype=np.int64)
    if p.arch in ("llama", "mistral3"):
        # llama.cpp rotates pairs (2i, 2i+1): place the half-split pair (i, i + half) there.
        within[0::2], within[1::2] = i, i + half
    else:
        # llama.cpp rotates pairs (i, i + half): place the interleaved pair (2i, 2i+1) there.
        within[:half], within[half:] = 2 * i, 2 * i + 1
    heads = {"attn_q": p.n_heads, "attn_k": p.n_kv_heads}.get(kind, 1)
    return (np.arange(heads)[:, None] * p.head_dim + within).reshape(-1)


def _encode(x: np.ndarray, qtype: T) -> np.ndarray:
    if qtype == T.F32:
        return x
    if qtype == T.F16:
        return x.astype(np.float16)
    return gguf.quants.quantize(x, qtype)


def _chunks(t: TensorPlan, seed: int) -> Iterator[np.ndarray]:
    """The tensor's data as row chunks (each a C-contiguous array of whole rows, in file order)."""
    # One generator per tensor, keyed by name: a tensor's values do not depend on the others.
    rng = np.random.default_rng([seed, zlib.crc32(t.name.encode())])
    if t.init in ("norm", "bias"):
        yield (float(t.init == "norm") + t.std * rng.standard_normal(t.shape[0], dtype=np.float32)).astype(np.float32)
        return
    cols = t.shape[-1]
    rows = t.n_params // cols   # an expert tensor's rows: its experts' one after another
    step = max(1, _CHUNK_ELEMENTS // cols)
    for r0 in range(0, rows, step):
        n = min(step, rows - r0)
        if t.qtype in RANDOM_BLOCK_TYPES:
            n_blocks = n * cols // GGML_QUANT_SIZES[t.qtype][0]
            yield random_blocks(t.qtype, n_blocks, t.std, rng).reshape(n, -1)
        else:
            yield _encode(rng.standard_normal((n, cols), dtype=np.float32) * np.float32(t.std), t.qtype)


def _data(t: TensorPlan, p: Preset, seed: int) -> Iterator[np.ndarray]:
    order = _rope_reorder(p, t.name)
    if order is None:
        yield from _chunks(t, seed)
    else:   # q/k tensors are small: reorder them whole (same chunks, so the same values as the normal file)
        yield np.concatenate(list(_chunks(t, seed)))[order]


def _pad(fout: BinaryIO, alignment: int) -> None:
    fout.write(b"\0" * (-fout.tell() % alignment))


def write(path: str | os.PathLike[str], preset: str | Preset, *, types: Types = "Q4_K_M", seed: int = 0,
          **overrides: Any) -> Path:
    """Write a random-weight GGUF of `preset` (name or Preset, fields replaced by `overrides`); returns the path."""
    p = resolve(preset, **overrides)
    table = plan(p, types)
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    w = gguf.GGUFWriter(partial, p.arch)
    try:
        for key, (value, vtype) in metadata(p, types, seed).items():
            if isinstance(value, list):
                w.add_key_value(key, value, V.ARRAY, sub_type=vtype)
            else:
                w.add_key_value(key, value, vtype)
        for t in table:
            w.add_tensor_info(t.name, t.shape, np.dtype(np.float32), t.nbytes, raw_dtype=t.qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        # Stream the data ourselves: GGUFWriter.write_tensor_data wants each tensor whole in memory.
        fout = w.fout[0]
        for t in table:
            _pad(fout, w.data_alignment)
            written = 0
            for chunk in _data(t, p, seed):
                chunk.tofile(fout)
                written += chunk.nbytes
            if written != t.nbytes:
                raise AssertionError(f"{t.name}: wrote {written} bytes, planned {t.nbytes}")
        _pad(fout, w.data_alignment)
        w.close()
        os.replace(partial, path)
    except BaseException:
        w.close()
        partial.unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------- command line

def _parse_types(text: str) -> Types:
    """"Q4_K_M", or "pattern=TYPE,pattern=TYPE" for a dict mix."""
    if "=" not in text:
        return text
    mix = {}
    for item in text.split(","):
        pattern, _, t = item.rpartition("=")
        if not pattern:
            raise ValueError(f"--types item {item!r} is not PATTERN=TYPE")
        mix[pattern] = t
    return mix


def _parse_set(p: Preset, item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    if not sep:
        raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
    fields = [f.name for f in dataclasses.fields(Preset)]
    if key not in fields:
        raise ValueError(f"unknown preset field {key!r}; fields: {', '.join(fields)}")
    current = getattr(p, key)
    try:
        if isinstance(current, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return key, text.lower() in ("true", "1")
        if isinstance(current, tuple):
            return key, tuple(int(x) for x in text.split(",") if x)
        return key, type(current)(text)
    except ValueError:
        raise ValueError(f"--set {key}: {text!r} is not a valid {type(current).__name__}") from None


def describe(p: Preset) -> str:
    """One line of a preset's dimensions."""
    extra = [f"attn at {list(p.attn_layers)}"] if p.attn_layers else []
    extra += [f"window {p.sliding_window}"] if p.sliding_window else []
    extra += [f"experts {p.n_experts_used}/{p.n_experts}x{p.d_ff_exp}"] if p.n_experts else []
    extra += [f"{p.dense_lead} dense first"] if p.dense_lead else []
    extra += [f"yarn x{p.rope_scaling_factor:g} from {p.rope_original_context}"] if p.rope_scaling_factor else []
    return (f"{p.name:16} {p.arch:9} L={p.n_layers} d={p.d_model} heads={p.n_heads}/{p.n_kv_heads}x{p.head_dim} "
            f"ffn={p.d_ff} vocab={p.n_vocab} {'tied' if p.tied else 'untied'}" + "".join(f", {e}" for e in extra))


def main(argv: list[str] | None = None) -> int:
    """`mdst synth PRESET OUT.gguf [--types MIX] [--seed N] [--set KEY=VALUE ...]`; `--list` shows presets."""
    ap = argparse.ArgumentParser(prog="mdst synth", description="Write a random-weight GGUF shaped like a real model.")
    ap.add_argument("preset", nargs="?", help="preset name (see --list)")
    ap.add_argument("out", nargs="?", help="output .gguf path")
    ap.add_argument("--types", default="Q4_K_M",
                    help=f"weight type mix: {', '.join(MIXES)}, or PATTERN=TYPE,... (fnmatch, first match wins)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset field")
    ap.add_argument("--list", action="store_true", help="list the presets and exit")
    args = ap.parse_args(argv)
    if args.list:
        for p in PRESETS.values():
            print(describe(p))
        return 0
    if not args.preset or not args.out:
        ap.print_usage(sys.stderr)
        print("mdst synth: error: PRESET and OUT.gguf are required (or --list)", file=sys.stderr)
        return 2
    try:
        p = resolve(args.preset)
        p = resolve(p, **dict(_parse_set(p, s) for s in args.set))
        types = _parse_types(args.types)
        t0 = time.perf_counter()
        path = write(args.out, p, types=types, seed=args.seed)
    except (ValueError, OSError) as e:
        print(f"mdst synth: error: {e}", file=sys.stderr)
        return 2
    size = path.stat().st_size
    print(f"wrote {path}: {p.name} types={args.types} seed={args.seed}, "
          f"{size / 2**30:.3f} GiB in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
