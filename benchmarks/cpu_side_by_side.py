"""mdst on the CPU machine's software Vulkan (lavapipe) against llama.cpp's CPU build, same file, same cores. JSON.

Both run pp N (prefill of N random token ids) then tg M (greedy one-token steps), median of R runs, in
one process one after the other, so they see the same machine state. llama.cpp is llama-cpp-python
(the test extra's pinned build) with n_threads = the core count given. Lavapipe's thread count is
set with LP_NUM_THREADS before the adapter opens.
Usage: python benchmarks/cpu_side_by_side.py [--models smollm2-135m,gemma3-270m] [--prompt 128] [--gen 32]
                                             [--repeat 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time


def llama_cpp_speed(path: str, ids: list[int], gen: int, repeat: int, threads: int) -> dict:
    import llama_cpp
    import numpy as np

    llm = llama_cpp.Llama(model_path=path, n_ctx=len(ids) + gen + 8, n_threads=threads, n_threads_batch=threads,
                          n_batch=len(ids), verbose=False)
    vocab = llm.n_vocab()

    def argmax() -> int:   # the last row's logits, read in place (llama-cpp-python keeps none without logits_all)
        return int(np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(vocab,)).argmax())

    runs = []
    for i in range(repeat + 1):   # the first run warms up
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(ids)
        t1 = time.perf_counter()
        tok = argmax()
        for _ in range(gen):
            llm.eval([tok])
            tok = argmax()
        t2 = time.perf_counter()
        if i:
            runs.append((t1 - t0, t2 - t1))
    llm.close()
    return {"prefill_tokens_per_s": len(ids) / statistics.median(r[0] for r in runs),
            "decode_tokens_per_s": gen / statistics.median(r[1] for r in runs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", default="smollm2-135m,gemma3-270m")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("LP_NUM_THREADS", str(args.threads))

    import numpy as np

    import mdst
    from mdst.serve.bench import bench
    from mdst.packaged import resolve_model_path

    for name in args.models.split(","):
        path = resolve_model_path(name)
        with mdst.load(path, device="gpu", context_length=args.prompt + args.gen + 8) as m:
            ours = bench(m, args.prompt, args.gen, args.repeat)
            ids = np.random.default_rng(0).integers(0, m.n_vocab, args.prompt).tolist()
        theirs = llama_cpp_speed(path, ids, args.gen, args.repeat, args.threads)
        print(json.dumps({
            "benchmark": "cpu_side_by_side", "model": name, "threads": args.threads, "prompt_tokens": args.prompt,
            "gen_tokens": args.gen, "adapter": ours["adapter"]["name"],
            "mdst": {k: round(ours[k], 2) for k in ("prefill_tokens_per_s", "decode_tokens_per_s")},
            "llama_cpp": {k: round(v, 2) for k, v in theirs.items()},
            "llama_cpp_over_mdst": {k: round(theirs[k] / ours[k], 2) for k in theirs},
        }), flush=True)


if __name__ == "__main__":
    main()
