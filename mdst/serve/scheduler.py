"""The serving scheduler: one worker thread runs the model's work in arrival order, a step at a time.

Requests wait in a FIFO. A generation a `Batch` can run (no logprobs, no grammar: the batch picks on the device
and never reads logits back) joins the batch when it reaches the head and the batch has room (`max_batch`):
its prompt is prefilled into a cache of its own. Each `step()` is then ONE `Batch.step()`: every batched
generation picks its next token, which its `BatchedGeneration` turns into text (and a chat reply's deltas).
A generation that reads logits on the host runs alone on the model's session, a piece per step, once the batch
is empty; while it waits at the head no later request joins, so it cannot starve. With max_batch 1 every
generation runs alone, one at a time: the model's session then reuses a cached prompt prefix and decodes a step
ahead, which a batch of one would give up. Embeddings (`Call`) run between steps. A cancelled generation (its
client went away) leaves at the next step: its batch cache is freed, or its generator closed.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import threading
from typing import Any, AsyncIterator, Callable, Iterable, Iterator

from ..generate import BatchedGeneration, Generation, alone
from .metrics import Metrics


class Job:
    """One generation: its turn is reserved on arrival, its pieces arrive on the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, wake: Callable[[], None]):
        self._loop = loop
        self._wake = wake
        self._prepared: concurrent.futures.Future = concurrent.futures.Future()  # the Generation, or None
        self._events: asyncio.Queue = asyncio.Queue()
        self._cancelled = threading.Event()

    # -- request side (event loop)
    def start(self, generation: Generation) -> None:
        """Hand over the checked request to run when this job's turn comes."""
        self._prepared.set_result(generation)
        self._wake()

    def cancel(self) -> None:
        """Stop at the next step (or never start); idempotent."""
        self._cancelled.set()
        if not self._prepared.done():
            self._prepared.set_result(None)
        self._wake()

    async def events(self) -> AsyncIterator[tuple[str, Any]]:
        """("piece", text)... then ("done", stats) or ("error", exception). Leaving early cancels the job."""
        try:
            while True:
                kind, value = await self._events.get()
                yield kind, value
                if kind != "piece":
                    return
        finally:
            self.cancel()

    async def result(self) -> tuple[list, dict]:
        """The generated pieces and the generation's statistics."""
        text, stats = [], {}
        async for kind, value in self.events():
            if kind == "error":
                raise value
            if kind == "done":
                stats = value
            else:
                text.append(value)
        return text, stats

    # -- worker side (the scheduler's thread)
    def ready(self) -> bool:
        """Whether the job can be admitted (its request is checked, or it was cancelled)."""
        return self._prepared.done()

    @property
    def generation(self) -> Generation | None:
        """The checked request (once ready), or None if it was cancelled first."""
        return None if self._cancelled.is_set() else self._prepared.result()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def emit(self, kind: str, value: Any) -> None:
        """Send an event to the client's side."""
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is gone (server shut down): nobody is listening
            self._cancelled.set()

    def pieces(self, pieces: Iterable[Any]) -> None:
        """Send text pieces."""
        for piece in pieces:
            self.emit("piece", piece)


class Alone:
    """A generation running by itself on the model's session: a piece per step."""

    def __init__(self, model: Any, job: Job, generation: Generation):
        self.model, self.job = model, job
        self._pieces: Iterator[Any] = alone(model, generation)
        self._started = False
        self.outcome, self.stats = "cancelled", {}

    def advance(self) -> bool:
        """Run one step (the next text piece); True once the generation is over (finished, failed or cancelled)."""
        over = True
        try:
            if self.job.cancelled:
                return True
            self._started = True
            piece = next(self._pieces, None)
            if piece is None:
                self.job.emit("done", dict(self.model.last_stats))
                return True
            self.job.emit("piece", piece)
            over = False
            return False
        except Exception as e:  # noqa: BLE001 - reported to the client (and logged there); the worker lives on
            self.job.emit("error", e)
            self.outcome = "error"
            return True
        finally:
            if over:
                self._pieces.close()  # a generator stopped early records its statistics and frees the model
                if self._started:   # else the model's statistics are an earlier generation's
                    self.stats = dict(self.model.last_stats)
                    if self.outcome != "error":
                        self.outcome = self.stats.get("finish_reason") or "cancelled"


class Call:
    """A function to run once on the worker, in turn (embeddings)."""

    def __init__(self, fn: Callable[[], Any]):
        self.fn = fn
        self.future: concurrent.futures.Future = concurrent.futures.Future()

    def ready(self) -> bool:
        return True

    def cancel(self) -> None:
        self.future.cancel()

    def run(self) -> None:
        if self.future.set_running_or_notify_cancel():
            try:
                self.future.set_result(self.fn())
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                self.future.set_exception(e)


class Scheduler:
    """Runs the model's work on one worker thread: admission in arrival order, then a step of what runs."""

    def __init__(self, model: Any, max_batch: int = 1, metrics: Metrics | None = None):
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be an int >= 1, got {max_batch!r}")
        cap = model.engine.max_batch
        if max_batch > 1 and cap is not None and cap < max_batch:
            raise ValueError(f"max_batch {max_batch} exceeds the {cap} sequences the model was loaded for; load it "
                             f"with mdst.load(..., max_batch={max_batch}) or serve with max_batch {cap}")
        self.model = model
        self.max_batch = max_batch
        self.metrics = metrics or Metrics()
        self._batch = model.batch(max_batch) if max_batch > 1 else None
        self._batched: dict[int, tuple[Job, BatchedGeneration]] = {}   # by sequence id, in joining order
        self._alone: Alone | None = None
        self._positions = 0   # the batch's cached positions, as of the worker's last change
        self._waiting: collections.deque = collections.deque()
        self._changed = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="mdst-generate", daemon=True)
        self._thread.start()

    @property
    def queue_depth(self) -> int:
        """Requests waiting for their turn."""
        return len(self._waiting)

    @property
    def batch_size(self) -> int:
        """Generations running now."""
        return len(self._batched) + (self._alone is not None)

    @property
    def cached_positions(self) -> int:
        """Positions held in KV caches: the batch's sequences and the model's session."""
        session = getattr(self.model, "_default", None)
        return self._positions + (session.n_past if session is not None and session.cache is not None else 0)

    def _wake(self) -> None:
        with self._changed:
            self._changed.notify()

    def _enqueue(self, item: Any) -> None:
        with self._changed:
            if self._closing:
                raise RuntimeError("the server is shutting down")
            self._waiting.append(item)
            self._changed.notify()

    def _batches(self, generation: Generation) -> bool:
        return self._batch is not None and generation.batchable

    def _admissible(self) -> Any:
        """The head of the queue if it may start now (popped), else None; called holding the lock."""
        if not self._waiting or not self._waiting[0].ready() or self._alone is not None:
            return None
        head = self._waiting[0]
        generation = head.generation if isinstance(head, Job) else None
        if generation is not None:
            if self._batches(generation):
                if len(self._batched) >= self.max_batch:
                    return None
            elif self._batched:   # it runs alone: the batch drains first, and nothing joins meanwhile
                return None
        return self._waiting.popleft()

    def _loop(self) -> None:
        while True:
            self._drop_cancelled()
            with self._changed:
                item = self._admissible()
                if item is None and not self.batch_size:
                    if self._closing and not self._waiting:
                        return
                    self._changed.wait()
                    continue
            if item is None:
                self.step()
            else:
                self._start(item)

    def _start(self, item: Any) -> None:
        """Begin an admitted item: run a call, join a generation to the batch, or set one running alone."""
        if isinstance(item, Call):
            item.run()
            return
        generation = item.generation
        if generation is None:
            self.metrics.finished("cancelled", {})
        elif not self._batches(generation):
            self._alone = Alone(self.model, item, generation)
        else:
            member = BatchedGeneration(self.model, generation)
            try:
                item.pieces(member.join(self._batch))
            except Exception as e:  # noqa: BLE001 - reported to the client; the worker lives on
                self._leave(item, member, e)
                return
            self._batched[member.seq] = (item, member)
            self._positions = self._batch.positions
            if member.over:
                self._leave(item, member)

    def _leave(self, job: Job, member: BatchedGeneration, error: BaseException | None = None) -> None:
        """A batched generation leaves: its cache goes back, its client hears how it ended."""
        self._batched.pop(member.seq, None)
        stats = dict(member.leave(self._batch))
        self._positions = self._batch.positions
        self.model.last_stats = stats   # as a generation alone leaves its statistics
        if error is not None:
            job.emit("error", error)
            self.metrics.finished("error", stats)
            return
        if member.over:
            job.emit("done", stats)
        self.metrics.finished(stats["finish_reason"], stats)

    def _drop_cancelled(self) -> None:
        """Batched generations whose clients went away leave the batch (before the next step or admission)."""
        for job, member in list(self._batched.values()):
            if job.cancelled:
                self._leave(job, member)

    def step(self) -> None:
        """The next step of what runs: the generation running alone, or one batch step of every batched one."""
        if self._alone is not None:
            if self._alone.advance():
                self.metrics.finished(self._alone.outcome, self._alone.stats)
                self._alone = None
            return
        try:
            tokens = self._batch.step()
        except Exception as e:  # noqa: BLE001 - every generation of the failed step reports it
            for job, member in list(self._batched.values()):
                self._leave(job, member, e)
            return
        self._positions = self._batch.positions
        for seq, token in tokens.items():
            job, member = self._batched[seq]
            try:
                job.pieces(member.take(token))
            except Exception as e:  # noqa: BLE001 - reported to its client; the others go on
                self._leave(job, member, e)
                continue
            if member.over:
                self._leave(job, member)

    async def submit(self, prepare: Callable[[], Generation]) -> Job:
        """Reserve a turn now, check the request with `prepare` in a helper thread, and queue it.

        Whatever `prepare` raises (bad arguments) is raised here, before anything runs."""
        import anyio.to_thread

        job = Job(asyncio.get_running_loop(), self._wake)
        self._enqueue(job)
        try:
            generation = await anyio.to_thread.run_sync(prepare)
        except BaseException:
            job.cancel()
            raise
        job.start(generation)
        return job

    async def call(self, fn: Callable[[], Any]) -> Any:
        """fn() on the worker, in turn after the work queued before it; its result."""
        item = Call(fn)
        self._enqueue(item)
        return await asyncio.wrap_future(item.future)

    def close(self) -> None:
        """Finish the running generations, drop the waiting ones, and stop the worker."""
        with self._changed:
            self._closing = True
            for item in self._waiting:
                item.cancel()
            self._changed.notify()
        self._thread.join()
