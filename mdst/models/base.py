"""What family modules share: typed metadata access with clear errors."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import GGUFError, UnsupportedModelError
from ..gguf import GGUFFile

_REQUIRED = object()


class Meta:
    """Reads `<arch>.<key>` metadata with type checks; a missing required key names itself."""

    def __init__(self, gguf: GGUFFile, arch: str):
        self.gguf, self.arch = gguf, arch

    def _get(self, key: str, default: Any) -> Any:
        full = f"{self.arch}.{key}"
        if full in self.gguf.metadata:
            return full, self.gguf.metadata[full]
        if default is _REQUIRED:
            raise UnsupportedModelError(f"{self.gguf.path}: metadata {full!r} is missing; the file is incomplete")
        return full, default

    def int(self, key: str, default: Any = _REQUIRED) -> int:
        """An integer, at least 0."""
        full, v = self._get(key, default)
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 0:
            raise GGUFError(f"{self.gguf.path}: {full!r} must be a non-negative integer, got {v!r}")
        return int(v)

    def float(self, key: str, default: Any = _REQUIRED) -> float:
        """A finite number."""
        full, v = self._get(key, default)
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)) \
                or not np.isfinite(v):
            raise GGUFError(f"{self.gguf.path}: {full!r} must be a finite number, got {v!r}")
        return float(v)

    def int_or_list(self, key: str, n: int, default: Any = _REQUIRED) -> list[int]:
        """A per-layer integer: one value for all layers or an array of n."""
        full, v = self._get(key, default)
        if isinstance(v, np.ndarray):
            if v.shape != (n,) or v.dtype.kind not in "iu" or (v < 0).any():
                raise GGUFError(f"{self.gguf.path}: {full!r} must hold {n} non-negative integers")
            return [int(x) for x in v]
        return [self.int(key, default)] * n

    def positive(self, key: str, default: Any = _REQUIRED) -> int:
        """An integer of at least 1."""
        v = self.int(key, default)
        if v < 1:
            raise GGUFError(f"{self.gguf.path}: {self.arch}.{key} must be at least 1, got {v}")
        return v


def output_weight(tensors: dict) -> str:
    """The LM head: `output.weight`, or the tied embedding table."""
    return "output.weight" if "output.weight" in tensors else "token_embd.weight"
