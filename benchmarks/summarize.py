"""A short table of the JSON files a benchmark run wrote into a folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def main() -> None:
    out = Path(sys.argv[1])
    m = load(out / "matmul.json")
    if m:
        print(f"copy {m['copy_gb_per_s_read_plus_write']} GB/s, stream {m.get('stream_gb_per_s_read_plus_write')} GB/s"
              " (read+write)")
        for t in dict.fromkeys(r["type"] for r in m["results"]):
            rs = sorted((r for r in m["results"] if r["type"] == t), key=lambda r: r["us_per_dispatch"])
            print(f"  gemv {t:<7} " + "  ".join(f"{r['gb_per_s']:.0f} GB/s {':'.join(r['kernel'].split(':')[2:4])}"
                                                for r in rs[:4]))
    a = load(out / "attention.json")
    if a:
        for shape in sorted({r["shape"] for r in a["results"]}):
            for r in sorted((r for r in a["results"] if r["shape"] == shape), key=lambda r: r["us"])[:4]:
                print(f"  attention {shape:<12} split {r['split']:>3} lanes {r['lanes_per_key']:>2} {r['us']:>8.1f} us")
    for f in sorted(out.glob("models*.jsonl")):
        print(f.name)
        for line in f.read_text().splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if "decode_tokens_per_s" not in r:
                continue
            print(f"{r['name']:<14} pp{r['prompt_tokens']} {r['prefill_tokens_per_s']:>9.1f} tok/s  tg{r['gen_tokens']} "
                  f"{r['decode_tokens_per_s']:>8.1f} tok/s  {r.get('dispatches_per_token', '-')} disp/tok  "
                  f"{r['effective_gb_per_s']:.0f} GB/s  load {r['load_s']} s")
            for k, p in r.get("profile", {}).items():
                top = ", ".join(f"{a} {b:.0f}" for a, b in list(p["by_op_us"].items())[:6])
                print(f"    {k}: {p['dispatches']} dispatches, sum {p['gpu_us_sum']:.0f} us: {top}")
    for f in sorted(out.glob("phases-*.json")):
        r = load(f)
        if r:
            print(f.stem, r["dispatches"], "dispatches", json.dumps(r["median_us"]), "engine", r["engine_step_us"],
                  "ahead", r.get("decode_ahead_step_us"))
    for name in ("split.json", "load_memory.json"):
        r = load(out / name)
        if r:
            r.pop("adapter", None)
            print(name, json.dumps({k: v for k, v in r.items() if k not in ("model",)})[:600])


if __name__ == "__main__":
    main()
