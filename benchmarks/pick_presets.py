"""The kernel presets the sweeps of attention_decode.py and matmul_bandwidth.py favour, as MDST_PRESETS text.

For each sweep, the variant whose worst slowdown against the fastest variant of each case (shape or
weight type) is smallest. Usage: python benchmarks/pick_presets.py attention.json matmul.json
"""

from __future__ import annotations

import json
import sys
from typing import Any, Callable


def least_worst(results: list[dict], case: str, variant: Callable[[dict], Any]) -> Any:
    fastest: dict[str, float] = {}
    for r in results:
        fastest[r[case]] = min(fastest.get(r[case], float("inf")), r["us"])
    worst: dict[Any, float] = {}
    for r in results:
        worst[variant(r)] = max(worst.get(variant(r), 0.0), r["us"] / fastest[r[case]])
    return min(worst, key=worst.__getitem__)


def main() -> None:
    picks = []
    for path in sys.argv[1:]:
        try:
            data = json.load(open(path))
        except (OSError, ValueError):
            continue
        if data["benchmark"] == "attention_decode":
            split, lanes = least_worst(data["results"], "shape", lambda r: (r["split"], r["lanes_per_key"]))
            picks += [f"attention_split={split}", f"attention_lanes={lanes}"]
        elif data["benchmark"] == "matmul_bandwidth":
            rows = [{**r, "us": r["us_per_dispatch"], "variant": dict(c.split("=") for c in r["kernel"].split(":")[2:])}
                    for r in data["results"] if r["kernel"].startswith("matmul_row")]
            if rows:
                lanes, chunk, per = least_worst(rows, "type", lambda r: (
                    r["variant"]["TPR"], r["variant"].get("GPT", "8"), r["variant"].get("ROWS", "1")))
                picks += [f"gemv_lanes={lanes}", f"gemv_chunk={chunk}", f"gemv_rows={per}"]
    print(",".join(picks))


if __name__ == "__main__":
    main()
