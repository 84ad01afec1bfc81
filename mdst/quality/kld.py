"""KL divergence of a model against a reference model's saved log-probabilities, as llama-perplexity reports it.

The reference run keeps, for every scored token of the windows (see perplexity.py), its top-k
log-probabilities (k = 32 by default), the log of the probability left outside them, and the NLL of the
token that came; llama.cpp keeps every log-probability, quantized to 16 bits, in a file the size of the
vocabulary per token. KLD(base || model) is computed over the top k plus one bucket for the rest: a lower
bound on the full-vocabulary value that misses only how the model spreads the rest (the top 32 hold nearly
all of the mass of a trained model's next-token distribution).
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Callable

import numpy as np

from ..errors import BaseFileError
from .perplexity import PerplexityResult, log_softmax, mean_and_se, scored_windows, text_windows

if TYPE_CHECKING:
    from ..model import Model

TOP_K = 32
FORMAT = "mdst-kld-base-1"
PERCENTILES = (99.9, 99.0, 95.0, 90.0, 75.0, 50.0, 25.0, 10.0, 5.0, 1.0, 0.1)


@dataclass(frozen=True)
class BaseLogProbs:
    """The reference model's log-probabilities over the scored tokens of `windows`, window after window."""

    windows: np.ndarray     # int (n, ctx): the token ids evaluated
    n_vocab: int
    top_ids: np.ndarray     # int32 (tokens, k), most probable first
    top_logp: np.ndarray    # float32 (tokens, k)
    rest_logp: np.ndarray   # float32 (tokens,): log of the probability outside the top k
    nll: np.ndarray         # float64 (tokens,): NLL of the token that came

    @property
    def ctx(self) -> int:
        """Window length."""
        return int(self.windows.shape[1])

    def save(self, file: str | os.PathLike | BinaryIO) -> None:
        """Write a compressed .npz to `file`: a path (the name kept as given, whatever its suffix) or a binary file."""
        if isinstance(file, (str, os.PathLike)):
            with open(file, "wb") as f:
                return self.save(f)
        np.savez_compressed(file, format=np.array(FORMAT), windows=self.windows.astype(np.int32),
                            n_vocab=np.array(self.n_vocab), top_ids=self.top_ids, top_logp=self.top_logp,
                            rest_logp=self.rest_logp, nll=self.nll)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BaseLogProbs":
        """Read a file `save` wrote; BaseFileError if it is not one."""
        try:
            with np.load(path, allow_pickle=False) as z:
                if "format" not in z or str(z["format"]) != FORMAT:
                    raise BaseFileError(f"{path} is not an mdst KL-divergence base file ({FORMAT}); make one with "
                                        "`mdst perplexity BASE_MODEL TEXT --kl-divergence-base FILE`")
                base = cls(z["windows"].astype(np.int64), int(z["n_vocab"]), z["top_ids"], z["top_logp"],
                           z["rest_logp"], z["nll"])
        except BaseFileError:
            raise
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            raise BaseFileError(f"cannot read the KL-divergence base file {path}: {e}") from None
        n, ctx = base.windows.shape if base.windows.ndim == 2 else (0, 0)
        t = n * (ctx - 1 - ctx // 2)
        if (not n or base.nll.shape != (t,) or base.rest_logp.shape != (t,) or base.top_ids.ndim != 2
                or base.top_ids.shape[0] != t or base.top_ids.shape != base.top_logp.shape):
            raise BaseFileError(f"{path} is truncated or inconsistent (its arrays do not match its windows); "
                                "make it again")
        return base

    def check_matches(self, windows: np.ndarray, n_vocab: int) -> None:
        """BaseFileError unless `windows` and the vocabulary size are the ones this file was made for."""
        if n_vocab != self.n_vocab:
            raise BaseFileError(f"the base file was made with a vocabulary of {self.n_vocab} tokens, this model has "
                                f"{n_vocab}; KL divergence compares models that share a tokenizer")
        if windows.shape != self.windows.shape:
            raise BaseFileError(f"the base file holds {self.windows.shape[0]} windows of {self.ctx} tokens, this run "
                                f"has {windows.shape[0]} of {windows.shape[1]}; use the same text, ctx and chunks "
                                "(ctx and chunks default to the base file's)")
        if not np.array_equal(windows, self.windows):
            raise BaseFileError("the base file was made from other tokens (another text, or a model that tokenizes "
                                "it differently); use the text and tokenizer it was made with")


def base_rows(logits: np.ndarray, targets: np.ndarray,
              k: int = TOP_K) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(top_ids, top_logp, rest_logp, nll) of rows of reference logits and the tokens that came."""
    logp = log_softmax(logits)
    rows = np.arange(len(logp))[:, None]
    part = np.argpartition(-logp, k - 1, axis=1)[:, :k]
    # most probable first; among equal values the lower id first, as argmax picks
    order = np.lexsort((part, -logp[rows, part]), axis=1)
    top_ids = np.take_along_axis(part, order, axis=1).astype(np.int32)
    top_logp = logp[rows, top_ids]
    nll = -logp[rows[:, 0], targets].astype(np.float64)
    return top_ids, top_logp, _rest_logp(logp, top_ids), nll


def _rest_logp(logp: np.ndarray, top_ids: np.ndarray) -> np.ndarray:
    """log of the probability outside `top_ids`, per row (overwrites those entries of logp)."""
    np.put_along_axis(logp, top_ids.astype(np.int64), -np.inf, axis=1)
    m = logp.max(axis=1)
    return (m + np.log(np.exp(logp - m[:, None]).sum(axis=1, dtype=np.float64))).astype(np.float32)


def save_base(model: "Model", text: str, path: str | os.PathLike, ctx: int = 512, chunks: int | None = None,
              batch: int | None = None, k: int = TOP_K,
              on_window: Callable[[PerplexityResult], None] | None = None) -> tuple[BaseLogProbs, PerplexityResult]:
    """Run the reference `model` over the windows of `text`, save its log-probabilities to `path`; returns them
    and its perplexity (`on_window` gets the PPL so far after each window)."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < model.n_vocab:
        raise ValueError(f"k (--top-k) must be an int in [1, {model.n_vocab}), got {k!r}")
    windows = text_windows(model, text, ctx, chunks)
    parts: list[tuple[np.ndarray, ...]] = []
    result = PerplexityResult(np.zeros(0), 0, windows.shape[1])
    with open(path, "wb") as out:   # opened first: an unwritable path fails before the run, not after
        try:
            for i, pieces in enumerate(scored_windows(model, windows, batch)):
                parts.extend(base_rows(logits, targets, k) for logits, targets in pieces)
                result = PerplexityResult(np.concatenate([p[3] for p in parts]), i + 1, windows.shape[1])
                if on_window is not None:
                    on_window(result)
            top_ids, top_logp, rest_logp, nll = (np.concatenate(a) for a in zip(*parts))
            base = BaseLogProbs(windows, model.n_vocab, top_ids, top_logp, rest_logp, nll)
            base.save(out)
        except BaseException:
            out.close()
            os.unlink(path)   # no truncated base file left behind
            raise
    return base, result


@dataclass(frozen=True)
class KldResult:
    """Per scored token: KLD(base || model), model p - base p of the token that came, both NLLs, top-1 agreement."""

    kld: np.ndarray
    p_diff: np.ndarray
    nll: np.ndarray
    nll_base: np.ndarray
    same_top: np.ndarray
    windows: int

    def summary(self) -> dict[str, float | int | dict[str, float]]:
        """llama-perplexity's statistics: PPL of both (their ratio), KLD and delta-p (mean, SE, percentiles),
        RMS delta-p, and how often the two models' most probable tokens agree ("same top p")."""
        n = self.kld.size
        log_ppl, log_ppl_se = mean_and_se(self.nll)
        log_base, log_base_se = mean_and_se(self.nll_base)
        cov = float(np.cov(self.nll, self.nll_base, ddof=0)[0, 1] / (n - 1)) if n > 1 else 0.0
        kld, kld_se = mean_and_se(self.kld)
        dp, dp_se = mean_and_se(self.p_diff)
        mse, mse_se = mean_and_se(self.p_diff ** 2)
        rms = float(np.sqrt(mse))
        same = float(self.same_top.mean())
        return {
            "windows": self.windows, "tokens": n,
            "ppl": float(np.exp(log_ppl)), "ppl_se": float(np.exp(log_ppl) * log_ppl_se),
            "ppl_base": float(np.exp(log_base)), "ppl_base_se": float(np.exp(log_base) * log_base_se),
            "ln_ppl_ratio": log_ppl - log_base,
            "ln_ppl_ratio_se": float(np.sqrt(max(log_ppl_se ** 2 + log_base_se ** 2 - 2 * cov, 0.0))),
            "kld_mean": kld, "kld_se": kld_se, "kld_max": float(self.kld.max()), "kld_min": float(self.kld.min()),
            "kld_percentiles": _percentiles(self.kld),
            "p_diff_mean": dp, "p_diff_se": dp_se, "p_diff_max": float(self.p_diff.max()),
            "p_diff_min": float(self.p_diff.min()), "p_diff_percentiles": _percentiles(self.p_diff),
            "p_diff_rms": rms, "p_diff_rms_se": 0.5 / rms * mse_se if rms > 0 else 0.0,
            "same_top": same, "same_top_se": float(np.sqrt(same * (1 - same) / (n - 1))) if n > 1 else 0.0,
        }


def _percentiles(values: np.ndarray) -> dict[str, float]:
    """The percentiles llama-perplexity prints (linear interpolation, as its `percentile`)."""
    return {f"{q:.1f}": float(v) for q, v in zip(PERCENTILES, np.percentile(values, PERCENTILES))}


def kld_rows(logits: np.ndarray, targets: np.ndarray, top_ids: np.ndarray, top_logp: np.ndarray,
             rest_logp: np.ndarray, nll_base: np.ndarray) -> tuple[np.ndarray, ...]:
    """(kld, p_diff, nll, same_top) of rows of the model's logits against the base's saved rows."""
    logp = log_softmax(logits)
    rows = np.arange(len(logp))
    nll = -logp[rows, targets].astype(np.float64)
    same_top = np.argmax(logits, axis=1) == top_ids[:, 0]
    top = np.take_along_axis(logp, top_ids.astype(np.int64), axis=1).astype(np.float64)
    rest = _rest_logp(logp, top_ids).astype(np.float64)
    p_top, lp_top = np.exp(top_logp.astype(np.float64)), top_logp.astype(np.float64)
    p_rest, lp_rest = np.exp(rest_logp.astype(np.float64)), rest_logp.astype(np.float64)
    kld = (p_top * (lp_top - top)).sum(axis=1) + np.where(p_rest > 0, p_rest * (lp_rest - rest), 0.0)
    return kld, np.exp(-nll) - np.exp(-nll_base), nll, same_top


def kl_divergence(model: "Model", text: str, base: BaseLogProbs, batch: int | None = None,
                  chunks: int | None = None, ctx: int | None = None,
                  on_window: Callable[[KldResult], None] | None = None) -> KldResult:
    """KLD of `model` against the reference log-probabilities `base` over the same windows of `text` (ctx and
    chunks default to the base's; BaseFileError if the windows differ); `on_window` gets the result so far."""
    windows = text_windows(model, text, base.ctx if ctx is None else ctx,
                           len(base.windows) if chunks is None else chunks)
    base.check_matches(windows, model.n_vocab)
    parts: list[tuple[np.ndarray, ...]] = []
    at = 0
    result = KldResult(*(np.zeros(0),) * 5, windows=0)
    for i, pieces in enumerate(scored_windows(model, windows, batch)):
        for logits, targets in pieces:
            s = slice(at, at + len(logits))
            parts.append(kld_rows(logits, targets, base.top_ids[s], base.top_logp[s], base.rest_logp[s],
                                  base.nll[s]) + (base.nll[s],))
            at += len(logits)
        kld, p_diff, nll, same_top, nll_base = (np.concatenate(a) for a in zip(*parts))
        result = KldResult(kld, p_diff, nll, nll_base, same_top, i + 1)
        if on_window is not None:
            on_window(result)
    return result
