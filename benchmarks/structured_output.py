"""Constrained against free decode: tok/s of greedy generation free, on the host pick path (logprobs, the same
readback without a mask), and under a JSON schema; and the grammar engine's time per token. JSON, one line.

The schema (an array of at least 64 short strings) keeps the model writing for all `--tokens`; the mask time is
measured afterwards by replaying the constrained tokens through a fresh Constraint (llguidance's bitmask, and
the bitmask applied to a row of logits).

Usage: python benchmarks/structured_output.py [MODEL] [--device cpu|gpu] [--tokens 48] [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time

import numpy as np

SCHEMA = {"type": "array", "minItems": 64, "items": {"type": "string", "maxLength": 12}}
PROMPT = "A JSON list of fruit names:"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model", nargs="?", default="smollm2-135m")
    ap.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import mdst
    from mdst.text.grammar import Constraint, grammar_for

    fmt = {"type": "json_schema", "json_schema": {"name": "list", "schema": SCHEMA}}
    runs = {"free": {}, "host_pick": {"logprobs": True}, "json_schema": {"response_format": fmt}}
    with mdst.load(args.model, device=args.device, context_length=256) as m:
        rates: dict[str, list[float]] = {name: [] for name in runs}
        generated: dict[str, int] = {}
        for _ in range(args.repeat):
            for name, options in runs.items():
                text = m.generate(PROMPT, max_tokens=args.tokens, **options)
                rates[name].append(m.last_stats["decode_tokens_per_s"])
                generated[name] = m.last_stats["generated_tokens"]
        tokens = m.tokenize(text, add_bos=False)   # the constrained text; its tokens as the engine fed them
        constraint = Constraint(grammar_for(fmt), m.tokenizer)
        logits = np.random.default_rng(0).standard_normal(m.n_vocab).astype(np.float32)
        fill, masked = [], []
        for tok in tokens:
            t0 = time.perf_counter()
            constraint.bitmask()
            t1 = time.perf_counter()
            constraint.mask(logits)
            fill.append(t1 - t0)
            masked.append(time.perf_counter() - t1)
            constraint.advance(tok)
        print(json.dumps({
            "benchmark": "structured_output", "date": datetime.date.today().isoformat(),
            "machine": platform.node(), "backend": m.backend, "model": args.model, "n_vocab": m.n_vocab,
            "generated_tokens": generated,
            "decode_tok_s": {name: round(statistics.median(r), 2) for name, r in rates.items()},
            "mask_ms": {"bitmask_median": round(statistics.median(fill) * 1e3, 4),
                        "bitmask_mean": round(statistics.mean(fill) * 1e3, 4),
                        "bitmask_max": round(max(fill) * 1e3, 4),
                        "apply_median": round(statistics.median(masked) * 1e3, 4), "steps": len(fill)},
        }))


if __name__ == "__main__":
    main()
