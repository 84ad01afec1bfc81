"""The browser build: web/ runs `mdst oracle` data through navigator.gpu in headless Chromium.

Debian's chromium, driven by Playwright, runs WebGPU on SwiftShader (no shader-f16, so the f32
variants are exercised). Every kernel case must match wgpu-native's output within its tolerance,
and one replayed decode step must match mdst's logits (rel-L2 <= 1e-3).
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from conftest import need
from metrics import report
from test_oracle import PRESETS, tampered, write_oracles

from mdst.dev import oracle

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
# Without --enable-unsafe-webgpu, requestAdapter() gives null on Linux; the rest keep a headless run local.
FLAGS = ["--enable-unsafe-webgpu", "--no-sandbox", "--disable-background-networking"]
PAGE_TIMEOUT_MS = 240_000


class Files(http.server.SimpleHTTPRequestHandler):
    """Serves the repository, and oracle directories under /oracle/<name>/."""

    def __init__(self, *args, oracles: dict[str, Path], **kwargs):
        self.oracles = oracles
        super().__init__(*args, directory=str(REPO), **kwargs)

    def translate_path(self, path: str) -> str:
        parts = unquote(urlsplit(path).path).lstrip("/").split("/")
        if parts[0] == "oracle" and len(parts) > 2 and parts[1] in self.oracles:
            return str(self.oracles[parts[1]].joinpath(*parts[2:]))
        return super().translate_path(path)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def oracles(tmp_path_factory, gpu) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("browser-oracles")
    dirs = write_oracles(root)
    dirs["tampered"] = tampered(dirs["ministral3-tiny"], root / "tampered")
    return dirs


@pytest.fixture(scope="module")
def server(oracles):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Files, oracles=oracles))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need(False, "playwright is not installed (pip install playwright; no browser download needed)")
    need(os.path.exists(CHROMIUM), f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def run_page(browser, server: str, name: str) -> dict:
    """The harness's report for oracle `name`."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"{server}/web/index.html?oracle=/oracle/{name}/&kernels=/mdst/kernels/")
        page.wait_for_function("window.mdstReport !== undefined", timeout=PAGE_TIMEOUT_MS)
        r = page.evaluate("window.mdstReport")
    finally:
        page.close()
    assert not errors, errors
    assert "error" not in r, r["error"]
    return r


def test_webgpu_adapter(browser, server):
    page = browser.new_page()
    try:
        page.goto(f"{server}/web/README.md")
        info = page.evaluate("""async () => {
            const a = navigator.gpu && await navigator.gpu.requestAdapter();
            return a ? {vendor: a.info.vendor, architecture: a.info.architecture, f16: a.features.has("shader-f16")} : null;
        }""")
    finally:
        page.close()
    assert info is not None, "navigator.gpu.requestAdapter() gave no adapter"
    report("chromium webgpu adapter", **info)


@pytest.mark.parametrize("preset", PRESETS)
def test_oracle_in_chromium(browser, server, oracles, preset):
    r = run_page(browser, server, preset)
    manifest = oracle.load_manifest(oracles[preset])
    failed = [c for c in r["cases"] if not c["ok"]]
    assert not failed, failed
    assert r["passed"] == len(manifest["cases"])
    rp = r["replay"]
    assert rp["ok"], rp
    assert rp["logits"]["rel_l2"] <= 1e-3
    assert rp["param_packing"]["checked"] == len(manifest["plan"]["dispatches"])
    worst = max(r["cases"], key=lambda c: max(o.get("rel_l2") or 0 for o in c["outputs"]))
    report("oracle in chromium", preset=preset, engine=r["engine"], cases=r["passed"],
           replay_logits_rel_l2=rp["logits"]["rel_l2"], token=rp["token"]["got"],
           largest_case_difference=[worst["id"], max(o.get("rel_l2") or 0 for o in worst["outputs"])],
           seconds=round(r["seconds"], 1))


def test_harness_reports_mismatches(browser, server):
    r = run_page(browser, server, "tampered")
    assert r["failed"] == 1 and not r["cases"][0]["ok"]
    assert not r["replay"]["ok"] and 9e-3 < r["replay"]["logits"]["rel_l2"] < 1.1e-2
