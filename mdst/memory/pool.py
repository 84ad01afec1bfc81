"""GPU buffer pool for activations: size classes, reuse across plans, statistics.

Plans never run at the same time, so a plan asks for "the i-th buffer of size class c" and
plans compiled for other row counts get the very same buffers: activation memory is the largest
plan's need, not the sum over plans.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


def size_class(nbytes: int) -> int:
    """Round up to one of four classes per power of two (under 25% waste), at least 256 bytes."""
    n = max(256, nbytes)
    step = 1 << (n.bit_length() - 3)
    return -(-n // step) * step


@dataclass
class PoolStats:
    """Counters of a BufferPool."""

    allocated_bytes: int = 0   # bytes of every buffer the pool created
    buffers: int = 0
    hits: int = 0              # requests served by an existing buffer
    misses: int = 0            # requests that created a buffer
    requested_bytes: int = 0   # bytes asked for (before rounding to a class), summed over requests
    peak_plan_bytes: int = 0   # the most bytes one plan holds at once

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class BufferPool:
    """Buffers by (size class, index); `create(nbytes, label)` makes a new GPU buffer."""

    def __init__(self, create: Callable[[int, str], Any]):
        self._create = create
        self._buffers: dict[tuple[int, int], Any] = {}
        self.stats = PoolStats()

    def slot(self, nbytes: int, index: int) -> Any:
        """The index-th buffer of nbytes' size class (created on first request)."""
        cls = size_class(nbytes)
        self.stats.requested_bytes += nbytes
        buf = self._buffers.get((cls, index))
        if buf is None:
            buf = self._create(cls, f"act.{cls}.{index}")
            self._buffers[(cls, index)] = buf
            self.stats.misses += 1
            self.stats.buffers += 1
            self.stats.allocated_bytes += cls
        else:
            self.stats.hits += 1
        return buf


class Liveness:
    """Assigns pool slots to a plan's values so that a value's slot is reused after its last read."""

    def __init__(self, pool: BufferPool):
        self.pool = pool
        self._free: dict[int, list[int]] = {}     # size class -> free slot indices
        self._count: dict[int, int] = {}          # size class -> slots used by this plan
        self._held: dict[int, tuple[int, int]] = {}  # value id -> (class, index)
        self.held_bytes = 0
        self.peak_bytes = 0
        self.naive_bytes = 0  # what one buffer per value would take

    def take(self, value_id: int, nbytes: int) -> Any:
        """A buffer for a new value."""
        cls = size_class(nbytes)
        free = self._free.setdefault(cls, [])
        if free:
            index = free.pop()
        else:
            index = self._count.get(cls, 0)
            self._count[cls] = index + 1
        self._held[value_id] = (cls, index)
        self.held_bytes += cls
        self.peak_bytes = max(self.peak_bytes, self.held_bytes)
        self.naive_bytes += nbytes
        self.pool.stats.peak_plan_bytes = max(self.pool.stats.peak_plan_bytes, self.peak_bytes)
        return self.pool.slot(nbytes, index)

    def share(self, value_id: int, from_id: int) -> None:
        """Let value_id live in from_id's buffer (in-place ops); from_id must be dead after this."""
        self._held[value_id] = self._held.pop(from_id)

    def free(self, value_id: int) -> None:
        """The value will not be read again: its slot can be reused."""
        cls, index = self._held.pop(value_id)
        self._free[cls].append(index)
        self.held_bytes -= cls

    def slots_by_class(self) -> dict[int, int]:
        """How many buffers of each class this plan uses."""
        return dict(self._count)
