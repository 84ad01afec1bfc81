"""Logits with the adapter's binding limit against the CPU reference, and how tensors were split. JSON.

Usage: python benchmarks/binding_split.py MODEL [--tokens 24] [--cap BYTES]
(On an adapter whose binding limit exceeds every tensor, nothing is split.)
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model")
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--cap", type=int, default=None)
    args = ap.parse_args()

    import mdst

    ids = list(range(10, 10 + args.tokens))
    with mdst.load(args.model, device="gpu", kv_type="f32", context_length=128, max_binding_size=args.cap) as g:
        got = g.logits(ids)
        parts = {n: len(w.parts) for n, w in g.engine.weights.weights.items()}
        info = {"adapter": g.backend, "max_binding_size": g.device_profile.max_binding_size,
                "largest_tensor_bytes": max(t.nbytes for t in g.gguf.tensors.values()),
                "split_tensors": {n: k for n, k in parts.items() if k > 1},
                "all_rows_chunk": g.engine.chunk_all}
    with mdst.load(args.model, device="cpu", context_length=128) as c:
        ref = c.logits(ids)
    rel = float(np.linalg.norm(got.astype(np.float64) - ref) / np.linalg.norm(ref.astype(np.float64)))
    print(json.dumps({"benchmark": "binding_split", "model": args.model, **info, "tokens": args.tokens,
                      "rel_l2_vs_cpu_reference": rel}, indent=2))


if __name__ == "__main__":
    main()
