"""mdst beside llama.cpp (llama-bench) on the same synthetic files, in one run on one machine. JSON lines + a table.

Tests, named as llama-bench names them: "pp512" (prompt tokens/s), "tg128" (128 tokens decoded from an empty
context), "tg128@d8192" (128 tokens decoded after an 8,192-token prompt), "pp4096". Each line:
{"engine", "model", "test", "tokens_per_s"}. Run through benchmarks/vs_llamacpp.sh, which builds llama.cpp.
--models takes synth preset names (mixtures of experts too: qwen3-30b-a3b, lfm2-8b-a1b).
Usage: python benchmarks/vs_llamacpp.py --out FILE.jsonl [--models ...] [--tests ...]
                                        [--llama cuda=PATH --llama vulkan=PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path


def parse_test(test: str) -> tuple[int, int, int]:
    """(prompt tokens, generated tokens, depth) of a llama-bench test name."""
    name, _, depth = test.partition("@d")
    n = int(name[2:])
    return (n, 0, 0) if name.startswith("pp") else (0, n, int(depth or 0))


def mdst_rates(path: Path, tests: list[str], repeat: int, activations: str = "f32") -> dict[str, float]:
    """tokens/s of each test through mdst.serve.bench, the model loaded for each test with the context it needs
    (as llama-bench sizes its context per test: mdst's decode attention covers the allocated context) and the
    given `activations` (mdst.load's option)."""
    import mdst
    from mdst.serve.bench import bench

    out = {}
    for test in tests:
        p, g, d = parse_test(test)
        with mdst.load(path, device="gpu", context_length=p + g + max(d, 1) + 1, activations=activations) as model:
            if p:   # prefill p tokens (and one decode step, which bench needs and which is not counted)
                out[test] = bench(model, p, 1, repeat)["prefill_tokens_per_s"]
            else:   # decode g tokens after a prompt of d tokens (one token: llama-bench's empty context)
                out[test] = bench(model, max(d, 1), g, min(repeat, 2) if d else repeat)["decode_tokens_per_s"]
    return out


def llama_rates(bench: str, path: Path, tests: list[str], repeat: int) -> dict[str, float]:
    """tokens/s of each test through llama-bench (all layers on the GPU, flash attention)."""
    out = {}
    for test in tests:
        p, g, d = parse_test(test)
        cmd = [bench, "-m", str(path), "-ngl", "99", "-fa", "1", "-p", str(p), "-n", str(g), "-d", str(d),
               "-r", str(repeat), "-o", "jsonl"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
        rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
        out[test] = next(row["avg_ts"] for row in rows if row["n_prompt"] == p and row["n_gen"] == g)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True, help="JSON lines file to append to")
    ap.add_argument("--models", default="gemma3-270m,qwen3-0.6b,qwen3-8b")
    ap.add_argument("--tests", default="pp512,tg128,tg128@d8192")
    ap.add_argument("--deep-models", default="qwen3-0.6b,qwen3-8b", help="models the @d tests run on")
    ap.add_argument("--types", default="Q4_K_M")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--llama", action="append", default=[], metavar="ENGINE=PATH", help="a llama-bench build")
    ap.add_argument("--engines", default="mdst,cuda,vulkan",
                    help="which to run, in this order; mdst-q8: mdst with 8-bit activations, as llama.cpp's q8_1")
    ap.add_argument("--cache", default=os.environ.get("MDST_BENCH_CACHE", str(Path.home() / ".cache" / "mdst-bench")))
    args = ap.parse_args()

    from mdst.dev import synth

    builds = dict(item.split("=", 1) for item in args.llama)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    deep = set(args.deep_models.split(","))
    rows: list[dict] = []
    with open(args.out, "a") as f:
        for model in args.models.split(","):
            path = cache / f"{model}-{args.types}.gguf"
            if not path.exists():
                synth.write(path, model, types=args.types)
            tests = [t for t in args.tests.split(",") if "@d" not in t or model in deep]
            for engine in args.engines.split(","):
                mdst_engine = engine in ("mdst", "mdst-q8")
                if not mdst_engine and engine not in builds:
                    continue
                t0 = time.perf_counter()
                rates = (mdst_rates(path, tests, args.repeat, "q8" if engine == "mdst-q8" else "f32") if mdst_engine
                         else llama_rates(builds[engine], path, tests, args.repeat))
                for test, rate in rates.items():
                    row = {"engine": engine, "model": model, "test": test, "tokens_per_s": round(rate, 1)}
                    rows.append(row)
                    f.write(json.dumps(row) + "\n")
                    f.flush()
                print(f"# {engine} {model}: {time.perf_counter() - t0:.0f} s", flush=True)
    table(rows)


def table(rows: list[dict]) -> None:
    """One line per model and test: each engine's tokens/s, and each mdst engine's ratio to each llama.cpp build."""
    engines = list(dict.fromkeys(r["engine"] for r in rows))
    rate = {(r["engine"], r["model"], r["test"]): r["tokens_per_s"] for r in rows}
    ours = [e for e in engines if e.startswith("mdst")]
    pairs = [(m, e) for m in ours for e in engines if e not in ours]
    print("| model | test | " + " | ".join(engines) + "".join(f" | {m}/{e}" for m, e in pairs) + " |")
    print("| --- " * (2 + len(engines) + len(pairs)) + "|")
    for model, test in dict.fromkeys((r["model"], r["test"]) for r in rows):
        cells = [f"{v:,.0f}" if (v := rate.get((e, model, test))) else "-" for e in engines]
        ratios = [f"{a / b:.2f}" if (a := rate.get((m, model, test))) and (b := rate.get((e, model, test))) else "-"
                  for m, e in pairs]
        print(f"| {model} | {test} | " + " | ".join(cells + ratios) + " |")


if __name__ == "__main__":
    main()
