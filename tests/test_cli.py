"""The mdst command line, run as users run it (a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def mdst(*args: str, stdin: str | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mdst.cli", *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout)


def test_generate_streams_text(gpu):
    r = mdst("generate", "-m", "smollm2-135m", "--device", "gpu", "-n", "8", "The capital of France is")
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout
    assert "loading [" in r.stderr and "tok/s" in r.stderr


def test_chat_reads_turns_from_stdin(gpu):
    r = mdst("chat", "-m", "smollm2-135m", "--device", "gpu", "-n", "16",
             stdin="What is the capital of France? Answer in one word.\n/reset\n/exit\n")
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout


def test_chat_without_a_template_says_what_to_do(gemma_path):
    r = mdst("chat", "-m", gemma_path, "--device", "cpu", stdin="hi\n")
    assert r.returncode == 2 and "chat template" in r.stderr and "error" in r.stderr


def test_inspect_prints_metadata_and_tensors(smollm2_path):
    r = mdst("inspect", smollm2_path)
    assert r.returncode == 0
    assert "general.architecture = 'llama'" in r.stdout and "token_embd.weight" in r.stdout and "Q4_1" in r.stdout


def test_doctor_lists_the_adapter(gpu):
    r = mdst("doctor")
    assert r.returncode == 0 and gpu.profile.name in r.stdout and "shader_f16" in r.stdout


def test_bench_json(gpu):
    r = mdst("bench", "smollm2-135m", "--device", "gpu", "--prompt-tokens", "16", "--gen-tokens", "4", "--repeat",
             "1", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for key in ("prefill_tokens_per_s", "decode_tokens_per_s", "decode_ms_per_token", "dispatches_per_token",
                "effective_gb_per_s", "peak_gpu_bytes", "adapter"):
        assert key in out
    assert out["decode_tokens_per_s"] > 0


@pytest.mark.parametrize("args,message", [
    (("generate", "-m", "/no/such/file.gguf", "hi"), "cannot open"),
    (("inspect", "/etc/hostname"), "not valid GGUF"),
    (("generate", "-m", "smollm2-135m", "--device", "cpu", "-n", "0", "hi"), "max_tokens"),
])
def test_errors_exit_2_with_a_message(args, message):
    r = mdst(*args)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
