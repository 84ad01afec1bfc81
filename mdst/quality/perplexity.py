"""Perplexity as llama.cpp's llama-perplexity measures it.

The whole text is tokenized once (with BOS where the model adds one) and cut into non-overlapping windows
of `ctx` tokens; each window is evaluated from an empty cache, its first token replaced by BOS where the
model adds one, and only its second half is scored: the tokens at [ctx/2 + 1, ctx) predicted from their
prefixes (ctx - 1 - ctx/2 tokens a window). PPL = exp(mean NLL); its standard error is PPL times the
standard error of the mean NLL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

if TYPE_CHECKING:
    from ..model import Model, Session

MIN_CTX = 8


def check_ctx(ctx: object) -> int:
    """`ctx` as a window length: an even int of at least MIN_CTX; ValueError otherwise."""
    if isinstance(ctx, bool) or not isinstance(ctx, (int, np.integer)) or ctx < MIN_CTX or ctx % 2:
        raise ValueError(f"ctx must be an even number of tokens, at least {MIN_CTX} (half of each window is "
                         f"context, half is scored), got {ctx!r}; llama.cpp's default is 512")
    return int(ctx)


def check_count(name: str, value: object, none_means: str) -> int | None:
    """`value` as a positive int, or None (which means `none_means`); ValueError otherwise."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive int, got {value!r}; leave it out for {none_means}")
    return value


def text_windows(model: "Model", text: str, ctx: int = 512, chunks: int | None = None) -> np.ndarray:
    """The windows llama-perplexity evaluates: int64 (n, ctx), each window's first token BOS where the model
    adds one; at most `chunks` windows (all that the text fills when None)."""
    ctx = check_ctx(ctx)
    check_count("chunks", chunks, "every window the text fills")
    tok = model.tokenizer
    if tok.add_eos:
        raise ValueError("this model's tokenizer appends an end token to every text, which the windows would "
                         "score; llama-perplexity refuses such models too")
    ids = np.asarray(model.tokenize(text, special=False), dtype=np.int64)
    if len(ids) < 2 * ctx:
        raise ValueError(f"the text tokenizes to {len(ids)} tokens; perplexity with a window of {ctx} needs at "
                         f"least {2 * ctx}: give a longer text or a smaller ctx")
    n = len(ids) // ctx if chunks is None else min(chunks, len(ids) // ctx)
    windows = ids[:n * ctx].reshape(n, ctx).copy()
    if tok.add_bos:
        windows[:, 0] = tok.bos_id
    return windows


def scored_windows(model: "Model", windows: np.ndarray,
                   batch: int | None = None) -> Iterator[Iterator[tuple[np.ndarray, np.ndarray]]]:
    """For each window in turn (consume each before the next), its (logits, targets) pieces of at most `batch`
    rows over the scored half: logits[j] predicts targets[j]; each window is evaluated from an empty cache."""
    ctx = check_ctx(windows.shape[1])
    batch = check_count("batch", batch, "the scored half of a window at once") or ctx
    if ctx > model.context_length:
        raise ValueError(f"a window of {ctx} tokens exceeds the model's context length of {model.context_length}; "
                         f"load it with context_length={ctx} or more")
    with model.session() as s:
        for w in windows:
            yield _pieces(s, w, batch)


def _pieces(session: "Session", window: np.ndarray, batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    ctx = len(window)
    first = ctx // 2
    session.reset()
    session.prefill(window[:first])   # the context half: only the cache is needed, not its logits
    # the last token predicts nothing inside the window, so it is never fed
    for a in range(first, ctx - 1, batch):
        b = min(a + batch, ctx - 1)
        yield session.feed(window[a:b]), window[a + 1:b + 1]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-probabilities, float32, the normalizer summed in float64 as llama.cpp does."""
    x = np.asarray(logits, dtype=np.float32)
    shifted = x - x.max(axis=1, keepdims=True)
    shifted -= np.log(np.exp(shifted).sum(axis=1, dtype=np.float64)).astype(np.float32)[:, None]
    return shifted


def token_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Negative log-likelihood of each target under its row of logits, float64."""
    x = np.asarray(logits, dtype=np.float32)
    m = x.max(axis=1)
    lse = m + np.log(np.exp(x - m[:, None]).sum(axis=1, dtype=np.float64))
    return lse - x[np.arange(len(x)), targets]


def mean_and_se(values: np.ndarray) -> tuple[float, float]:
    """Mean and its standard error (population variance over n - 1, as llama.cpp computes it)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return (float(v.mean()) if v.size else 0.0), 0.0
    return float(v.mean()), float(np.sqrt(v.var() / (v.size - 1)))


@dataclass(frozen=True)
class PerplexityResult:
    """Per-token NLL of the scored tokens, window after window, and the perplexity they give."""

    nll: np.ndarray
    windows: int
    ctx: int

    @property
    def ppl(self) -> float:
        """exp(mean NLL)."""
        return float(np.exp(mean_and_se(self.nll)[0]))

    @property
    def se(self) -> float:
        """The standard error of ppl (ppl times that of the mean NLL)."""
        mean, se = mean_and_se(self.nll)
        return float(np.exp(mean) * se)

    @property
    def tokens(self) -> int:
        """Scored tokens."""
        return int(self.nll.size)


def perplexity(model: "Model", text: str, ctx: int = 512, chunks: int | None = None, batch: int | None = None,
               on_window: Callable[[PerplexityResult], None] | None = None) -> PerplexityResult:
    """llama-perplexity's PPL of `model` on `text` (windows of `ctx` tokens, at most `chunks` of them);
    `on_window` gets the result so far after each window."""
    windows = text_windows(model, text, ctx, chunks)
    return windows_perplexity(model, windows, batch, on_window)


def windows_perplexity(model: "Model", windows: np.ndarray, batch: int | None = None,
                       on_window: Callable[[PerplexityResult], None] | None = None) -> PerplexityResult:
    """PPL over windows made by `text_windows`."""
    nll: list[np.ndarray] = []
    result = PerplexityResult(np.zeros(0), 0, windows.shape[1])
    for i, pieces in enumerate(scored_windows(model, windows, batch)):
        nll.extend(token_nll(logits, targets) for logits, targets in pieces)
        result = PerplexityResult(np.concatenate(nll), i + 1, windows.shape[1])
        if on_window is not None:
            on_window(result)
    return result
