"""Constrained against free decode: tok/s of greedy generation free (one step ahead), on the host pick path
(logprobs: the logits read back, no mask), under a JSON schema with the mask on the GPU (the bitmask uploaded
with each step's draw, only the token read back) and under the same schema with logprobs (the logits read back,
the mask applied on the host); decode's CPU time per token (all of the process's threads: on a shared machine
a steadier measure of the work than tok/s); and the grammar engine's and the host's masked pick's time per
token. JSON, one line.

The schema (an array of at least 64 short strings) keeps the model writing for all `--tokens`; the mask time is
measured afterwards by replaying the constrained tokens through a fresh Constraint (llguidance's bitmask, and
Sampler.pick on a row of logits with and without that bitmask).

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
    from mdst.text.sampling import Sampler, SamplingParams

    fmt = {"type": "json_schema", "json_schema": {"name": "list", "schema": SCHEMA}}
    runs = {"free": {}, "host_pick": {"logprobs": True}, "json_schema": {"response_format": fmt},
            "json_schema_host_mask": {"response_format": fmt, "logprobs": True}}
    with mdst.load(args.model, device=args.device, context_length=256) as m:
        rates: dict[str, list[float]] = {name: [] for name in runs}
        cpu: dict[str, list[float]] = {name: [] for name in runs}
        generated: dict[str, int] = {}
        texts: dict[str, str] = {}
        for _ in range(args.repeat):
            for name, options in runs.items():
                pieces = m.generate(PROMPT, max_tokens=args.tokens, stream=True, **options)
                first = str(next(pieces))
                c0 = time.process_time()   # after the first token: decode's CPU time, all threads (lavapipe's too)
                texts[name] = first + "".join(str(p) for p in pieces)
                steps = m.last_stats["generated_tokens"] - 1
                cpu[name].append((time.process_time() - c0) / max(1, steps))
                rates[name].append(m.last_stats["decode_tokens_per_s"])
                generated[name] = m.last_stats["generated_tokens"]
        tokens = m.tokenize(texts["json_schema"], add_bos=False)   # the constrained text, as the engine fed it
        constraint = Constraint(grammar_for(fmt), m.tokenizer)
        sampler = Sampler(SamplingParams())
        logits = np.random.default_rng(0).standard_normal(m.n_vocab).astype(np.float32)
        fill, free_pick, masked_pick = [], [], []
        for tok in tokens:
            t0 = time.perf_counter()
            mask = constraint.bitmask()
            t1 = time.perf_counter()
            Sampler.pick(logits, sampler.next_draw([]))
            t2 = time.perf_counter()
            Sampler.pick(logits, sampler.next_draw([], mask))
            t3 = time.perf_counter()
            fill.append(t1 - t0)
            free_pick.append(t2 - t1)
            masked_pick.append(t3 - t2)
            constraint.advance(tok)
        print(json.dumps({
            "benchmark": "structured_output", "date": datetime.date.today().isoformat(),
            "machine": platform.node(), "backend": m.backend, "model": args.model, "n_vocab": m.n_vocab,
            "generated_tokens": generated,
            "same_text_gpu_and_host_mask": texts["json_schema"] == texts["json_schema_host_mask"],
            "decode_tok_s": {name: round(statistics.median(r), 2) for name, r in rates.items()},
            "decode_cpu_ms_per_token": {name: round(statistics.median(c) * 1e3, 2) for name, c in cpu.items()},
            "mask_ms": {"bitmask_median": round(statistics.median(fill) * 1e3, 4),
                        "bitmask_mean": round(statistics.mean(fill) * 1e3, 4),
                        "bitmask_max": round(max(fill) * 1e3, 4),
                        "host_pick_median": round(statistics.median(free_pick) * 1e3, 4),
                        "host_masked_pick_median": round(statistics.median(masked_pick) * 1e3, 4),
                        "steps": len(fill)},
        }))


if __name__ == "__main__":
    main()
