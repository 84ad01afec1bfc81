"""Perplexity and KL divergence, mdst beside llama.cpp (llama-cpp-python, all logits) on the same windows. JSON lines.

For each packaged model, its file and an F32 copy (every tensor dequantized: the reference): llama-perplexity's
PPL of both through mdst (`mdst.quality`) and through llama.cpp's CPU path, over the same windows of numpy's
license text (mdst's tokens; "llama_cpp_tokens_match" says whether llama.cpp tokenizes the text the same);
then the KLD of the file against its F32 copy: mdst's from the saved top-k base file, llama.cpp's from its two
logits both over the same top-k plus a rest bucket ("kld_topk") and over the whole vocabulary ("kld_full").
Usage: python benchmarks/perplexity_vs_llamacpp.py [--models smollm2-135m,gemma3-270m] [--ctx 512]
                                                   [--chunks 4] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def llama_cpp_side(path: str, ref: str, windows: np.ndarray) -> dict[str, dict[str, float]]:
    """llama.cpp's PPL of `path` and of `ref`, and the KLD of `path` against `ref`, over the windows."""
    from mdst.dev import llamacpp
    from mdst.quality.kld import KldResult, base_rows, kld_rows
    from mdst.quality.perplexity import PerplexityResult, log_softmax

    first = windows.shape[1] // 2
    t0 = time.perf_counter()
    rows, full = [], []
    for logits, ref_logits in zip(llamacpp.windows_logits(path, windows), llamacpp.windows_logits(ref, windows)):
        targets = windows[len(rows)][first + 1:]
        q, p = logits[first:-1], ref_logits[first:-1]
        top_ids, top_logp, rest_logp, nll_ref = base_rows(p, targets)
        rows.append(kld_rows(q, targets, top_ids, top_logp, rest_logp, nll_ref) + (nll_ref,))
        lp, lq = log_softmax(p).astype(np.float64), log_softmax(q).astype(np.float64)
        full.append((np.exp(lp) * (lp - lq)).sum(axis=1))
    kld, p_diff, nll, same_top, nll_ref = (np.concatenate(a) for a in zip(*rows))
    s = KldResult(kld, p_diff, nll, nll_ref, same_top, len(windows)).summary()
    seconds = round(time.perf_counter() - t0, 1)
    ref_ppl = PerplexityResult(nll_ref, len(windows), windows.shape[1])
    return {"ppl": {"ppl": s["ppl"], "ppl_se": s["ppl_se"]}, "ref_ppl": {"ppl": ref_ppl.ppl, "ppl_se": ref_ppl.se},
            "kld": {**kld_figures(s), "kld_full": float(np.concatenate(full).mean()), "seconds_both_files": seconds}}


def kld_figures(s: dict) -> dict[str, float]:
    """The KLD summary's headline figures."""
    return {"kld_topk": s["kld_mean"], "kld_se": s["kld_se"], "kld_99": s["kld_percentiles"]["99.0"],
            "same_top": s["same_top"], "p_diff_rms": s["p_diff_rms"], "ln_ppl_ratio": s["ln_ppl_ratio"]}


def llama_cpp_tokens(path: str, text: str) -> list[int]:
    """llama.cpp's tokens of the text, BOS as the model says, special tokens not parsed (llama-perplexity's)."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    return llm.tokenize(text.encode(), add_bos=True, special=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", default="smollm2-135m,gemma3-270m")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cache", default=os.environ.get("MDST_BENCH_CACHE", str(Path.home() / ".cache" / "mdst-bench")))
    args = ap.parse_args()

    import mdst
    from mdst.dev import llamacpp
    from mdst.dev.texts import license_text
    from mdst.packaged import resolve_model_path
    from mdst.quality import kl_divergence, save_base, text_windows

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    text = license_text()
    for name in filter(None, args.models.split(",")):
        path = str(resolve_model_path(name))
        ref = str(llamacpp.f32_copy(path, cache))
        common = {"model": name, "ctx": args.ctx, "device": args.device}
        with tempfile.TemporaryDirectory() as tmp:
            with mdst.load(ref, device=args.device, context_length=args.ctx) as model:
                windows = text_windows(model, text, args.ctx, args.chunks)
                ids = model.tokenize(text, special=False)
                t0 = time.perf_counter()
                base, ref_ppl = save_base(model, text, Path(tmp) / "ref.kld", args.ctx, args.chunks)
                ref_s = time.perf_counter() - t0
            with mdst.load(path, device=args.device, context_length=args.ctx) as model:
                t0 = time.perf_counter()
                s = kl_divergence(model, text, base).summary()
                q_s = time.perf_counter() - t0
        common.update(windows=len(windows), tokens=ref_ppl.tokens,
                      llama_cpp_tokens_match=llama_cpp_tokens(path, text) == ids)
        llama = llama_cpp_side(path, ref, windows)
        for engine, file, figures in [
                ("mdst", "F32 copy", {"ppl": ref_ppl.ppl, "ppl_se": ref_ppl.se, "seconds": round(ref_s, 1)}),
                ("llama.cpp", "F32 copy", llama["ref_ppl"]),
                ("mdst", Path(path).name, {"ppl": s["ppl"], "ppl_se": s["ppl_se"], "seconds": round(q_s, 1)}),
                ("llama.cpp", Path(path).name, llama["ppl"]),
                ("mdst", f"KLD {Path(path).name} vs F32 copy", kld_figures(s)),
                ("llama.cpp", f"KLD {Path(path).name} vs F32 copy", llama["kld"])]:
            print(json.dumps({**common, "engine": engine, "file": file, **figures}), flush=True)


if __name__ == "__main__":
    main()
