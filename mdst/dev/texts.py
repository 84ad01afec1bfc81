"""A long English text every install has: the license file numpy ships (a core dependency), for perplexity runs."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path


def license_text() -> str:
    """The longest license file in numpy's installed metadata (about 47 kB, 10k tokens, for numpy 2.x)."""
    dist = importlib.metadata.distribution("numpy")
    files = [Path(dist.locate_file(f)) for f in dist.files or [] if "license" in f.name.lower()]
    files = [f for f in files if f.is_file()]
    if not files:
        raise FileNotFoundError("numpy's installed metadata holds no license file; pass a text file instead")
    return max(files, key=lambda f: f.stat().st_size).read_text(encoding="utf-8")
