"""Token sampling: the settings users know from llama.cpp, checked, and the chain that applies them.

Order as in llama.cpp's default chain: penalties -> top-k -> top-p -> min-p -> temperature -> draw.
The chain runs on the candidates that top-k leaves; with temperature 0 and no penalties the
pick is the argmax, which the GPU computes itself (only the token id is read back).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


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

    def __post_init__(self) -> None:
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
        return self.temperature == 0 and not self.penalized

    @property
    def penalized(self) -> bool:
        return self.repeat_penalty != 1 or self.presence_penalty != 0 or self.frequency_penalty != 0


class Sampler:
    """Draws tokens from logits under `SamplingParams`, with its own seeded generator."""

    def __init__(self, params: SamplingParams):
        self.params = params
        self.rng = np.random.default_rng(params.seed)

    def penalize(self, logits: np.ndarray, history: Sequence[int]) -> np.ndarray:
        """Repeat / presence / frequency penalties over the last repeat_last_n tokens (llama.cpp's rule)."""
        p = self.params
        if not p.penalized or not history or p.repeat_last_n == 0:
            return logits
        recent = np.asarray(history[-p.repeat_last_n:], dtype=np.int64)
        ids, counts = np.unique(recent, return_counts=True)
        out = logits.astype(np.float32, copy=True)
        sel = out[ids]
        sel = np.where(sel <= 0, sel * p.repeat_penalty, sel / p.repeat_penalty)
        out[ids] = sel - counts * p.frequency_penalty - p.presence_penalty
        return out

    def pick(self, logits: np.ndarray, history: Sequence[int] = ()) -> int:
        """One token id from a row of logits [n_vocab]."""
        p = self.params
        x = self.penalize(np.asarray(logits, dtype=np.float32), history)
        if p.temperature == 0:
            return int(np.argmax(x))
        ids = np.arange(x.size)
        if p.top_k and p.top_k < x.size:
            ids = np.argpartition(-x, p.top_k - 1)[:p.top_k]
        order = ids[np.argsort(-x[ids], kind="stable")]
        z = x[order].astype(np.float64)
        probs = np.exp(z - z[0])
        probs /= probs.sum()
        keep = len(order)
        if p.top_p < 1.0:
            keep = min(keep, int(np.searchsorted(np.cumsum(probs), p.top_p) + 1))
        if p.min_p > 0.0:
            keep = min(keep, max(1, int(np.sum(probs >= p.min_p * probs[0]))))
        z = z[:keep] / p.temperature
        w = np.exp(z - z[0])
        return int(order[self.rng.choice(keep, p=w / w.sum())])
