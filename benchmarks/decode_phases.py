"""Where a decode step's wall time goes: encode, submit, wait, readback; GPU time of the one pass. JSON.

Also the time per step of one step at a time (engine_step_us) and of Session.decode running a step ahead.

Usage: python benchmarks/decode_phases.py MODEL [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--prompt", type=int, default=512)
    args = ap.parse_args()

    import wgpu

    import mdst
    from mdst.compile.plan import write_step
    from mdst.gpu.native import timestamp_period

    with mdst.load(args.model, device="gpu", context_length=1024) as m:
        eng = m.engine
        dev = eng.gpu.device
        s = m.session()
        tok = int(s.prefill(list(range(1, args.prompt + 1)), greedy=True))
        plan = eng.plan("last", 1, "argmax")
        groups = eng.bind(plan, s.cache)
        qs = dev.create_query_set(type=wgpu.QueryType.timestamp, count=2)
        res = dev.create_buffer(size=16, usage=wgpu.BufferUsage.QUERY_RESOLVE | wgpu.BufferUsage.COPY_SRC)
        rows = []
        for i in range(args.steps):
            t0 = time.perf_counter()
            write_step(dev.queue, eng.step_buffer, np.array([tok]), s.n_past, 1)
            t1 = time.perf_counter()
            enc = dev.create_command_encoder()
            plan.encode(enc, groups, timestamps={"query_set": qs, "beginning_of_pass_write_index": 0,
                                                 "end_of_pass_write_index": 1})
            enc.resolve_query_set(qs, 0, 2, res, 0)
            enc.copy_buffer_to_buffer(plan.ids_buffer, 0, eng.staging, 0, 4)
            cb = enc.finish()
            t2 = time.perf_counter()
            dev.queue.submit([cb])
            t3 = time.perf_counter()
            eng.staging.map_sync(wgpu.MapMode.READ, 0, 16)
            t4 = time.perf_counter()
            tok = int(np.frombuffer(eng.staging.read_mapped(0, 4, copy=True), np.uint32)[0])
            eng.staging.unmap()
            t5 = time.perf_counter()
            ticks = np.frombuffer(dev.queue.read_buffer(res), np.uint64)
            gpu_us = float(ticks[1] - ticks[0]) * timestamp_period(dev.queue) / 1e3
            s.tokens.append(tok)
            rows.append({"write_us": (t1 - t0) * 1e6, "encode_us": (t2 - t1) * 1e6, "submit_us": (t3 - t2) * 1e6,
                         "wait_us": (t4 - t3) * 1e6, "read_us": (t5 - t4) * 1e6, "gpu_pass_us": gpu_us})
        med = {k: round(statistics.median(r[k] for r in rows[2:]), 1) for k in rows[0]}
        t0 = time.perf_counter()
        n = 0
        for _ in range(args.steps):
            tok = eng.step(s.cache, np.array([tok]), s.n_past, "last", "argmax")[0]
            s.tokens.append(int(tok))
            n += 1
        engine_step_us = (time.perf_counter() - t0) / n * 1e6
        for tok in s.decode(tok, 4, lambda: "argmax", ahead=True):   # warm-up: first use sets the chain up
            pass
        t0 = time.perf_counter()
        for tok in s.decode(tok, args.steps, lambda: "argmax", ahead=True):
            pass
        ahead_step_us = (time.perf_counter() - t0) / args.steps * 1e6
        print(json.dumps({"benchmark": "decode_phases", "model": args.model, "dispatches": len(plan.dispatches),
                          "median_us": med, "engine_step_us": round(engine_step_us, 1),
                          "decode_ahead_step_us": round(ahead_step_us, 1)}, indent=2))


if __name__ == "__main__":
    main()
