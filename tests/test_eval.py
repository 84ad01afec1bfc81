"""lm-evaluation-harness support (mdst.eval) and `mdst eval`, on SmolLM2 (numpy path), offline.

The numbers lm_eval reports are checked against mdst's own log-probabilities computed here from
Model.logits, independently of the harness's session and prefix reuse.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lm_eval")   # the eval extra; the test extra installs it, so CI runs these

import mdst
from mdst.cli import main
from mdst.eval.harness import MdstLM
from mdst.eval.record import task_manager
from mdst.quality.perplexity import log_softmax

TASKS = Path(__file__).parent / "data" / "lm_eval"
OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module", autouse=True)
def offline():
    """No network for these tests, and only for them: datasets and huggingface_hub read the variables at import,
    so their copies are set too, and all is restored afterwards."""
    import datasets.config
    import huggingface_hub.constants

    with pytest.MonkeyPatch.context() as mp:
        for name, value in OFFLINE.items():
            mp.setenv(name, value)
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
            mp.setattr(datasets.config, name, True)
        yield


@pytest.fixture(scope="module")
def lm(smollm2_path):
    with mdst.load(smollm2_path, device="cpu", context_length=128) as m:
        yield MdstLM(m)


@pytest.fixture
def in_tasks_dir(monkeypatch):
    """The task YAML names its JSONL relative to the working directory (as datasets resolves data_files)."""
    monkeypatch.chdir(TASKS)


def docs() -> list[dict]:
    return [json.loads(line) for line in (TASKS / "capitals.jsonl").read_text().splitlines()]


def logprob(model, ids: list[int], start: int) -> float:
    """log P(ids[start:] | ids[:start]) from Model.logits (one stateless pass)."""
    lp = log_softmax(model.logits(ids[:-1]))
    return float(sum(lp[j - 1, ids[j]] for j in range(start, len(ids))))


def choice_logprob(model, context: str, choice: str) -> float:
    """lm_eval's convention: " " + choice after the context, tokenized whole; the context's tokens split off."""
    ctx = model.tokenize(context)
    return logprob(model, model.tokenize(context + " " + choice), len(ctx))


def request(kind: str, *args):
    from lm_eval.api.instance import Instance
    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


def test_multiple_choice_acc_is_mdst_loglikelihoods(lm, in_tasks_dir):
    from lm_eval import simple_evaluate

    # lm_eval's TaskManager, as `mdst eval` builds it (once per include path: indexing takes seconds)
    out = simple_evaluate(model=lm, tasks=["mdst_capitals"], task_manager=task_manager(str(TASKS)))
    samples = out["samples"]["mdst_capitals"]
    assert [s["doc"] for s in samples] == docs()
    right = []
    for s in samples:
        d = s["doc"]
        ll = [choice_logprob(lm.model, f"Question: {d['question']}\nAnswer:", c) for c in d["choices"]]
        right.append(int(np.argmax(ll)) == d["answer"])
        np.testing.assert_allclose([got for got, _ in s["filtered_resps"]], ll, rtol=1e-4, atol=1e-3)
    assert out["results"]["mdst_capitals"]["acc,none"] == pytest.approx(np.mean(right), abs=1e-12)


def test_loglikelihood_rolling_is_sum_of_logprobs(lm):
    text = "The quick brown fox jumps over the lazy dog. It was not amused."
    ids = [lm.prefix_token_id, *lm.model.tokenize(text, add_bos=False)]
    (got,) = lm.loglikelihood_rolling([request("loglikelihood_rolling", text)])
    assert got == pytest.approx(logprob(lm.model, ids, 1), rel=1e-4)


def test_generate_until_stops_at_the_stop_string(lm):
    prompt = "Here is a list of fruits: apple, banana,"
    (free,) = lm.generate_until([request("generate_until", prompt, {"until": [], "max_gen_toks": 6})])
    words = free.split()
    assert len(words) >= 3, free
    stop = words[1]
    (cut,) = lm.generate_until([request("generate_until", prompt, {"until": [stop], "max_gen_toks": 6})])
    assert cut == free[:free.index(stop)]


def test_mdst_eval_writes_the_record(smollm2_path, in_tasks_dir, tmp_path, capsys):
    out = tmp_path / "run.json"
    assert main(["eval", smollm2_path, "--device", "cpu", "--context", "128", "--tasks", "mdst_capitals",
                 "--include-path", str(TASKS), "--limit", "2", "--output", str(out)]) == 0
    rec = json.loads(out.read_text())
    with open(smollm2_path, "rb") as f:
        assert rec["model"]["sha256_first_mib"] == hashlib.sha256(f.read(1 << 20)).hexdigest()
    assert rec["device"] == "cpu" and rec["adapter"] == "cpu (numpy)" and rec["limit"] == 2
    assert set(rec["versions"]) == {"mdst", "lm_eval", "wgpu"} and rec["versions"]["lm_eval"]
    task = rec["tasks"]["mdst_capitals"]
    chance = np.mean([1 / len(d["choices"]) for d in docs()[:2]])
    acc = rec["lm_eval_results"]["mdst_capitals"]["acc,none"]
    assert task["samples"] == 2 and task["metric"] == "acc" and task["score"] == acc
    assert task["chance"] == pytest.approx(chance)
    assert rec["aggregate"] == pytest.approx((acc - chance) / (1 - chance))
    assert "aggregate" in capsys.readouterr().err


@pytest.mark.parametrize("args, problem", [
    ("device=cpu", "pretrained=PATH"),
    ("pretrained=x.gguf,device=cuda", "device=gpu, cpu or auto"),
    ("pretrained=x.gguf,dtype=float16", "unknown model_args for mdst: dtype"),
])
def test_bad_model_args(args, problem):
    from lm_eval.api.registry import get_model

    assert get_model("mdst") is MdstLM
    with pytest.raises(ValueError, match=problem):   # lm_eval's command line always adds its --device
        MdstLM.create_from_arg_string(args, {"device": "cuda:0", "batch_size": 1, "max_batch_size": None})


def test_bad_generation_kwargs(lm):
    with pytest.raises(ValueError, match="repetition_penalty"):
        lm.generate_until([request("generate_until", "Hi", {"until": ["\n"], "repetition_penalty": 1.1})])


def test_python_m_mdst_eval_finds_the_model(in_tasks_dir):
    """lm_eval's own command line through `python -m mdst.eval` resolves --model mdst (here, to its args check)."""
    got = subprocess.run([sys.executable, "-m", "mdst.eval", "--model", "mdst", "--model_args", "device=cpu",
                          "--tasks", "mdst_capitals", "--include_path", str(TASKS)],
                         capture_output=True, text=True, timeout=120, env={**os.environ, **OFFLINE})
    assert got.returncode != 0
    assert "model_args for mdst need pretrained=PATH" in got.stderr


def test_mdst_eval_checks_tasks_before_loading(capsys):
    assert main(["eval", "no-such-model.gguf", "--tasks", "mdst_capitals,no_such_task_xyz",
                 "--include-path", str(TASKS)]) == 2
    assert "unknown lm_eval task(s): no_such_task_xyz" in capsys.readouterr().err
