"""`mdst serve`: the real server on 127.0.0.1, spoken to over HTTP (raw httpx and the official openai client)."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx  # the test extras: httpx, openai, starlette, uvicorn
import numpy as np
import openai
import pytest
import uvicorn

import mdst
from mdst.errors import MdstError
from mdst.serve.command import main
from mdst.serve.server import create_app

GEMMA_TEMPLATE = Path(__file__).parent / "data" / "chat" / "google-gemma-3-it.jinja"
PROMPT = "The capital of France is"
GREEDY = {"temperature": 0}


class RunningServer:
    """uvicorn serving an app on a free 127.0.0.1 port, in a background thread."""

    def __init__(self, app):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the server did not stop"


@pytest.fixture(scope="module")
def model(smollm2_path, gpu):
    with mdst.load(smollm2_path, device="gpu", context_length=512) as m:
        yield m


@pytest.fixture(scope="module")
def url(model):
    server = RunningServer(create_app(model, model_name="smollm2"))
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def client(url):
    with httpx.Client(base_url=url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def oai(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=120)


def complete(client, **body) -> dict:
    r = client.post("/v1/completions", json={"model": "smollm2", **body})
    assert r.status_code == 200, r.text
    return r.json()


def sse_events(raw: str) -> list[str]:
    """The data of each server-sent event, checking the framing: `data: ...` lines, events split by a blank line."""
    assert raw.endswith("\n\n"), raw[-50:]
    events = raw[:-2].split("\n\n")
    assert all(e.startswith("data: ") and "\n" not in e for e in events), events
    return [e[len("data: "):] for e in events]


def stream_completion(client, **body) -> tuple[list[dict], list[str]]:
    """(JSON chunks, event data) of a streamed completion; the last event must be [DONE]."""
    with client.stream("POST", "/v1/completions", json={"stream": True, **body}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        data = sse_events(r.read().decode())
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]], data


@pytest.fixture(scope="module")
def greedy_reference(model):
    """The library's own greedy continuation of PROMPT (8 tokens), computed while the server is idle."""
    return model.generate(PROMPT, max_tokens=8)


# ---- the endpoints ----------------------------------------------------------------------------------------------

def test_models_lists_the_served_model(client, oai):
    body = client.get("/v1/models").json()
    assert body["object"] == "list" and [m["id"] for m in body["data"]] == ["smollm2"]
    assert [m.id for m in oai.models.list()] == ["smollm2"]
    assert oai.models.retrieve("smollm2").owned_by == "mdst"
    r = client.get("/v1/models/gpt-4")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_completion_is_the_library_result_with_usage(client, model, greedy_reference):
    body = complete(client, prompt=PROMPT, max_tokens=8, **GREEDY)
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["model"] == "smollm2" and abs(body["created"] - time.time()) < 120
    (choice,) = body["choices"]
    assert choice["text"] == greedy_reference and choice["finish_reason"] == "length" and choice["index"] == 0
    usage = body["usage"]
    assert usage["prompt_tokens"] == len(model.tokenize(PROMPT))
    assert usage["completion_tokens"] == 8
    assert usage["total_tokens"] == usage["prompt_tokens"] + 8
    # a list of one prompt is the same request
    assert complete(client, prompt=[PROMPT], max_tokens=8, **GREEDY)["choices"][0]["text"] == greedy_reference


def test_completion_stream_framing_and_text(client, greedy_reference):
    chunks, _ = stream_completion(client, prompt=PROMPT, max_tokens=8, stream_options={"include_usage": True},
                                  top_k=1, min_p=0.0, repeat_penalty=1.0, **GREEDY)  # llama.cpp extras accepted
    *pieces, finish, usage = chunks
    assert len({c["id"] for c in chunks}) == 1 and all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in pieces) == greedy_reference
    assert len(pieces) >= 2 and all(c["choices"][0]["finish_reason"] is None for c in pieces)
    assert finish["choices"][0]["finish_reason"] == "length" and finish["choices"][0]["text"] == ""
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 8


def test_stop_strings_end_the_text_without_showing_it(client, greedy_reference):
    middle = len(greedy_reference) // 2
    stop = greedy_reference[middle:middle + 3]
    expected = greedy_reference[:greedy_reference.index(stop)]
    body = complete(client, prompt=PROMPT, max_tokens=8, stop=[stop, "never appears"], **GREEDY)
    assert body["choices"][0]["text"] == expected and body["choices"][0]["finish_reason"] == "stop"
    chunks, _ = stream_completion(client, prompt=PROMPT, max_tokens=8, stop=stop, **GREEDY)
    assert "".join(c["choices"][0]["text"] for c in chunks) == expected
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_seed_makes_sampling_reproducible(client):
    def sample(seed):
        return complete(client, prompt="Once upon a time", max_tokens=8, temperature=1.5, top_k=0, seed=seed)[
            "choices"][0]["text"]

    first = sample(11)
    assert sample(11) == first
    assert sample(12) != first


def test_n_choices_sample_with_seed_plus_index(client, oai, model, greedy_reference):
    sampled = {"prompt": "Once upon a time", "max_tokens": 4, "temperature": 1.5, "top_k": 0}
    body = complete(client, n=2, seed=11, **sampled)
    assert [c["index"] for c in body["choices"]] == [0, 1]
    singles = [complete(client, seed=11 + i, **sampled)["choices"][0]["text"] for i in range(2)]
    assert [c["text"] for c in body["choices"]] == singles and singles[0] != singles[1]
    assert body["usage"]["prompt_tokens"] == len(model.tokenize(sampled["prompt"]))   # the prompt counted once
    assert body["usage"]["completion_tokens"] == 8
    # streamed: each chunk names its choice; greedy choices are all the greedy text
    chunks, _ = stream_completion(client, prompt=PROMPT, max_tokens=8, n=2, stream_options={"include_usage": True},
                                  **GREEDY)
    for i in range(2):
        mine = [c["choices"][0] for c in chunks if c["choices"] and c["choices"][0]["index"] == i]
        assert "".join(c["text"] for c in mine) == greedy_reference and mine[-1]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 16
    reply = oai.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Hi"}], n=2,
                                        max_tokens=3, temperature=0)
    assert [c.index for c in reply.choices] == [0, 1]
    assert reply.choices[0].message.content == reply.choices[1].message.content


def metric(client, name: str) -> float:
    """A sample's value from GET /metrics (`name` with its labels, as the exposition writes it)."""
    text = client.get("/metrics").text
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))


def test_health_and_metrics(client):
    before = metric(client, "mdst_generated_tokens_total")
    requests = metric(client, 'mdst_requests_total{endpoint="completions"}')
    complete(client, prompt=PROMPT, max_tokens=4, **GREEDY)
    assert metric(client, "mdst_generated_tokens_total") == before + 4
    assert metric(client, 'mdst_requests_total{endpoint="completions"}') == requests + 1
    r = client.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = r.text.splitlines()
    for name in ("mdst_queue_depth", "mdst_batch_size", "mdst_kv_cache_tokens", "mdst_decode_tokens_per_second"):
        assert f"# TYPE {name} gauge" in lines
    assert metric(client, "mdst_max_batch") == 1 and metric(client, "mdst_batch_size") == 0
    assert metric(client, "mdst_kv_cache_tokens") > 0 and metric(client, "mdst_decode_tokens_per_second") > 0
    assert all(line.startswith("#") or len(line.split()) == 2 for line in lines)   # name{labels} value
    assert client.get("/health").json() == {"status": "ok", "model": "smollm2", "max_batch": 1, "batch_size": 0,
                                            "queue_depth": 0}


def test_chat_with_the_openai_client(oai, model):
    messages = [{"role": "system", "content": "You are brief."},
                {"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]}]
    expected = model.chat([messages[0], {"role": "user", "content": "What is the capital of France?"}],
                          max_tokens=6)
    prompt_tokens = model.last_stats["prompt_tokens"]

    reply = oai.chat.completions.create(model="smollm2", messages=messages, max_tokens=6, temperature=0)
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    (choice,) = reply.choices
    assert choice.message.role == "assistant" and choice.message.content == expected
    assert choice.finish_reason == "length"
    assert reply.usage.prompt_tokens == prompt_tokens and reply.usage.completion_tokens == 6

    chunks = list(oai.chat.completions.create(model="smollm2", messages=messages, max_completion_tokens=6,
                                              temperature=0, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [c for c in chunks[1:] if c.choices and c.choices[0].delta.content]
    assert len(content) >= 2 and all(c.choices[0].delta.role is None for c in content)
    assert "".join(c.choices[0].delta.content for c in content) == expected
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == prompt_tokens


def test_logprobs_in_openai_shapes(oai, client, model):
    """Completions' legacy logprobs and chat's per-token objects, whole and streamed, are the library's."""
    # the server's request and the library's call can reach a position through other kernels (a reused cached
    # prefix, other prefill chunks): flash-attention blocks and decode's splits sum in other orders before the
    # f16 cache rounds (tokens the same; log-probabilities within 1e-3)
    tol = 1e-3
    want = model.generate(PROMPT, max_tokens=4, logprobs=True, top_logprobs=2)
    reply = oai.completions.create(model="smollm2", prompt=PROMPT, max_tokens=4, temperature=0, logprobs=2)
    lp = reply.choices[0].logprobs
    assert reply.choices[0].text == want and lp.tokens == [t.text for t in want.logprobs]
    np.testing.assert_allclose(lp.token_logprobs, [t.logprob for t in want.logprobs], atol=tol)
    assert [list(d) for d in lp.top_logprobs] == [[model.detokenize([i]) for i, _ in t.top] for t in want.logprobs]
    assert lp.text_offset == [sum(len(t.text) for t in want.logprobs[:i]) for i in range(4)]
    chunks, _ = stream_completion(client, prompt=PROMPT, max_tokens=4, temperature=0, logprobs=1)
    parts = [c["choices"][0]["logprobs"] for c in chunks if c["choices"][0]["text"]]
    assert [t for p in parts for t in p["tokens"]] == lp.tokens
    assert [o for p in parts for o in p["text_offset"]] == lp.text_offset   # offsets run on across chunks
    assert all(len(d) == 1 for p in parts for d in p["top_logprobs"])

    messages = [{"role": "user", "content": "Say hi."}]
    chat = model.chat(messages, max_tokens=4, logprobs=True, top_logprobs=3)
    reply = oai.chat.completions.create(model="smollm2", messages=messages, max_tokens=4, temperature=0,
                                        logprobs=True, top_logprobs=3)
    content = reply.choices[0].logprobs.content
    assert [c.token for c in content] == [t.text for t in chat.logprobs]
    assert [bytes(c.bytes) for c in content] == [t.bytes for t in chat.logprobs]
    np.testing.assert_allclose([c.logprob for c in content], [t.logprob for t in chat.logprobs], atol=tol)
    assert all([x.logprob for x in c.top_logprobs] == sorted((x.logprob for x in c.top_logprobs), reverse=True)
               and len(c.top_logprobs) == 3 and c.top_logprobs[0].logprob >= c.logprob for c in content)
    chunks = list(oai.chat.completions.create(model="smollm2", messages=messages, max_tokens=4, temperature=0,
                                              logprobs=True, stream=True))
    streamed = [x for c in chunks if c.choices and c.choices[0].logprobs for x in c.choices[0].logprobs.content]
    assert [x.token for x in streamed] == [t.text for t in chat.logprobs]
    assert all(x.top_logprobs == [] for x in streamed)


def test_logit_bias_through_the_openai_client(oai, model, greedy_reference):
    forced = model.tokenize(" banana", add_bos=False)[0]
    reply = oai.completions.create(model="smollm2", prompt=PROMPT, max_tokens=3, temperature=0,
                                   logit_bias={str(forced): 100})
    assert reply.choices[0].text == model.detokenize([forced] * 3) != greedy_reference[:len(reply.choices[0].text)]
    assert reply.choices[0].logprobs is None   # not asked for
    with pytest.raises(openai.BadRequestError, match="outside the vocabulary"):
        oai.completions.create(model="smollm2", prompt=PROMPT, max_tokens=3, logit_bias={"999999": 1})


def test_embeddings_with_the_openai_client(oai, client, model):
    texts = ["The sea is blue.", "Paris"]
    reply = oai.embeddings.create(model="smollm2", input=texts)   # the client asks for base64
    assert [d.index for d in reply.data] == [0, 1] and reply.model == "smollm2"
    np.testing.assert_allclose(np.array([d.embedding for d in reply.data]), model.embed(texts), atol=1e-6)
    n = sum(len(model.tokenize(t)) for t in texts)
    assert reply.usage.prompt_tokens == n and reply.usage.total_tokens == n
    body = client.post("/v1/embeddings", json={"input": "Paris", "encoding_format": "float"}).json()
    assert body["object"] == "list" and body["data"][0]["object"] == "embedding"
    np.testing.assert_allclose(body["data"][0]["embedding"], model.embed("Paris"), atol=1e-6)


TOOLS_TEMPLATE = """{% if tools %}<|im_start|>system
You may call: {{ tools | map(attribute='function') | map(attribute='name') | join(', ') }}<|im_end|>
{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% endfor %}{{ '<|im_start|>assistant\\n' }}"""


def test_chat_tools_reach_the_template(model):
    tool = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                             "parameters": {"type": "object",
                                                            "properties": {"city": {"type": "string"}}}}}
    question = [{"role": "user", "content": "Weather in Paris?"}]
    tool_line = "<|im_start|>system\nYou may call: get_weather<|im_end|>\n"
    # the template writes the BOS token (<|im_start|>) itself
    plain = "<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n"
    server = RunningServer(create_app(model, model_name="smollm2", chat_template=TOOLS_TEMPLATE))
    try:
        oai = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120)

        def prompt_tokens(**extra) -> int:
            return oai.chat.completions.create(model="smollm2", messages=question, max_tokens=1, temperature=0,
                                               **extra).usage.prompt_tokens

        assert prompt_tokens(tools=[tool]) == len(model.tokenize(tool_line + plain, add_bos=False))
        assert prompt_tokens() == prompt_tokens(tools=[tool], tool_choice="none") == len(model.tokenize(plain, add_bos=False))
    finally:
        server.stop()


# ---- the queue --------------------------------------------------------------------------------------------------

def test_concurrent_requests_match_sequential_results(client, url):
    prompts = ["Water boils at", "My favourite colour is", "Two plus two equals", "Paris is a city in"]
    sequential = [complete(client, prompt=p, max_tokens=5, **GREEDY)["choices"][0]["text"] for p in prompts]

    finished = []

    def one(i: int) -> str:
        with httpx.Client(base_url=url, timeout=120) as c:
            if i % 2:
                chunks, _ = stream_completion(c, prompt=prompts[i], max_tokens=5, **GREEDY)
                text = "".join(ch["choices"][0]["text"] for ch in chunks)
            else:
                text = complete(c, prompt=prompts[i], max_tokens=5, **GREEDY)["choices"][0]["text"]
        finished.append(i)
        return text

    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
        futures = []
        for i in range(len(prompts)):
            futures.append(pool.submit(one, i))
            time.sleep(0.1)  # a clear arrival order
        # the event loop stays free while the generations run (they are queued on a worker thread)
        t0 = time.monotonic()
        assert client.get("/v1/models").status_code == 200
        assert time.monotonic() - t0 < 1.0
        assert not all(f.done() for f in futures)
        assert [f.result() for f in futures] == sequential
    assert finished == list(range(len(prompts)))  # served one at a time, in arrival order


def wait_for_cancelled_generation(model) -> None:
    deadline = time.monotonic() + 20
    while model.last_stats.get("finish_reason") != "cancelled":
        assert time.monotonic() < deadline, f"generation went on after the client left: {model.last_stats}"
        time.sleep(0.05)
    assert model.last_stats["generated_tokens"] < 100


def test_client_disconnect_stops_the_generation(client, url, model, greedy_reference):
    long_request = {"prompt": "Counting: 1, 2, 3, 4,", "max_tokens": 400, **GREEDY}
    model.last_stats = {}
    with httpx.Client(base_url=url, timeout=120) as c, \
            c.stream("POST", "/v1/completions", json={**long_request, "stream": True}) as r:
        first = next(line for line in r.iter_lines() if line.startswith("data: "))
        assert json.loads(first[6:])["choices"][0]["finish_reason"] is None, first
    wait_for_cancelled_generation(model)
    model.last_stats = {}
    with httpx.Client(base_url=url, timeout=1.5) as c, pytest.raises(httpx.ReadTimeout):
        c.post("/v1/completions", json=long_request)
    wait_for_cancelled_generation(model)
    # the model is ready for the next request, at once
    t0 = time.monotonic()
    assert complete(client, prompt=PROMPT, max_tokens=8, **GREEDY)["choices"][0]["text"] == greedy_reference
    assert time.monotonic() - t0 < 20
    assert metric(client, 'mdst_generations_total{finish_reason="cancelled"}') >= 2
    assert metric(client, "mdst_batch_size") == 0 and metric(client, "mdst_queue_depth") == 0


# ---- errors -----------------------------------------------------------------------------------------------------

BAD_REQUESTS = [
    ("/v1/completions", b"{not json", None),
    ("/v1/completions", b"[1, 2]", None),
    ("/v1/completions", {"max_tokens": 2}, "prompt"),
    ("/v1/completions", {"prompt": ["a", "b"]}, "prompt"),
    ("/v1/completions", {"prompt": [1, 2, 3]}, "prompt"),
    ("/v1/completions", {"prompt": "x", "n": 0}, "n"),
    ("/v1/completions", {"prompt": "x", "n": 17}, "n"),
    ("/v1/completions", {"prompt": "x", "echo": True}, "echo"),
    ("/v1/completions", {"prompt": "x", "logprobs": 21}, "logprobs"),
    ("/v1/completions", {"prompt": "x", "logprobs": True}, "logprobs"),
    ("/v1/completions", {"prompt": "x", "logit_bias": {"5": 101}}, "logit_bias"),
    ("/v1/completions", {"prompt": "x", "logit_bias": {"five": 1}}, "logit_bias"),
    ("/v1/completions", {"prompt": "x", "logit_bias": [5]}, "logit_bias"),
    ("/v1/completions", {"prompt": "x", "temperature": -1}, "temperature"),
    ("/v1/completions", {"prompt": "x", "temperature": "hot"}, "temperature"),
    ("/v1/completions", {"prompt": "x", "top_p": 0}, "top_p"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 2.5}, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "stop": [""]}, "stop"),
    ("/v1/completions", {"prompt": "x", "seed": -3}, "seed"),
    ("/v1/completions", {"prompt": "x", "stream": "yes"}, "stream"),
    ("/v1/completions", {"prompt": "word " * 600}, None),  # longer than the 512-token context
    ("/v1/chat/completions", {"model": "smollm2"}, "messages"),
    ("/v1/chat/completions", {"messages": []}, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "hi"}]}, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": ["user"], "content": "hi"}]}, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}, "hello"]}, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "logprobs": 1}, "logprobs"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}, "top_logprobs"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "logprobs": True,
                              "top_logprobs": 21}, "top_logprobs"),
    ("/v1/embeddings", {"input": []}, "input"),
    ("/v1/embeddings", {"input": [1, 2]}, "input"),
    ("/v1/embeddings", {"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "tool_choice": "required"},
     "tool_choice"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "frequency_penalty": None,
                              "presence_penalty": "lots"}, "presence_penalty"),
]


@pytest.mark.parametrize("path,body,param", BAD_REQUESTS)
def test_bad_requests_get_openai_400s(client, path, body, param):
    r = client.post(path, content=body) if isinstance(body, bytes) else client.post(path, json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"] and error["param"] == param
    assert set(error) == {"message", "type", "param", "code"}


def test_unknown_routes_and_methods(client, oai):
    r = client.post("/v1/images/generations", json={"prompt": "x"})
    assert r.status_code == 404 and "/v1/images/generations" in r.json()["error"]["message"]
    assert client.get("/v1/completions").status_code == 405
    with pytest.raises(openai.BadRequestError, match="n must be"):
        oai.completions.create(model="smollm2", prompt="x", n=99)


def test_generation_failures_are_500s_and_the_server_lives_on(smollm2_path, monkeypatch):
    broken = mdst.load(smollm2_path, device="cpu", context_length=64)

    def fail(*args, **kwargs):
        raise MdstError("the engine is closed (injected)")

    # every generation now fails inside the worker thread, after the request was checked and tokenized
    monkeypatch.setattr(broken.engine, "step", fail)
    monkeypatch.setattr(broken.engine, "decode", fail)
    server = RunningServer(create_app(broken, model_name="closed"))
    try:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            r = c.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2})
            assert r.status_code == 500
            error = r.json()["error"]
            assert error["type"] == "server_error" and "closed" in error["message"]
            with c.stream("POST", "/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}],
                                                                "max_tokens": 2, "stream": True}) as r:
                assert r.status_code == 200  # the stream had started: the error comes as an event
                *_, last = sse_events(r.read().decode())
            assert json.loads(last)["error"]["type"] == "server_error"
            assert c.get("/v1/models").status_code == 200
    finally:
        server.stop()
        broken.close()


# ---- other models and the command line ---------------------------------------------------------------------------

def test_gemma3_chat_with_a_template_file(gemma_path, gpu):
    template = GEMMA_TEMPLATE.read_text()
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    with mdst.load(gemma_path, device="gpu", context_length=256) as gemma:
        expected = gemma.chat(messages, template=template, max_tokens=4)
        with_template = RunningServer(create_app(gemma, model_name="gemma3", chat_template=template))
        without = RunningServer(create_app(gemma, model_name="gemma3"))
        try:
            oai = openai.OpenAI(base_url=with_template.url + "/v1", api_key="x", max_retries=0, timeout=120)
            reply = oai.chat.completions.create(model="gemma3", messages=messages, max_tokens=4, temperature=0)
            assert reply.choices[0].message.content == expected and reply.usage.completion_tokens == 4
            r = httpx.post(without.url + "/v1/chat/completions", json={"messages": messages}, timeout=60)
            assert r.status_code == 400 and r.json()["error"]["code"] == "no_chat_template"
            assert "--chat-template" in r.json()["error"]["message"]
        finally:
            with_template.stop()
            without.stop()


def test_main_serves_until_interrupted(smollm2_path, gpu):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", "import sys, mdst.serve.command; sys.exit(mdst.serve.command.main(sys.argv[1:]))",
                             smollm2_path, "--port", str(port), "--device", "gpu", "--context", "128",
                             "--name", "tiny"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "mdst serve did not come up"
            try:
                models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).json()
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert [m["id"] for m in models["data"]] == ["tiny"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        stderr = proc.stderr.read()
    assert "OpenAI API at http://127.0.0.1:" in stderr


def test_main_reports_a_missing_model(tmp_path, capsys):
    assert main([str(tmp_path / "missing.gguf")]) == 2
    assert "mdst serve: error:" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.gguf"), "--max-batch", "0"]) == 2
    assert "--max-batch must be at least 1" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.gguf"), "--replicas", "2"]) == 2
    assert "--replicas needs --ray" in capsys.readouterr().err
