"""Family modules by GGUF `general.architecture`."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import UnsupportedModelError

# architecture -> module name in this package
FAMILIES = {"llama": "llama", "gemma3": "gemma3", "qwen3": "qwen3", "mistral3": "mistral3", "lfm2": "lfm2",
            "qwen3moe": "qwen3moe", "lfm2moe": "lfm2moe"}


def family(arch: str) -> ModuleType:
    """The module that runs architecture `arch`."""
    mod = FAMILIES.get(arch)
    if mod is None:
        raise UnsupportedModelError(
            f"architecture {arch!r} is not supported; mdst runs: {', '.join(sorted(FAMILIES))}")
    return importlib.import_module(f"{__name__}.{mod}")
