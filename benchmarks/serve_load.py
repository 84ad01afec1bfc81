"""Load test of `mdst serve` on 127.0.0.1: many clients at once, streaming and not, some leaving early.

Every client sends one greedy completion at the same moment; each finished reply must be the library's own
greedy text for its prompt (none lost, none wrong), and the server must be idle afterwards. Prints JSON:
latency percentiles (whole reply; first token for streams), throughput, and the server's /metrics counters.

    python benchmarks/serve_load.py [--model smollm2-135m] [--clients 64] [--max-tokens 12]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import threading
import time

import httpx
import uvicorn

import mdst
from mdst.serve.server import create_app

PROMPTS = ["The capital of France is", "Water boils at", "My favourite colour is", "Two plus two equals",
           "Once upon a time", "The sun rises in the", "A list of fruits: apple,", "import numpy as"]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


async def client(http: httpx.AsyncClient, i: int, args: argparse.Namespace) -> dict:
    """Client i's request: every `disconnect_every`-th streams and leaves after its first chunk; odd ones stream."""
    body = {"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": args.max_tokens, "temperature": 0}
    leaves = args.disconnect_every and i % args.disconnect_every == args.disconnect_every - 1
    stream = leaves or i % 2 == 1
    t0 = time.perf_counter()
    first = None
    if not stream:
        r = await http.post("/v1/completions", json=body)
        r.raise_for_status()
        text = r.json()["choices"][0]["text"]
    else:
        pieces = []
        async with http.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if first is None:
                    first = time.perf_counter() - t0
                if leaves:
                    break   # closing the response drops the connection: the server cancels the generation
                if line != "data: [DONE]":
                    pieces.append(json.loads(line[6:])["choices"][0]["text"])
        text = "".join(pieces)
    return {"client": i, "prompt": body["prompt"], "stream": stream, "left_early": bool(leaves), "text": text,
            "latency_s": time.perf_counter() - t0, "first_chunk_s": first}


def serve(model: mdst.Model, max_batch: int) -> tuple[uvicorn.Server, str]:
    """uvicorn serving the model on a free 127.0.0.1 port, in a background thread."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(model, model_name="load", max_batch=max_batch),
                                           log_level="warning", limit_concurrency=1000, backlog=1024))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return server, f"http://127.0.0.1:{sock.getsockname()[1]}"


def metrics(text: str) -> dict[str, float]:
    """The samples of a Prometheus text exposition."""
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def idle_metrics(url: str, deadline: float) -> dict[str, float]:
    """/metrics once the server is idle (the last cancelled requests leave at their turn), or at `deadline`."""
    while True:
        got = metrics(httpx.get(url + "/metrics", timeout=60).text)
        if (got["mdst_batch_size"] == 0 and got["mdst_queue_depth"] == 0) or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


async def load(url: str, args: argparse.Namespace) -> tuple[list[dict], int, float]:
    """The clients' results, how many did not finish within --timeout (counted as lost), and the wall time."""
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=args.timeout, limits=limits) as http:
        t0 = time.perf_counter()
        tasks = [asyncio.ensure_future(client(http, i, args)) for i in range(args.clients)]
        done, pending = await asyncio.wait(tasks, timeout=args.timeout)
        wall = time.perf_counter() - t0
        for task in pending:
            task.cancel()
        return [t.result() for t in tasks if t in done], len(pending), wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--device", default="auto")
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=12)
    p.add_argument("--disconnect-every", type=int, default=8, help="every Nth client leaves after its first chunk")
    p.add_argument("--max-batch", type=int, default=1)
    p.add_argument("--timeout", type=float, default=600, help="seconds the clients may take in all")
    args = p.parse_args()

    # as `mdst serve --max-batch N` loads it: the batch's caches counted, and kept for the next request
    with mdst.load(args.model, device=args.device, context_length=args.context,
                   max_batch=args.max_batch if args.max_batch > 1 else None) as model:
        expected = {prompt: model.generate(prompt, max_tokens=args.max_tokens) for prompt in PROMPTS}
        server, url = serve(model, args.max_batch)
        try:
            results, unfinished, wall = asyncio.run(load(url, args))
            after = idle_metrics(url, deadline=time.monotonic() + 60)
        finally:
            server.should_exit = True
        backend = model.backend

    finished = [r for r in results if not r["left_early"]]
    wrong = [r["client"] for r in finished if r["text"] != expected[r["prompt"]]]
    latencies = [r["latency_s"] for r in finished]
    firsts = [r["first_chunk_s"] for r in results if r["first_chunk_s"] is not None]
    tokens = after["mdst_generated_tokens_total"]
    print(json.dumps({
        "model": args.model, "backend": backend, "clients": args.clients, "max_tokens": args.max_tokens,
        "max_batch": args.max_batch, "completed": len(finished), "left_early": len(results) - len(finished),
        "unfinished": unfinished, "wrong": wrong, "all_correct": not wrong and not unfinished,
        "wall_s": round(wall, 2),
        "latency_s": {"p50": round(percentile(latencies, 50), 3), "p99": round(percentile(latencies, 99), 3),
                      "mean": round(statistics.fmean(latencies), 3)},
        "first_chunk_s": {"p50": round(percentile(firsts, 50), 3), "p99": round(percentile(firsts, 99), 3)},
        "requests_per_s": round(len(finished) / wall, 3),
        "generated_tokens": tokens, "generated_tokens_per_s": round(tokens / wall, 2),
        "generations_cancelled": after['mdst_generations_total{finish_reason="cancelled"}'],
        "idle_after": after["mdst_batch_size"] == 0 and after["mdst_queue_depth"] == 0,
    }, indent=2))


if __name__ == "__main__":
    main()
