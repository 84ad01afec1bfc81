"""Token sampling: the settings users know from llama.cpp, checked, and the chain that applies them.

Order as in llama.cpp's default chain: logit bias -> penalties -> top-k -> top-p -> min-p ->
temperature -> draw. The chain runs on the candidates that top-k leaves; with temperature 0 and no
bias or penalties the pick is the argmax. The GPU runs the whole chain (kernels penalize, topk,
sample) when top_k is 1..64 (or the temperature 0), the penalty window and the biased tokens at most
64 each, reading back only the token id; `Sampler.pick` is
the same chain on the host (for the numpy engine, other settings, and as the GPU's reference).
The draw itself is by inverse CDF with a uniform number from the seeded generator, so host and GPU
pick the same token for the same number. A constrained draw also carries a grammar's bitmask of allowed
tokens (mdst.text.grammar): both chains treat a token it forbids as -inf, so only allowed tokens are picked.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ..kernels import wgsl_const

# The draw buffer's layout and the GPU's bounds are the kernels' (common.wgsl), read from there.
GPU_TOP_K = wgsl_const("common.wgsl", "KMAX")   # the most candidates the GPU sampling kernels keep
DRAW_WORDS = wgsl_const("common.wgsl", "DRAW_WORDS")  # the draw buffer's fixed 4-byte words (a bitmask follows)
# Word offsets of the draw buffer: f32 settings, u32 settings, then the penalty window's tokens and counts.
_DRAW_F32 = ("TEMPERATURE", "TOP_P", "MIN_P", "U", "REPEAT", "PRESENCE", "FREQUENCY")
_DRAW = {n: wgsl_const("common.wgsl", f"DRAW_{n}")
         for n in _DRAW_F32 + ("TOP_K", "N_HIST", "HIST", "COUNTS", "N_BIAS", "BIAS_IDS", "BIAS", "MASKED")}
MAX_LOGIT_BIAS = 100.0   # OpenAI's bound on a bias


def mask_words(n_vocab: int) -> int:
    """u32 words of a bitmask over n_vocab tokens (bit i of word w: token 32 w + i, llguidance's layout)."""
    return -(-n_vocab // 32)


def check_mask(mask: bytes, n_vocab: int) -> None:
    """ValueError unless `mask` (u32 words as bytes) is a bitmask over n_vocab tokens."""
    if len(mask) != 4 * mask_words(n_vocab):
        raise ValueError(f"a token bitmask over {n_vocab} tokens has {mask_words(n_vocab)} u32 words, got "
                         f"{len(mask) / 4:g}; build the grammar against this model's vocabulary")


def allowed_tokens(mask: bytes | np.ndarray, n_vocab: int) -> np.ndarray:
    """A bitmask's tokens (u32 words, or their bytes) as a bool per token id [n_vocab]."""
    raw = np.frombuffer(mask, np.uint8) if isinstance(mask, bytes) else np.asarray(mask, np.uint32).view(np.uint8)
    check_mask(raw.data, n_vocab)
    return np.unpackbits(raw, bitorder="little")[:n_vocab].astype(bool)


def check_logit_bias(bias: Any) -> tuple[tuple[int, float], ...]:
    """{token id: bias in [-100, 100]} (ids may be strings of digits, as JSON keys are) as sorted pairs."""
    if bias is None:
        return ()
    if isinstance(bias, tuple):
        bias = dict(bias)
    if not isinstance(bias, Mapping):
        raise TypeError(f"logit_bias must be a dict {{token id: bias}}, got {type(bias).__name__}")
    out = {}
    for key, value in bias.items():
        tid = int(key) if isinstance(key, str) and key.strip().isdigit() else key
        if isinstance(tid, bool) or not isinstance(tid, int) or tid < 0:
            raise ValueError(f"logit_bias keys must be token ids (non-negative ints), got {key!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or abs(value) > MAX_LOGIT_BIAS:
            raise ValueError(f"logit_bias values must be numbers in [-100, 100]; token {tid} has {value!r}")
        out[tid] = float(value)
    return tuple(sorted(out.items()))


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings (defaults: greedy)."""

    temperature: float = 0.0
    top_k: int = 40
    top_p: float = 1.0
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    logit_bias: Any = ()   # {token id: bias}; kept as sorted (id, bias) pairs

    def __post_init__(self) -> None:
        object.__setattr__(self, "logit_bias", check_logit_bias(self.logit_bias))
        def number(name: str, v: object) -> float:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"{name} must be a number, got {type(v).__name__}")
            if not math.isfinite(v):
                raise ValueError(f"{name} must be finite, got {v}")
            return float(v)

        def integer(name: str, v: object) -> int:
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{name} must be an int, got {type(v).__name__}")
            return v

        if number("temperature", self.temperature) < 0:
            raise ValueError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}")
        if integer("top_k", self.top_k) < 0:
            raise ValueError(f"top_k must be >= 0 (0 disables it), got {self.top_k}")
        if not 0 < number("top_p", self.top_p) <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= number("min_p", self.min_p) <= 1:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}")
        if number("repeat_penalty", self.repeat_penalty) <= 0:
            raise ValueError(f"repeat_penalty must be > 0 (1 disables it), got {self.repeat_penalty}")
        if integer("repeat_last_n", self.repeat_last_n) < 0:
            raise ValueError(f"repeat_last_n must be >= 0, got {self.repeat_last_n}")
        number("presence_penalty", self.presence_penalty)
        number("frequency_penalty", self.frequency_penalty)
        if self.seed is not None and (integer("seed", self.seed) < 0):
            raise ValueError(f"seed must be a non-negative int or None, got {self.seed}")

    @property
    def greedy(self) -> bool:
        """True when the pick is the plain argmax of the logits."""
        return self.temperature == 0 and not self.penalized and not self.logit_bias

    @property
    def penalized(self) -> bool:
        return self.repeat_penalty != 1 or self.presence_penalty != 0 or self.frequency_penalty != 0


@dataclass(frozen=True)
class Draw:
    """One sampled step's inputs: the settings, the uniform number, the recent tokens and their counts, and
    for a constrained step the bitmask of allowed tokens."""

    params: SamplingParams
    u: float
    tokens: tuple[int, ...]   # distinct tokens in the penalty window
    counts: tuple[int, ...]
    mask: bytes | None = field(default=None, repr=False)   # u32 words, little-endian (allowed_tokens)

    @property
    def on_gpu(self) -> bool:
        """Whether the GPU kernels can run this draw (else the host samples from read-back logits)."""
        return 1 <= self.top_k <= GPU_TOP_K and len(self.tokens) <= GPU_TOP_K \
            and len(self.params.logit_bias) <= GPU_TOP_K

    @property
    def top_k(self) -> int:
        """Candidates the chain keeps: one at temperature 0 (the argmax, after bias and penalties)."""
        return 1 if self.params.temperature == 0 else self.params.top_k

    def encode(self) -> bytes:
        """The draw buffer's contents (layout: DRAW_* in kernels/common.wgsl): the fixed words, then the mask if any."""
        p = self.params
        f32 = dict(zip(_DRAW_F32, (p.temperature, p.top_p, p.min_p, self.u, p.repeat_penalty,
                                   p.presence_penalty, p.frequency_penalty)))
        words = np.zeros(DRAW_WORDS, np.uint32)
        for name, v in f32.items():
            words[_DRAW[name]] = struct.unpack("<I", struct.pack("<f", v))[0]
        words[_DRAW["TOP_K"]] = self.top_k
        words[_DRAW["N_HIST"]] = len(self.tokens)
        h, c = _DRAW["HIST"], _DRAW["COUNTS"]
        words[h:h + len(self.tokens)] = self.tokens
        words[c:c + len(self.counts)] = self.counts
        n, b, v = len(p.logit_bias), _DRAW["BIAS_IDS"], _DRAW["BIAS"]
        words[_DRAW["N_BIAS"]] = n
        if n:
            words[b:b + n] = [t for t, _ in p.logit_bias]
            words[v:v + n] = np.array([x for _, x in p.logit_bias], np.float32).view(np.uint32)
        words[_DRAW["MASKED"]] = self.mask is not None
        return words.tobytes() + (self.mask or b"")


class Sampler:
    """Draws tokens from logits under `SamplingParams`, with its own seeded generator."""

    def __init__(self, params: SamplingParams):
        self.params = params
        self.rng = np.random.default_rng(params.seed)

    def next_draw(self, history: Sequence[int], mask: np.ndarray | None = None) -> Draw:
        """The next step's draw: a fresh uniform number (float32, as the GPU reads it), the penalty window, and
        `mask` (a bitmask of the tokens allowed next, copied) for a constrained step."""
        p = self.params
        tokens, counts = (), ()
        if p.penalized and p.repeat_last_n and history:
            ids, n = np.unique(np.asarray(history[-p.repeat_last_n:], dtype=np.int64), return_counts=True)
            tokens, counts = tuple(int(i) for i in ids), tuple(int(c) for c in n)
        return Draw(p, float(np.float32(self.rng.random())), tokens, counts,
                    None if mask is None else np.asarray(mask, np.uint32).tobytes())

    @staticmethod
    def penalize(logits: np.ndarray, draw: Draw) -> np.ndarray:
        """The logit bias, then repeat / presence / frequency penalties of the draw's window (llama.cpp's rule)."""
        p = draw.params
        if not draw.tokens and not p.logit_bias:
            return logits
        out = logits.astype(np.float32, copy=True)
        if p.logit_bias:
            ids = np.array([t for t, _ in p.logit_bias])
            out[ids] += np.array([x for _, x in p.logit_bias], np.float32)
        if not draw.tokens:
            return out
        ids, counts = np.asarray(draw.tokens), np.asarray(draw.counts)
        sel = out[ids]
        sel = np.where(sel <= 0, sel * np.float32(p.repeat_penalty), sel / np.float32(p.repeat_penalty))
        out[ids] = sel - counts * np.float32(p.frequency_penalty) - np.float32(p.presence_penalty)
        return out

    @classmethod
    def pick(cls, logits: np.ndarray, draw: Draw) -> int:
        """One token id from a row of logits [n_vocab], as the GPU kernels choose it."""
        p = draw.params
        x = cls.penalize(np.asarray(logits, dtype=np.float32), draw)
        if draw.mask is not None:
            x = np.where(allowed_tokens(draw.mask, x.size), x, np.float32(-np.inf))
        if p.temperature == 0:
            return int(np.argmax(x))
        ids = np.arange(x.size)
        if p.top_k and p.top_k < x.size:
            ids = np.argpartition(-x, p.top_k - 1)[:p.top_k]
        order = ids[np.lexsort((ids, -x[ids]))]   # descending, ties: the lower id first
        z = x[order].astype(np.float64)
        probs = np.exp(z - z[0])
        probs /= probs.sum()
        keep = len(order)
        if p.top_p < 1.0:
            keep = min(keep, int(np.searchsorted(np.cumsum(probs), p.top_p) + 1))
        if p.min_p > 0.0:
            keep = min(keep, max(1, int(np.sum(probs >= p.min_p * probs[0]))))
        w = np.cumsum(np.exp((z[:keep] - z[0]) / p.temperature))
        return int(order[min(int(np.searchsorted(w, draw.u * w[-1])), keep - 1)])
