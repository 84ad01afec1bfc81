"""Log-probabilities of generated tokens: each token's and the top k alternatives', from a row of logits.

They are the model's own distribution, log_softmax(logits), before logit bias, penalties and
temperature (what `Model.logits` gives), so they do not depend on the sampling settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

MAX_TOP_LOGPROBS = 20   # OpenAI's bound on top_logprobs


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token: its id, bytes and log-probability, and the k most likely tokens at its position."""

    token: int
    bytes: bytes
    logprob: float
    top: tuple[tuple[int, float], ...]   # (token id, log-probability), most likely first, ties: lower id first

    @property
    def text(self) -> str:
        """The token's text (bytes that are not whole UTF-8 characters show as U+FFFD)."""
        return self.bytes.decode("utf-8", errors="replace")


class Piece(str):
    """Generated text with the log-probabilities of the tokens that produced it (`logprobs`)."""

    logprobs: tuple[TokenLogprob, ...]

    def __new__(cls, text: str, logprobs: tuple[TokenLogprob, ...]) -> "Piece":
        piece = super().__new__(cls, text)
        piece.logprobs = logprobs
        return piece


def check_top_logprobs(logprobs: Any, top_logprobs: Any) -> int | None:
    """How many alternatives to report per token, or None when logprobs are off; errors for bad values."""
    if not isinstance(logprobs, bool):
        raise TypeError(f"logprobs must be a bool, got {type(logprobs).__name__}")
    if isinstance(top_logprobs, bool) or not isinstance(top_logprobs, int):
        raise TypeError(f"top_logprobs must be an int, got {type(top_logprobs).__name__}")
    if not 0 <= top_logprobs <= MAX_TOP_LOGPROBS:
        raise ValueError(f"top_logprobs must be in [0, {MAX_TOP_LOGPROBS}], got {top_logprobs}")
    if top_logprobs and not logprobs:
        raise ValueError("top_logprobs needs logprobs=True")
    return top_logprobs if logprobs else None


def score(logits: np.ndarray, token: int, k: int, token_bytes: Callable[[int], bytes]) -> TokenLogprob:
    """`token`'s log-probability under log_softmax(logits) and the k largest (exp in float32, sums in float64)."""
    x = np.asarray(logits, np.float32)
    m = float(x.max())
    lse = m + math.log(float(np.exp(x - np.float32(m)).sum(dtype=np.float64)))
    top: tuple[tuple[int, float], ...] = ()
    if k:
        ids = np.argpartition(-x, k - 1)[:k] if k < x.size else np.arange(x.size)
        ids = ids[np.lexsort((ids, -x[ids]))]
        top = tuple((int(i), float(x[i]) - lse) for i in ids)
    return TokenLogprob(int(token), token_bytes(int(token)), float(x[token]) - lse, top)
