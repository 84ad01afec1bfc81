"""Prefill and decode speed of a loaded model (the engine of `mdst bench` and benchmarks/)."""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .model import Model


def decode_weight_bytes(model: "Model") -> int:
    """Weight bytes one decode step reads: every matrix a matmul reads in full, one row of each embedding."""
    g = model.engine.graphs["last"]
    total = 0
    for n in g.nodes:
        for name in n.weights:
            t = model.gguf.tensors[name]
            total += t.row_bytes if n.op == "embed" else t.nbytes if n.op == "matmul" else 0
    return total


def bench(model: "Model", prompt_tokens: int = 512, gen_tokens: int = 128, repeat: int = 3,
          seed: int = 0, profile: bool = False) -> dict[str, Any]:
    """Median prefill and decode speed over `repeat` runs on random token ids (greedy decode)."""
    if prompt_tokens < 1 or gen_tokens < 1 or repeat < 1:
        raise ValueError("prompt_tokens, gen_tokens and repeat must be >= 1")
    if prompt_tokens + gen_tokens > model.context_length:
        raise ValueError(f"prompt_tokens + gen_tokens = {prompt_tokens + gen_tokens} exceeds the context length "
                         f"{model.context_length}; load with a larger context_length")
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, model.n_vocab, prompt_tokens).tolist()

    def once(n_prompt: int, n_gen: int) -> tuple[float, float]:
        with model.session() as s:
            t0 = time.perf_counter()
            tok = int(s.prefill(ids[:n_prompt], greedy=True))
            t1 = time.perf_counter()
            for tok in s.decode(tok, n_gen, lambda: "argmax", ahead=True):  # as generate() decodes
                pass
            t2 = time.perf_counter()
        return t1 - t0, t2 - t1

    once(min(prompt_tokens, 8), 2)  # compile pipelines and plans outside the timing
    runs = [once(prompt_tokens, gen_tokens) for _ in range(repeat)]
    prefill_s = statistics.median(r[0] for r in runs)
    decode_s = statistics.median(r[1] for r in runs)
    eng = model.engine
    wbytes = decode_weight_bytes(model)
    out: dict[str, Any] = {
        "model": model.path, "architecture": model.architecture, "backend": model.backend,
        "precision": model.precision, "context_length": model.context_length,
        "prompt_tokens": prompt_tokens, "gen_tokens": gen_tokens, "repeat": repeat,
        "prefill_tokens_per_s": prompt_tokens / prefill_s,
        "decode_tokens_per_s": gen_tokens / decode_s,
        "decode_ms_per_token": 1000 * decode_s / gen_tokens,
        "decode_weight_bytes": wbytes,
        "effective_gb_per_s": wbytes * gen_tokens / decode_s / 1e9,
        "runs": [{"prefill_s": a, "decode_s": b} for a, b in runs],
    }
    if eng.kind == "gpu":
        out["dispatches_per_token"] = len(eng.plan("last", 1, "argmax").dispatches)
        out["gpu_bytes"] = dict(eng.bytes_by_kind)
        out["peak_gpu_bytes"] = eng.peak_bytes
        out["adapter"] = model.device_profile.as_dict()
        if profile:
            from .profile import profile_step
            out["profile"] = {"decode": profile_step(model, 1),
                              "prefill": profile_step(model, min(prompt_tokens, eng.chunk))}
    return out
