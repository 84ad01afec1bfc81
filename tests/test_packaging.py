"""What users install: the sdist and the wheel hold every file of mdst/ the code can read, and the tests run the wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from conftest import CI

REPO = Path(__file__).resolve().parents[1]


def source_files() -> set[str]:
    """Every file under mdst/ in the checkout (tracked by git where it can say), as paths relative to the repo."""
    try:
        out = subprocess.run(["git", "ls-files", "mdst"], cwd=REPO, capture_output=True, text=True, check=True)
        files = set(out.stdout.split())
    except (OSError, subprocess.CalledProcessError):
        files = {str(p.relative_to(REPO)) for p in (REPO / "mdst").rglob("*") if p.is_file()}
    return {f for f in files if "__pycache__" not in f and not f.endswith(".pyc")}


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> Path:
    """The sdist, and the wheel built from it, as `python -m build` makes them (no network: no isolation)."""
    src = tmp_path_factory.mktemp("src")
    # a copy, so the build leaves nothing in the checkout
    shutil.copytree(REPO, src / "mdst-src", ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".device", ".whl", "node_modules"))
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src / "mdst-src")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


def test_wheel_holds_every_file_of_the_package(dists):
    wheel = next(dists.glob("mdst-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        held = {n for n in z.namelist() if n.startswith("mdst/")}
    missing = sorted(source_files() - held)
    assert not missing, f"not in {wheel.name}: {missing} (pyproject.toml [tool.setuptools.package-data])"
    assert any(n.startswith("mdst/kernels/kv/") for n in held)


def test_sdist_holds_every_file_of_the_package(dists):
    sdist = next(dists.glob("mdst-*.tar.gz"))
    with tarfile.open(sdist) as t:
        held = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    missing = sorted(source_files() - held)
    assert not missing, f"not in {sdist.name}: {missing}"


def test_the_suite_runs_the_installed_wheel():
    """scripts/test.sh installs mdst from a wheel; an import from the checkout would hide missing package data."""
    import mdst

    where = Path(mdst.__file__).resolve()
    if where.parent == REPO / "mdst":   # (the venv may live in the checkout: .venv/lib/.../site-packages)
        if CI:
            pytest.fail(f"mdst imported from the checkout ({where}), not the installed wheel")
        pytest.skip(f"an editable install: mdst imported from {where}")
    assert (where.parent / "kernels" / "kv" / "F.wgsl").is_file()
    assert os.access(where.parent / "kernels" / "README.md", os.R_OK)
