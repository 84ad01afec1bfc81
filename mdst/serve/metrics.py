"""The server's counters and their Prometheus text exposition (GET /metrics), written out by hand.

Counters only grow; Prometheus derives rates from them (tokens/s is rate(mdst_generated_tokens_total)). The
gauges the scheduler and the model know (queue depth, batch size, cached tokens) are read when scraped.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

FINISH_REASONS = ("stop", "length", "cancelled", "error")


class Metrics:
    """Request and token counters, updated by the scheduler's thread and the endpoints."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter = Counter()       # endpoint -> requests received
        self.generations: Counter = Counter()    # finish reason -> generations over
        self.prompt_tokens = 0
        self.generated_tokens = 0
        self.decode_seconds = 0.0
        self.last_decode_tokens_per_s = 0.0

    def received(self, endpoint: str) -> None:
        """Count a request to `endpoint`."""
        with self._lock:
            self.requests[endpoint] += 1

    def finished(self, outcome: str | None, stats: dict) -> None:
        """Count a finished unit of work: a generation with its statistics (embeddings calls are not counted)."""
        if outcome not in FINISH_REASONS:
            return
        with self._lock:
            self.generations[outcome] += 1
            if outcome == "error":   # the model's statistics are a previous generation's
                return
            self.prompt_tokens += stats.get("prompt_tokens", 0) - stats.get("cached_tokens", 0)
            self.generated_tokens += stats.get("generated_tokens", 0)
            self.decode_seconds += stats.get("decode_s", 0.0)
            if stats.get("decode_tokens_per_s"):
                self.last_decode_tokens_per_s = stats["decode_tokens_per_s"]

    def exposition(self, gauges: dict[str, tuple[str, float]]) -> str:
        """Prometheus text format (version 0.0.4) of the counters and of `gauges` ({name: (help, value)})."""
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"])
            lines.extend(f"{name}{labels} {_number(value)}" for labels, value in samples)

        with self._lock:
            metric("mdst_requests_total", "counter", "HTTP requests received, by endpoint.",
                   [(f'{{endpoint="{e}"}}', n) for e, n in sorted(self.requests.items())])
            metric("mdst_generations_total", "counter", "Generations over, by finish reason (one per choice).",
                   [(f'{{finish_reason="{r}"}}', self.generations[r]) for r in FINISH_REASONS])
            metric("mdst_prompt_tokens_total", "counter", "Prompt tokens computed (cached ones not counted).",
                   [("", self.prompt_tokens)])
            metric("mdst_generated_tokens_total", "counter", "Tokens generated.", [("", self.generated_tokens)])
            metric("mdst_decode_seconds_total", "counter", "Seconds spent decoding.", [("", self.decode_seconds)])
            metric("mdst_decode_tokens_per_second", "gauge", "Decode speed of the last generation that had one.",
                   [("", self.last_decode_tokens_per_s)])
        for name, (help_text, value) in gauges.items():
            metric(name, "gauge", help_text, [("", value)])
        return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def model_gauges(model: Any, scheduler: Any) -> dict[str, tuple[str, float]]:
    """The gauges read at scrape time: the scheduler's state and the KV caches' fill."""
    return {
        "mdst_queue_depth": ("Requests waiting for their turn.", scheduler.queue_depth),
        "mdst_batch_size": ("Generations running now (decoding together, or one alone).", scheduler.batch_size),
        "mdst_max_batch": ("Most generations decoding together (--max-batch).", scheduler.max_batch),
        "mdst_kv_cache_tokens": ("Positions held in KV caches (the running sequences' and the model's session; "
                                 "no paged blocks yet).", scheduler.cached_positions),
        "mdst_kv_cache_capacity_tokens": ("Positions one sequence's KV cache can hold (the context length).",
                                          model.context_length),
    }
