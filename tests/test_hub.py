"""Models from the Hugging Face Hub: names, quantization picks, downloads through huggingface_hub's cache,
offline mode and `mdst pull`, against a stand-in Hub on 127.0.0.1 (tests/hub_server.py); never the network.

huggingface_hub reads HF_ENDPOINT and HF_HOME when imported, so whatever talks to the Hub runs in a child
process whose environment points at the stand-in and whose sockets refuse any other host.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gguf_split import split_gguf
from hub_server import HubServer
from mdst import hub, progress
from mdst.dev import synth
from mdst.errors import HubError

ROOT = Path(__file__).resolve().parents[1]
REPO = "org/tiny-GGUF"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The stand-in Hub serving REPO: three single-file quantizations (Q8_0 and Q4_K_M the same model, the
    local file), a split one in a folder (the same model), a vision projector and a README."""
    d = tmp_path_factory.mktemp("hub")
    whole = synth.write(d / "tiny.gguf", "llama-tiny", types="Q8_0", seed=11)
    repo = d / "repo"
    (repo / "split").mkdir(parents=True)
    for quant in ("Q8_0", "Q4_K_M"):
        shutil.copy(whole, repo / f"tiny-{quant}.gguf")
    synth.write(repo / "tiny-Q4_K_S.gguf", "llama-tiny", types="Q8_0", seed=12)   # other bytes: a download of its own
    split_gguf(whole, repo / "split" / "tiny-F16", 2)
    (repo / "mmproj-tiny-F16.gguf").write_bytes(b"GGUF")
    (repo / "README.md").write_text("a tiny model\n")
    s = HubServer({REPO: repo})
    s.local = whole
    yield s
    s.close()


def run(server: HubServer, home: Path, code: str, *args: str, offline: bool = False, check: bool = True,
        token: str | None = None) -> subprocess.CompletedProcess:
    """Python `code` (or `-m mdst ARGS` when code is "") in a child pointed at the stand-in Hub, HF_HOME in `home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_ENDPOINT=server.url, HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_OFFLINE="1" if offline else "0", PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    if token is not None:
        env["HF_TOKEN"] = token
    guard = ("import hub_server; hub_server.forbid_network()\n"
             "import os, huggingface_hub.constants as c; assert c.ENDPOINT == os.environ['HF_ENDPOINT']\n")
    if code:
        argv = [sys.executable, "-c", guard + code]
    else:
        argv = [sys.executable, "-c", guard + "import sys, mdst.cli; sys.exit(mdst.cli.main(sys.argv[1:]))", *args]
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    if check:
        assert r.returncode == 0, r.stderr
    return r


# ---- names and picks (no Hub) -------------------------------------------------------------------------------

def test_names(tmp_path, monkeypatch):
    from mdst.packaged import resolve_model_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "repo").write_bytes(b"")
    assert resolve_model_path("org/repo") == "org/repo"   # a path that exists wins over a Hub name
    with pytest.raises(ValueError, match="quant= and revision= choose a file of a Hugging Face repository"):
        resolve_model_path("org/repo", quant="Q4_K_M")
    assert hub.parse("org/repo") == hub.HubRef("org/repo", None, None)
    assert hub.parse("org/repo", "v1") == hub.HubRef("org/repo", None, "v1")
    assert hub.parse("hf://org/repo/sub/m-Q4_K_M.gguf") == hub.HubRef("org/repo", "sub/m-Q4_K_M.gguf", None)
    assert hub.parse("hf://org/repo/m.gguf@abc") == hub.HubRef("org/repo", "m.gguf", "abc")
    assert hub.parse("hf://org/repo@dev/m.gguf") == hub.HubRef("org/repo", "m.gguf", "dev")
    for local in ("model.gguf", "dir/model.gguf", "/abs/org/repo", "./org/repo", "smollm2-135m", "a/b/c"):
        assert hub.parse(local) is None
    with pytest.raises(ValueError, match="give one"):
        hub.parse("hf://org/repo/m.gguf@a", "b")
    with pytest.raises(ValueError, match="not a Hub model name"):
        hub.parse("hf://org")


FILES = ["README.md", "m-Q4_K_M.gguf", "m-Q4_K_S.gguf", "m.Q8_0.gguf", "mmproj-m-F16.gguf", "m-IQ4_XS.gguf",
         "UD-Q4_K_XL/m-UD-Q4_K_XL-00001-of-00002.gguf", "UD-Q4_K_XL/m-UD-Q4_K_XL-00002-of-00002.gguf"]


@pytest.mark.parametrize("quant,file", [
    ("Q4_K_M", "m-Q4_K_M.gguf"), ("q4_k_s", "m-Q4_K_S.gguf"), ("Q8_0", "m.Q8_0.gguf"),
    ("IQ4_XS", "m-IQ4_XS.gguf"), ("Q4_K_XL", "UD-Q4_K_XL/m-UD-Q4_K_XL-00001-of-00002.gguf"),
])
def test_quant_picks_the_file_by_whole_word(quant, file):
    assert hub.pick(FILES, quant, "org/m") == file


def test_pick_errors_list_the_quantizations():
    available = "Q4_K_XL, IQ4_XS, Q4_K_M, Q4_K_S, Q8_0"   # in the order of the files
    for quant in ("Q4_K", "Q4_XS", "F16", "Q5_K_M"):   # no partial words; the projector is no model
        with pytest.raises(HubError, match=f"org/m has no {quant} GGUF model; its quantizations: {available}$"):
            hub.pick(FILES, quant, "org/m")
    with pytest.raises(HubError, match=f"5 GGUF models .* choose one with quant= .* among {available}"):
        hub.pick(FILES, None, "org/m")
    with pytest.raises(HubError, match="2 GGUF models match Q8_0"):
        hub.pick(["a-Q8_0.gguf", "b-Q8_0.gguf"], "Q8_0", "org/m")
    with pytest.raises(HubError, match="holds no GGUF model file"):
        hub.pick(["README.md", "model.safetensors"], None, "org/m")
    assert hub.pick(["only.gguf"], None, "org/m") == "only.gguf"
    assert hub.split_files("UD-Q4_K_XL/m-UD-Q4_K_XL-00001-of-00002.gguf", FILES) == FILES[6:]
    with pytest.raises(HubError, match="lacks d/m-00002-of-00002.gguf"):
        hub.split_files("d/m-00001-of-00002.gguf", ["d/m-00001-of-00002.gguf"])


def test_progress_is_drawn_on_a_terminal_only(monkeypatch):
    class Terminal:
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    assert progress.shown(None) and progress.shown(True) and not progress.shown(False)
    monkeypatch.undo()
    assert not progress.shown(None)   # pytest captures stderr: not a terminal
    with pytest.raises(TypeError, match="progress must be None, a bool or a callable"):
        progress.check("yes")
    with progress.loading(None, "x") as bar:
        assert bar is None
    calls = []
    with progress.loading(lambda done, total: calls.append(done), "x") as bar:
        bar(1, 2)
    assert calls == [1]


# ---- through the stand-in Hub -------------------------------------------------------------------------------

def test_hub_models_load_and_generate_as_the_local_files(server, tmp_path):
    before = len(server.requests)
    r = run(server, tmp_path / "hf", f"""
import json, mdst
from mdst.packaged import resolve_model_path
out = {{}}
def gen(name, **kw):
    with mdst.load(name, device="cpu", context_length=32, **kw) as m:
        return m.generate("Once upon", max_tokens=4), m.gguf.paths
out["local"] = gen({str(server.local)!r})[0]
out["hf"] = gen("hf://{REPO}/tiny-Q8_0.gguf@{server.commit(REPO)}")
out["quant"] = gen("{REPO}", quant="q4_k_m", revision="main")
out["split"] = gen("{REPO}", quant="F16")
out["errors"] = []
for name, kw in [("{REPO}", {{}}), ("{REPO}", {{"quant": "Q4_K"}}), ("org/none", {{}}),
                 ("{REPO}", {{"quant": "Q8_0", "revision": "v9"}}), ("hf://{REPO}/absent.gguf", {{}})]:
    try:
        resolve_model_path(name, **kw)
    except mdst.HubError as e:
        out["errors"].append(str(e))
print(json.dumps(out))
import sys; print("-- progress=True --", file=sys.stderr)
resolve_model_path("{REPO}", quant="Q4_K_S", progress=True)
""")
    out = json.loads(r.stdout)
    silent, drawn = r.stderr.split("-- progress=True --\n")
    assert silent == ""   # no download bars: stderr is not a terminal
    assert "tiny-Q4_K_S.gguf" in drawn and "100%" in drawn   # huggingface_hub's bar, asked for
    text, paths = out["hf"]
    assert text == out["local"] and paths[0].endswith("/tiny-Q8_0.gguf")
    assert paths[0] == str(tmp_path / "hf" / "hub" / "models--org--tiny-GGUF" / "snapshots" / server.commit(REPO) /
                           "tiny-Q8_0.gguf")
    text, paths = out["quant"]
    assert text == out["local"] and Path(paths[0]).name == "tiny-Q4_K_M.gguf"
    text, paths = out["split"]
    assert text == out["local"]
    assert [p.split("/snapshots/")[1][41:] for p in paths] == [
        "split/tiny-F16-00001-of-00002.gguf", "split/tiny-F16-00002-of-00002.gguf"]
    none, partial, repo, revision, file = out["errors"]
    assert "4 GGUF models" in none and "among F16, Q4_K_M, Q4_K_S, Q8_0" in none
    assert "has no Q4_K GGUF model; its quantizations: F16, Q4_K_M, Q4_K_S, Q8_0" in partial
    assert repo.startswith("no model repository org/none on http://127.0.0.1:")
    assert "has no revision 'v9'" in revision
    assert "has no file absent.gguf" in file
    asked = {path.split("?")[0] for _, path, _ in server.requests[before:]}
    assert f"/api/models/{REPO}/tree/main" in asked
    assert f"/{REPO}/resolve/main/split/tiny-F16-00002-of-00002.gguf" in asked
    assert "/org/tiny-GGUF/resolve/main/mmproj-tiny-F16.gguf" not in asked


def test_pull_then_offline_from_the_cache(server, tmp_path):
    home = tmp_path / "hf"
    before = len(server.requests)
    r = run(server, home, "", "pull", REPO, "--quant", "Q4_K_M", token="hf_test_token")
    assert {auth for _, _, auth in server.requests[before:]} == {"Bearer hf_test_token"}   # HF_TOKEN is used
    path = r.stdout.strip()
    assert Path(path).name == "tiny-Q4_K_M.gguf" and Path(path).is_file() and r.stderr == ""
    r = run(server, home, "", "pull", f"hf://{REPO}/split/tiny-F16-00001-of-00002.gguf")
    assert Path(r.stdout.strip()).with_name("tiny-F16-00002-of-00002.gguf").is_file()

    asked = len(server.requests)
    r = run(server, home, "", "generate", "-m", REPO, "--quant", "Q4_K_M", "--device", "cpu", "-n", "4",
            "Once upon", offline=True)
    local = run(server, home, "", "generate", "-m", str(server.local), "--device", "cpu", "-n", "4", "Once upon",
                offline=True)
    assert r.stdout == local.stdout
    run(server, home, "", "inspect", f"hf://{REPO}/split/tiny-F16-00001-of-00002.gguf", offline=True)
    missing = run(server, home, "", "pull", REPO, "--quant", "Q8_0", offline=True, check=False)
    assert missing.returncode == 2
    assert missing.stderr == (f"mdst: error: {REPO} has no Q8_0 GGUF model; its quantizations: F16, Q4_K_M (offline, "
                              "so only the files in the Hugging Face cache count; download others while online: "
                              "mdst pull)\n")
    missing = run(server, home, "", "pull", f"hf://{REPO}/tiny-Q8_0.gguf", offline=True, check=False)
    assert missing.returncode == 2 and "tiny-Q8_0.gguf is not in the Hugging Face cache" in missing.stderr
    other = run(server, tmp_path / "empty", "", "pull", REPO, "--quant", "Q8_0", offline=True, check=False)
    assert other.returncode == 2 and f"{REPO} is not in the Hugging Face cache" in other.stderr
    assert len(server.requests) == asked   # offline: the Hub was not asked
