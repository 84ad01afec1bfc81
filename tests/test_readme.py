"""The README's own text, run: its Python blocks, its `$ command` lines, and the installed `mdst` command.

scripts/test.sh runs the README's first command (install and generate) before the tests; these run what the
README shows after it, with the `mdst` and `python` of the environment the tests run in (CI: that fresh .venv).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import CI

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import readme_blocks  # noqa: E402

BIN = Path(sys.executable).parent
PORT = "8080"   # the README's port; each test serves on a free one and rewrites it


def env() -> dict[str, str]:
    """The environment of a user whose venv is active: its bin first on PATH, nothing of the checkout imported."""
    e = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XDG_RUNTIME_DIR")}
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    return e


def mdst_command() -> list[str]:
    """The installed console script (in CI always), else `python -m mdst`."""
    script = BIN / "mdst"
    if script.exists():
        return [str(script)]
    if CI:
        pytest.fail(f"no mdst console script beside {sys.executable}: the wheel did not install it")
    return [sys.executable, "-m", "mdst"]


def console() -> list[tuple[str, str]]:
    """Every `$ command` of the README with the output shown under it."""
    return [c for b in readme_blocks.blocks("") for c in readme_blocks.shell_commands(b)]


def shown(command: str) -> str:
    """The output the README shows for `command`."""
    outputs = [o for c, o in console() if c == command]
    assert outputs, f"README no longer shows `$ {command}`"
    return outputs[0]


def generated_text() -> str:
    """What the README shows `mdst generate "The capital of France is" -n 16` printing on stdout (greedy)."""
    out = shown('mdst generate "The capital of France is" -n 16')
    return out[:out.rindex("\n[")] + "\n"   # less the stats line (stderr)


def run(cmd: str | list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, shell=isinstance(cmd, str), cwd=cwd, env=env(), capture_output=True, text=True,
                          timeout=timeout, executable="/bin/bash" if isinstance(cmd, str) else None)


def test_ci_runs_the_readme_commands():
    """`.ci/run` is the README's test command, and that command runs the README's first command as written."""
    first, test_command = readme_blocks.blocks("sh")
    assert test_command.strip() == "bash scripts/test.sh"
    assert "exec bash scripts/test.sh" in (REPO / ".ci" / "run").read_text()
    script = (REPO / "scripts" / "test.sh").read_text()
    assert "readme_blocks.py sh 0" in script and ".venv/bin/pytest" in script
    assert "pip install ." in first and "python3 -m venv .venv" in first and first.count("\n") == 1


@pytest.mark.parametrize("device", ["gpu", "cpu"])
def test_installed_command_generates_what_the_readme_shows(device, tmp_path, request):
    """`mdst generate` as installed: only the text on stdout (the README's), one stats line on stderr."""
    if device == "gpu":
        request.getfixturevalue("gpu")
    text = generated_text()
    r = run([*mdst_command(), "generate", "The capital of France is", "-n", "16", "--device", device], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == text
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("[5 prompt tokens, 16 generated") and "tok/s" in lines[0], r.stderr
    assert ("software" in lines[0]) == (device == "gpu") and ("numpy" in lines[0]) == (device == "cpu")


def test_python_api_block(tmp_path):
    """The Python section's block, as written; its greedy line is the one the README shows."""
    code = readme_blocks.blocks("python")[0]
    r = run([sys.executable, "-c", code], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    greedy = generated_text()
    assert readme_blocks.following(code).startswith(greedy)   # the output shown under the block
    assert r.stdout.startswith(greedy), (r.stdout, greedy)
    assert "'finish_reason': 'length'" in r.stdout


def test_console_commands(tmp_path):
    """`mdst doctor` and `mdst synth --list` as the README shows them."""
    doctor = run("mdst doctor", tmp_path)
    assert doctor.returncode == 0, doctor.stderr
    assert doctor.stdout.startswith("mdst ") and "\nchosen: " in doctor.stdout and not doctor.stderr
    synth = run("mdst synth --list", tmp_path)
    assert synth.returncode == 0, synth.stderr
    for line in shown("mdst synth --list").splitlines():
        if line and line != "...":
            assert line in synth.stdout.splitlines()
    known = {"mdst generate", "mdst doctor", "mdst synth", "curl ", "python client.py"}
    for command, _ in console():
        assert any(command.startswith(k) for k in known), f"README command `{command}` has no test here"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_section(tmp_path):
    """`mdst serve` answers the README's curl commands and its `openai` client snippet."""
    port = str(free_port())
    server = subprocess.Popen([*mdst_command(), "serve", "smollm2-135m", "--host", "127.0.0.1", "--port", port],
                              cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5).read()
                break
            except OSError:
                assert server.poll() is None, server.stderr.read()
                assert time.monotonic() < deadline, "mdst serve did not answer within 300 s"
                time.sleep(0.5)
        (tmp_path / "client.py").write_text(readme_blocks.blocks("python")[1].replace(f":{PORT}/", f":{port}/"))
        outputs = {}
        for command, _ in console():
            if command.startswith(("curl ", "python client.py")):
                r = run(command.replace(f":{PORT}/", f":{port}/"), tmp_path, timeout=300)
                assert r.returncode == 0, (command, r.stderr)
                outputs[command.split()[0] + (" stream" if '"stream": true' in command else "")] = r.stdout
        assert json.loads(outputs["curl"])["data"][0]["id"] == "smollm2-135m"
        assert outputs["python"].strip()
        events = [line for line in outputs["curl stream"].splitlines() if line]
        assert events[-1] == "data: [DONE]" and len(events) >= 2
        assert all(e.startswith("data: ") for e in events)
        assert json.loads(events[0][6:])["object"] == "text_completion"
    finally:
        server.terminate()
        server.wait(timeout=60)
