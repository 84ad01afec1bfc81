"""`mdst serve --max-batch 4`: concurrent requests decode together (continuous batching), each reply the one the
library gives alone; a client that leaves frees its place; requests that read logits run alone, in turn."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import threading
import time

import httpx
import numpy as np
import pytest

import mdst
from mdst.serve.server import create_app
from test_server import RunningServer, complete, metric, stream_completion

MAX_BATCH = 4
GREEDY = {"temperature": 0}
LONG = {"prompt": "Counting: 1, 2, 3, 4,", "max_tokens": 150, **GREEDY}   # runs until its client leaves


@pytest.fixture(scope="module")
def url(smollm2_cpu):
    server = RunningServer(create_app(smollm2_cpu, model_name="smollm2", max_batch=MAX_BATCH))
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def client(url):
    with httpx.Client(base_url=url, timeout=300) as c:
        yield c


def until(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class BatchWatch:
    """The most generations /health reported running at once, polled in a thread while it is open."""

    def __init__(self, url: str):
        self.url, self.most, self._stop = url, 0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as c:
            while not self._stop.is_set():
                self.most = max(self.most, c.get("/health").json()["batch_size"])
                time.sleep(0.01)

    def __enter__(self) -> "BatchWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def chat_text(c: httpx.Client, stream: bool, **body) -> str:
    """A chat reply's content, whole or joined from its streamed deltas."""
    if not stream:
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["message"]["content"]
    with c.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])


def test_concurrent_replies_equal_their_alone_runs(smollm2_cpu, url):
    m = smollm2_cpu
    question = [{"role": "user", "content": "Name three colours."}]
    sampled = {"temperature": 0.8, "seed": 7, "repeat_penalty": 1.2}
    # (what the server is sent, how it is read, the library's reply alone)
    cases = [
        ({"prompt": "The capital of France is", "max_tokens": 12, **GREEDY}, "complete",
         m.generate("The capital of France is", max_tokens=12)),
        ({"prompt": "Once upon a time", "max_tokens": 12, **sampled}, "stream",
         m.generate("Once upon a time", max_tokens=12, **sampled)),
        ({"prompt": "A list of fruits: apple,", "max_tokens": 16, "stop": [","], **GREEDY}, "complete",
         m.generate("A list of fruits: apple,", max_tokens=16, stop=[","])),
        ({"messages": question, "max_tokens": 10, **GREEDY}, "chat", m.chat(question, max_tokens=10)),
        ({"messages": question, "max_tokens": 10, "temperature": 1.0, "seed": 3}, "chat-stream",
         m.chat(question, max_tokens=10, temperature=1.0, seed=3)),
        ({"prompt": "import numpy as", "max_tokens": 8, "n": 2, "temperature": 1.0, "seed": 11}, "choices",
         [m.generate("import numpy as", max_tokens=8, temperature=1.0, seed=11 + i) for i in range(2)]),
    ]

    def ask(body: dict, how: str):
        with httpx.Client(base_url=url, timeout=300) as c:
            if how == "complete":
                return complete(c, **body)["choices"][0]["text"]
            if how == "choices":
                return [ch["text"] for ch in complete(c, **body)["choices"]]
            if how == "stream":
                chunks, _ = stream_completion(c, **body)
                return "".join(ch["choices"][0]["text"] for ch in chunks)
            return chat_text(c, how == "chat-stream", **body)

    with BatchWatch(url) as watch, concurrent.futures.ThreadPoolExecutor(len(cases)) as pool:
        futures = [pool.submit(ask, body, how) for body, how, _ in cases]   # 7 generations for 4 places
        got = [f.result() for f in futures]
    for (body, how, want), reply in zip(cases, got):
        assert reply == want, f"{how} {body}: the batched reply differs from the library's alone"
    assert 2 <= watch.most <= MAX_BATCH


def test_a_client_that_leaves_frees_its_place(smollm2_cpu, url, client):
    short = {"prompt": "Water boils at", "max_tokens": 4, **GREEDY}
    want = smollm2_cpu.generate(short["prompt"], max_tokens=4)
    cancelled = metric(client, 'mdst_generations_total{finish_reason="cancelled"}')
    with httpx.Client(base_url=url, timeout=300) as c, concurrent.futures.ThreadPoolExecutor(1) as pool:
        streams = []   # (what closes the response, its lines: an iterator dropped would close it too)
        for _ in range(MAX_BATCH):   # the batch fills with generations that would run on for long
            held = contextlib.ExitStack()
            lines = held.enter_context(c.stream("POST", "/v1/completions", json={**LONG, "stream": True})).iter_lines()
            assert next(line for line in lines if line.startswith("data: "))
            streams.append((held, lines))
        waiting = pool.submit(complete, client, **short)
        until(lambda: metric(client, "mdst_queue_depth") == 1, "the short request to queue")
        assert metric(client, "mdst_batch_size") == MAX_BATCH and metric(client, "mdst_max_batch") == MAX_BATCH
        assert metric(client, "mdst_kv_cache_tokens") >= MAX_BATCH * len(smollm2_cpu.tokenize(LONG["prompt"]))
        assert not waiting.done()
        streams[0][0].close()   # one client leaves: the waiting request takes its place
        assert waiting.result(timeout=120)["choices"][0]["text"] == want
        assert metric(client, 'mdst_generations_total{finish_reason="cancelled"}') == cancelled + 1
        assert metric(client, "mdst_batch_size") == MAX_BATCH - 1   # the others still run
        for held, _ in streams[1:]:
            held.close()
    until(lambda: metric(client, "mdst_batch_size") == 0, "the batch to empty")
    assert metric(client, "mdst_queue_depth") == 0
    assert metric(client, 'mdst_generations_total{finish_reason="cancelled"}') == cancelled + MAX_BATCH


def test_logprobs_request_runs_alone_in_turn(smollm2_cpu, url, client):
    """A logprobs request waits for the batch to drain, runs alone (right log-probabilities), and a plain request
    that came after it does not overtake it."""
    want = smollm2_cpu.generate("The sun rises in the", max_tokens=4, logprobs=True, top_logprobs=2)
    finished: list[str] = []

    def ask(name: str, body: dict) -> dict:
        with httpx.Client(base_url=url, timeout=300) as c:
            got = complete(c, **body)
        finished.append(name)
        return got

    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        batched = [pool.submit(ask, f"batched {i}", {"prompt": p, "max_tokens": 24, **GREEDY})
                   for i, p in enumerate(["Two plus two equals", "My favourite colour is", "Paris is a city in"])]
        until(lambda: metric(client, "mdst_batch_size") == 3, "the batch to fill")
        scored = pool.submit(ask, "logprobs", {"prompt": "The sun rises in the", "max_tokens": 4, "logprobs": 2,
                                               **GREEDY})
        until(lambda: metric(client, "mdst_queue_depth") == 1, "the logprobs request to queue")
        later = pool.submit(ask, "later", {"prompt": "Water boils at", "max_tokens": 2, **GREEDY})
        reply = scored.result()["choices"][0]
        assert later.result()["choices"][0]["text"] == smollm2_cpu.generate("Water boils at", max_tokens=2)
        assert all(f.result()["choices"][0]["finish_reason"] in ("stop", "length") for f in batched)
    assert finished.index("logprobs") < finished.index("later")
    assert finished.index("logprobs") > max(finished.index(f"batched {i}") for i in range(3))
    assert reply["text"] == want and reply["logprobs"]["tokens"] == [t.text for t in want.logprobs]
    np.testing.assert_allclose(reply["logprobs"]["token_logprobs"], [t.logprob for t in want.logprobs], atol=1e-4)


def test_batched_replies_on_the_gpu(smollm2_gpu):
    """The same equality on the GPU engine (lavapipe in CI): the batched plan's steps give each request the
    reply it gets alone."""
    m = smollm2_gpu
    prompts = ["The capital of France is", "def add(a, b):", "Once upon a time, in a land far"]
    kw = {"max_tokens": 6, "temperature": 0.8, "seed": 3, "repeat_penalty": 1.3}
    want = [m.generate(p, **kw) for p in prompts] + [m.generate(prompts[0], max_tokens=6)]
    server = RunningServer(create_app(m, model_name="smollm2", max_batch=MAX_BATCH))
    try:
        bodies = [{"prompt": p, **kw} for p in prompts] + [{"prompt": prompts[0], "max_tokens": 6, **GREEDY}]

        def ask(body: dict) -> str:
            with httpx.Client(base_url=server.url, timeout=300) as c:
                return complete(c, **body)["choices"][0]["text"]

        with BatchWatch(server.url) as watch, concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
            got = list(pool.map(ask, bodies))
        assert got == want
        assert watch.most >= 2
    finally:
        server.stop()


def test_max_batch_beyond_what_the_model_was_loaded_for(smollm2_path):
    with mdst.load(smollm2_path, device="cpu", context_length=64, max_batch=2) as m:
        with pytest.raises(ValueError, match=r"max_batch=4\)"):
            create_app(m, model_name="smollm2", max_batch=MAX_BATCH)
