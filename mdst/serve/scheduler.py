"""The serving scheduler: requests wait in arrival order; the active ones (up to a batch) advance a step at a time.

One worker thread owns the model. Its loop admits waiting requests into the active set while there is room and
their generator is ready, then runs `step()`: the next step of every active request. Today's engine runs one
sequence per forward pass (generate() holds the model's one default session), so `capacity` is 1 and a request
runs to its end before the next is admitted; a batched engine raises `capacity` to `max_batch` and makes
`step()` one forward pass over the active sequences. A cancelled request (its client went away) leaves the
active set at the next step, which closes its generator and so frees the model.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import threading
from typing import Any, AsyncIterator, Callable, Iterator

from .metrics import Metrics


class Job:
    """One generation: its turn is reserved on arrival, its pieces arrive on the event loop."""

    def __init__(self, model: Any, loop: asyncio.AbstractEventLoop, wake: Callable[[], None]):
        self._model = model
        self._loop = loop
        self._wake = wake
        self._pieces: concurrent.futures.Future = concurrent.futures.Future()  # the text iterator, or None
        self._events: asyncio.Queue = asyncio.Queue()
        self._cancelled = threading.Event()
        self._running: Iterator[str] | None = None
        self.outcome: str | None = None   # the finish reason once over ("stop", "length", "cancelled", "error")
        self.stats: dict = {}

    # -- request side (event loop)
    def start(self, pieces: Iterator[str]) -> None:
        """Hand over the generator to run when this job's turn comes."""
        self._pieces.set_result(pieces)
        self._wake()

    def cancel(self) -> None:
        """Stop at the next step (or never start); idempotent."""
        self._cancelled.set()
        if not self._pieces.done():
            self._pieces.set_result(None)
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
        """Whether the job can be admitted (its generator is built, or it was cancelled)."""
        return self._pieces.done()

    def _emit(self, kind: str, value: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is gone (server shut down): nobody is listening
            self._cancelled.set()

    def advance(self) -> bool:
        """Run one step (the next text piece); True once the job is over (finished, failed or cancelled)."""
        if self._running is None:
            self._running = self._pieces.result()
            if self._running is None:
                self.outcome = "cancelled"
                return True
        over = True
        try:
            if self._cancelled.is_set():
                return True
            piece = next(self._running, None)
            if piece is None:
                self._emit("done", dict(self._model.last_stats))
                return True
            self._emit("piece", piece)
            over = False
            return False
        except Exception as e:  # noqa: BLE001 - reported to the client (and logged there); the worker lives on
            self._emit("error", e)
            self.outcome = "error"
            return True
        finally:
            if over:
                self._running.close()  # a generator stopped early records its statistics and frees the model
                self.stats = dict(self._model.last_stats)
                self.outcome = self.outcome or self.stats.get("finish_reason") or "cancelled"


class Call:
    """A function to run once on the worker, in turn (embeddings)."""

    def __init__(self, fn: Callable[[], Any]):
        self.fn = fn
        self.future: concurrent.futures.Future = concurrent.futures.Future()
        self.outcome, self.stats = "call", {}

    def ready(self) -> bool:
        return True

    def cancel(self) -> None:
        self.future.cancel()

    def advance(self) -> bool:
        if self.future.set_running_or_notify_cancel():
            try:
                self.future.set_result(self.fn())
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                self.future.set_exception(e)
        return True


class Scheduler:
    """Runs the model's work on one worker thread: admission in arrival order, then a step of every active job."""

    def __init__(self, model: Any, max_batch: int = 1, metrics: Metrics | None = None):
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be an int >= 1, got {max_batch!r}")
        self.model = model
        self.max_batch = max_batch
        self.capacity = 1   # sequences one step of today's engine advances together
        self.metrics = metrics or Metrics()
        self._waiting: collections.deque = collections.deque()
        self._active: list = []
        self._changed = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="mdst-generate", daemon=True)
        self._thread.start()

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a place in the batch."""
        return len(self._waiting)

    @property
    def batch_size(self) -> int:
        """Requests in the batch now."""
        return len(self._active)

    def _wake(self) -> None:
        with self._changed:
            self._changed.notify()

    def _enqueue(self, item: Any) -> None:
        with self._changed:
            if self._closing:
                raise RuntimeError("the server is shutting down")
            self._waiting.append(item)
            self._changed.notify()

    def _admit(self) -> None:
        while self._waiting and len(self._active) < self.capacity and self._waiting[0].ready():
            self._active.append(self._waiting.popleft())

    def _loop(self) -> None:
        while True:
            with self._changed:
                self._admit()
                while not self._active:
                    if self._closing and not self._waiting:
                        return
                    self._changed.wait()
                    self._admit()
            self.step()

    def step(self) -> None:
        """The next step of every active job; jobs that are over leave the batch."""
        for item in list(self._active):
            if item.advance():
                self._active.remove(item)
                self.metrics.finished(item.outcome, item.stats)

    async def submit(self, prepare: Callable[[], Iterator[str]]) -> Job:
        """Reserve a turn now, build the generator with `prepare` in a helper thread, and queue it.

        Whatever `prepare` raises (bad arguments) is raised here, before anything runs."""
        import anyio.to_thread

        job = Job(self.model, asyncio.get_running_loop(), self._wake)
        self._enqueue(job)
        try:
            pieces = await anyio.to_thread.run_sync(prepare)
        except BaseException:
            job.cancel()
            raise
        job.start(pieces)
        return job

    async def call(self, fn: Callable[[], Any]) -> Any:
        """fn() on the worker, in turn after the work queued before it; its result."""
        item = Call(fn)
        self._enqueue(item)
        return await asyncio.wrap_future(item.future)

    def close(self) -> None:
        """Finish the running jobs, drop the waiting ones, and stop the worker."""
        with self._changed:
            self._closing = True
            for item in self._waiting:
                item.cancel()
            self._changed.notify()
        self._thread.join()
