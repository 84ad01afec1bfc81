"""Prefill and decode speed of a loaded model, alone and over sequences decoding together (the engine of `mdst
bench` and benchmarks/)."""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..errors import DeviceError

if TYPE_CHECKING:
    from ..model import Model


def decode_weight_bytes(model: "Model") -> int:
    """Weight bytes one decode step reads: every matrix a matmul reads in full, one row of each embedding, the
    chosen experts of each expert tensor."""
    g = model.engine.graphs["last"]
    t = model.gguf.tensors
    return (sum(t[n].row_bytes for n in g.embedding_names()) + sum(t[n].nbytes for n in g.matmul_names())
            + sum(t[n].nbytes // t[n].shape[2] * k for n, k in g.expert_weights().items()))


def check_bench_args(prompt_tokens: int, gen_tokens: int, repeat: int) -> None:
    """ValueError unless the run sizes are positive (checked before a model is loaded, too)."""
    if prompt_tokens < 1 or gen_tokens < 1 or repeat < 1:
        raise ValueError("prompt_tokens, gen_tokens and repeat must be >= 1")


def check_fits(model: "Model", prompt_tokens: int, gen_tokens: int, repeat: int) -> None:
    """check_bench_args, and ValueError unless a run's prompt and tokens fit the model's context."""
    check_bench_args(prompt_tokens, gen_tokens, repeat)
    if prompt_tokens + gen_tokens > model.context_length:
        raise ValueError(f"prompt_tokens + gen_tokens = {prompt_tokens + gen_tokens} exceeds the context length "
                         f"{model.context_length}; load with a larger context_length")


def bench(model: "Model", prompt_tokens: int = 512, gen_tokens: int = 128, repeat: int = 3,
          seed: int = 0, profile: bool = False, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Median prefill and decode speed over `repeat` runs on random token ids (greedy decode), in one session
    emptied before each run, after a warm-up run that compiles and binds the plans the runs use.

    progress, if given, is called with each phase about to run ("run 2/3: decode 128 tokens"), outside the timing.
    """
    check_fits(model, prompt_tokens, gen_tokens, repeat)
    eng = model.engine
    if profile and (eng.kind != "gpu" or not eng.gpu.profile.timestamps):
        raise DeviceError("profiling needs a WebGPU adapter with the timestamp-query feature; this model runs on "
                          f"{model.backend}")
    say = progress or (lambda phase: None)
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, model.n_vocab, prompt_tokens).tolist()

    def once(s: Any, n_gen: int, run: str) -> tuple[float, float]:
        s.reset()   # one session's cache, emptied: as llama-bench clears one context between repetitions
        say(f"{run}: prefill {prompt_tokens} tokens")
        t0 = time.perf_counter()
        tok = int(s.prefill(ids, greedy=True))
        prefill_s = time.perf_counter() - t0
        say(f"{run}: decode {n_gen} tokens")
        t1 = time.perf_counter()
        for tok in s.decode(tok, n_gen, lambda: "argmax", ahead=True):  # as generate() decodes
            pass
        decode_s = time.perf_counter() - t1
        return prefill_s, decode_s

    with model.session() as s:
        once(s, 2, "warm-up")   # compile and bind the very plans the runs use, outside the timing
        runs = [once(s, gen_tokens, f"run {i + 1}/{repeat}") for i in range(repeat)]
    prefill_s = statistics.median(r[0] for r in runs)
    decode_s = statistics.median(r[1] for r in runs)
    wbytes = decode_weight_bytes(model)
    out: dict[str, Any] = {
        "model": model.path, "architecture": model.architecture, "backend": model.backend,
        "kv_type": model.kv_type, "activations": model.activations, "context_length": model.context_length,
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
            say("profile: GPU time per dispatch")
            out["profile"] = {"decode": profile_step(model, 1),
                              "prefill": profile_step(model, min(prompt_tokens, eng.chunk))}
    return out


def check_batch_sizes(sizes: list[int]) -> None:
    """ValueError unless every batch size is positive (checked before a model is loaded, too)."""
    if not sizes or any(n < 1 for n in sizes):
        raise ValueError(f"batch sizes must be >= 1, got {sizes}")


def bench_batch(model: "Model", sizes: list[int], prompt_tokens: int = 128, gen_tokens: int = 128, repeat: int = 3,
                seed: int = 0, progress: Callable[[str], None] | None = None) -> dict[int, dict[str, float]]:
    """Aggregate decode speed of n sequences stepping together (`Model.batch`), for each n in sizes, as
    llama-batched-bench measures it: n random prompts of prompt_tokens prefilled (not timed), then gen_tokens
    greedy steps of all n timed; the median of `repeat` runs after one of two steps that compiles n's plan."""
    from ..text.sampling import SamplingParams

    check_fits(model, prompt_tokens, gen_tokens, repeat)
    check_batch_sizes(sizes)
    say = progress or (lambda phase: None)
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(0, model.n_vocab, prompt_tokens).tolist() for _ in range(max(sizes))]

    def once(n: int, steps: int, run: str) -> float:
        batch = model.batch(n)
        try:
            say(f"{n} sequences, {run}: prefill {n} x {prompt_tokens} tokens")
            for ids in prompts[:n]:
                batch.add(ids, SamplingParams())
            say(f"{n} sequences, {run}: decode {steps} steps")
            t0 = time.perf_counter()
            for _ in range(steps):
                batch.step()
            return time.perf_counter() - t0
        finally:
            batch.close()

    out = {}
    for n in sizes:
        once(n, 2, "warm-up")
        s = statistics.median(once(n, gen_tokens, f"run {i + 1}/{repeat}") for i in range(repeat))
        out[n] = {"aggregate_tokens_per_s": n * gen_tokens / s, "per_sequence_tokens_per_s": gen_tokens / s}
    return out
