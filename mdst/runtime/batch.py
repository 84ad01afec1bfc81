"""Continuous batching over an engine: sequences join (prefilled), step together a token at a time, and leave.

The server's scheduler drives it: `add` a sequence when a request arrives, `step` every active one
once per turn, `remove` one when it ends (its cache goes back). Each sequence keeps its own cache,
position, sampling settings and seeded generator, so its tokens equal what it gets alone.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, ContextManager, Callable, Sequence

import numpy as np

from ..text.sampling import Sampler, SamplingParams
from .engine import Engine, Pick


@dataclass(eq=False)
class BatchedSequence:
    """One sequence of a batch: its cache, the tokens it holds, and the token it feeds next."""

    cache: Any
    sampler: Sampler
    history: list[int]          # prompt and generated tokens: the penalty window reads it
    n_past: int = 0             # positions written in the cache
    next_token: int = -1        # picked, not yet fed
    done: bool = field(default=False)

    def pick(self) -> Pick:
        """This step's ending: greedy, or the sampler's next draw (one per picked token, as alone)."""
        return "argmax" if self.sampler.params.greedy else self.sampler.next_draw(self.history)


class Batch:
    """Sequences on one engine that decode together; ids are ints given by `add`."""

    def __init__(self, engine: Engine, lock: Callable[[], ContextManager[Any]] | None = None, expected: int = 1):
        self.engine = engine
        self.expected = expected   # sequences expected at once: new caches are made for that many (Engine.batch_cache)
        self._lock = lock or contextlib.nullcontext
        self._seqs: dict[int, BatchedSequence] = {}
        self._next_id = 0

    def __len__(self) -> int:
        return len(self._seqs)

    @property
    def ids(self) -> list[int]:
        """The active sequences, in the order `step` returns them."""
        return list(self._seqs)

    @property
    def positions(self) -> int:
        """Positions the active sequences hold in their caches."""
        return sum(q.n_past for q in self._seqs.values())

    def room(self, seq: int) -> int:
        """Positions left in the sequence's cache (a step needs one)."""
        return self.engine.context - self._seqs[seq].n_past

    def add(self, ids: Sequence[int], params: SamplingParams) -> tuple[int, int]:
        """Prefill a new sequence with prompt `ids`; returns (its id, its first picked token)."""
        ids = [int(t) for t in ids]
        if not ids:
            raise ValueError("the prompt is empty (no tokens); pass some text")
        if len(ids) >= self.engine.context:
            raise ValueError(f"the prompt has {len(ids)} tokens but the context holds {self.engine.context} (and one "
                             "more is needed to generate); shorten it or load with a larger context_length")
        eng = self.engine
        with self._lock():
            cache = eng.batch_cache(self.expected - len(self._seqs))
        seq = BatchedSequence(cache, Sampler(params), list(ids))
        try:
            # steps before the last only fill the cache: their cheapest ending is a token id, discarded
            head, chunk = ids[:-1], eng.max_rows("last")
            for s in range(0, len(head), chunk):
                with self._lock():
                    eng.step(cache, np.array(head[s:s + chunk]), s, "last", "argmax")
            # the last token takes a one-row step of its own, as generate() feeds it: the same logits, so the
            # same first pick as the prompt gets alone
            with self._lock():
                out = eng.step(cache, np.array(ids[-1:]), len(head), "last", seq.pick())
            seq.n_past, seq.next_token = len(ids), int(out[0])
        except BaseException:
            with self._lock():
                eng.recycle(cache)
            raise
        sid, self._next_id = self._next_id, self._next_id + 1
        self._seqs[sid] = seq
        return sid, seq.next_token

    def step(self, seqs: Sequence[int] | None = None) -> dict[int, int]:
        """Feed every active sequence (or those of `seqs`) its last picked token in one step; {id: next token}.

        The picked tokens count as generated: the caller appends them to what it shows (`history`
        grows with each, for penalties)."""
        chosen = list(self._seqs) if seqs is None else list(seqs)
        if not chosen:
            return {}
        full = [s for s in chosen if self.room(s) < 1]
        if full:
            raise ValueError(f"sequence {full[0]} has filled the context of {self.engine.context}; remove it")
        rows = [self._seqs[s] for s in chosen]
        for q in rows:
            q.history.append(q.next_token)
        with self._lock():
            got = self.engine.step_batch([q.cache for q in rows], [np.array([q.next_token]) for q in rows],
                                         [q.n_past for q in rows], [q.pick() for q in rows])
        for q, tok in zip(rows, got):
            q.n_past += 1
            q.next_token = int(tok)
        return dict(zip(chosen, (int(t) for t in got)))

    def remove(self, seq: int) -> None:
        """End a sequence: its cache goes back to the engine (kept there for the next one under max_batch)."""
        q = self._seqs.pop(seq)
        with self._lock():
            self.engine.recycle(q.cache)

    def close(self) -> None:
        """Remove every sequence."""
        for s in list(self._seqs):
            self.remove(s)
