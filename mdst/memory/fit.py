"""Fit planning: the GPU bytes a model will request, predicted before anything is allocated.

The prediction runs the engine's own setup (weight upload, every plan it can compile, one
sequence's cache) on a counting allocator (mdst.gpu.allocator) that records each buffer request and
allocates nothing, so it follows the real code path rather than a formula beside it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

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
          paging: bool, max_batch: int | None = None) -> None:
    """Raise OutOfMemoryError, with the breakdown and the ways out, when the prediction exceeds the limit."""
    if limit is None or prediction.total <= limit:
        return
    kv = prediction.bytes_by_kind.get('kv', 0)
    options = [f"a shorter context_length (now {context_length}; the KV cache is {mib(kv)})"]
    if max_batch:
        options.append(f"a smaller max_batch (now {max_batch}; each sequence has a KV cache of "
                       f"{mib(kv // (1 + max_batch))})")
    if kv_type != "q8_0":
        options.append('a smaller KV type (kv_type="q8_0" stores it in 8 bits)')
    if not paging:
        options.append("weight_paging=True (weights that do not fit are copied in from the file as each step "
                       "needs them: slower)")
    options.append("a larger gpu_memory_limit")
    raise OutOfMemoryError(f"the model needs {mib(prediction.total)} of GPU memory ({prediction.breakdown()}) but "
                           f"gpu_memory_limit is {mib(limit)}; options: " + "; ".join(options))


def predict(ghost: Any) -> tuple[Prediction, int]:
    """Bytes of an engine set up on a counting allocator once it has compiled every plan and made the caches
    of one sequence (the default session's) and of max_batch batched ones, and the bytes its weights' layout
    took out of the weight budget."""
    ghost.compile_all()
    ghost.new_cache()
    for _ in range(ghost.max_batch or 0):
        ghost.batch_cache()
    return Prediction(dict(ghost.bytes_by_kind)), ghost.weights.layout.budget_used


def fit(ghost: Callable[[int | None], Any], limit: int | None, *, paging: bool, context_length: int,
        kv_type: str, max_batch: int | None = None) -> tuple[Prediction, int | None]:
    """The prediction, and the weight budget (None: every weight resident) that meets `limit`.

    `ghost(budget)` sets the engine up on a counting allocator with that weight budget. Without a
    limit, or when everything fits, every weight is resident; otherwise, with `paging`, the budget
    shrinks until the prediction fits (at most eight tries). OutOfMemoryError when it does not fit.
    """
    prediction, _ = predict(ghost(None))
    budget = None
    if limit is not None and prediction.total > limit and paging:
        # what is not weights changes a little with paging (no paired weights, so no fused gate/up):
        # shrink the weights' budget below what the last layout used, by the excess
        budget = max(limit - (prediction.total - prediction.bytes_by_kind["weights"]), 0)
        for _ in range(8):
            prediction, used = predict(ghost(budget))
            if prediction.total <= limit:
                break
            budget = max(used - (prediction.total - limit), 0)
    check(prediction, limit, context_length=context_length, kv_type=kv_type, paging=paging, max_batch=max_batch)
    return prediction, budget
