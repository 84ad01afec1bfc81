"""The mdst command line, run as users run it (a subprocess), and in-process where a test must see inside."""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import subprocess
import sys

import pytest

import mdst
from conftest import need
from mdst import cli


def mdst_cmd(*args: str, stdin: str | None = None, timeout: int = 600, env: dict | None = None,
             module: str = "mdst.cli") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout, env=env)


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def no_load(monkeypatch):
    """Make loading a model fail the test: the command must stop before it."""
    def load(*args, **kwargs):
        raise AssertionError("the model was loaded")
    monkeypatch.setattr(mdst, "load", load)


def test_generate_prints_only_the_text_and_one_stats_line(gpu):
    """On a headless machine (no XDG_RUNTIME_DIR), no driver noise and no loading bar in a pipe."""
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    r = mdst_cmd("generate", "-m", "smollm2-135m", "--device", "gpu", "-n", "8", "The capital of France is", env=env)
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("[5 prompt tokens, 8 generated") and "tok/s" in lines[0], lines


def test_chat_reads_turns_from_stdin(gpu):
    r = mdst_cmd("chat", "-m", "smollm2-135m", "--device", "gpu", "-n", "16",
                 stdin="What is the capital of France? Answer in one word.\n/reset\n/exit\n")
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout


def test_chat_without_a_template_says_what_to_do_before_loading(gemma_path, no_load, capsys):
    assert cli.main(["chat", "-m", gemma_path]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mdst: error: ") and "has no chat template" in err
    assert "--chat-template FILE" in err and "template=" in err


def test_inspect_prints_metadata_and_tensors(smollm2_path):
    r = mdst_cmd("inspect", smollm2_path)
    assert r.returncode == 0
    assert "general.architecture = 'llama'" in r.stdout and "token_embd.weight" in r.stdout and "Q4_1" in r.stdout


def test_doctor_says_what_auto_chooses_and_why(gpu):
    r = mdst_cmd("doctor")
    assert r.returncode == 0 and gpu.profile.name in r.stdout and "shader_f16" in r.stdout
    if gpu.profile.software:  # the best adapter is a software one, so every adapter is
        assert (f"chosen: cpu (numpy): only software adapters ({gpu.profile.name}), and numpy is faster than a "
                "software adapter; --device gpu forces it") in r.stdout
    else:
        assert f"chosen: hardware adapter {gpu.profile.name}" in r.stdout


def test_bench_json_is_quiet_in_a_pipe(gpu):
    r = mdst_cmd("bench", "smollm2-135m", "--device", "gpu", "--prompt-tokens", "16", "--gen-tokens", "4",
                 "--repeat", "1", "--json")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    out = json.loads(r.stdout)
    for key in ("prefill_tokens_per_s", "decode_tokens_per_s", "decode_ms_per_token", "dispatches_per_token",
                "effective_gb_per_s", "peak_gpu_bytes", "adapter"):
        assert key in out
    assert out["decode_tokens_per_s"] > 0


def test_bench_profile_prints_the_table(gpu):
    need(gpu.profile.timestamps, "the adapter has no timestamp-query feature")
    r = mdst_cmd("bench", "smollm2-135m", "--device", "gpu", "--prompt-tokens", "16", "--gen-tokens", "4",
                 "--repeat", "1", "--profile")
    assert r.returncode == 0, r.stderr
    assert "GPU time of one 1-row step" in r.stdout and "GPU time of one 16-row step" in r.stdout
    assert "by layer (us): 0: " in r.stdout and "; outside layers: " in r.stdout


def test_bench_batch_decodes_the_sequences_together(smollm2_path, monkeypatch, capsys):
    # `mdst bench --batch`: each size's aggregate, the sequences stepping through one batched plan a step (3
    # sequences: the plan of 4 rows; lavapipe takes it)
    from mdst.runtime.engine import GpuEngine

    rows = []
    monkeypatch.setattr(GpuEngine, "batch_plan", lambda self, n, _real=GpuEngine.batch_plan: rows.append(n) or
                        _real(self, n))
    assert cli.main(["bench", smollm2_path, "--device", "gpu", "--context", "64", "--prompt-tokens", "8",
                     "--gen-tokens", "3", "--repeat", "1", "--batch", "1,3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["batched"]) == {"1", "3"}
    three = out["batched"]["3"]
    assert three["aggregate_tokens_per_s"] == pytest.approx(3 * three["per_sequence_tokens_per_s"])
    assert rows and set(rows) == {3}   # a lone sequence keeps the one-row plan; 3 take the batched one each step


def test_bench_shows_its_phases_on_a_terminal(smollm2_path, monkeypatch, capsys):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert cli.main(["bench", smollm2_path, "--device", "cpu", "--prompt-tokens", "8", "--gen-tokens", "2",
                     "--repeat", "2"]) == 0
    shown = terminal.getvalue()
    for phase in ("warm-up: prefill 8 tokens", "run 1/2: prefill 8 tokens", "run 1/2: decode 2 tokens",
                  "run 2/2: decode 2 tokens"):
        assert f"\r\033[Kbench: {phase}" in shown
    assert shown.endswith("\r\033[K")  # erased before the result
    assert "decode" in capsys.readouterr().out


@pytest.fixture
def load_kwargs(monkeypatch):
    """Record what the command passes to mdst.load, then stop it there (an unexpected error: exit 1)."""
    seen: list[dict] = []

    def load(*args, **kwargs):
        seen.append(kwargs)
        raise RuntimeError("stopped at load")
    monkeypatch.setattr(mdst, "load", load)
    return seen


def test_kv_type_flag_and_deprecated_precision_alias(load_kwargs, capsys):
    assert cli.main(["generate", "--kv-type", "q8_0", "hi"]) == 1
    assert load_kwargs[-1]["kv_type"] == "q8_0" and "precision" not in load_kwargs[-1]
    assert "deprecated" not in capsys.readouterr().err
    for precision, want in (("f16", "f16"), ("f32", "f32"), ("auto", None)):
        assert cli.main(["bench", "smollm2-135m", "--precision", precision]) == 1
        assert load_kwargs[-1]["kv_type"] == want and "precision" not in load_kwargs[-1]
        err = capsys.readouterr().err
        assert err.count("--precision is deprecated") == 1 and "--kv-type" in err
    n = len(load_kwargs)
    assert cli.main(["generate", "--precision", "f32", "--kv-type", "q8_0", "hi"]) == 2
    assert len(load_kwargs) == n and "disagree" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["generate", "--help"])
    out = capsys.readouterr().out
    assert "--kv-type" in out and "--precision" not in out   # the alias is hidden


def test_activations_flag_reaches_load(load_kwargs):
    assert cli.main(["generate", "hi"]) == 1 and load_kwargs[-1]["activations"] == "f32"
    assert cli.main(["bench", "smollm2-135m", "--activations", "q8"]) == 1 and load_kwargs[-1]["activations"] == "q8"


def test_version():
    assert importlib.metadata.version("mdst") == mdst.__version__
    for module in ("mdst.cli", "mdst"):
        r = mdst_cmd("--version", module=module)
        assert r.returncode == 0 and r.stdout == f"mdst {mdst.__version__}\n"


@pytest.mark.parametrize("args,message", [
    (("generate", "-m", "/no/such/file.gguf", "hi"), "cannot open /no/such/file.gguf: no such file"),
    (("generate", "-m", "smollm2", "hi"), "packaged models: smollm2-135m, gemma3-270m"),
    (("inspect", "/etc/hostname"), "not valid GGUF"),
    (("generate", "-m", "smollm2-135m", "--device", "cpu", "-n", "0", "hi"), "max_tokens"),
])
def test_errors_exit_2_with_a_message(args, message):
    r = mdst_cmd(*args)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.startswith("mdst: error: ") and len(r.stderr.splitlines()) == 1


@pytest.mark.parametrize("args,message", [
    (["generate", "-n", "-1", "hi"], "max_tokens must be >= 1, got -1"),
    (["generate", "--top-p", "0", "hi"], "top_p must be in (0, 1]"),
    (["chat", "-t", "-1"], "temperature must be >= 0"),
    (["bench", "smollm2-135m", "--repeat", "0"], "repeat must be >= 1"),
    (["bench", "smollm2-135m", "--batch", "4,0"], "batch sizes must be >= 1, got [4, 0]"),
    (["bench", "smollm2-135m", "--batch", "4;16"], "--batch takes comma-separated sequence counts"),
])
def test_arguments_are_checked_before_loading(no_load, capsys, args, message):
    assert cli.main(args) == 2
    assert message in capsys.readouterr().err


def test_unexpected_errors_are_one_line_unless_debugging(monkeypatch, capsys):
    def broken(args):
        raise RuntimeError("something broke")
    monkeypatch.setitem(cli.COMMANDS, "doctor", (broken, ""))
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    assert cli.main(["doctor"]) == 1
    assert capsys.readouterr().err == "mdst: error: RuntimeError: something broke (--debug shows the traceback)\n"
    for argv in (["--debug", "doctor"], ["doctor", "--debug"]):
        with pytest.raises(RuntimeError, match="something broke"):
            cli.main(argv)
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(RuntimeError, match="something broke"):
        cli.main(["doctor"])


def test_bench_runs_refuse_what_the_context_cannot_hold(smollm2_cpu):
    from mdst.serve.bench import bench, bench_batch

    for run in (lambda: bench(smollm2_cpu, 300, 21, 1), lambda: bench_batch(smollm2_cpu, [2], 300, 21, 1)):
        with pytest.raises(ValueError, match="prompt_tokens \\+ gen_tokens = 321 exceeds the context length 320"):
            run()
