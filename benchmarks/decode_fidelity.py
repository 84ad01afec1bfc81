"""Decode-step logits on the GPU (one-row plans, the GEMV steps each weight type takes) against the CPU
reference, token by token after a prompt. JSON.

Both run f32 activations and KV cache, so the difference is the kernels' arithmetic order.
Usage: python benchmarks/decode_fidelity.py MODEL [--prompt 8] [--steps 8]
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def decode_logits(path: str, device: str, ids: list[int], prompt: int) -> tuple[np.ndarray, str]:
    """Logits of each step after the prompt, one token a step; and the backend's name."""
    import mdst

    kwargs = {"kv_type": "f32"} if device == "gpu" else {}
    with mdst.load(path, device=device, context_length=128, **kwargs) as m, m.session() as s:
        s.prefill(ids[:prompt])
        return np.stack([s.prefill([t]) for t in ids[prompt:]]), m.backend


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model")
    ap.add_argument("--prompt", type=int, default=8)
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()

    ids = list(range(10, 10 + args.prompt + args.steps))
    got, backend = decode_logits(args.model, "gpu", ids, args.prompt)
    ref, _ = decode_logits(args.model, "cpu", ids, args.prompt)
    rel = np.linalg.norm((got - ref).astype(np.float64), axis=1) / np.linalg.norm(ref.astype(np.float64), axis=1)
    print(json.dumps({"benchmark": "decode_fidelity", "model": args.model, "adapter": backend, "steps": args.steps,
                      "rel_l2_max": float(rel.max()), "rel_l2_median": float(np.median(rel)),
                      "top1_agreement": float(np.mean(got.argmax(1) == ref.argmax(1)))}, indent=2))


if __name__ == "__main__":
    main()
