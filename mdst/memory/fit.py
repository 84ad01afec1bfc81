"""Fit planning: the GPU bytes a model will request, predicted before anything is allocated.

The prediction runs the engine's own setup (weight upload, every plan it can compile, one
sequence's cache) against a phantom device that records each buffer request and allocates
nothing, so it follows the real code path rather than a formula beside it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..device import GPU
from ..errors import OutOfMemoryError

_UNITS = {"": 1, "B": 1, "K": 1e3, "KB": 1e3, "KIB": 2**10, "M": 1e6, "MB": 1e6, "MIB": 2**20,
          "G": 1e9, "GB": 1e9, "GIB": 2**30, "T": 1e12, "TB": 1e12, "TIB": 2**40}


def parse_bytes(value: int | str | None) -> int | None:
    """None, a byte count, or a size such as "2GB", "512 MiB", "1.5G"."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError("gpu_memory_limit must be None, an int or a string such as '2GB'")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"gpu_memory_limit must be positive, got {value}")
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", value)
        if m and m.group(2).upper() in _UNITS and float(m.group(1)) > 0:
            return int(float(m.group(1)) * _UNITS[m.group(2).upper()])
        raise ValueError(f"gpu_memory_limit {value!r} is not a size; write e.g. 2GB, 512MiB or 1500000000")
    raise TypeError(f"gpu_memory_limit must be None, an int or a string such as '2GB', not {type(value).__name__}")


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


class PhantomBuffer:
    """Stands in for a GPU buffer: has a size, holds nothing."""

    def __init__(self, size: int, label: str):
        self.size, self.label = size, label

    def destroy(self) -> None:
        pass

    def map_sync(self, *args: Any) -> None:
        pass

    def write_mapped(self, *args: Any) -> None:
        pass

    def unmap(self) -> None:
        pass


class _PhantomEncoder:
    def copy_buffer_to_buffer(self, *args: Any) -> None:
        pass

    def finish(self) -> None:
        return None


class _PhantomQueue:
    def write_buffer(self, *args: Any, **kwargs: Any) -> None:
        pass

    def submit(self, *args: Any) -> None:
        pass


class _PhantomPipeline:
    def get_bind_group_layout(self, index: int) -> None:
        return None


class PhantomDevice:
    """Records buffer requests; compiles and allocates nothing."""

    def __init__(self, limits: dict[str, int]):
        self.queue = _PhantomQueue()
        self.limits = limits

    def create_buffer(self, *, size: int, usage: int, label: str = "") -> PhantomBuffer:
        return PhantomBuffer(size, label)

    def create_command_encoder(self, **kwargs: Any) -> _PhantomEncoder:
        return _PhantomEncoder()

    def create_shader_module(self, **kwargs: Any) -> None:
        return None

    def create_compute_pipeline(self, **kwargs: Any) -> _PhantomPipeline:
        return _PhantomPipeline()

    def _poll_wait(self) -> None:
        pass


def phantom(gpu: GPU) -> GPU:
    """A GPU with the same profile whose device allocates nothing."""
    return GPU(PhantomDevice(gpu.profile.limits), gpu.profile)


@dataclass
class Prediction:
    """Bytes by kind (weights, kv, activations, params, step, staging, argmax, rope)."""

    bytes_by_kind: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.bytes_by_kind.values())

    def breakdown(self) -> str:
        return ", ".join(f"{k} {mib(v)}" for k, v in sorted(self.bytes_by_kind.items(), key=lambda kv: -kv[1]))


def check(prediction: Prediction, limit: int | None, *, context_length: int, kv_type: str,
          paging: bool) -> None:
    """Raise OutOfMemoryError, with the breakdown and the ways out, when the prediction exceeds the limit."""
    if limit is None or prediction.total <= limit:
        return
    options = [f"a shorter context_length (now {context_length}; the KV cache is "
               f"{mib(prediction.bytes_by_kind.get('kv', 0))})"]
    if kv_type != "q8_0":
        options.append('a smaller KV type (kv_type="q8_0" stores it in 8 bits)')
    if not paging:
        options.append("weight_paging=True (weights that do not fit are copied in from the file as each step "
                       "needs them: slower)")
    options.append("a larger gpu_memory_limit")
    raise OutOfMemoryError(f"the model needs {mib(prediction.total)} of GPU memory ({prediction.breakdown()}) but "
                           f"gpu_memory_limit is {mib(limit)}; options: " + "; ".join(options))
