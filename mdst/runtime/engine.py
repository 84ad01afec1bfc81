"""Engines run one forward step over a KV cache: `GpuEngine` (WebGPU plans) and `CpuEngine` (numpy).

Both take the same recorded graphs from the family module and expose the same interface:
`new_cache()`, `step(cache, ids, pos0, output_rows, pick)`, `step_batch(caches, ids, pos0s, picks)` (one
step over several sequences, a token each), `decode(...)` (one-token steps in a row) and `chunk` (rows
per step). `output_rows` is "last", "all" (logits of every row) or "hidden" (every row's final hidden
state, the LM head's input: embeddings). `pick` is "logits" (return the output), "argmax" (greedy token
ids) or a sampling `Draw` (one sampled token id).
"""

from __future__ import annotations

import queue
import threading
import weakref
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Union

import numpy as np

from ..gpu import native
from .. import reference
from ..gpu.allocator import Allocator
from ..errors import DeviceError, MdstError, OutOfMemoryError, UnsupportedModelError
from ..format.gguf import GGUFFile
from ..ir.graph import Builder, Graph, build
from ..kernels import WEIGHT_TYPES, PipelineCache
from ..memory.kv_cache import CacheLayout, CpuKVCache, GpuKVCache, KVPool
from ..memory.layout import plan_layout
from ..memory.pool import BufferPool
from ..memory.weights import WeightStore
from ..compile.plan import STEP_TOKENS, Compiler, Plan, step_words, write_step
from ..text.sampling import DRAW_WORDS, Draw, Sampler, check_mask, mask_words

Pick = Union[str, Draw]

DEFAULT_CHUNK = 128
STEP_TIMEOUT = 600.0          # seconds a step may take before DeviceError (a hung device must not hang us)
STAGING_BYTES = 16 << 20      # readback buffer: logits of more rows than fit are read in rounds
ALL_LOGITS_BYTES = 32 << 20   # logits of one all-rows step (logits(), Session.feed) at most


def build_graphs(forward: Callable[[Builder], None], gguf: GGUFFile, activations: str = "f32") -> dict[str, Graph]:
    """The family's forward pass recorded for last-row and all-row logits, and all-row hidden states;
    `activations` is the load option (graph.ACTIVATION_TYPES)."""
    graphs = {mode: build(forward, gguf.tensors, mode, activations) for mode in ("last", "all")}
    graphs["hidden"] = graphs["all"].hidden_states()
    return graphs


def buckets(chunk: int) -> list[int]:
    """Row counts plans are compiled for: powers of two below `chunk`, and `chunk`."""
    out, b = [], 1
    while b < chunk:
        out.append(b)
        b *= 2
    return out + [chunk]


class Waiter:
    """Runs blocking GPU waits on one worker thread, so callers can wait with a deadline."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:   # close()
                return
            fn, done, box = job
            try:
                box["value"] = fn()
            except BaseException as e:  # handed to the caller
                box["error"] = e
            done.set()
            # the job's closure holds the engine and its buffers: keep nothing while waiting for the next
            del job, fn, done, box

    def run(self, fn: Callable[[], Any], timeout: float) -> Any:
        """fn() on the worker; TimeoutError if it has not returned within timeout seconds."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="mdst-gpu-wait", daemon=True)
            self._thread.start()
        done, box = threading.Event(), {}
        self._jobs.put((fn, done, box))
        if not done.wait(timeout):
            raise TimeoutError
        if "error" in box:
            raise box["error"]
        return box["value"]

    def close(self, timeout: float = 5.0) -> None:
        """End the worker once its current job is done (waiting at most `timeout` seconds for that)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(None)
            thread.join(timeout)


class CacheBindings:
    """What a GpuEngine keeps for one of its caches: plans' bind groups over its buffers, and decode's buffers."""

    def __init__(self) -> None:
        self.groups: dict[int, list[Any]] = {}   # plan key -> bind groups (Plan.bind)
        self.chain: list[Any] = []   # decode's next-token buffer and its two readback buffers
        self.own: dict[str, Any] = {}   # batched steps: its step words (SequenceSlot)


class Engine:
    """What both engines share: graphs, the cache layout, step sizes."""

    kind = ""
    closed = False   # set by close(): later steps raise MdstError

    def __init__(self, graphs: dict[str, Graph], context: int, chunk: int, kv_type: str, max_batch: int | None = None):
        self.graphs, self.context, self.chunk = graphs, context, chunk
        self.chunk_all = chunk
        self.layout = CacheLayout.of(graphs["last"], context, chunk, kv_type)
        self.vocab = graphs["last"].output.cols
        self._caches: weakref.WeakSet = weakref.WeakSet()   # released by close(), whoever still holds them
        # sequences batches may hold at once (load's max_batch; None: no cap), their caches kept for reuse
        self.max_batch = max_batch
        self._batched = 0
        self._spare: list[Any] = []

    def _track(self, cache: Any) -> Any:
        """`cache`, remembered so that close() releases it."""
        self._caches.add(cache)
        return cache

    def _release_caches(self) -> None:
        """Mark the engine closed and release every cache it made (none if it failed before making any)."""
        self.closed = True
        for cache in list(getattr(self, "_caches", ())):
            cache.release()

    def batch_cache(self, room: int = 1) -> Any:
        """A cache for a new batched sequence: one a finished sequence gave back where there is one. `room`: how
        many sequences the caller expects to hold at once (a GPU engine makes caches that many at a time, so they
        share a pool; max_batch, where set, says it instead).

        ValueError, before allocating, when max_batch sequences already hold one."""
        if self.max_batch is not None and self._batched >= self.max_batch:
            raise ValueError(f"{self._batched} sequences are decoding together, the model's max_batch; end one "
                             f"first, or load the model with a larger max_batch")
        want = self.max_batch - self._batched if self.max_batch is not None else max(1, room)
        cache = self._spare.pop() if self._spare else self._new_batch_cache(want)
        self._batched += 1
        return cache

    def _new_batch_cache(self, room: int) -> Any:
        """A new cache for a batched sequence, `room` the sequences expected at once (this one included)."""
        return self.new_cache()

    def recycle(self, cache: Any) -> None:
        """A batched sequence's cache back: kept for the next sequence under max_batch (buffers, bind groups and
        all), else released."""
        self._batched -= 1
        if self.max_batch is not None and not self.closed and len(self._spare) < self.max_batch:
            self._spare.append(cache)
        else:
            cache.release()

    def max_rows(self, output_rows: str) -> int:
        """Most rows one step may take."""
        return self.chunk_all if output_rows == "all" else self.chunk

    def can_rewind(self, n_past: int, n: int) -> bool:
        """Whether a cache holding n_past tokens can be cut back to n."""
        return self.layout.can_rewind(n_past, n)

    def check_open(self) -> None:
        """MdstError if close() has been called."""
        if self.closed:
            raise MdstError("the model is closed; load it again")

    def step(self, cache: Any, ids: np.ndarray, pos0: int, output_rows: str, pick: Pick = "logits") -> np.ndarray:
        raise NotImplementedError

    def step_batch(self, caches: list[Any], ids: list[np.ndarray], pos0s: list[int], picks: list[Pick]) -> np.ndarray:
        """One step over several sequences: ids[i] (at most `chunk` tokens) at positions pos0s[i].. of
        caches[i], each ending in picks[i] ("argmax" or a `Draw`); the token id each picks, in order.

        Each sequence's token equals what `step` gives it alone. This one runs a step per sequence; an
        engine that batches the rows into one forward pass overrides it.
        """
        return np.array([int(self.step(c, np.asarray(i), p, "last", k)[0])
                         for c, i, p, k in zip(caches, ids, pos0s, picks)], np.int64)

    def decode(self, cache: Any, first: int, pos0: int, count: int, pick: Callable[[], Pick],
               ahead: bool = False) -> Iterator[tuple[int, int]]:
        """Up to `count` one-token steps: feed `first` at pos0, then each token picked.

        Yields (token, positions written in the cache). `pick()` gives each step's ending; `ahead`
        says it does not depend on the tokens before, which lets an engine run a step ahead.
        """
        tok = first
        for i in range(count):
            tok = int(self.step(cache, np.array([tok]), pos0 + i, "last", pick())[0])
            yield tok, pos0 + i + 1


class CpuEngine(Engine):
    """The numpy fallback."""

    kind = "cpu"

    def __init__(self, gguf: GGUFFile, graphs: dict[str, Graph], context: int, kv_type: str = "f32",
                 chunk: int = DEFAULT_CHUNK, max_batch: int | None = None):
        super().__init__(graphs, context, chunk, kv_type, max_batch)
        self.weights = reference.ReferenceWeights(gguf)

    def new_cache(self) -> CpuKVCache:
        return self._track(CpuKVCache.allocate(self.layout))

    def step(self, cache: CpuKVCache, ids: np.ndarray, pos0: int, output_rows: str,
             pick: Pick = "logits") -> np.ndarray:
        self.check_open()
        logits = reference.run(self.graphs[output_rows], self.weights, cache, ids, pos0)
        if isinstance(pick, Draw):
            return np.array([Sampler.pick(logits[-1], pick)])
        return reference.argmax(logits) if pick == "argmax" else logits

    def step_batch(self, caches: list[CpuKVCache], ids: list[np.ndarray], pos0s: list[int],
                   picks: list[Pick]) -> np.ndarray:
        """One forward pass over every sequence's rows (each matmul reads its weight once for all of them)."""
        self.check_open()
        logits = reference.run_batch(self.graphs["last"], self.weights, caches, ids, pos0s)
        return np.array([Sampler.pick(row, k) if isinstance(k, Draw) else int(np.argmax(row))
                         for row, k in zip(logits, picks)], np.int64)

    def close(self) -> None:
        """Drop the dequantized weights; the engine cannot be used afterwards."""
        self._release_caches()
        self.weights = None


class GpuEngine(Engine):
    """Runs compiled plans on a WebGPU device.

    Every buffer comes from its allocator (mdst.gpu.allocator), which counts bytes by kind: on a
    counting allocator the same setup predicts them without allocating (mdst.memory.fit).
    """

    kind = "gpu"

    def __init__(self, allocator: Allocator, gguf: GGUFFile, graphs: dict[str, Graph], context: int, kv_type: str,
                 chunk: int | None = None, weight_budget: int | None = None,
                 progress: Callable[[int, int], None] | None = None, step_timeout: float = STEP_TIMEOUT,
                 max_batch: int | None = None):
        import wgpu

        self.allocator = allocator
        self.gpu = allocator.gpu
        self._wgpu = wgpu
        self.step_timeout = step_timeout
        self.lost: str | None = None   # why the device cannot be used any more
        # GpuKVCache -> CacheBindings; KVPool -> CacheBindings of batched plans' shared dispatches
        self._cache_state: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._waiter = Waiter()
        try:
            self._setup(gguf, graphs, context, kv_type, chunk or self.gpu.profile.presets.prefill_rows,
                        weight_budget, progress, max_batch)
        except BaseException:
            self.close()  # a failed load leaves nothing allocated
            raise

    @property
    def bytes_by_kind(self) -> dict[str, int]:
        """Live bytes per kind of buffer."""
        return self.allocator.bytes_by_kind

    @property
    def peak_bytes(self) -> int:
        """The most bytes live at once."""
        return self.allocator.peak_bytes

    @property
    def _live(self) -> dict[int, tuple[Any, str, int]]:
        return self.allocator.live

    def _setup(self, gguf: GGUFFile, graphs: dict[str, Graph], context: int, kv_type: str, chunk: int,
               weight_budget: int | None, progress: Callable[[int, int], None] | None, max_batch: int | None) -> None:
        gpu = self.gpu
        cap = gpu.profile.max_binding_size
        for g in graphs.values():
            for name in g.weight_names():
                t = gguf.tensors[name]
                if t.type.name not in WEIGHT_TYPES:
                    raise UnsupportedModelError(
                        f"tensor {name} has type {t.type.name}; mdst's kernels read {', '.join(WEIGHT_TYPES)}")
        # Rows per step: every activation of a step must fit one binding.
        widest = max(n.out.cols for g in graphs.values() for n in g.nodes if n.out.rows == "n" and n.out is not g.output)
        super().__init__(graphs, context, max(1, min(chunk, cap // (4 * widest))), kv_type, max_batch)
        for lk in self.layout.kv:
            if self.layout.layer_bytes(lk) > cap:
                raise OutOfMemoryError(
                    f"layer {lk.spec.layer}'s KV cache ({lk.ring} positions of {lk.kv_dim} values, "
                    f"{self.layout.layer_bytes(lk)} bytes) exceeds the binding limit of {cap} bytes; use a shorter "
                    f"context_length or a smaller kv_type")

        self.pool = BufferPool(lambda n, label: self._create(n, label, kind="activations"))
        self.plans: dict[tuple[str, int, str], Plan] = {}
        self.staging = None
        self._batch_buffer: Any = None   # step_batch's step words and draws, grown on demand
        self._pools: list[KVPool] = []   # the pools batched sequences' caches share
        last = graphs["last"]
        self.weights = WeightStore(self.allocator, gguf, plan_layout(last, gguf.tensors, weight_budget, cap),
                                   lambda n, label: self._create(n, label, kind="weights"), progress,
                                   lambda: self.step_timeout)
        self.weights.load_matrices()
        for name in last.vector_names():
            self.weights.load_vector(name)
        # Logits of every row: each weight part's slice of them must fit a binding too.
        head = graphs["all"].output_matrix()
        out_w = self.weights.weights.get(head) if head else None
        self.chunk_all = max(1, min(self.chunk, ALL_LOGITS_BYTES // (4 * self.vocab)))
        if out_w is not None and self.chunk_all * self.vocab * 4 > cap:
            self.chunk_all = max(1, min(self.chunk_all, cap // (4 * max(p.rows for p in out_w.parts))))
        self.pipelines = PipelineCache.for_gpu(gpu)
        # a step's words, its tokens and, in a batched step, the table of its rows' (position, pool slot)
        self.step_buffer = self._create(4 * (STEP_TOKENS + 3 * self.chunk), "step", kind="step")
        # a constrained draw's bitmask of allowed tokens follows the draw's fixed words
        self.draw_buffer = self._create(4 * (DRAW_WORDS + mask_words(self.vocab)), "draw", kind="step")
        self.staging = self._create(min(STAGING_BYTES, max(self.chunk_all, self.chunk) * self.vocab * 4),
                                    "staging", map_read=True, kind="staging")
        self.compiler = Compiler(gpu, self.pipelines, self.weights, self.pool, self.step_buffer, self.draw_buffer,
                                 self.layout, self._create)

    # ---- buffers ------------------------------------------------------------------------------
    def _create(self, size: int, label: str, uniform: bool = False, kind: str | None = None,
                map_read: bool = False) -> Any:
        """A buffer from the allocator, counted under `kind` (default: "params" for uniforms, else the
        label's first word)."""
        if self.lost:
            raise DeviceError(f"the GPU device can no longer be used ({self.lost}); load the model again")
        try:
            return self.allocator.create(size, label, kind or ("params" if uniform else label.split(".")[0]),
                                         "map_read" if map_read else "uniform" if uniform else "storage")
        except DeviceError:   # the device was lost
            self.lost = "the device was lost"
            raise

    def _free(self, buf: Any) -> None:
        """Destroy a buffer made by _create and stop counting it (once: later calls do nothing)."""
        self.allocator.free(buf)

    def new_cache(self) -> GpuKVCache:
        """A cache of its own: a pool of one slot."""
        return self._take_slot(self._new_pool(1))

    def _new_batch_cache(self, room: int) -> GpuKVCache:
        """A slot of a pool that batched sequences share (a new pool of `room` slots, within the binding limit,
        when every pool is full), so that a batched step over them reads their caches through one binding."""
        pool = next((p for p in self._pools if p.free), None)
        if pool is None:
            most = max(1, self.gpu.profile.max_binding_size // max(
                (self.layout.layer_bytes(lk) for lk in self.layout.kv), default=1))
            pool = self._new_pool(min(room, most))
            self._pools.append(pool)
        return self._take_slot(pool)

    def _new_pool(self, slots: int) -> KVPool:
        return KVPool.allocate(self.layout, slots, lambda n, label: self._create(n, label, kind="kv"))

    def _take_slot(self, pool: KVPool) -> GpuKVCache:
        return self._track(GpuKVCache.allocate(self.layout, pool, lambda n, label: self._create(n, label, kind="kv"),
                                               self._give_back))

    def _bindings(self, cache: GpuKVCache) -> CacheBindings:
        """What this engine keeps for `cache` (made on first use)."""
        state = self._cache_state.get(cache)
        if state is None:
            state = self._cache_state[cache] = CacheBindings()
        return state

    def _give_back(self, cache: GpuKVCache) -> None:
        """Free a released cache's buffers and forget what the engine kept for it; its slot goes back to its pool,
        and a pool no cache holds is freed."""
        state = self._cache_state.pop(cache, None)
        for b in cache.conv + (state.chain + list(state.own.values()) if state else []):
            self._free(b)
        pool = cache.pool
        pool.free.append(cache.slot)
        if len(pool.free) == pool.slots:
            self._cache_state.pop(pool, None)
            if pool in self._pools:
                self._pools.remove(pool)
            for b in pool.buffers():
                self._free(b)

    def bind(self, plan: Plan, cache: GpuKVCache) -> list[Any]:
        """`plan`'s bind groups over `cache` (built on first use)."""
        return plan.bind(self.gpu.device, cache, self._bindings(cache).groups)

    # ---- plans --------------------------------------------------------------------------------
    def plan(self, output_rows: str, n: int, pick: str) -> Plan:
        """The plan for a step of n rows ending in `pick` ("logits", "argmax", "sample"), compiled on first use."""
        rows = next(b for b in buckets(self.max_rows(output_rows)) if b >= n)
        key = (output_rows, rows, pick)
        p = self.plans.get(key)
        if p is None:
            p = self.compiler.compile(self.graphs[output_rows], rows, pick, self.max_rows(output_rows))
            self.plans[key] = p
        return p

    def batch_rows(self) -> int:
        """Most sequences one batched plan takes (more run in several): the presets' (0: no batched plan), within a
        step's rows."""
        return min(self.gpu.profile.presets.batch_rows, self.max_rows("all"))

    def batch_plan(self, n: int) -> Plan:
        """The batched decode plan for n sequences (2 .. batch_rows()), one per bucket of rows, compiled on first use."""
        rows = next(b for b in buckets(self.batch_rows()) if b >= max(n, 2))   # one sequence alone: padded
        key = ("batch", rows, "argmax")
        p = self.plans.get(key)
        if p is None:
            p = self.compiler.compile(self.graphs["all"], rows, "argmax", self.max_rows("all"), batch=True)
            self.plans[key] = p
        return p

    def compile_all(self) -> None:
        """Compile every plan a model can use: last-row steps ending in logits, argmax or sampling, all-row
        steps, every size. Hidden-state plans (embeddings) are left to first use: they take the activation
        slots of the last-row plans of their size and add only their parameters (about 60 KB for SmolLM2),
        while compiling them would add a third to the fit prediction's time at every load."""
        for output_rows, pick in (("last", "argmax"), ("last", "logits"), ("last", "sample"), ("all", "logits")):
            for rows in buckets(self.max_rows(output_rows)):
                self.plan(output_rows, rows, pick)
        # the batched plans that max_batch sequences take
        most = min(self.max_batch or 0, self.batch_rows())
        for rows in buckets(most) if most >= 2 else []:
            self.batch_plan(rows)

    # ---- steps --------------------------------------------------------------------------------
    def step(self, cache: GpuKVCache, ids: np.ndarray, pos0: int, output_rows: str,
             pick: Pick = "logits") -> np.ndarray:
        """Run one step; returns logits [rows_out, vocab] (float32) or token ids [rows_out].

        A failing device (lost, destroyed, out of memory mid-step) raises DeviceError and marks the
        engine unusable: load the model again. A step that does not finish within step_timeout
        seconds raises DeviceError too; the engine then waits for it before the next step. Any other
        exception is a bug: it surfaces as itself and the engine stays usable.
        """
        self._check_usable()
        host_draw = isinstance(pick, Draw) and not pick.on_gpu   # settings the kernels do not cover: pick on the host
        mode = "logits" if host_draw else "sample" if isinstance(pick, Draw) else pick
        plan = self.plan(output_rows, len(ids), mode)
        groups = self.bind(plan, cache)
        with self._device_errors():
            out = self._run(plan, groups, ids, pos0, 1 if output_rows == "last" else len(ids),
                            None if host_draw or not isinstance(pick, Draw) else pick)
        return np.array([Sampler.pick(out[-1], pick)]) if host_draw else out

    def _check_usable(self) -> None:
        """MdstError on a closed engine, DeviceError on a lost device."""
        self.check_open()
        if self.lost:
            raise DeviceError(f"the GPU device can no longer be used ({self.lost}); load the model again")

    @contextmanager
    def _device_errors(self) -> Iterator[None]:
        """Around handing work to the device (queue writes, submission, readback): an error of wgpu's own
        (validation, out of memory, internal: what every call on a lost device raises) marks the device lost
        and becomes DeviceError. Anything else is a bug and surfaces as itself."""
        self._check_usable()
        try:
            yield
        except self._wgpu.GPUError as e:
            raise self._lose(e, "running a step") from e

    def _lose(self, error: BaseException, doing: str) -> DeviceError:
        """Mark the device unusable after wgpu's `error` while `doing`; the DeviceError to raise."""
        text = str(error).strip()
        self.lost = f"{type(error).__name__} while {doing}" + (f": {text.splitlines()[-1].strip()}" if text else "")
        return DeviceError(f"the GPU failed ({self.lost}); the device may have been lost: load the model again")

    def decode(self, cache: GpuKVCache, first: int, pos0: int, count: int, pick: Callable[[], Pick],
               ahead: bool = False) -> Iterator[tuple[int, int]]:
        """One-token steps, each submitted before the previous one's token is read back when `ahead` allows.

        The picked token stays on the GPU: each step's commands copy it into the next step's input,
        so step t + 1 is encoded and queued while step t runs, and encoding overlaps the GPU. A
        consumer that stops early leaves one step done past its last token; its cache position is
        simply written again later (the second value yielded counts it). Paged weights, host-side
        draws and picks that depend on earlier tokens take the one-step-at-a-time path.
        """
        self._check_usable()
        if count <= 0:
            return
        first_pick = pick()
        plan = self.plan("last", 1, "sample" if isinstance(first_pick, Draw) else first_pick)
        host_draw = isinstance(first_pick, Draw) and not first_pick.on_gpu
        if not ahead or plan.segments or plan.ids_buffer is None or host_draw or not native.can_map_directly():
            picks = iter([first_pick])
            yield from super().decode(cache, first, pos0, count, lambda: next(picks, None) or pick(), ahead)
            return
        dev = self.gpu.device
        groups = self.bind(plan, cache)
        state = self._bindings(cache)
        if not state.chain:  # the next step's token, and two readback buffers taking turns
            state.chain = [self._create(16, "chain.token", kind="step")] + \
                [self._create(16, f"chain.read{i}", map_read=True, kind="staging") for i in range(2)]
        token, reads = state.chain[0], state.chain[1:]

        def submit(i: int, p: Pick) -> int:
            if i == 0:
                write_step(dev.queue, self.step_buffer, np.array([first]), pos0, plan.rows)
            else:
                dev.queue.write_buffer(self.step_buffer, 0, step_words(pos0 + i, 1, rows=0))   # the ids stay
            if isinstance(p, Draw):
                dev.queue.write_buffer(self.draw_buffer, 0, self._draw_words(p))
            enc = dev.create_command_encoder()
            if i > 0:
                enc.copy_buffer_to_buffer(token, 0, self.step_buffer, 4 * STEP_TOKENS, 4)
            plan.encode(enc, groups)
            enc.copy_buffer_to_buffer(plan.ids_buffer, 0, reads[i % 2], 0, 4)
            enc.copy_buffer_to_buffer(plan.ids_buffer, 0, token, 0, 4)
            return native.submit(dev.queue, [enc.finish()])

        with self._device_errors():
            index = submit(0, first_pick)
        for i in range(count):
            with self._device_errors():
                try:
                    # step t + 1 is queued before t's token is awaited (by its submission index alone)
                    following = submit(i + 1, pick()) if i + 1 < count else None
                    tok = int(self._read(4, reads[i % 2], (native.Readback(reads[i % 2], 4), index))
                              .view(np.uint32)[0])
                    index = following
                except BaseException:
                    for b in state.chain:  # a late read may still map them: never reuse them
                        self._free(b)
                    state.chain = []
                    raise
            yield tok, pos0 + min(i + 2, count)

    def step_batch(self, caches: list[GpuKVCache], ids: list[np.ndarray], pos0s: list[int],
                   picks: list[Pick]) -> np.ndarray:
        """One-token steps of several sequences through the batched plan (each weight read once for all of
        them, each layer's attention one dispatch over their pool), their tokens read back once: the sequences
        of one KV pool, batch_rows() at a time, a submit each. Paged weights, host-side or constrained draws, a
        lone sequence and longer feeds take the one-row plans (_step_each)."""
        self._check_usable()
        if len(caches) < 2 or self.batch_rows() < 2 or self.weights.paged_bytes or any(len(i) != 1 for i in ids) or \
                4 * len(ids) > self.staging.size or \
                any(isinstance(k, Draw) and (not k.on_gpu or k.mask is not None) for k in picks):
            return self._step_each(caches, ids, pos0s, picks)
        n, cap = len(caches), self.batch_rows()
        pools: dict[int, list[int]] = {}
        for i, c in enumerate(caches):
            pools.setdefault(id(c.pool), []).append(i)
        runs = [seqs[c0:c0 + cap] for seqs in pools.values() for c0 in range(0, len(seqs), cap)]
        step_bytes, no_draw = 4 * STEP_TOKENS, bytes(4 * DRAW_WORDS)
        dev = self.gpu.device
        with self._device_errors():
            plans = [self.batch_plan(len(seqs)) for seqs in runs]
            if any(p.per_sequence for p in plans):
                # each sequence's own step words (its position, one row, its row of the batch) for its dispatches
                rows = {i: j for seqs in runs for j, i in enumerate(seqs)}
                inputs = self._batch_inputs(n * step_bytes)
                dev.queue.write_buffer(inputs, 0, np.concatenate(
                    [step_words(p, 1, rows=0, row0=rows[i]) for i, p in enumerate(pos0s)]).tobytes())
            for seqs, plan in zip(runs, plans):
                pool = caches[seqs[0]].pool
                shared = plan.bind(dev, pool, self._bindings(pool).groups)
                own = [self._own(caches[i]) for i in seqs] if plan.per_sequence else []
                groups = [plan.bind(dev, caches[i], self._bindings(caches[i]).groups, o) for i, o in zip(seqs, own)]
                table = [(pos0s[i], caches[i].slot) for i in seqs]
                write_step(dev.queue, self.step_buffer, np.array([int(ids[i][0]) for i in seqs]), 0, plan.rows, table)
                drawing = [isinstance(picks[i], Draw) for i in seqs]
                if any(drawing):   # a draw a row, zeros where a row takes the argmax (the chain skips it)
                    dev.queue.write_buffer(plan.draws, 0, b"".join(picks[i].encode() if d else no_draw
                                                                    for i, d in zip(seqs, drawing)))
                enc = dev.create_command_encoder()
                for i, o in zip(seqs, own):
                    enc.copy_buffer_to_buffer(inputs, i * step_bytes, o["step"], 0, step_bytes)
                plan.encode_batch(enc, shared, groups, any(drawing))
                if seqs == list(range(seqs[0], seqs[0] + len(seqs))):
                    enc.copy_buffer_to_buffer(plan.ids_buffer, 0, self.staging, 4 * seqs[0], 4 * len(seqs))
                else:
                    for j, i in enumerate(seqs):
                        enc.copy_buffer_to_buffer(plan.ids_buffer, 4 * j, self.staging, 4 * i, 4)
                for j, (i, d) in enumerate(zip(seqs, drawing)):
                    if d:
                        enc.copy_buffer_to_buffer(plan.sampled, 4 * j, self.staging, 4 * i, 4)
                dev.queue.submit([enc.finish()])
            return self._read(4 * n).view(np.uint32).astype(np.int64)

    def _own(self, cache: GpuKVCache) -> dict[str, Any]:
        """A sequence's own buffers for batched steps' per-sequence dispatches (SequenceSlot): its step words."""
        state = self._bindings(cache)
        if not state.own:
            state.own = {"step": self._create(4 * STEP_TOKENS, "batch.step", kind="step")}
        return state.own

    def _step_each(self, caches: list[GpuKVCache], ids: list[np.ndarray], pos0s: list[int],
                   picks: list[Pick]) -> np.ndarray:
        """Every sequence's one-row plan recorded in one command encoder, submitted once, their tokens read
        back once: each sequence's step words and draw are copied into the step and draw buffers before its
        dispatches. Paged plans, host-side draws and longer feeds take a step per sequence."""
        modes = ["sample" if isinstance(k, Draw) else k for k in picks]
        plans = [self.plan("last", 1, m) for m in modes]
        if any(len(i) != 1 for i in ids) or any(p.segments for p in plans) or 4 * len(ids) > self.staging.size or \
                any(isinstance(k, Draw) and not k.on_gpu for k in picks):
            return super().step_batch(caches, ids, pos0s, picks)
        n, step_bytes, draw_bytes = len(caches), 4 * (STEP_TOKENS + 1), 4 * DRAW_WORDS
        steps = np.concatenate([step_words(p, 1, i) for p, i in zip(pos0s, ids)])
        draws = b"".join(k.encode() if isinstance(k, Draw) else bytes(draw_bytes) for k in picks)
        groups = [self.bind(p, c) for p, c in zip(plans, caches)]
        dev = self.gpu.device
        with self._device_errors():
            inputs = self._batch_inputs(n * (step_bytes + draw_bytes))
            dev.queue.write_buffer(inputs, 0, steps.tobytes() + draws)
            enc = dev.create_command_encoder()
            for i, (plan, g, k) in enumerate(zip(plans, groups, picks)):
                enc.copy_buffer_to_buffer(inputs, i * step_bytes, self.step_buffer, 0, step_bytes)
                if isinstance(k, Draw):
                    enc.copy_buffer_to_buffer(inputs, n * step_bytes + i * draw_bytes, self.draw_buffer, 0, draw_bytes)
                plan.encode(enc, g)
                enc.copy_buffer_to_buffer(plan.ids_buffer, 0, self.staging, 4 * i, 4)
            dev.queue.submit([enc.finish()])
            return self._read(4 * n).view(np.uint32).astype(np.int64)

    def _batch_inputs(self, nbytes: int) -> Any:
        """The buffer batched steps copy their step words and draws from, grown to hold `nbytes`."""
        have = self._batch_buffer
        if have is None or have.size < nbytes:
            if have is not None:
                self._free(have)
            self._batch_buffer = self._create(max(nbytes, 2 * (have.size if have else 0)), "batch.inputs", kind="step")
        return self._batch_buffer

    def _run(self, plan: Plan, groups: list[Any], ids: np.ndarray, pos0: int, rows_out: int,
             draw: Draw | None) -> np.ndarray:
        """Write the step's inputs (and the draw a sampling plan reads), submit `plan` and read back its
        logits or token ids."""
        device = self.gpu.device
        write_step(device.queue, self.step_buffer, ids, pos0, plan.rows)
        if draw is not None:
            device.queue.write_buffer(self.draw_buffer, 0, self._draw_words(draw))
        enc = device.create_command_encoder()
        if plan.segments:
            enc = self._run_segments(plan, groups)
        else:
            plan.encode(enc, groups)
        if plan.ids_buffer is not None:
            enc.copy_buffer_to_buffer(plan.ids_buffer, 0, self.staging, 0, max(4, rows_out * 4))
            device.queue.submit([enc.finish()])
            return self._read(rows_out * 4).view(np.uint32).astype(np.int64)
        return self._read_logits(enc, plan, rows_out)

    def _draw_words(self, draw: Draw) -> bytes:
        """The draw buffer's contents for `draw`; ValueError if its mask is not over this model's vocabulary."""
        if draw.mask is not None:
            check_mask(draw.mask, self.vocab)
        return draw.encode()

    def _run_segments(self, plan: Plan, groups: list[Any]) -> Any:
        """A paged plan: copy each segment's weight parts into their slots, then submit its dispatches.

        Uploads follow the submissions before them in queue order, so a slot is only overwritten after
        the dispatches that read its previous content. Returns a fresh encoder for the readback.
        """
        device = self.gpu.device
        for seg in plan.segments:
            for slot, name, part in seg.page_ins:
                self.weights.page_in(slot, name, part)
            enc = device.create_command_encoder()
            plan.encode(enc, groups, seg.start, seg.end)
            device.queue.submit([enc.finish()])
        return device.create_command_encoder()

    def _read(self, nbytes: int, buffer: Any = None, readback: tuple[native.Readback, int] | None = None
              ) -> np.ndarray:
        """The first nbytes of the staging buffer (or `buffer`), once the GPU has written them (within
        step_timeout).

        Mapping blocks until the GPU is done, so the wait runs on a worker thread and this one waits
        with a deadline. If the wait ends early (timeout, KeyboardInterrupt) the staging buffer is left
        to the worker and replaced, so the next step starts clean behind the late one. `readback`: a
        native mapping of `buffer` already started, and the index of the submission that writes it.
        """
        staging = buffer or self.staging

        def read() -> np.ndarray:
            if readback is not None:
                return np.frombuffer(readback[0].wait(self.gpu.device, readback[1]), dtype=np.uint8)
            staging.map_sync(self._wgpu.MapMode.READ, 0, max(4, -(-nbytes // 4) * 4))
            try:
                return np.frombuffer(staging.read_mapped(0, nbytes, copy=True), dtype=np.uint8)
            finally:
                staging.unmap()

        try:
            return self._waiter.run(read, self.step_timeout)
        except TimeoutError:
            if buffer is None:
                self._replace_staging()
            raise DeviceError(f"a GPU step did not finish within {self.step_timeout:g} s; it may still be "
                              "running (the next step waits for it), or the device is hung") from None
        except (self._wgpu.GPUError, RuntimeError) as e:   # wgpu refused the mapping, or reported it failed
            raise self._lose(e, "reading a result back") from e
        except BaseException:
            if buffer is None:
                self._replace_staging()
            raise

    def _replace_staging(self) -> None:
        old = self.staging
        self.allocator.forget(old)   # left to the worker that may still map it
        self.staging = self._create(old.size, "staging", map_read=True, kind="staging")

    def _read_logits(self, enc: Any, plan: Plan, rows_out: int) -> np.ndarray:
        """Copy the logits parts out through the staging buffer, as many rows a round as fit."""
        device = self.gpu.device
        out = np.empty((rows_out, plan.out_cols), np.float32)
        widest = max(p.cols for p in plan.outputs)
        per_round = max(1, self.staging.size // (4 * widest))
        for part in plan.outputs:
            for r0 in range(0, rows_out, per_round):
                rows = min(per_round, rows_out - r0)
                enc = enc or device.create_command_encoder()
                enc.copy_buffer_to_buffer(part.buffer, 4 * r0 * part.cols, self.staging, 0, 4 * rows * part.cols)
                device.queue.submit([enc.finish()])
                enc = None
                out[r0:r0 + rows, part.col0:part.col0 + part.cols] = \
                    self._read(4 * rows * part.cols).view(np.float32).reshape(rows, part.cols)
        return out

    # ---- memory -------------------------------------------------------------------------------
    def memory_report(self) -> dict[str, Any]:
        """Bytes by kind, the pool's statistics, and each compiled plan's activation use."""
        w = self.weights.weights
        return {
            "gpu_bytes": dict(self.bytes_by_kind),
            "gpu_bytes_total": sum(self.bytes_by_kind.values()),
            "gpu_bytes_peak": self.peak_bytes,
            "weights": {"tensors": len(w), "resident_bytes": self.weights.nbytes,
                        "paged_bytes": self.weights.paged_bytes, "page_slots": len(self.weights.slots),
                        "parts_paged_in": self.weights.page_ins,
                        "split_tensors": {n: len(x.parts) for n, x in w.items() if len(x.parts) > 1}},
            "kv": {"kv_type": self.layout.kv_type, "bytes_per_sequence": self.layout.kv_bytes(),
                   "conv_state_bytes_per_sequence": self.layout.conv_bytes(),
                   "layers": [{"layer": lk.spec.layer, "ring": lk.ring, "kv_dim": lk.kv_dim,
                               "window": lk.spec.window} for lk in self.layout.kv]},
            "pool": self.pool.stats.as_dict(),
            "plans": [{"output_rows": k[0], "rows": k[1], "pick": k[2], "dispatches": len(p.dispatches),
                       "activation_bytes": p.activation_bytes, "one_buffer_per_tensor_bytes": p.naive_activation_bytes}
                      for k, p in sorted(self.plans.items())],
            "chunk": self.chunk, "chunk_all_logits": self.chunk_all,
            "max_binding_size": self.gpu.profile.max_binding_size,
        }

    def close(self) -> None:
        """Free every GPU buffer this engine made (caches included), end its wait thread and drop its
        pipelines and bind groups; the engine cannot be used afterwards. The device is the caller's."""
        self._waiter.close()
        self._release_caches()
        if getattr(self, "weights", None) is not None:
            self.weights.release_staging()
        for buf, _, _ in list(self._live.values()):
            self._free(buf)
        # released now rather than when the collector breaks the engine's cycles (the pool's and
        # weights' callbacks refer back to it)
        self.plans = {}
        self.weights = self.pool = self.compiler = self.pipelines = self.staging = None
