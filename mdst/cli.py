"""`mdst` on the command line: generate, chat, bench, perplexity, eval, inspect, doctor, synth."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, Callable

from . import __version__
from .errors import MdstError
from .serve.args import MODEL_HELP, activations_option, hub_options, kv_type_arg, kv_type_options

DEBUG_ENV = "MDST_DEBUG"  # set to 1 for tracebacks, as --debug does


class StatusLine:
    """One line of progress on stderr, redrawn in place and erased when done; silent unless stderr is a
    terminal (logs and pipes get the results only)."""

    def __init__(self, stream: Any = None):
        self.stream = stream or sys.stderr
        self.live = getattr(self.stream, "isatty", lambda: False)()
        self._shown = False

    def __call__(self, text: str) -> None:
        if self.live:
            self.stream.write(f"\r\033[K{text}")
            self.stream.flush()
            self._shown = True

    def done(self) -> None:
        """Erase the line."""
        if self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._shown = False


def _load(args: argparse.Namespace, path: str | None = None) -> Any:
    import mdst

    kv_type = kv_type_arg(args)
    if path is not None:   # already resolved
        return mdst.load(path, device=args.device, kv_type=kv_type, context_length=args.context,
                         activations=args.activations)
    return mdst.load(args.model, quant=args.quant, revision=args.revision, device=args.device, kv_type=kv_type,
                     activations=args.activations,
                     context_length=args.context)


def _check_generation(max_tokens: int, **sampling: Any) -> None:
    """Reject bad generation options before loading anything (the library's own checks, so the same messages)."""
    from .generate import check_max_tokens
    from .text.sampling import SamplingParams

    check_max_tokens(max_tokens)
    SamplingParams(**sampling)


def _model_options(p: argparse.ArgumentParser, positional: bool = False) -> None:
    if positional:
        p.add_argument("model", help=MODEL_HELP)
    else:
        p.add_argument("-m", "--model", default=None, help=MODEL_HELP + " (default: smollm2-135m)")
    hub_options(p)
    p.add_argument("--device", default="auto", choices=["auto", "gpu", "cpu"])
    kv_type_options(p)
    activations_option(p)
    p.add_argument("--context", type=int, default=None, help="context length (default: min(model max, 4096))")


def _constraint(args: argparse.Namespace) -> dict:
    """generate()'s response_format / grammar from --json-schema FILE and --grammar FILE, checked before loading."""
    from .text.grammar import grammar_for

    out: dict[str, Any] = {}
    if args.json_schema is not None:
        with open(args.json_schema, encoding="utf-8") as f:
            try:
                schema = json.load(f)
            except ValueError as e:
                raise ValueError(f"--json-schema {args.json_schema} is not JSON: {e}") from None
        out["response_format"] = {"type": "json_schema", "json_schema": {"name": "schema", "schema": schema}}
    if args.grammar is not None:
        with open(args.grammar, encoding="utf-8") as f:
            out["grammar"] = f.read()
    grammar_for(**out)
    return out


def cmd_generate(args: argparse.Namespace) -> int:
    """Stream a continuation of the prompt to stdout, then one line of stats to stderr."""
    _check_generation(args.max_tokens, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                      seed=args.seed)
    constraint = _constraint(args)
    model = _load(args)
    with model:
        for piece in model.generate(args.prompt, max_tokens=args.max_tokens, temperature=args.temperature,
                                    top_k=args.top_k, top_p=args.top_p, seed=args.seed, stream=True,
                                    **constraint):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        s = model.last_stats
        print(f"[{s['prompt_tokens']} prompt tokens, {s['generated_tokens']} generated, "
              f"prefill {s['prefill_tokens_per_s']:.1f} tok/s, decode {s['decode_tokens_per_s']:.1f} tok/s, "
              f"{model.backend}]", file=sys.stderr)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    """Talk to a model: each line you type is a user turn; /reset starts over, /exit (or end of input) quits."""
    from .text.chat import require_template
    from .format.gguf import GGUFFile
    from .packaged import resolve_model_path

    _check_generation(args.max_tokens, temperature=args.temperature, seed=args.seed)
    path = resolve_model_path(args.model, args.quant, args.revision)
    if args.chat_template:
        with open(args.chat_template, encoding="utf-8") as f:
            template = f.read()
    else:
        template = None
        with GGUFFile(path) as g:  # the header only: fail before loading the weights
            require_template(g)
    model = _load(args, path)
    with model:
        messages: list[dict[str, str]] = [{"role": "system", "content": args.system}] if args.system else []
        print(f"mdst chat: {model.architecture} on {model.backend}. /reset starts over, /exit quits.",
              file=sys.stderr)
        while True:
            try:
                line = input("> " if sys.stdin.isatty() else "")
            except EOFError:
                break
            if line.strip() == "/exit":
                break
            if line.strip() == "/reset":
                messages = messages[:1] if args.system else []
                continue
            if not line.strip():
                continue
            messages.append({"role": "user", "content": line})
            reply, thinking = [], False
            for piece in model.chat(messages, template=template, max_tokens=args.max_tokens,
                                    temperature=args.temperature, seed=args.seed, stream=True):
                if piece.reasoning_content is not None:  # a think block is shown, not kept in the history
                    thinking = True
                    sys.stdout.write(piece.reasoning_content)
                elif piece:
                    sys.stdout.write("\n\n" if thinking else "")
                    thinking = False
                    reply.append(piece)
                    sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
            messages.append({"role": "assistant", "content": "".join(reply)})
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Prefill and decode speed, as JSON or one line (and the GPU time per op and layer with --profile)."""
    from .serve.bench import bench, bench_batch, check_bench_args

    check_bench_args(args.prompt_tokens, args.gen_tokens, args.repeat)
    sizes = _batch_sizes(args.batch) if args.batch else []
    model = _load(args)
    status = StatusLine()
    with model:
        try:
            def say(phase: str) -> None:
                status(f"bench: {phase}")

            r = bench(model, args.prompt_tokens, args.gen_tokens, args.repeat, profile=args.profile, progress=say)
            if sizes:
                r["batched"] = bench_batch(model, sizes, args.prompt_tokens, args.gen_tokens, args.repeat,
                                           progress=say)
        finally:
            status.done()
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"{r['model']} on {r['backend']} ({r['kv_type']} KV cache): prefill {r['prefill_tokens_per_s']:.1f} tok/s "
          f"(pp{r['prompt_tokens']}), decode {r['decode_tokens_per_s']:.1f} tok/s (tg{r['gen_tokens']}), "
          f"{r['decode_ms_per_token']:.2f} ms/token, {r['effective_gb_per_s']:.1f} GB/s")
    for n, b in r.get("batched", {}).items():
        print(f"  {n} sequences together: {b['aggregate_tokens_per_s']:.1f} tok/s in all, "
              f"{b['per_sequence_tokens_per_s']:.1f} each, {b['aggregate_tokens_per_s'] / r['decode_tokens_per_s']:.2f}x "
              f"one alone")
    for step in r.get("profile", {}).values():
        print(format_profile(step))
    return 0


def _batch_sizes(text: str) -> list[int]:
    """--batch's comma-separated sizes, checked."""
    from .serve.bench import check_batch_sizes

    try:
        sizes = [int(t) for t in text.split(",")]
    except ValueError:
        raise ValueError(f"--batch takes comma-separated sequence counts, e.g. 1,4,16; got {text!r}") from None
    check_batch_sizes(sizes)
    return sizes


def format_profile(p: dict[str, Any]) -> str:
    """One profiled step (bench's `profile` entries) as text: GPU time by op, then by layer."""
    total = max(p["gpu_us_sum"], 1e-9)
    lines = [f"GPU time of one {p['rows']}-row step ({p['dispatches']} dispatches, {p['gpu_us_sum']:.1f} us "
             "summed over dispatches):"]
    lines += [f"  {op:<24} {us:10.1f} us {100 * us / total:5.1f}%" for op, us in p["by_op_us"].items()]
    layers = sorted((int(k), us) for k, us in p["by_layer_us"].items() if k != "-")  # "-": outside any layer
    lines.append(f"  by layer (us): {', '.join(f'{k}: {us:.0f}' for k, us in layers)}; outside layers: "
                 f"{p['by_layer_us'].get('-', 0):.0f}")
    return "\n".join(lines)


def cmd_inspect(args: argparse.Namespace) -> int:
    from .format.gguf import GGUFFile, describe
    from .packaged import resolve_model_path

    if args.memory:
        import mdst

        with mdst.load(args.file, quant=args.quant, revision=args.revision, device=args.device,
                       context_length=args.context, kv_type=kv_type_arg(args), activations=args.activations) as model:
            if model.engine.kind == "gpu":
                model.engine.compile_all()  # report every plan the model can use
            print(format_memory(model.memory_report()))
        return 0
    with GGUFFile(resolve_model_path(args.file, args.quant, args.revision)) as f:
        print(describe(f))
    return 0


def format_memory(r: dict[str, Any]) -> str:
    """A memory report as text (`mdst inspect --memory`)."""
    def mib(n: int) -> str:
        return f"{n / 2**20:9.1f} MiB"

    lines = [f"{r['backend']}, context {r['context_length']}, KV cache {r['kv_type']}, file {mib(r['file_bytes'])}"]
    if "gpu_bytes" not in r:
        lines.append(f"KV cache per sequence {mib(r['kv']['bytes_per_sequence'])} (numpy engine: no GPU memory)")
        return "\n".join(lines)
    lines.append("GPU memory (now / predicted before loading):")
    for kind in sorted(r["predicted_gpu_bytes"], key=lambda k: -r["predicted_gpu_bytes"][k]):
        lines.append(f"  {kind:<12} {mib(r['gpu_bytes'].get(kind, 0))} / {mib(r['predicted_gpu_bytes'][kind])}")
    lines.append(f"  {'total':<12} {mib(r['gpu_bytes_total'])} / {mib(r['predicted_gpu_bytes_total'])}"
                 f"   (peak {mib(r['gpu_bytes_peak']).strip()})")
    w, kv, pool = r["weights"], r["kv"], r["pool"]
    lines.append(f"weights: {w['tensors']} tensors, {mib(w['resident_bytes']).strip()} resident, "
                 f"{mib(w['paged_bytes']).strip()} paged through {w['page_slots']} slots; split: "
                 f"{w['split_tensors'] or 'none'}")
    windowed = [x for x in kv["layers"] if x["window"]]
    lines.append(f"KV cache: {mib(kv['bytes_per_sequence']).strip()} a sequence over {len(kv['layers'])} layers "
                 f"({len(windowed)} sliding-window rings), conv state {kv['conv_state_bytes_per_sequence']} bytes")
    lines.append(f"activation pool: {pool['buffers']} buffers, {mib(pool['allocated_bytes']).strip()}, "
                 f"{pool['hits']} hits / {pool['misses']} misses, one plan holds at most "
                 f"{mib(pool['peak_plan_bytes']).strip()}")
    lines.append(f"plans (rows per step {r['chunk']}, all-row logits {r['chunk_all_logits']}):")
    for p in r["plans"]:
        lines.append(f"  {p['output_rows']:>4} rows={p['rows']:<4} {p['pick']:<6} "
                     f"{p['dispatches']:5d} dispatches, activations {mib(p['activation_bytes'])} "
                     f"(one buffer per tensor: {mib(p['one_buffer_per_tensor_bytes']).strip()})")
    return "\n".join(lines)


def cmd_doctor(args: argparse.Namespace) -> int:
    """The adapters wgpu sees, what `--device auto` chooses and why, and the profile of the GPU it would use."""
    import platform

    from .gpu.device import adapters, choose_adapter, open_gpu

    print(f"mdst {__version__}, Python {platform.python_version()}, {platform.platform()}")
    found = adapters()
    for a in found:
        info = a.info
        print(f"adapter: {info.get('device')} [{info.get('adapter_type')}, {info.get('backend_type')}] "
              f"{info.get('description', '')}")
    if not found:
        print("chosen: cpu (numpy): no WebGPU adapter found; install a Vulkan driver (Debian: apt-get install "
              "mesa-vulkan-drivers) for --device gpu")
        return 1
    chosen, why = choose_adapter("auto", found)
    if chosen is None:
        print(f"chosen: cpu (numpy): {why}; --device gpu forces it")
        forced, _ = choose_adapter("gpu", found)
        print("--device gpu:", json.dumps(open_gpu(adapter=forced).profile.as_dict(), indent=2))
    else:
        print(f"chosen: {why}:", json.dumps(open_gpu(adapter=chosen).profile.as_dict(), indent=2))
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    """Download a Hugging Face model (every part of a split one) into the Hub's cache; print the path to load."""
    from . import hub

    if hub.parse(args.model, args.revision) is None:
        raise ValueError(f"{args.model!r} is not a Hugging Face model name; write ORG/REPO (with --quant) or "
                         "hf://ORG/REPO/FILE.gguf")
    print(hub.download(args.model, args.quant, args.revision))
    return 0


def cmd_perplexity(args: argparse.Namespace) -> int:
    """llama-perplexity's PPL of a text (running value per window on stderr, the estimate on stdout); with
    --kl-divergence-base, save the reference log-probabilities, and with --kl-divergence too, compare to them."""
    from .quality.kld import BaseLogProbs, kl_divergence, save_base
    from .quality.perplexity import PerplexityResult, check_count, check_ctx, perplexity

    if args.kl_divergence and not args.kl_divergence_base:
        raise ValueError("--kl-divergence compares against a base file: pass --kl-divergence-base FILE, made by a "
                         "run of the reference model with --kl-divergence-base FILE alone")
    base = BaseLogProbs.load(args.kl_divergence_base) if args.kl_divergence else None
    ctx = check_ctx(args.ctx if args.ctx is not None else base.ctx if base else 512)
    check_count("--chunks", args.chunks, "every window the text fills")
    check_count("--batch", args.batch, "the scored half of a window at once")
    with open(args.text, encoding="utf-8") as f:
        text = f.read()
    args.context = args.context or ctx
    model = _load(args)
    with model:
        if base is not None:
            r = kl_divergence(model, text, base, batch=args.batch, chunks=args.chunks, ctx=ctx,
                                  on_window=lambda r: print(_kld_window(r), file=sys.stderr, flush=True))
            print(format_kld(r.summary()))
            return 0
        def running(r: PerplexityResult) -> None:
            print(f"[{r.windows}]{r.ppl:.4f},", end="", file=sys.stderr, flush=True)
        if args.kl_divergence_base:
            _, r = save_base(model, text, args.kl_divergence_base, ctx, args.chunks, args.batch, args.top_k,
                                 on_window=running)
        else:
            r = perplexity(model, text, ctx, args.chunks, args.batch, on_window=running)
        print(file=sys.stderr)
    print(f"Final estimate: PPL = {r.ppl:.4f} +/- {r.se:.5f} ({r.windows} windows of {r.ctx} tokens, "
          f"{r.tokens} scored)")
    if args.kl_divergence_base:
        print(f"saved the log-probabilities (top {args.top_k} a token) to {args.kl_divergence_base}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """lm_eval's tasks on a model: the run record as JSON (to --output, else stdout) and the rescaled aggregate."""
    from .eval.harness import MdstLM
    from .eval.record import check_limit, evaluate, load_tasks

    check_limit(args.limit)
    tasks = load_tasks(args.tasks, args.include_path)   # before the model: a wrong name costs no load
    lm = MdstLM(_load(args))
    with lm.model:
        record = evaluate(lm, tasks, args.limit, args.device)
    text = json.dumps(record, indent=2, default=str)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    else:
        print(text)
    for name, t in record["tasks"].items():
        shown = "no score" if t["score"] is None else (
            f"{t['metric']} {t['score']:.4f}, chance {t['chance']:.4f}, rescaled "
            + ("n/a" if t["rescaled"] is None else f"{t['rescaled']:.4f}"))
        print(f"{name}: {shown}", file=sys.stderr)
    agg = record["aggregate"]
    print(f"aggregate (mean of (score - chance) / (1 - chance)): {'n/a' if agg is None else f'{agg:.4f}'}",
          file=sys.stderr)
    return 0


def _kld_window(r: Any) -> str:
    s = r.summary()
    return (f"[{r.windows}] PPL {s['ppl']:.4f}, ln(PPL/PPL(base)) {s['ln_ppl_ratio']:.5f}, "
            f"KLD {s['kld_mean']:.6f}, same top p {100 * s['same_top']:.3f}%")


def format_kld(s: dict[str, Any]) -> str:
    """KL-divergence statistics as text, in llama-perplexity's order and names."""
    def pct(name: str, values: dict[str, float], scale: float, fmt: str, unit: str, skip: tuple = ()) -> list[str]:
        return [f"{'Median ' if q == '50.0' else f'{float(q):4.1f}%  '} {name}: {scale * v:{fmt}}{unit}"
                for q, v in values.items() if q not in skip]
    lines = [f"====== Perplexity statistics ({s['windows']} windows, {s['tokens']} tokens) ======",
             f"Mean PPL(Q)                   : {s['ppl']:10.6f} ± {s['ppl_se']:10.6f}",
             f"Mean PPL(base)                : {s['ppl_base']:10.6f} ± {s['ppl_base_se']:10.6f}",
             f"Mean ln(PPL(Q)/PPL(base))     : {s['ln_ppl_ratio']:10.6f} ± {s['ln_ppl_ratio_se']:10.6f}",
             "", "====== KL divergence statistics ======",
             f"Mean    KLD: {s['kld_mean']:10.6f} ± {s['kld_se']:10.6f}",
             f"Maximum KLD: {s['kld_max']:10.6f}",
             *pct("KLD", s["kld_percentiles"], 1.0, "10.6f", "", skip=("75.0", "25.0")),
             f"Minimum KLD: {s['kld_min']:10.6f}",
             "", "====== Token probability statistics ======",
             f"Mean    Δp: {100 * s['p_diff_mean']:6.3f} ± {100 * s['p_diff_se']:5.3f} %",
             f"Maximum Δp: {100 * s['p_diff_max']:6.3f}%",
             *pct("Δp", s["p_diff_percentiles"], 100.0, "6.3f", "%"),
             f"Minimum Δp: {100 * s['p_diff_min']:6.3f}%",
             f"RMS Δp    : {100 * s['p_diff_rms']:6.3f} ± {100 * s['p_diff_rms_se']:5.3f} %",
             f"Same top p: {100 * s['same_top']:6.3f} ± {100 * s['same_top_se']:5.3f} %"]
    return "\n".join(lines)


def cmd_synth(args: argparse.Namespace) -> int:
    from .dev import synth

    return synth.main(args.rest)


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import command

    return command.main(args.rest)


def cmd_oracle(args: argparse.Namespace) -> int:
    from .dev import oracle

    return oracle.main(args.rest)


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
    "generate": (cmd_generate, "continue a prompt, streaming to stdout"),
    "chat": (cmd_chat, "chat with a model interactively (its chat template; /reset, /exit)"),
    "bench": (cmd_bench, "prefill and decode speed"),
    "perplexity": (cmd_perplexity, "perplexity of a text, and KL divergence against a reference model "
                                   "(llama-perplexity's method)"),
    "eval": (cmd_eval, "lm-evaluation-harness tasks on a model: a JSON run record and a chance-rescaled "
                       "aggregate (pip install 'mdst[eval]')"),
    "inspect": (cmd_inspect, "print a GGUF file's metadata and tensor table"),
    "pull": (cmd_pull, "download a Hugging Face model (mdst pull ORG/REPO --quant Q4_K_M); print its path"),
    "doctor": (cmd_doctor, "print the WebGPU adapters and what mdst will use"),
    "synth": (cmd_synth, "write a synthetic random-weight GGUF (mdst synth PRESET OUT.gguf)"),
    "oracle": (cmd_oracle, "export kernel cases and golden data for the browser build (mdst oracle MODEL OUTDIR)"),
    "serve": (cmd_serve, "OpenAI-compatible HTTP server (mdst serve MODEL --host 127.0.0.1 --port 8080)"),
}


def _global_options(p: argparse.ArgumentParser, default: Any) -> None:
    p.add_argument("-v", "--verbose", action="store_true", default=default, help="log what mdst chooses")
    p.add_argument("--debug", action="store_true", default=default,
                   help=f"show the traceback of an error (or set {DEBUG_ENV}=1)")


def parser() -> argparse.ArgumentParser:
    """The `mdst` argument parser."""
    p = argparse.ArgumentParser(prog="mdst", description="Run GGUF language models on WebGPU.")
    p.add_argument("--version", action="version", version=f"mdst {__version__}")
    _global_options(p, False)
    # Also after the command (`mdst generate ... --debug`); SUPPRESS keeps the value given before it.
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", required=True)
    for name, (_, help_) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_, parents=[] if name in SELF_PARSING else [common])
        if name == "generate":
            _model_options(sp)
            sp.add_argument("prompt")
            sp.add_argument("-n", "--max-tokens", type=int, default=128)
            sp.add_argument("-t", "--temperature", type=float, default=0.0)
            sp.add_argument("--top-k", type=int, default=40)
            sp.add_argument("--top-p", type=float, default=1.0)
            sp.add_argument("--seed", type=int, default=None)
            sp.add_argument("--json-schema", default=None, metavar="FILE",
                            help="a JSON schema file: the output is JSON that it validates")
            sp.add_argument("--grammar", default=None, metavar="FILE",
                            help="a GBNF or Lark grammar file: the output is a string of its language")
        elif name == "chat":
            _model_options(sp)
            sp.add_argument("--system", default=None, help="a system message")
            sp.add_argument("--chat-template", default=None, metavar="FILE",
                            help="a Jinja chat template, for models whose file has none")
            sp.add_argument("-n", "--max-tokens", type=int, default=512)
            sp.add_argument("-t", "--temperature", type=float, default=0.0)
            sp.add_argument("--seed", type=int, default=None)
        elif name == "bench":
            _model_options(sp, positional=True)
            sp.add_argument("--prompt-tokens", type=int, default=512)
            sp.add_argument("--gen-tokens", type=int, default=128)
            sp.add_argument("--repeat", type=int, default=3)
            sp.add_argument("--json", action="store_true")
            sp.add_argument("--profile", action="store_true",
                            help="add GPU time per op and per layer (timestamp queries)")
            sp.add_argument("--batch", default=None, metavar="N,N,...",
                            help="also decode N sequences together for each N (aggregate tok/s, as "
                                 "llama-batched-bench -npl); each holds a cache of --context positions")
        elif name == "perplexity":
            _model_options(sp, positional=True)
            sp.add_argument("text", help="a UTF-8 text file (at least 2 x ctx tokens)")
            sp.add_argument("--ctx", type=int, default=None,
                            help="window length in tokens, even, >= 8 (default 512, or the base file's)")
            sp.add_argument("--batch", type=int, default=None,
                            help="rows of logits held at once (default: the scored half of a window)")
            sp.add_argument("--chunks", type=int, default=None,
                            help="at most this many windows (default: all the text fills, or the base file's)")
            sp.add_argument("--kl-divergence-base", default=None, metavar="FILE",
                            help="alone: save this model's log-probabilities to FILE (.npz); with --kl-divergence: "
                                 "compare this model against them")
            sp.add_argument("--kl-divergence", action="store_true",
                            help="KL divergence, top-1 agreement and delta-p against --kl-divergence-base")
            sp.add_argument("--top-k", type=int, default=32,
                            help="log-probabilities saved per token in a base file (default 32)")
        elif name == "eval":
            _model_options(sp, positional=True)
            sp.add_argument("--tasks", required=True, help="lm_eval task names, comma-separated (T1,T2)")
            sp.add_argument("--limit", type=int, default=None, help="at most N docs per task")
            sp.add_argument("--include-path", default=None, metavar="DIR",
                            help="a folder of your own lm_eval task YAMLs")
            sp.add_argument("--output", default=None, metavar="FILE", help="write the JSON record here")
        elif name == "inspect":
            sp.add_argument("file")
            hub_options(sp)
            sp.add_argument("--memory", action="store_true",
                            help="load the model and report its memory (weights, KV, activations, pool, plans)")
            sp.add_argument("--device", default="auto", choices=["auto", "gpu", "cpu"])
            sp.add_argument("--context", type=int, default=None)
            kv_type_options(sp)
            activations_option(sp)
        elif name == "pull":
            sp.add_argument("model", help="ORG/REPO (with --quant where it holds several models) or "
                                           "hf://ORG/REPO/FILE.gguf")
            hub_options(sp)
        elif name in SELF_PARSING:
            sp.add_argument("rest", nargs=argparse.REMAINDER)
    return p


SELF_PARSING = ("synth", "oracle", "serve")  # these parse their own arguments, --help included


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `mdst` command."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SELF_PARSING:
        argv = [argv[0], "--", *argv[1:]]
    args = parser().parse_args(argv)
    if args.command in SELF_PARSING and args.rest[:1] == ["--"]:
        args.rest = args.rest[1:]
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return COMMANDS[args.command][0](args)
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        # One line: a user's mistake says what to do; anything else is a bug, named by its type.
        expected = isinstance(e, (MdstError, ValueError, TypeError, OSError))
        message = str(e) if expected else f"{type(e).__name__}: {e} (--debug shows the traceback)"
        print(f"mdst: error: {message}", file=sys.stderr)
        return 2 if expected else 1


if __name__ == "__main__":
    sys.exit(main())
