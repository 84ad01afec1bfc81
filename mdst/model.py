"""`Model` (a loaded GGUF on a device) and `Session` (one conversation's KV cache)."""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import os
import threading
import warnings
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .gpu import device as device_mod
from .gpu.allocator import CountingAllocator, GpuAllocator
from .runtime.batch import Batch
from .runtime.engine import CpuEngine, GpuEngine, build_graphs
from .errors import MdstError
from .format.gguf import GGUFFile
from .ir.graph import check_activations
from .memory import fit, host
from .models import family
from .progress import check as progress_check, loading
from .text.tokenizer import Tokenizer

log = logging.getLogger("mdst")

DEFAULT_CONTEXT = 4096
PRECISION_DEPRECATED = ("precision= is deprecated and will be removed: it only set the KV cache type "
                        "(arithmetic is f32); use kv_type= ('f32', 'f16' or 'q8_0')")


def checked_context(context_length: int | None, model_max: int) -> int:
    """The context length asked for, or the model's capped at DEFAULT_CONTEXT; ValueError unless a positive int."""
    if context_length is None:
        return min(model_max, DEFAULT_CONTEXT)
    if isinstance(context_length, bool) or not isinstance(context_length, int) or context_length < 1:
        raise ValueError(f"context_length must be a positive int, got {context_length!r}")
    return context_length


class Model:
    """A GGUF model loaded onto a device. Use `mdst.load()` to make one."""

    def __init__(self, path: str | os.PathLike, *, device: str = "auto", precision: str | None = None,
                 context_length: int | None = None, max_binding_size: int | None = None,
                 kv_type: str | None = None, gpu_memory_limit: int | str | None = None,
                 weight_paging: bool = False, progress: bool | None | Callable[[int, int], None] = None,
                 activations: str = "f32", max_batch: int | None = None):
        if precision is not None:   # deprecated: it only ever chose the KV cache type
            warnings.warn(PRECISION_DEPRECATED, DeprecationWarning, stacklevel=2)
            kv_type = device_mod.kv_type_for_precision(precision, kv_type)
        self.path = os.fspath(path)
        self.activations = check_activations(activations)
        progress_check(progress)   # here, not only where a bar would be drawn
        self._lock = threading.RLock()       # one GPU step at a time
        self._gen_lock = threading.Lock()     # one generation at a time on the default session
        self._gen_owner: int | None = None
        self._default: Session | None = None
        self._gguf = GGUFFile(self.path)
        try:
            self.architecture = self.gguf.architecture
            self.family = family(self.architecture)
            self.config = self.family.Config.from_gguf(self.gguf)
            self._tokenizer = Tokenizer.from_gguf(self.gguf)
            host.trim()   # building a large vocabulary frees tens of MB in the C heap that glibc would keep
            self.context_length = context_length = checked_context(context_length, self.config.context_length)
            if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1):
                raise ValueError(f"max_batch must be a positive int or None, got {max_batch!r}")
            limit = fit.parse_bytes(gpu_memory_limit)
            gpu = device_mod.resolve(device, max_binding_size)
            self._kv_type = device_mod.resolve_kv_type(kv_type, gpu)
            graphs = build_graphs(lambda b: self.family.forward(b, self.config), self.gguf, activations)
            self.predicted: fit.Prediction | None = None
            self.device_profile = None
            if gpu is None:
                self.engine: Any = CpuEngine(self.gguf, graphs, context_length, self.kv_type, max_batch=max_batch)
            else:
                if not isinstance(weight_paging, bool):
                    raise TypeError("weight_paging must be a bool")
                engine = functools.partial(GpuEngine, gguf=self.gguf, graphs=graphs, context=context_length,
                                           kv_type=self.kv_type, max_batch=max_batch)
                # every byte predicted by the engine's own setup on a counting allocator, before allocating any
                self.predicted, budget = fit.fit(lambda b: engine(CountingAllocator(gpu.profile), weight_budget=b),
                                                 limit, paging=weight_paging, context_length=context_length,
                                                 kv_type=self.kv_type, max_batch=max_batch)
                with loading(progress, f"loading {os.path.basename(self.path)}") as bar:
                    self.engine = engine(GpuAllocator(gpu), weight_budget=budget, progress=bar)
                self.device_profile = gpu.profile
            self.n_vocab = self.engine.vocab
        except BaseException:
            self.close()
            raise
        self.last_stats: dict[str, Any] = {}

    # ---- description --------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        """"cpu (numpy)" or the adapter's name and backend."""
        p = self.device_profile
        return "cpu (numpy)" if p is None else f"{p.name} ({p.backend}{', software' if p.software else ''})"

    @property
    def kv_type(self) -> str:
        """The KV cache's type ("f32", "f16" or "q8_0"); `activations` is the arithmetic's setting."""
        return self._kv_type

    @property
    def precision(self) -> str:
        """Deprecated: "f16" with an f16 KV cache, else "f32" (what `precision` chose); use `kv_type`."""
        warnings.warn("Model.precision is deprecated: it only named the KV cache type; use Model.kv_type",
                      DeprecationWarning, stacklevel=2)
        return "f16" if self._kv_type == "f16" else "f32"

    def __repr__(self) -> str:
        return (f"<mdst.Model {os.path.basename(self.path)} {self.architecture} on {self.backend}, "
                f"{self.kv_type} KV cache, {self.activations} activations>")

    def memory_report(self) -> dict[str, Any]:
        """Where the memory goes: weights, KV cache, activations, pool statistics and the compiled plans."""
        self._engine()
        report: dict[str, Any] = {"backend": self.backend, "context_length": self.context_length,
                                  "kv_type": self.kv_type, "file_bytes": sum(map(os.path.getsize, self.gguf.paths))}
        if self.engine.kind == "gpu":
            report.update(self.engine.memory_report())
            report["predicted_gpu_bytes"] = dict(self.predicted.bytes_by_kind)
            report["predicted_gpu_bytes_total"] = self.predicted.total
        else:
            report["kv"] = {"kv_type": self.kv_type, "bytes_per_sequence": self.engine.layout.kv_bytes()}
        return report

    # ---- text ---------------------------------------------------------------------------------
    def tokenize(self, text: str, add_bos: bool | None = None, special: bool = True) -> list[int]:
        """Token ids of `text` (with BOS when the model asks for it, unless add_bos says otherwise)."""
        return self.tokenizer.encode(text, add_bos=add_bos, special=special)

    def detokenize(self, ids: Sequence[int]) -> str:
        """Text of token ids."""
        return self.tokenizer.decode(ids)

    # ---- numbers ------------------------------------------------------------------------------
    def _check_ids(self, ids: Any, what: str = "ids") -> np.ndarray:
        if isinstance(ids, (str, bytes)):
            raise TypeError(f"{what} must be a sequence of token ids (ints), not {type(ids).__name__}; "
                            "use model.tokenize(text) first")
        try:
            arr = np.asarray(ids)
        except Exception:
            raise TypeError(f"{what} must be a sequence of token ids (ints)") from None
        if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
            raise TypeError(f"{what} must be a flat sequence of ints, got {arr.dtype} with shape {arr.shape}")
        if arr.size == 0:
            raise ValueError(f"{what} is empty; pass at least one token id")
        bad = arr[(arr < 0) | (arr >= self.n_vocab)]
        if bad.size:
            raise ValueError(f"{what} holds token id {int(bad[0])}, outside the vocabulary [0, {self.n_vocab})")
        return arr.astype(np.int64)

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Next-token logits at every position of `ids`: float32 (len(ids), n_vocab). Stateless."""
        with self.session() as s:
            return s.feed(ids)

    def embed(self, texts: str | Sequence[str], pooling: str | None = None, normalize: bool = True) -> np.ndarray:
        """Embeddings: each text's final hidden states (after the final norm, before the LM head), pooled.

        pooling: "mean" (over the tokens), "last" (the last token's), "cls" (the first token's), or
        None for the file's `{arch}.pooling_type` (1 mean, 2 cls, 3 last; mean otherwise). Returns
        float32 (d_model,) for one string, (len(texts), d_model) for a list; unit length if normalize.
        """
        from .text.embedding import check_pooling, pool

        one = isinstance(texts, str)
        items = [texts] if one else texts
        if not isinstance(items, (list, tuple)) or not all(isinstance(t, str) for t in items):
            raise TypeError("texts must be a string or a list of strings")
        if not items:
            raise ValueError("texts is empty; pass at least one string")
        if not isinstance(normalize, bool):
            raise TypeError("normalize must be a bool")
        pooling = check_pooling(pooling, self.gguf)
        out = []
        for i, text in enumerate(items):
            ids = self.tokenize(text)
            if not ids:
                raise ValueError(f"texts[{i}] has no tokens; pass some text")
            with self.session() as s:
                out.append(pool(s.hidden(ids), pooling, normalize))
        return out[0] if one else np.stack(out)

    def session(self) -> "Session":
        """A new session with its own KV cache (weights are shared)."""
        return Session(self)

    def batch(self, expected: int = 1) -> Batch:
        """An empty batch of sequences that decode together (continuous batching; see mdst.runtime.batch); how many
        it is `expected` to hold at once (their caches are made that many at a time, sharing one KV pool, unless
        max_batch says how many)."""
        return Batch(self._engine(), lambda: self._lock, expected)

    def generate(self, prompt: str | Sequence[str], max_tokens: int = 128, temperature: float = 0.0,
                 **kwargs: Any) -> Any:
        """Continue `prompt` (or each of a list of prompts, decoded together: a list of texts); greedy when
        temperature is 0. See mdst.generate.generate for every option."""
        from .generate import generate
        return generate(self, prompt, max_tokens=max_tokens, temperature=temperature, **kwargs)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator["Session"]:
        """The model's default session, held by one generation at a time.

        Other threads wait their turn; the same thread starting a second generation while its first
        (a stream) is still open gets an error instead of a corrupted cache.
        """
        me = threading.get_ident()
        if self._gen_owner == me:
            raise MdstError("this thread is still inside another generate()/chat() on this model (an unfinished "
                            "stream?); exhaust or close it first, or use model.session() for independent sequences")
        with self._gen_lock:
            self._gen_owner = me
            try:
                if self._default is None:
                    self._default = self.session()
                yield self._default
            finally:
                self._gen_owner = None

    def chat(self, messages: Sequence[dict], max_tokens: int = 512, **kwargs: Any) -> Any:
        """Reply to a conversation ([{"role": ..., "content": ...}, ...]) using the model's chat template.

        Returns a ChatReply (a str of the content, with .reasoning_content and .tool_calls). See mdst.generate.chat
        for every option (template=, tools=, tool_choice=, stream=, stop=, sampling settings)."""
        from .generate import chat
        return chat(self, messages, max_tokens=max_tokens, **kwargs)

    # ---- lifetime -----------------------------------------------------------------------------
    def close(self) -> None:
        """Free the device (its buffers, pipelines and threads) and the file mapping; later use raises MdstError."""
        with self._lock:   # after the step running now, if any
            if getattr(self, "_default", None) is not None:
                self._default.close()
                self._default = None
            eng = getattr(self, "engine", None)
            if eng is not None:
                self.engine = None
                eng.close()
                if eng.kind == "gpu":
                    eng.gpu.device.destroy()   # opened for this model alone; stops wgpu's poll thread too
                    del eng
                    # wgpu-py's device and queue refer to each other, so the device is released (and the
                    # driver frees what its buffers held) only when the collector breaks that cycle
                    gc.collect()
            # the parsed file and the tokenizer are host memory too (tens of MB for a large vocabulary)
            g = self.__dict__.pop("_gguf", None)
            if g is not None:
                g.close()
            self.__dict__.pop("_tokenizer", None)
        host.trim()

    def _open(self, name: str) -> Any:
        """Attribute `name`, or MdstError once the model is closed."""
        value = self.__dict__.get(name)
        if value is None:
            raise MdstError("the model is closed; load it again")
        return value

    def _engine(self) -> Any:
        """The engine, or MdstError once the model is closed."""
        return self._open("engine")

    @property
    def gguf(self) -> GGUFFile:
        """The parsed GGUF file (metadata and tensor table); MdstError once the model is closed."""
        return self._open("_gguf")

    @property
    def tokenizer(self) -> Tokenizer:
        """The model's tokenizer; MdstError once the model is closed."""
        return self._open("_tokenizer")

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Session:
    """One sequence's KV cache on a model. `feed` appends tokens and returns their logits."""

    def __init__(self, model: Model):
        self.model = model
        self.cache = model._engine().new_cache()
        self.tokens: list[int] = []
        self.written = 0   # positions the cache has been written up to (decode may run a step past n_past)

    @property
    def n_past(self) -> int:
        """Tokens in the cache."""
        return len(self.tokens)

    def _room(self, n: int) -> None:
        ctx = self.model.context_length
        if self.n_past + n > ctx:
            raise ValueError(f"{self.n_past} cached + {n} new tokens exceed the context length of {ctx}; "
                             f"load with a larger context_length (model maximum {self.model.config.context_length}) "
                             "or start a new session")

    def _steps(self, ids: np.ndarray, output_rows: str, pick: Any = "logits",
               last_pick: Any = None) -> Iterator[np.ndarray]:
        """Feed ids a step at a time; each step ends in `pick`, the final one in `last_pick` if given."""
        eng = self.model._engine()
        chunk = eng.max_rows(output_rows)
        for s in range(0, len(ids), chunk):
            part = ids[s:s + chunk]
            this = last_pick if last_pick is not None and s + chunk >= len(ids) else pick
            with self.model._lock:
                out = eng.step(self.cache, part, self.n_past, output_rows, this)
            self.tokens.extend(int(t) for t in part)
            self.written = max(self.written, self.n_past)
            yield out

    def feed(self, ids: Sequence[int]) -> np.ndarray:
        """Append `ids` to the cache; returns their logits, float32 (len(ids), n_vocab)."""
        arr = self.model._check_ids(ids)
        self._room(len(arr))
        return np.concatenate(list(self._steps(arr, "all")), axis=0)

    def hidden(self, ids: Sequence[int]) -> np.ndarray:
        """Append `ids`; returns their final hidden states (the LM head's input), float32 (len(ids), d_model)."""
        arr = self.model._check_ids(ids)
        self._room(len(arr))
        return np.concatenate(list(self._steps(arr, "hidden")), axis=0)

    def prefill(self, ids: Sequence[int], greedy: bool = False, draw: Any = None) -> np.ndarray:
        """Append `ids`; returns the last position's logits [vocab], or the next token id: its argmax with
        greedy=True, or sampled with a `mdst.text.sampling.Draw` (on the GPU where the kernels cover its settings)."""
        arr = self.model._check_ids(ids)
        self._room(len(arr))
        out = None
        # steps before the last only fill the cache: their cheapest ending is a token id, discarded
        for out in self._steps(arr, "last", "argmax", draw if draw is not None else "argmax" if greedy else "logits"):
            pass
        return out[0]

    def decode(self, first: int, count: int, pick: Callable[[], Any], ahead: bool = False) -> Iterator[int]:
        """Feed `first`, then each token yielded, `count` steps at most; yields the token each step picks.

        `pick()` gives each step's ending ("argmax" or a `Draw`); `ahead=True` promises it does not
        depend on earlier tokens, so the GPU may run the next step before this one's token is read.
        Stop by closing the iterator (or leaving the loop): only tokens yielded count as fed.
        """
        self._room(count)
        eng = self.model._engine()
        steps = eng.decode(self.cache, int(first), self.n_past, count, pick, ahead)
        fed = int(first)
        try:
            while True:
                with self.model._lock:
                    got = next(steps, None)
                if got is None:
                    return
                tok, written = got
                self.tokens.append(fed)
                self.written = max(self.written, written)
                fed = tok
                yield tok
        finally:
            with self.model._lock:
                steps.close()

    def reset(self) -> None:
        """Forget every cached token (the buffers are kept)."""
        self.tokens = []
        self.written = 0

    def truncate(self, n: int) -> None:
        """Keep only the first n cached tokens (everything, if a sliding-window ring already lost what n needs)."""
        if n >= self.n_past:
            return
        if not self.model._engine().can_rewind(max(self.n_past, self.written), n):
            n = 0
        self.tokens = self.tokens[:n]
        self.written = max(n, self.written) if n else 0

    def reuse_prefix(self, ids: Sequence[int]) -> int:
        """Keep the cached tokens that start `ids` (at least one token of ids stays new); returns how many."""
        common = 0
        for a, b in zip(self.tokens, ids):
            if a != b:
                break
            common += 1
        self.truncate(min(common, len(ids) - 1))
        return self.n_past

    def close(self) -> None:
        """Free the cache."""
        if self.cache is not None:
            self.cache.release()
            self.cache = None

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
