"""Compilation of a recorded graph into a `Plan`: a fixed list of GPU dispatches.

A plan is compiled for a number of rows (1 for decode, a power of two up to the prefill chunk)
and an output mode. Compilation picks each op's kernel specialization, assigns activation
buffers by liveness from the shared pool, packs every dispatch's parameters into one uniform
buffer, and fixes the workgroup counts. Bind groups are built once per KV cache and reused for
every step; a step then writes the small step buffer, encodes one compute pass and submits once.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import native
from .fusion import fuse
from .graph import AttentionSpec, ConvSpec, Graph, Node, RopeSpec, Value
from .kernels import TYPE_STEPS, KernelSpec, PipelineCache, pack_params, wgsl_const
from .memory.kv_cache import KV_TYPES, CacheLayout, GpuKVCache
from .memory.pool import Liveness
from .memory.weights import GpuWeight, WeightStore, dequantize

_native = native.dispatch_calls()

# Constants the kernels own, read from their WGSL (kernels/README.md).
MAX_GROUPS = wgsl_const("common.wgsl", "MAX_GROUPS")  # workgroups in x before a dispatch spills into y
TOPK_SLICE = wgsl_const("topk.wgsl", "SLICE")  # columns per top-k workgroup
ARGMAX_SLICE = wgsl_const("argmax.wgsl", "SLICE")  # columns per argmax workgroup
GEMM_TILE = wgsl_const("matmul_rows.wgsl", "TILE")  # matmul_rows: rows and outputs per workgroup
GPU_TOP_K = wgsl_const("common.wgsl", "KMAX")  # candidates a top-k slice keeps
GEMV_WG = 256  # matmul_row: threads per workgroup (lanes per row, rows per group and groups per unit are presets)
# Weights in a unit of matmul_row's step, for the types with a step of their own (the generic step's
# unit is 4 * gemv_chunk weights); the most rows a group of lanes computes.
GEMV_UNIT = {t: wgsl_const(f"quant/{t}.matmul_row.wgsl", "UNIT") for t in TYPE_STEPS["matmul_row"]}
GEMV_MAX_ROWS = wgsl_const("matmul_row.wgsl", "MAX_ROWS")


def gemm_groups(n: int, m: int) -> tuple[int, int, int]:
    """matmul_rows' workgroup count: GEMM_TILE x GEMM_TILE tiles of [m, n]."""
    return (ceil_div(n, GEMM_TILE), ceil_div(m, GEMM_TILE), 1)


def gemv_lanes(k: int, wtype: str, presets: Any) -> int:
    """matmul_row's threads per row: the preset, fewer where a row has fewer units to share out."""
    units = k // GEMV_UNIT[wtype] if wtype in GEMV_UNIT else ceil_div(k, 4 * presets.gemv_chunk)
    return min(presets.gemv_lanes, 1 << max(0, units - 1).bit_length())


def gemv_rows(n: int, lanes: int, presets: Any) -> int:
    """matmul_row's rows per group of lanes (ROWS): the preset, at most `lanes`, and halved while the
    dispatch would have fewer than presets.gemv_threads threads (a short matrix still fills the GPU)."""
    rows = max(1, min(presets.gemv_rows, lanes, GEMV_MAX_ROWS))
    while rows > 1 and ceil_div(n, rows) * lanes < presets.gemv_threads:
        rows //= 2
    return rows


def gemv_groups(n: int, lanes: int, rows: int = 1) -> tuple[int, int, int]:
    """matmul_row's workgroup count for n output rows, `lanes` a row and `rows` a group of lanes
    (rows * GEMV_WG / lanes rows a workgroup)."""
    return grid1(ceil_div(n, rows * (GEMV_WG // lanes)))


_plan_keys = itertools.count(1)  # bind groups are cached on a cache per plan key: unique per process
USES_KV = {"kv_store", "attention", "rope_store"}  # kernels composed with the cache format (kv/<format>.wgsl)
ACTIVATIONS = {"silu": 1, "gelu_tanh": 2}              # `activate` in common.wgsl


def grid1(groups: int) -> tuple[int, int, int]:
    """A 1-D workgroup count, spilling into y past 65535 (kernels use flat_wg)."""
    groups = max(1, groups)
    return (min(groups, MAX_GROUPS), -(-groups // MAX_GROUPS), 1)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass
class CacheSlot:
    """A binding resolved when the plan is bound to a cache: buffer `index` of kind "k", "v" or "conv"."""

    index: int
    which: str

    def resolve(self, cache: GpuKVCache) -> Any:
        return getattr(cache, self.which)[self.index]


@dataclass
class Dispatch:
    """One compute dispatch."""

    spec: KernelSpec
    pipeline: Any
    resources: list[Any]          # per binding, in binding order: GPU buffer, KV, or (buffer, offset, size)
    workgroups: tuple[int, int, int]
    params: dict[str, Any]
    label: str                    # what it computes, for profiles ("matmul.attn_q", "attention", "add")
    layer: int | None = None      # the block it belongs to (None: before the first or after the last)
    param_offset: int = 0


@dataclass
class Segment:
    """Dispatches [start, end) of a paged plan, run after copying `page_ins` (slot, matrix, part) into slots."""

    start: int
    end: int
    page_ins: list[tuple[int, str, int]]


@dataclass
class OutputPart:
    """Columns [col0, col0 + cols) of the output, held in `buffer` as [rows_out, cols]."""

    buffer: Any
    col0: int
    cols: int


@dataclass
class Plan:
    """A compiled forward step."""

    rows: int
    output_rows: str
    pick: str                     # "logits" (read back), "argmax" or "sample" (read back a token id)
    dispatches: list[Dispatch]
    outputs: list[OutputPart]
    rows_out: int
    out_cols: int
    ids_buffer: Any | None
    scratch: list[Any]            # buffers only this plan uses (token picking)
    param_buffer: Any
    activation_bytes: int         # peak bytes of activation slots this plan holds
    naive_activation_bytes: int   # what one buffer per value would take
    key: int = field(default=0)
    segments: list[Segment] = field(default_factory=list)  # set when the plan reads paged weights

    def bind(self, device: Any, cache: GpuKVCache, store: dict[int, list[Any]]) -> list[Any]:
        """Bind groups for `cache`, built on first use and kept in `store` (the caller's, one per cache)."""
        groups = store.get(self.key)
        if groups is None:
            groups = []
            for d in self.dispatches:
                entries = []
                for i, r in enumerate(d.resources):
                    if isinstance(r, CacheSlot):
                        r = r.resolve(cache)
                    if isinstance(r, tuple):
                        buf, off, size = r
                        entries.append({"binding": i, "resource": {"buffer": buf, "offset": off, "size": size}})
                    else:
                        entries.append({"binding": i, "resource": {"buffer": r, "offset": 0, "size": r.size}})
                groups.append(device.create_bind_group(layout=d.pipeline.get_bind_group_layout(0), entries=entries))
            store[self.key] = groups
        return groups

    def encode(self, encoder: Any, groups: list[Any], start: int = 0, end: int | None = None,
               timestamps: Any = None) -> None:
        """Record dispatches [start, end) (default: all) into one compute pass.

        Through wgpu-py's public API each dispatch costs several microseconds of Python; where
        wgpu-native's C entry points are reachable (wgpu is pinned) they are called directly,
        skipping repeated pipelines. The pass itself comes from the public API either way.
        """
        cp = encoder.begin_compute_pass(timestamp_writes=timestamps) if timestamps else encoder.begin_compute_pass()
        items = zip(self.dispatches[start:end], groups[start:end])
        if _native is None:
            for d, g in items:
                cp.set_pipeline(d.pipeline)
                cp.set_bind_group(0, g)
                cp.dispatch_workgroups(*d.workgroups)
        else:
            lib, null = _native
            h, last = cp._internal, None
            set_pipeline, set_group = lib.wgpuComputePassEncoderSetPipeline, lib.wgpuComputePassEncoderSetBindGroup
            dispatch = lib.wgpuComputePassEncoderDispatchWorkgroups
            for d, g in items:
                if d.pipeline is not last:
                    set_pipeline(h, d.pipeline._internal)
                    last = d.pipeline
                set_group(h, 0, g._internal, 0, null)
                dispatch(h, *d.workgroups)
        cp.end()


class Compiler:
    """Turns graphs into plans for one device, weight store, pool and precision."""

    def __init__(self, gpu: Any, pipelines: PipelineCache, weights: WeightStore, pool: Any,
                 step_buffer: Any, draw_buffer: Any, layout: CacheLayout, create_buffer: Any):
        self.gpu, self.pipelines, self.weights, self.pool = gpu, pipelines, weights, pool
        self.step, self.draw = step_buffer, draw_buffer
        self.layout = layout
        self.create = create_buffer
        self._rope_tables: dict[Any, Any] = {}  # GPU tables by RoPE spec, and rope_store's by ("store", layer)

    # ---- helpers ------------------------------------------------------------------------------
    def _spec(self, name: str, wtype: str | None = None, **constants: int) -> KernelSpec:
        kv, f16 = KV_TYPES[self.layout.kv_type] if name in USES_KV else (None, False)
        return KernelSpec(name, wtype, f16, tuple(sorted(constants.items())), kv)

    def _dispatch(self, out: list[Dispatch], name: str, resources: list[Any], groups: tuple[int, int, int],
                  params: dict[str, Any], label: str, wtype: str | None = None, **constants: int) -> None:
        spec = self._spec(name, wtype, **constants)
        out.append(Dispatch(spec, self.pipelines.get(spec), resources, groups, params, label, self._layer))

    def _vector(self, name: str) -> np.ndarray:
        """A small tensor's values on the host (norm weights, RoPE frequency factors)."""
        t = self.weights.gguf.tensors[name]
        return dequantize(self.weights.gguf.tensor_bytes(name), t.type, t.shape).ravel()

    def _rope_freqs(self, spec: RopeSpec) -> tuple[np.ndarray, float]:
        return spec.table(self._vector(spec.freq_factors) if spec.freq_factors else None)

    def rope_table(self, spec: RopeSpec) -> tuple[GpuWeight, float]:
        """The GPU frequency table of a RoPE spec (one per distinct spec)."""
        got = self._rope_tables.get(spec)
        if got is None:
            freq, mscale = self._rope_freqs(spec)
            got = (self.weights.put_vector(f"rope.{len(self._rope_tables)}", freq), mscale)
            self._rope_tables[spec] = got
        return got

    # ---- compilation --------------------------------------------------------------------------
    def compile(self, graph: Graph, rows: int, pick: str, alloc_rows: int | None = None) -> Plan:
        """A plan for `rows` rows (the step may use fewer: the rest is padding), ending as `pick` says:
        "logits", "argmax" (greedy token ids) or "sample" (the sampling chain; last-row graphs only).

        Activation buffers are sized for `alloc_rows` (default: rows): plans compiled for every row
        count up to it then ask the pool for the same slots and share them.
        """
        alloc_rows = rows if alloc_rows is None else alloc_rows
        graph = fuse(graph, row_fusions=rows == 1 or self.gpu.profile.presets.matmul == "by_output",
                     paired=self.weights.paired, runs=self.weights.run_members if rows == 1 else None)
        self._lru: dict[int, tuple[str, int] | None] = {i: None for i in range(len(self.weights.slots))}
        self._misses: list[tuple[int, int, str, int]] = []  # (dispatch index, slot, matrix, part)
        live = Liveness(self.pool)
        last = graph.last_uses()
        # Views (fusion.py's sibling matmuls) are column ranges of a run's output, which lives
        # until the last of them is read; RoPE in place on a view is a view too.
        views: dict[int, int] = {}
        for node in graph.nodes:
            if node.op == "view" or (node.op == "rope" and node.inputs[0].id in views):
                views[node.out.id] = views.get(node.inputs[0].id, node.inputs[0].id)
        for v, base in views.items():
            last[base] = max(last[base], last.get(v, -1))
        bufs: dict[int, Any] = {}
        ds: list[Dispatch] = []
        outputs: list[OutputPart] = []
        cap = self.gpu.profile.max_binding_size

        def nrows(v: Value) -> int:
            return rows if v.rows == "n" else 1

        def arows(v: Value) -> int:
            return alloc_rows if v.rows == "n" else 1

        self._layer = None
        for i, node in enumerate(graph.nodes):
            out = node.out
            self._layer = layer_of(node, self._layer)
            if node.op == "view":   # one-row plans only: a contiguous range of the run's output
                bufs[out.id] = (bufs[node.inputs[0].id], 4 * node.attrs["col0"], 4 * out.cols)
                continue
            if node.op == "rope" and node.inputs[0].id in views:
                bufs[out.id] = bufs[node.inputs[0].id]
            elif node.op == "rope" and last[node.inputs[0].id] == i:
                live.share(out.id, node.inputs[0].id)
                bufs[out.id] = bufs[node.inputs[0].id]
            elif out is graph.output and arows(out) * out.cols * 4 > cap:
                bufs[out.id] = None  # split output: one buffer per weight part, made below
            else:
                bufs[out.id] = live.take(out.id, arows(out) * out.cols * 4)
            x = [bufs[v.id] for v in node.inputs]
            if out is graph.output:
                outputs = self._output_parts(node, bufs[out.id], arows(out), out.cols, live)
            self._emit(ds, node, x, bufs[out.id], nrows, outputs if out is graph.output else None, live)
            freed = set()
            for v in node.inputs:
                vid = views.get(v.id, v.id)
                if last.get(vid) == i and vid not in freed and not (node.op == "rope"):
                    live.free(vid)
                    freed.add(vid)

        rows_out = nrows(graph.output)
        ids_buffer, scratch = None, []
        if pick == "argmax":
            ids_buffer, scratch = self._argmax(ds, outputs, rows_out)
        elif pick == "sample":
            if rows_out != 1:
                raise ValueError("sampling plans produce one row")
            ids_buffer, scratch = self._sample(ds, outputs)
        param_buffer = self._pack(ds)
        return Plan(rows, graph.output_rows, pick, ds, outputs, rows_out, graph.output.cols, ids_buffer,
                    scratch, param_buffer, live.peak_bytes, live.naive_bytes, key=next(_plan_keys),
                    segments=self._segments(len(ds)))

    def _weight(self, ds: list[Dispatch], name: str, part: int) -> Any:
        """The buffer the next dispatch binds for a weight part: its own, or the least recently used slot."""
        p = self.weights.matrix(name).parts[part]
        if not p.paged:
            return p.buffer
        slot = next((s for s, held in self._lru.items() if held == (name, part)), None)
        if slot is None:
            slot = next(iter(self._lru))  # least recently used
            self._misses.append((len(ds), slot, name, part))
        del self._lru[slot]
        self._lru[slot] = (name, part)   # now the most recently used
        return self.weights.slots[slot]

    def _segments(self, n: int) -> list[Segment]:
        """Split a paged plan where a slot must change content (before its first reader)."""
        if not self._misses:
            return []
        starts = sorted({i for i, *_ in self._misses} | {0})
        return [Segment(a, b, [(slot, name, part) for i, slot, name, part in self._misses if i == a])
                for a, b in zip(starts, starts[1:] + [n])]

    def _output_parts(self, node: Node, buf: Any, rows_out: int, cols: int, live: Liveness) -> list[OutputPart]:
        if buf is not None:
            return [OutputPart(buf, 0, cols)]
        if node.op != "matmul":
            raise RuntimeError("only a matmul output can be split across buffers")
        w = self.weights.weights[node.weights[0]]
        return [OutputPart(live.take(-1 - k, rows_out * p.rows * 4), p.row0, p.rows) for k, p in enumerate(w.parts)]

    def _emit(self, ds: list[Dispatch], node: Node, x: list[Any], y: Any, nrows: Any,
              outputs: list[OutputPart] | None, live: Liveness) -> None:
        op, a = node.op, node.attrs
        out = node.out
        r = nrows(out)
        if op == "embed":
            w = self.weights.weights[node.weights[0]]
            for pi, p in enumerate(w.parts):
                wbuf = self._weight(ds, w.name, pi)
                self._dispatch(ds, "get_rows", [wbuf, self.step, y, None], (ceil_div(out.cols // 4, 64), r, 1),
                               {"cols": out.cols, "row0": p.row0, "part_rows": p.rows, "row_bytes": w.row_bytes,
                                "scale": a["scale"], "w0": p.offset}, "embed", w.type.name)
        elif op == "matmul":
            self._matmul(ds, node, x, y, r, outputs)
        elif op == "rms_norm":
            w = self.weights.weights[node.weights[0]]
            n_vec = r * out.cols // a["dim"]
            add = bool(a.get("add"))  # a post-norm fused with the residual add after it
            self._dispatch(ds, "rms_norm", [x[0], w.parts[0].buffer, y, x[1] if add else x[0], None], grid1(n_vec),
                           {"dim": a["dim"], "n_vec": n_vec, "eps": a["eps"]}, label_of(node), ADD=add)
        elif op in ("add", "mul"):
            n = r * out.cols
            self._dispatch(ds, "binary", [x[0], x[1], y, None], grid1(ceil_div(n, 64)), {"n": n}, op,
                           OP=0 if op == "add" else 1)
        elif op == "glu":
            n = r * out.cols
            self._dispatch(ds, "glu", [x[0], x[1], y, None], grid1(ceil_div(n, 64)), {"n": n}, "glu",
                           ACT=ACTIVATIONS[a["act"]])
        elif op == "rope":
            spec: RopeSpec = a["spec"]
            table, mscale = self.rope_table(spec)
            heads = out.cols // a["head_dim"]
            if y is not x[0]:
                raise RuntimeError("rope runs in place: its input must not be read afterwards")
            self._dispatch(ds, "rope", [self.step, table.parts[0].buffer, y, None],
                           (ceil_div(heads * spec.n_rot // 2, 64), r, 1),
                           {"heads": heads, "head_dim": a["head_dim"], "n_rot": spec.n_rot,
                            "neox": int(spec.neox), "mscale": mscale}, "rope")
        elif op == "rope_store":
            self._rope_store(ds, node, x, y, r)
        elif op == "attention":
            s: AttentionSpec = a["spec"]
            li = self.layout.kv_index(s.layer)
            lk = self.layout.kv[li]
            k, v = CacheSlot(li, "k"), CacheSlot(li, "v")
            kvb = wgsl_const(f"kv/{KV_TYPES[self.layout.kv_type][0]}.wgsl", "KVB")  # values an invocation stores
            if not a.get("stored"):  # else rope_store has appended k and v already
                self._dispatch(ds, "kv_store", [self.step, k, v, x[1], x[2], None],
                               (ceil_div(lk.kv_dim // kvb, 64), r, 1), {"kv_dim": lk.kv_dim, "ring": lk.ring},
                               "kv_store")
            params = {"heads": s.heads, "kv_heads": s.kv_heads, "head_dim": s.head_dim, "ring": lk.ring,
                      "window": s.window, "scale": s.scale, "softcap": s.softcap,
                      "temp_scale": s.temp_scale, "temp_floor": s.temp_floor}
            split, lanes = self.gpu.profile.presets.attention_split, self.gpu.profile.presets.attention_lanes
            if r == 1 and split:
                # decode: splits of `split` keys in parallel, then a merge (flash-decoding); splits cover the
                # cache's allocated positions, so a long cache gets longer splits rather than more of them
                keys = min(lk.ring, s.window or lk.ring)
                cap = self.gpu.profile.presets.attention_splits
                if cap:
                    split = max(split, 1 << (ceil_div(keys, cap) - 1).bit_length())
                splits = ceil_div(keys, split)
                nbytes = s.heads * splits * (s.head_dim + 2) * 4
                part = live.take(-id(node), nbytes)
                self._dispatch(ds, "attention", [self.step, k, v, x[0], part, None], (s.heads, 1, splits), params,
                               "attention", SPLIT=split, LPK=lanes)
                self._dispatch(ds, "attention_merge", [self.step, part, y, None], (s.heads, 1, 1),
                               {"heads": s.heads, "head_dim": s.head_dim, "splits": splits}, "attention")
                live.free(-id(node))
            else:
                self._dispatch(ds, "attention", [self.step, k, v, x[0], y, None], (s.heads, r, 1), params, "attention",
                               LPK=lanes)
        elif op == "shortconv":
            c: ConvSpec = a["spec"]
            w = self.weights.weights[node.weights[0]]
            self._dispatch(ds, "shortconv", [self.step, x[0], w.parts[0].buffer,
                                             CacheSlot(self.layout.conv_index(c.layer), "conv"), y, None],
                           (ceil_div(c.channels, 64), 1, 1), {"channels": c.channels, "kernel": c.kernel},
                           "shortconv")
        elif op == "last_row":
            self._dispatch(ds, "take_row", [self.step, x[0], y, None], (ceil_div(out.cols, 64), 1, 1),
                           {"cols": out.cols}, "last_row")
        else:
            raise NotImplementedError(f"no GPU kernel for op {op!r}")

    def _matmul(self, ds: list[Dispatch], node: Node, x: list[Any], y: Any, r: int,
                outputs: list[OutputPart] | None) -> None:
        """A matmul with its fusions (fusion.py): glu=(act, up weight), norm=(weight, eps), res (last input)."""
        a = node.attrs
        w = self.weights.matrix(node.weights[0])
        k = node.inputs[0].cols
        glu = ACTIVATIONS[a["glu"][0]] if "glu" in a else 0
        norm, eps = (self.weights.weights[a["norm"][0]].parts[0].buffer, a["norm"][1]) if "norm" in a else (None, 0.0)
        res = x[-1] if a.get("res") else None
        fused = {"NORM": norm is not None, "RES": res is not None, "GLU": glu}
        for pi, p in enumerate(w.parts):
            if outputs is not None and len(outputs) > 1:
                target, o0, stride = outputs[pi].buffer, 0, p.rows
            else:
                target, o0, stride = y, p.row0, node.out.cols
            params = {"k": k, "n": p.rows, "row_bytes": w.row_bytes, "o0": o0, "w0": p.offset, "eps": eps}
            wbuf = self._weight(ds, w.name, pi)
            spare = x[0]  # bound where a fusion is off: every declared binding needs a buffer
            args = [wbuf, x[0], target, res or spare, norm or spare, None]
            if self.gpu.profile.presets.matmul == "by_output":
                # CPU adapters: outputs across lanes, rows in registers (see matmul_by_output.wgsl)
                rr = 1 if r == 1 else 8
                params.update(m=r, y_stride=stride)
                self._dispatch(ds, "matmul_by_output", args, (ceil_div(p.rows, 256), ceil_div(r, rr), 1),
                               params, label_of(node), w.type.name, R=rr, **fused)
            elif r == 1:
                pre = self.gpu.profile.presets
                lanes = gemv_lanes(k, w.type.name, pre)
                rows = gemv_rows(p.rows, lanes, pre)
                self._dispatch(ds, "matmul_row", args, gemv_groups(p.rows, lanes, rows), params, label_of(node),
                               w.type.name, WG=GEMV_WG, TPR=lanes, ROWS=rows, GPT=pre.gemv_chunk, **fused)
            else:
                if norm is not None or glu:
                    raise RuntimeError("the many-row matmul fuses the residual add only")
                params.update(m=r, y_stride=stride)
                del params["eps"]
                self._dispatch(ds, "matmul_rows", [wbuf, x[0], target, res or spare, None], gemm_groups(p.rows, r),
                               params, label_of(node), w.type.name, RES=res is not None)

    def _rope_store(self, ds: list[Dispatch], node: Node, x: list[Any], y: Any, r: int) -> None:
        """Per-head q/k norms, RoPE and the KV-cache append in one dispatch (fusion.py)."""
        a = node.attrs
        s: AttentionSpec = a["attention"]
        spec: RopeSpec = a["spec"]
        freq, mscale = self._rope_freqs(spec)
        li = self.layout.kv_index(s.layer)
        hd = a["head_dim"]
        aux = self._rope_tables.get(("store", s.layer))   # made once, shared by every plan
        if aux is None:
            norms = [self._vector(a[name]) if a[name] else np.zeros(hd, np.float32) for name in ("q_norm", "k_norm")]
            aux = self.weights.put_vector(f"rope_store.{s.layer}", np.concatenate([freq] + norms))
            self._rope_tables[("store", s.layer)] = aux
        self._dispatch(ds, "rope_store", [self.step, CacheSlot(li, "k"), CacheSlot(li, "v"), x[0], x[1], x[2], y,
                                          aux.parts[0].buffer, None], (s.heads + s.kv_heads, r, 1),
                       {"heads": s.heads, "kv_heads": s.kv_heads, "head_dim": a["head_dim"], "n_rot": spec.n_rot,
                        "neox": int(spec.neox), "mscale": mscale, "ring": self.layout.kv[li].ring, "eps": a["eps"],
                        "q_norm": int(a["q_norm"] is not None), "k_norm": int(a["k_norm"] is not None)}, "rope_store")

    def _argmax(self, ds: list[Dispatch], outputs: list[OutputPart], rows_out: int) -> tuple[Any, list[Any]]:
        """The largest logit of each ARGMAX_SLICE columns of every part, then the best of those per row."""
        slices = [ceil_div(o.cols, ARGMAX_SLICE) for o in outputs]
        best = self.create(rows_out * sum(slices) * 8, "argmax.best")
        ids = self.create(max(16, rows_out * 4), "argmax.ids")
        for o, first, n in zip(outputs, itertools.accumulate([0] + slices[:-1]), slices):
            self._dispatch(ds, "argmax", [o.buffer, best, None], (n, rows_out, 1),
                           {"cols": o.cols, "col0": o.col0, "slice0": first, "slices": sum(slices)}, "argmax")
        self._dispatch(ds, "argmax_merge", [best, ids, None], (rows_out, 1, 1), {"slices": sum(slices)}, "argmax")
        return ids, [best]

    def _sample(self, ds: list[Dispatch], outputs: list[OutputPart]) -> tuple[Any, list[Any]]:
        """Penalties on each logits part, top-k per 2048-column slice, then the chain and the draw."""
        slices = [ceil_div(o.cols, TOPK_SLICE) for o in outputs]
        cand = self.create(sum(slices) * GPU_TOP_K * 8, "sample.cand")
        ids = self.create(16, "sample.ids")
        for o in outputs:
            self._dispatch(ds, "penalize", [self.draw, o.buffer, None], (1, 1, 1), {"cols": o.cols, "col0": o.col0},
                           "sample")
        for o, first in zip(outputs, itertools.accumulate([0] + slices[:-1])):
            self._dispatch(ds, "topk", [self.draw, o.buffer, cand, None], (ceil_div(o.cols, TOPK_SLICE), 1, 1),
                           {"cols": o.cols, "col0": o.col0, "slice0": first}, "sample")
        self._dispatch(ds, "sample", [self.draw, cand, ids, None], (1, 1, 1), {"slices": sum(slices)}, "sample")
        return ids, [cand]

    def _pack(self, ds: list[Dispatch]) -> Any:
        """Write every dispatch's parameters into one uniform buffer; fill in the last binding."""
        align = max(16, int(self.gpu.profile.limits.get("min-uniform-buffer-offset-alignment", 256)))
        blobs = [pack_params(d.spec.name, d.params) for d in ds]
        offsets, total = [], 0
        for b in blobs:
            offsets.append(total)
            total += -(-len(b) // align) * align
        data = bytearray(total)
        for o, b in zip(offsets, blobs):
            data[o:o + len(b)] = b
        buf = self.create(max(total, 16), "params", uniform=True)
        self.gpu.queue.write_buffer(buf, 0, bytes(data))
        for d, o, b in zip(ds, offsets, blobs):
            d.param_offset = o
            d.resources[-1] = (buf, o, len(b))
        return buf


def label_of(node: Node) -> str:
    """A profile label: the op and the role of its weight ("matmul.attn_q", "rms_norm.output_norm")."""
    if node.weights:
        parts = node.weights[0].split(".")
        return f"{node.op}.{parts[2] if parts[0] == 'blk' and len(parts) >= 3 else parts[0]}"
    return node.op


def layer_of(node: Node, current: int | None) -> int | None:
    """The block a node belongs to: from its weights' names or its spec, else the block it follows."""
    for name in node.weights:
        parts = name.split(".")
        if parts[0] == "blk" and len(parts) >= 3 and parts[1].isdigit():
            return int(parts[1])
    spec = node.attrs.get("spec")
    return getattr(spec, "layer", current) if spec is not None else current


def write_step(queue: Any, step_buffer: Any, ids: np.ndarray, pos0: int, rows: int) -> None:
    """Fill the step buffer: [pos0, n_rows, 0, 0, ids padded with zeros to the plan's rows]."""
    data = np.zeros(4 + rows, dtype=np.uint32)
    data[0], data[1] = pos0, len(ids)
    data[4:4 + len(ids)] = ids
    queue.write_buffer(step_buffer, 0, data.tobytes())
