"""`mdst serve --ray`: two replicas of the model on a local Ray cluster (loopback only, CPU path) answer over HTTP."""

from __future__ import annotations

import concurrent.futures
import json
import os
import socket
from pathlib import Path

import pytest

import httpx
import ray

import mdst
from mdst.serve import ray_serve

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def ray_url(smollm2_path):
    from ray import serve

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"   # no network
    repo = str(Path(__file__).resolve().parent.parent)
    ray.init(_node_ip_address="127.0.0.1", num_cpus=2, include_dashboard=False,
             runtime_env={"env_vars": {"PYTHONPATH": repo, "OPENBLAS_NUM_THREADS": "1"}})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = ray_serve.application(smollm2_path, replicas=2, load_options={"device": "cpu", "context_length": 64},
                                    model_name="smollm2")
        serve.run(app, name="mdst", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def test_two_replicas_answer_the_openai_routes(ray_url, smollm2_path):
    with mdst.load(smollm2_path, device="cpu", context_length=64) as model:
        expected = model.generate(PROMPT, max_tokens=4)
    request = {"model": "smollm2", "prompt": PROMPT, "max_tokens": 4, "temperature": 0}

    def one(i: int) -> tuple[str, str]:
        with httpx.Client(base_url=ray_url, timeout=300) as c:
            if i % 2:
                with c.stream("POST", "/v1/completions", json={**request, "stream": True}) as r:
                    assert r.status_code == 200
                    data = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
                assert data[-1] == "[DONE]"
                text = "".join(json.loads(d)["choices"][0]["text"] for d in data[:-1])
            else:
                r = c.post("/v1/completions", json=request)
                assert r.status_code == 200, r.text
                text = r.json()["choices"][0]["text"]
            return text, r.headers[ray_serve.REPLICA_HEADER]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(one, range(12)))
    assert [text for text, _ in answers] == [expected] * 12
    assert len({replica for _, replica in answers}) == 2, answers
    health = httpx.get(ray_url + "/health", timeout=60).json()
    assert health["status"] == "ok" and health["model"] == "smollm2"
