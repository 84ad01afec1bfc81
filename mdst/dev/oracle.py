"""`mdst oracle MODEL OUTDIR`: test data for the browser build of mdst's kernels.

An oracle directory holds `oracle.json` (the manifest) and `blobs/` (little-endian binary
files). It has three sections, documented field by field in web/README.md:

- kernel cases: for every kernel specialization the model's decode and prefill plans use,
  inputs, parameters, override constants, workgroup counts and the outputs wgpu-native
  computed (each also checked here against mdst.reference), with a tolerance per output;
- golden steps: a short prompt's prefill and a few greedy decode steps: token ids, the
  residual stream after chosen layers (numpy reference) and the logits (mdst on the GPU);
- a plan: the decode plan of the golden steps' last step as a dispatch list over numbered
  buffers, with every buffer's initial content, so one whole decode step can be replayed.

`check(outdir)` runs a directory's cases and replay on wgpu-native from the files alone and
returns the same report as the browser harness (web/harness.js).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..compile.plan import GEMV_MAX_XR, step_words

FORMAT = "mdst-oracle"
VERSION = 1
BROWSER_BINDING_LIMIT = 128 << 20   # maxStorageBufferBindingSize a browser grants by default
REPLAY_TOLERANCE = 1e-3             # rel-L2 of replayed logits (vs mdst) and activations (vs numpy)
POISON = 0xFFFFFFFF
UNIFORM_ALIGNMENT = 256             # WebGPU's largest minUniformBufferOffsetAlignment


# ---- comparison (web/harness.js implements the same rule) --------------------------------------

def compare(actual: bytes, expect: bytes, dtype: str, rule: dict[str, Any]) -> dict[str, Any]:
    """Compare an output with its expectation under `rule` ({"exact": true} or {"rel_l2": tol}).

    For f32, NaN marks an element that must stay unwritten (its poison is NaN): NaN positions must
    agree; the other elements must be equal (exact) or within the relative L2 error.
    """
    if len(actual) != len(expect):
        return {"ok": False, "error": f"{len(actual)} bytes, expected {len(expect)}"}
    if dtype != "f32":
        a, e = np.frombuffer(actual, np.uint32), np.frombuffer(expect, np.uint32)
        bad = int(np.count_nonzero(a != e))
        return {"ok": bad == 0, "mismatches": bad}
    a = np.frombuffer(actual, np.float32).astype(np.float64)
    e = np.frombuffer(expect, np.float32).astype(np.float64)
    nan_e = np.isnan(e)
    nan_mismatch = int(np.count_nonzero(np.isnan(a) != nan_e))
    a, e = a[~nan_e], e[~nan_e]
    out: dict[str, Any] = {"nan_mismatch": nan_mismatch}
    if rule.get("exact"):
        out["mismatches"] = int(np.count_nonzero(a != e))
        out["ok"] = nan_mismatch == 0 and out["mismatches"] == 0
    else:
        diff = a - e
        finite = np.isfinite(diff).all()
        err = float(np.linalg.norm(diff) / max(np.linalg.norm(e), 1e-30)) if finite else float("inf")
        out["rel_l2"] = err
        out["ok"] = nan_mismatch == 0 and err <= rule["rel_l2"]
    if a.size:
        out["max_abs"] = float(np.max(np.abs(a - e))) if np.isfinite(a - e).all() else float("inf")
    return out


# ---- blobs ------------------------------------------------------------------------------------

class Blobs:
    """Writes binary blobs under OUTDIR/blobs/, named by content hash (identical data is stored once)."""

    def __init__(self, root: Path):
        self.root = root
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        self.files = 0
        self.bytes = 0

    def put(self, data: bytes | np.ndarray, dtype: str | None = None, shape: tuple[int, ...] | None = None) -> dict:
        """Store `data` (an array's raw little-endian bytes); returns the manifest's blob reference."""
        if isinstance(data, np.ndarray):
            if dtype is None:
                dtype = {"float32": "f32", "uint32": "u32", "uint8": "u8", "int32": "i32"}[data.dtype.name]
                shape = data.shape
            data = np.ascontiguousarray(data).astype(data.dtype.newbyteorder("<"), copy=False).tobytes()
        data = bytes(data)
        name = f"blobs/{hashlib.sha256(data).hexdigest()[:24]}.bin"
        path = self.root / name
        if not path.exists():
            path.write_bytes(data)
            self.files += 1
            self.bytes += len(data)
        ref: dict[str, Any] = {"file": name, "bytes": len(data)}
        if dtype is not None:
            ref["dtype"] = dtype
            ref["shape"] = [int(s) for s in shape] if shape is not None else [len(data) // 4]
        return ref


def read_blob(root: Path, ref: dict) -> bytes:
    """The bytes of a blob reference."""
    data = (root / ref["file"]).read_bytes()
    if len(data) != ref["bytes"]:
        raise ValueError(f"{ref['file']} holds {len(data)} bytes, the manifest says {ref['bytes']}")
    return data


def padded_bytes(data: bytes) -> bytes:
    """Data as uploaded to a buffer: a multiple of 4 bytes, at least 4 (KernelRunner's rule)."""
    return data + b"\0" * (-len(data) % 4) if data else b"\0\0\0\0"


# ---- kernel cases -----------------------------------------------------------------------------

@dataclass
class Expect:
    """How one output binding is judged: element type, rule, and numpy reference (NaN: unwritten)."""

    dtype: str
    rule: dict[str, Any]
    reference: np.ndarray


@dataclass
class Case:
    """One dispatch of one kernel specialization on host data."""

    about: str
    spec: Any                       # KernelSpec
    bindings: list[Any]             # np.ndarray inputs and kernels.runner.Out outputs, in binding order
    params: dict[str, Any]
    workgroups: tuple[int, int, int]
    expects: list[Expect]           # one per Out binding, in order


def _exact() -> dict[str, Any]:
    return {"exact": True}


def _within(tol: float) -> dict[str, Any]:
    return {"rel_l2": tol}


def _distinct(uses: list[Any], ignore: str) -> Iterator[tuple[Any, dict[str, Any]]]:
    """Each dispatch whose parameters, all but `ignore`, no earlier one had; with those parameters."""
    seen = set()
    for d in uses:
        p = {k: v for k, v in d.params.items() if k != ignore}
        key = tuple(sorted(p.items()))
        if key not in seen:
            seen.add(key)
            yield d, p


def _cache_step(spec: Any, pos0: int, n_rows: int, rows: int) -> np.ndarray:
    """Step words for `rows` rows from pos0 (n_rows live) for a kernel that reads positions; a POOL kernel (a batched
    plan's) reads them from the step's table: the same positions, every row in slot 0."""
    pooled = spec.constants_dict().get("POOL")
    return step_words(pos0, n_rows, rows=rows, table=[(pos0 + r, 0) for r in range(rows)] if pooled else ())


def _poisoned(shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    return np.full(shape, np.nan if dtype == np.float32 else POISON, dtype)


class CaseBuilder:
    """Makes kernel cases: weights are slices of the model's own tensors (GGUF block bytes, so every
    weight type the model uses runs on real data); activations are random at awkward sizes."""

    def __init__(self, gguf: Any, read_buffer: Callable[[Any], bytes], rng: np.random.Generator):
        self.gguf, self.read_buffer, self.rng = gguf, read_buffer, rng

    def cases(self, spec: Any, uses: list[Any]) -> list[Case]:
        """Cases for `spec`, given the plan dispatches that use it (their settings are the model's)."""
        if spec.f16:
            raise ValueError(f"{spec.key()}: oracles hold f32 specializations (the browser may lack shader-f16)")
        make = getattr(self, f"_{spec.name}", None)
        if make is None:
            raise NotImplementedError(f"mdst.dev.oracle has no case builder for kernel {spec.name!r}; add one")
        return make(spec, uses)

    # -- data
    def normal(self, *shape: int, scale: float = 1.0) -> np.ndarray:
        return (self.rng.standard_normal(shape) * scale).astype(np.float32)

    def weight(self, wtype: str, rows: int, max_cols: int) -> tuple[np.ndarray, np.ndarray, int, str]:
        """Raw bytes, dequantized values and row bytes of `rows` rows of a model tensor of type `wtype`,
        cut to at most max_cols columns on a block boundary; and where they came from."""
        from ..format.quants import dequantize

        tensors = [t for t in self.gguf.tensors.values() if t.type.name == wtype and len(t.shape) in (2, 3)]
        if not tensors:
            raise ValueError(f"the model has no {wtype} matrix")
        t = max(tensors, key=lambda t: (min(t.row_elems, max_cols), t.n_rows))
        blocks = max(1, min(t.row_elems, max_cols) // t.type.block)
        cols, row_bytes = blocks * t.type.block, blocks * t.type.block_bytes
        rows_there = min(rows, t.n_rows)
        full = np.frombuffer(self.gguf.tensor_bytes(t.name, 0, rows_there * t.row_bytes), np.uint8)
        raw = full.reshape(rows_there, t.row_bytes)[:, :row_bytes]
        raw = np.tile(raw, (-(-rows // rows_there), 1))[:rows]   # a small tensor repeats its rows
        raw = np.ascontiguousarray(raw).ravel()
        values = dequantize(raw.tobytes(), t.type, (cols, rows))
        return raw, values, row_bytes, f"{t.name}[:{rows}, :{cols}]"

    # -- one builder per kernel (named after the .wgsl file); shapes as in tests/test_kernels.py
    def _get_rows(self, spec: Any, uses: list[Any]) -> list[Case]:
        from ..kernels.runner import Out
        vocab, n = 37, 9
        raw, table, row_bytes, src = self.weight(spec.wtype, vocab, _awkward_k(spec.wtype))
        cols = table.shape[1]
        ids = self.rng.integers(0, vocab, n)
        ids[1] = ids[0]
        row0 = vocab // 2  # the table's second half as a separate part: other rows stay unwritten
        scale = float(uses[0].params["scale"])
        want = _poisoned((n, cols))
        inside = ids >= row0
        want[inside] = table[ids[inside]] * np.float32(scale)
        lead = weight_lead(spec.wtype)  # where the part starts in its buffer (w0)
        return [Case(f"rows {row0}.. of {src} as one part at byte {lead}, {n} ids", spec,
                     [np.concatenate([np.zeros(lead, np.uint8), raw[row0 * row_bytes:]]), step_words(0, n, ids),
                      Out(n * cols * 4)],
                     {"cols": cols, "row0": row0, "part_rows": vocab - row0, "row_bytes": row_bytes, "scale": scale,
                      "w0": lead}, (-(-cols // 4 // 64), n, 1), [Expect("f32", _within(1e-6), want)])]

    def _fused_matmul(self, spec: Any, m: int) -> tuple[list[Any], np.ndarray, dict[str, Any], str]:
        """A matmul case with the fusions `spec` turns on (NORM, GLU, RES): the bindings before the
        output, the residual and norm weight after it, the expected Y [m, 87] (columns 3.. of 77 rows),
        the parameters and a description."""
        from .. import reference
        c = spec.constants_dict()
        glu, norm, res = int(c.get("GLU", 0)), bool(c.get("NORM", False)), bool(c.get("RES", False))
        n, o0, stride = 77, 3, 87
        raw, w, row_bytes, src = self.weight(spec.wtype, 2 * n if glu else n, _awkward_k(spec.wtype))
        k = w.shape[1]
        x, g, r = self.normal(m, k), self.normal(k), self.normal(m, stride)
        xn = reference.rms_norm(x, g, 1e-5) if norm else x
        y = reference.matmul(xn, w[:n])
        if glu:
            y = reference.glu(y, reference.matmul(xn, w[n:]), {1: "silu", 2: "gelu_tanh"}[glu])
        want = _poisoned((m, stride))
        want[:, o0:o0 + n] = y + (r[:, o0:o0 + n] if res else 0)
        lead = weight_lead(spec.wtype)
        buf = np.concatenate([np.zeros(lead, np.uint8), raw])  # the part starts `lead` bytes into its buffer
        about = (f"{m} rows of x @ {src} at byte {lead} into columns {o0}.. of stride {stride}"
                 + (", normalized first" if norm else "") + (", gated" if glu else "") + (", plus a residual" if res else ""))
        params = {"k": k, "n": n, "row_bytes": row_bytes, "o0": o0, "w0": lead, "eps": 1e-5}
        return [buf, x, r, g], want, params, about

    def _experts(self, spec: Any, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any], str]:
        """An EXPERTS case of matmul_row or matmul_rows: the weight buffer (6 experts of 37 rows, or N_EXPERT), x,
        the routes (expert 1 on every row, the last on none), the expected [rows, 3 slots x 37] or, with COMBINE, the slots'
        weighted sum, or with GLU the gated slots; the parameters and a description."""
        c = spec.constants_dict()
        experts, n_out, used = int(c.get("N_EXPERT", 6)), 37, int(c["EXPERTS"])   # a gated spec fixes the experts
        x_slot = bool(c.get("X_SLOT"))
        raw, w, row_bytes, src, x, routes, want = self._expert_data(spec, rows, experts, n_out, used, x_slot)
        lead = weight_lead(spec.wtype)
        return (np.concatenate([np.zeros(lead, np.uint8), raw]), x, routes, want,
                {"k": w.shape[1], "n": n_out, "row_bytes": row_bytes, "o0": 0, "w0": lead},
                f"{rows} rows through {used} of {experts} experts x {n_out} rows of {src} at byte {lead}")

    def _expert_data(self, spec: Any, rows: int, experts: int, n_out: int, used: int, x_slot: bool
                     ) -> tuple[np.ndarray, np.ndarray, int, str, np.ndarray, np.ndarray, np.ndarray]:
        """Weights of `experts` matrices of n_out rows (and as many up matrices after them with GLU), x, routes
        (expert 1 on every row, the last on none) and the expected output of spec's COMBINE or GLU."""
        from .. import reference
        c = spec.constants_dict()
        glu = int(c.get("GLU", 0))
        raw, w, row_bytes, src = self.weight(spec.wtype, (2 if glu else 1) * experts * n_out, _awkward_k(spec.wtype))
        k = w.shape[1]
        routes = lopsided_routes(self.rng, rows, experts, used)
        x = self.normal(rows, used * k if x_slot else k)
        if glu:
            gate, up = (reference.expert_matmul(x, routes, m, n_out, False) for m in np.split(w, 2))
            want = reference.glu(gate, up, {1: "silu", 2: "gelu_tanh"}[glu])
        else:
            want = reference.expert_matmul(x, routes, w, n_out, bool(c.get("COMBINE", False)))
        return raw, w, row_bytes, src, x, routes, want

    def _matmul_row(self, spec: Any, uses: list[Any]) -> list[Case]:
        from ..kernels.runner import Out
        from ..compile.plan import GEMV_WG, gemv_groups
        c = spec.constants_dict()
        if c.get("EXPERTS"):
            buf, x, routes, want, params, about = self._experts(spec, 1)
            gx, gy, _ = gemv_groups(params["n"], int(c.get("TPR", 32)), int(c.get("ROWS", 1)))
            want = np.concatenate([want[0], _poisoned((3,))])
            return [Case(about + (", combined" if c.get("COMBINE") else ""), spec,
                         [buf, x[0], Out(want.nbytes), routes[0], x[0]], {**params, "eps": 0.0, "y_stride": 0},
                         (gx, gy, 1 if c.get("COMBINE") else int(c["EXPERTS"])), [Expect("f32", _within(1e-5), want)])]
        (buf, x, r, g), want, params, about = self._fused_matmul(spec, int(c.get("XR", 1)))   # rows of x: XR
        params["y_stride"] = want.shape[1]
        groups = gemv_groups(params["n"], int(c.get("TPR", 32)), int(c.get("ROWS", 1)), int(c.get("WG", GEMV_WG)))
        return [Case(about, spec, [buf, x, Out(want.nbytes), r, g], params, groups,
                     [Expect("f32", _within(1e-5), want)])]

    def _matmul_rows(self, spec: Any, uses: list[Any]) -> list[Case]:
        from ..kernels.runner import Out
        from ..compile.plan import gemm_groups
        m = 45
        c = spec.constants_dict()
        tile = [int(c.get(t, d)) for t, d in (("TR", 4), ("TC", 4), ("TY", 16))]
        if c.get("EXPERTS"):
            buf, x, routes, want, params, about = self._experts(spec, m)
            used, n = int(c["EXPERTS"]), params["n"]
            ids = routes[:, used:].astype(int).ravel()
            entries = [self.rng.permutation(np.flatnonzero(ids == e)) for e in range(6)]   # any order within an expert
            lists = np.concatenate([np.cumsum([0] + [len(e) for e in entries]), *entries]).astype(np.float32)
            gx, gy, _ = gemm_groups(n, m, *tile)
            return [Case(about + ", grouped by expert", spec, [buf, x, Out(want.nbytes), lists],
                         {**params, "m": m, "y_stride": n}, (gx, gy, 6),
                         [Expect("f32", _within(1e-5), want)])]
        (buf, x, r, g), want, params, about = self._fused_matmul(spec, m)
        del params["eps"]
        params.update(m=m, y_stride=87)
        return [Case(about, spec, [buf, x, Out(want.nbytes), r], params,
                     gemm_groups(params["n"], m, *tile),
                     [Expect("f32", _within(1e-5), want)])]

    def _matmul_by_output(self, spec: Any, uses: list[Any]) -> list[Case]:
        from ..kernels.runner import Out
        c = spec.constants_dict()
        wg, rr = int(c.get("WG", 64)), int(c.get("R", 1))
        m = 2 * rr + 1
        (buf, x, r, g), want, params, about = self._fused_matmul(spec, m)
        params.update(m=m, y_stride=87)
        return [Case(about, spec, [buf, x, Out(want.nbytes), r, g], params, (-(-params["n"] // (4 * wg)), -(-m // rr), 1),
                     [Expect("f32", _within(1e-5), want)])]

    def _rms_norm(self, spec: Any, uses: list[Any]) -> list[Case]:
        from .. import reference
        from ..kernels.runner import Out
        from ..compile.plan import grid1
        eps = float(uses[0].params["eps"])
        out = []
        add = bool(spec.constants_dict().get("ADD", False))
        for dim in [333] + sorted({int(d.params["dim"]) for d in uses}):
            n_vec = 7 if dim == 333 else 3
            x, w, a = self.normal(n_vec, dim, scale=3.0), self.normal(dim), self.normal(n_vec, dim)
            want = reference.rms_norm(x, w, eps) + (a if add else 0)
            out.append(Case(f"{n_vec} vectors of {dim}" + (" plus a residual" if add else ""), spec,
                            [x, w, Out(x.nbytes), a], {"dim": dim, "n_vec": n_vec, "eps": eps}, grid1(n_vec),
                            [Expect("f32", _within(1e-6), want)]))
        return out

    def _rope(self, spec: Any, uses: list[Any]) -> list[Case]:
        from .. import reference
        from ..kernels.runner import Out
        heads, rows, pos0 = 3, 5, 1000
        out, seen = [], set()
        for d in uses:
            hd, n_rot, neox, mscale = (int(d.params["head_dim"]), int(d.params["n_rot"]), int(d.params["neox"]),
                                       float(d.params["mscale"]))
            freq = np.frombuffer(self.read_buffer(d.resources[1]), np.float32)[:n_rot // 2].copy()
            key = (hd, n_rot, neox, mscale, freq.tobytes())
            if key in seen:
                continue
            seen.add(key)
            x = self.normal(rows, heads * hd)
            want = reference.rope(x, pos0 + np.arange(rows), freq, mscale, hd, n_rot, bool(neox))
            out.append(Case(f"the model's table (head {hd}, n_rot {n_rot}, neox {neox}) at positions {pos0}..",
                            spec, [_cache_step(spec, pos0, rows, rows), freq, Out(x.nbytes, init=x)],
                            {"heads": heads, "head_dim": hd, "n_rot": n_rot, "neox": neox, "mscale": mscale},
                            (-(-heads * n_rot // 2 // 64), rows, 1), [Expect("f32", _within(1e-5), want)]))
        return out

    def _attention_merge(self, spec: Any, uses: list[Any]) -> list[Case]:
        from .. import reference
        from ..kernels.runner import Out
        out = []
        for d in uses[:1]:
            heads, hd, splits = int(d.params["heads"]), int(spec.constants_dict()["HD"]), 5
            part = np.zeros((heads, splits, hd + 2), np.float32)
            part[:, :, 0] = self.normal(heads, splits, scale=3.0)
            part[:, :, 1] = np.abs(self.normal(heads, splits)) + 0.5
            part[:, :, 2:] = self.normal(heads, splits, hd)
            part[:, -1, :] = 0.0   # an empty range (past the row's keys)
            part[:, -1, 0] = -3.0e38
            want = reference.merge_partials(part)
            out.append(Case(f"{heads} heads of {hd}, {splits} ranges (one empty)", spec,
                            [step_words(10, 1, rows=1), part, Out(want.nbytes)],
                            {"heads": heads, "splits": splits}, d.workgroups,
                            [Expect("f32", _within(1e-5), want)]))
        return out

    def _rope_store(self, spec: Any, uses: list[Any]) -> list[Case]:
        from .. import reference
        from ..kernels.runner import Out
        if spec.kv != "F":
            raise ValueError(f"{spec.key()}: oracles hold f32 cache formats")
        rows, n_rows, pos0, ring = 3, 2, 40, 45
        out = []
        for d, p in _distinct(uses, ignore="ring"):
            heads, kvh, hd, n_rot, neox = p["heads"], p["kv_heads"], p["head_dim"], p["n_rot"], p["neox"]
            freq = np.frombuffer(self.read_buffer(d.resources[7]), np.float32)[:n_rot // 2].copy()
            q, k, v = self.normal(rows, heads * hd), self.normal(rows, kvh * hd), self.normal(rows, kvh * hd)
            qw, kw = self.normal(hd), self.normal(hd)
            positions = pos0 + np.arange(rows)
            qn = reference.rms_norm(q, qw, p["eps"], hd) if p["q_norm"] else q
            kn = reference.rms_norm(k, kw, p["eps"], hd) if p["k_norm"] else k
            want_q = reference.rope(qn, positions, freq, p["mscale"], hd, n_rot, bool(neox))
            want_k = reference.rope(kn, positions, freq, p["mscale"], hd, n_rot, bool(neox))
            wk, wv = _poisoned((ring, kvh * hd)), _poisoned((ring, kvh * hd))
            for r in range(n_rows):   # the padding row is never stored
                wk[(pos0 + r) % ring], wv[(pos0 + r) % ring] = want_k[r], v[r]
            out.append(Case(f"heads {heads}/{kvh}x{hd}, n_rot {n_rot}, q/k norms {p['q_norm']}/{p['k_norm']}, "
                            f"{n_rows} of {rows} rows at {pos0} into a ring of {ring}", spec,
                            [_cache_step(spec, pos0, n_rows, rows), Out(wk.nbytes), Out(wv.nbytes), q, k, v, Out(q.nbytes),
                             np.concatenate([freq, qw, kw])], {**p, "ring": ring}, (heads + kvh, rows, 1),
                            [Expect("f32", _within(1e-5), wk), Expect("f32", _exact(), wv),
                             Expect("f32", _within(1e-5), want_q)]))
        return out

    def _kv_store(self, spec: Any, uses: list[Any]) -> list[Case]:
        from ..format.quants import encode_rows, kv_row_bytes
        from ..kernels.runner import Out
        kv_type = _kv_type(spec)
        kv_dim, ring, rows, n_rows = 96, 11, 6, 5
        pos0 = 2 * ring - 2  # wraps around the ring; the last row is padding
        k, v = self.normal(rows, kv_dim), self.normal(rows, kv_dim)
        row_bytes = kv_row_bytes(kv_dim, kv_type)
        wk = np.full((ring, row_bytes), 0xFF, np.uint8)
        wv = wk.copy()
        for r in range(n_rows):
            slot = (pos0 + r) % ring
            wk[slot], wv[slot] = encode_rows(k[r:r + 1], kv_type)[0], encode_rows(v[r:r + 1], kv_type)[0]
        kvb = 32 if kv_type == "q8_0" else 4
        return [Case(f"{n_rows} of {rows} rows into a {kv_type} ring of {ring} from position {pos0}", spec,
                     [_cache_step(spec, pos0, n_rows, rows), Out(wk.nbytes), Out(wv.nbytes), k, v],
                     {"kv_dim": kv_dim, "ring": ring, "stride": ring}, (-(-kv_dim // kvb // 64), rows, 1),
                     [Expect("u8", _exact(), wk), Expect("u8", _exact(), wv)])]

    def _attention(self, spec: Any, uses: list[Any]) -> list[Case]:
        from .. import reference
        from ..ir.ops import AttentionSpec
        from ..kernels.runner import Out
        from ..format.quants import decode_rows, encode_rows
        flash = spec.name == "attention_rows"   # blocks of BR rows a workgroup: more rows than one block
        consts = spec.constants_dict()
        rope = bool(consts.get("ROPE"))   # decode's one row doing rope_store's work: it stores the step's k and v
        rows, n_rows = (19, 18) if flash else (1, 1) if rope else (5, 4)
        out = []
        for d, p in _distinct(uses, ignore="ring"):
            window = int(p["window"])
            pos0 = window + 7 if window else 130
            ring = window + rows - 1 if window else 137
            a = AttentionSpec(0, int(p["heads"]), int(p["kv_heads"]), int(consts["HD"]),
                              float(p["scale"]), window, float(p["softcap"]), float(p["temp_scale"]), int(p["temp_floor"]))
            kv_type = _kv_type(spec)
            kv_dim = a.kv_heads * a.head_dim
            kc = encode_rows(self.normal(ring, kv_dim, scale=2.0), kv_type)
            vc = encode_rows(self.normal(ring, kv_dim), kv_type)
            q = self.normal(rows, a.heads * a.head_dim, scale=2.0)
            cache, extra, cache_expects, what = [kc, vc], [] if flash else [q, q, q], [], ""
            kd, vd = decode_rows(kc, kv_dim, kv_type), decode_rows(vc, kv_dim, kv_type)
            if rope:
                hd, n_rot = a.head_dim, int(p["n_rot"])
                freq = np.frombuffer(self.read_buffer(d.resources[7]), np.float32)[:n_rot // 2].copy()
                k, v, qw, kw = self.normal(1, kv_dim), self.normal(1, kv_dim), self.normal(hd), self.normal(hd)
                positions = np.array([pos0])
                qn, kn = (reference.rms_norm(x, w, p["eps"], hd) if p[flag] else x
                          for x, w, flag in ((q, qw, "q_norm"), (k, kw, "k_norm")))
                kd[pos0 % ring] = reference.rope(kn, positions, freq, p["mscale"], hd, n_rot, bool(p["neox"]))[0]
                vd[pos0 % ring] = v[0]
                cache = [Out(kc.nbytes, init=kc), Out(vc.nbytes, init=vc)]
                extra = [k, v, np.concatenate([freq, qw, kw])]
                cache_expects = [Expect("f32", _within(1e-5), kd), Expect("f32", _exact(), vd)]
                q_att = reference.rope(qn, positions, freq, p["mscale"], hd, n_rot, bool(p["neox"]))
                what = f", the step's q/k norms {p['q_norm']}/{p['k_norm']}, RoPE of {n_rot} and store"
            else:
                q_att = q
            split = int(consts.get("SPLIT", 0))
            groups = a.heads // int(consts.get("GW", 1))   # workgroups along x: one a head group
            if split:   # decode's split form: one row's partials, in ranges of `split` keys and in fewer, longer ones
                keys = min(pos0 + 1, window or pos0 + 1)
                for splits in sorted({-(-keys // split), -(-keys // split // 3) or 1}, reverse=True):
                    want = reference.attention_partials(q_att[0], kd, vd, pos0, a, split, splits)
                    n = reference.split_keys(keys, split, splits)
                    out.append(Case(f"one row at {pos0} in {splits} ranges of {n} keys (heads {a.heads}/"
                                    f"{a.kv_heads}x{a.head_dim}, window {window}{what})", spec,
                                    [_cache_step(spec, pos0, 1, 1), *cache, q[:1], Out(want.nbytes), *extra],
                                    {**p, "ring": ring}, (groups, 1, splits),
                                    cache_expects + [Expect("f32", _within(1e-5), want)]))
                continue
            want = _poisoned(q.shape)
            want[:n_rows] = reference.attention(q_att[:n_rows], kd, vd, pos0 + np.arange(n_rows), a)
            out.append(Case(f"the model's heads {a.heads}/{a.kv_heads}x{a.head_dim}, window {window}, ring {ring}, "
                            f"{kv_type} cache, {n_rows} of {rows} rows at {pos0}{what}", spec,
                            [_cache_step(spec, pos0, n_rows, rows), *cache, q, Out(q.nbytes), *extra],
                            {**p, "ring": ring},
                            (groups, -(-rows // int(consts["BR"])) if flash else rows, 1),
                            cache_expects + [Expect("f32", _within(1e-5), want)]))
        return out

    _attention_rows = _attention

    def _binary(self, spec: Any, uses: list[Any]) -> list[Case]:
        from ..kernels.runner import Out
        from ..compile.plan import grid1
        n, op = 1013, int(spec.constants_dict().get("OP", 0))
        a, b = self.normal(n), self.normal(n)
        return [Case(f"{n} elements, {'a * b' if op else 'a + b'}", spec, [a, b, Out(4 * n)], {"n": n},
                     grid1(-(-n // 64)), [Expect("f32", _exact(), a * b if op else a + b)])]

    def _glu(self, spec: Any, uses: list[Any]) -> list[Case]:
        from .. import reference
        from ..kernels.runner import Out
        from ..compile.plan import grid1
        n, act = 1013, int(spec.constants_dict().get("ACT", 1))
        g, u = self.normal(n, scale=4.0), self.normal(n)
        g[:4] = [-200.0, 200.0, -30.0, 30.0]  # saturation must stay finite
        return [Case(f"{n} elements, saturating gates", spec, [g, u, Out(4 * n)], {"n": n}, grid1(-(-n // 64)),
                     [Expect("f32", _within(1e-5), reference.glu(g, u, {1: "silu", 2: "gelu_tanh"}[act]))])]

    def _take_row(self, spec: Any, uses: list[Any]) -> list[Case]:
        from ..kernels.runner import Out
        rows, n_rows, cols = 8, 5, 101
        x = self.normal(rows, cols)
        return [Case(f"row {n_rows - 1} of {rows}", spec, [step_words(0, n_rows, rows=rows), x, Out(cols * 4)],
                     {"cols": cols}, (-(-cols // 64), 1, 1), [Expect("f32", _exact(), x[n_rows - 1])])]

    def _argmax(self, spec: Any, uses: list[Any]) -> list[Case]:
        from ..kernels.runner import Out
        out = []
        for rows, cols, slice0, slices, col0 in [(3, 9000, 1, 5, 1000), (1, 37, 0, 1, 0)]:
            x = self.normal(rows, cols)
            x[0, [5, cols - 9]] = 50.0        # a tie (across slices where there are two)
            want = _poisoned((rows, slices, 2), np.uint32)
            for k in range(-(-cols // 4096)):
                part = x[:, 4096 * k:4096 * (k + 1)]
                i = np.argmax(part, axis=1)
                want[:, slice0 + k, 0] = part[np.arange(rows), i].view(np.uint32)
                want[:, slice0 + k, 1] = col0 + 4096 * k + i
            out.append(Case(f"{rows} rows of {cols} columns as slices {slice0}.. of {slices}", spec,
                            [x, Out(want.nbytes)], {"cols": cols, "col0": col0, "slice0": slice0, "slices": slices},
                            (-(-cols // 4096), rows, 1), [Expect("u32", _exact(), want)]))
        return out

    def _draw(self, mask: bytes | None = None, **settings: Any) -> Any:
        from ..text.sampling import Draw, SamplingParams
        tokens = settings.pop("tokens", ())
        params = SamplingParams(**{"temperature": 0.8, "top_k": 40, **settings})
        return Draw(params, float(np.float32(self.rng.random())), tuple(tokens), tuple(range(1, len(tokens) + 1)),
                    mask)

    def _penalize(self, spec: Any, uses: list[Any]) -> list[Case]:
        from ..kernels.runner import Out
        from ..text.sampling import Sampler
        cols, col0 = 3000, 1000
        full = self.normal(cols + col0, scale=3.0)
        draw = self._draw(tokens=(5, 999, 1000, 1003, 2500, 3999), repeat_penalty=1.3, presence_penalty=0.2,
                          frequency_penalty=0.1, logit_bias={10: 3.0, 1003: -2.5, 1500: 7.0, 3999: 100})
        return [Case(f"six recent tokens and four biased ones, part of {cols} columns from {col0}", spec,
                     [np.frombuffer(draw.encode(), np.uint32), Out(cols * 4, init=full[col0:])],
                     {"cols": cols, "col0": col0}, (1, 1, 1),
                     [Expect("f32", _within(1e-6), Sampler.penalize(full, draw)[col0:])])]

    def _topk_pairs(self, x: np.ndarray, col0: int, k: int) -> np.ndarray:
        """Per 2048-column slice, the k largest (value bits, id) pairs, descending, ties by id."""
        out = []
        for s0 in range(0, len(x), 2048):
            part = x[s0:s0 + 2048]
            order = np.lexsort((np.arange(len(part)), -part))[:k]
            pairs = np.full((64, 2), POISON, np.uint32)
            pairs[:len(order), 0] = part[order].view(np.uint32)
            pairs[:len(order), 1] = col0 + s0 + order
            out.append(pairs)
        return np.stack(out)

    def _topk(self, spec: Any, uses: list[Any]) -> list[Case]:
        from ..kernels.runner import Out
        from ..text.sampling import mask_words
        cols, col0, k = 5000, 700, 64
        x = self.normal(cols)
        x[[3, 10, 2100]] = 9.0   # ties, within a slice and across slices
        # a grammar's mask (every slice keeps more than k tokens): forbidden tokens are never candidates
        ids = np.arange(mask_words(col0 + cols) * 32)
        allowed = (self.rng.random(ids.size) < 0.25) | (ids % 7 == 0)
        allowed[col0 + 3] = False   # one of the tied maxima
        mask = np.packbits(allowed, bitorder="little").tobytes()
        out = []
        for draw, kept, what in [(self._draw(top_k=k), x, ""),
                                 (self._draw(mask, top_k=k), np.where(allowed[col0:col0 + cols], x, -np.inf),
                                  ", the tokens a constrained draw's mask allows")]:
            want = self._topk_pairs(kept.astype(np.float32), col0, k)
            out.append(Case(f"top {k} of {cols} columns from {col0} in {len(want)} slices{what}", spec,
                            [np.frombuffer(draw.encode(), np.uint32), x, Out(want.nbytes)],
                            {"cols": cols, "col0": col0, "slice0": 0, "slices": len(want)}, (len(want), 1, 1),
                            [Expect("u32", _exact(), want)]))
        return out

    def _sample(self, spec: Any, uses: list[Any]) -> list[Case]:
        from ..kernels.runner import Out
        from ..text.sampling import Sampler
        x = self.normal(3000, scale=2.0)
        out = []
        for settings in ({}, {"top_p": 0.5, "temperature": 1.5}, {"top_k": 64, "min_p": 0.05, "temperature": 0.3},
                         {"temperature": 0.0}):
            draw = self._draw(**settings)
            cand = self._topk_pairs(x, 0, draw.top_k)
            want = np.array([Sampler.pick(x, draw), POISON, POISON, POISON], np.uint32)
            out.append(Case(f"the chain with {settings or 'defaults'} over {len(cand)} slices", spec,
                            [np.frombuffer(draw.encode(), np.uint32), cand, Out(16)], {"slices": len(cand)},
                            (1, 1, 1), [Expect("u32", _exact(), want)]))
        return out

    def _argmax_merge(self, spec: Any, uses: list[Any]) -> list[Case]:
        from ..kernels.runner import Out
        rows, slices = 70, 3
        x = [self.normal(rows, 100) for _ in range(slices)]
        x[1][0, 5] = x[2][0, 7] = 50.0   # a tie across slices: the earlier slice wins
        best = np.zeros((rows, slices, 2), np.uint32)
        for k, xk in enumerate(x):
            i = np.argmax(xk, axis=1)
            best[:, k, 0] = xk[np.arange(rows), i].view(np.uint32)
            best[:, k, 1] = 100 * k + i
        want = np.argmax(np.concatenate(x, axis=1), axis=1).astype(np.uint32)
        return [Case(f"{rows} rows over {slices} slices", spec, [best, Out(rows * 4)], {"slices": slices},
                     (rows, 1, 1), [Expect("u32", _exact(), want)])]

    def _shortconv(self, spec: Any, uses: list[Any]) -> list[Case]:
        from .. import reference
        from ..ir.ops import ConvSpec
        from ..kernels.runner import Out
        out = []
        for d in uses[:1]:
            ch, kernel = 77, int(d.params["kernel"])
            rows, n_rows = 6, 5
            c = ConvSpec(0, ch, kernel)
            for pos0 in (0, 7):
                bcx, w = self.normal(rows, 3 * ch), self.normal(ch, kernel)
                state = self.normal(kernel - 1, ch)
                y, new_state = reference.shortconv(bcx[:n_rows], w, state, pos0, c)
                want_y = _poisoned((rows, ch))
                want_y[:n_rows] = y
                out.append(Case(f"{ch} channels, kernel {kernel}, {n_rows} of {rows} rows at {pos0}", spec,
                                [step_words(pos0, n_rows, rows=rows), bcx, w, Out(state.nbytes, init=state),
                                 Out(want_y.nbytes)], {"channels": ch, "kernel": kernel}, (-(-ch // 64), 1, 1),
                                [Expect("f32", _within(1e-6), new_state), Expect("f32", _within(1e-6), want_y)]))
        return out

    def _separated_logits(self, rows: int, n: int) -> np.ndarray:
        """Router logits whose ranking no rounding can change: permutations of steps of 0.1, centred."""
        return np.stack([(self.rng.permutation(n) - n / 2) * 0.1 + self.rng.uniform(0, 0.01, n)
                         for _ in range(rows)]).astype(np.float32)

    def _route(self, spec: Any, uses: list[Any]) -> list[Case]:
        from .. import reference
        from ..kernels.runner import Out
        c = spec.constants_dict()
        d = uses[0].params
        n, k, rows, norm = int(d["n_expert"]), int(d["k"]), 13, bool(d["norm"])
        gating = "sigmoid" if c.get("SIGMOID") else "softmax"
        logits = self._separated_logits(rows, n)
        bias = (self.rng.permutation(n) % 3).astype(np.float32) if c.get("BIAS") else None
        want = reference.route(logits, k, gating, norm, bias)
        return [Case(f"{rows} rows of {n} experts, {k} picked by {gating}", spec,
                     [logits, logits if bias is None else bias, Out(want.nbytes)],
                     {"n_expert": n, "k": k, "rows": rows, "norm": int(norm)}, (rows, 1, 1),
                     [Expect("f32", _within(1e-6), want)])]

    def _matmul_experts(self, spec: Any, uses: list[Any]) -> list[Case]:
        from .. import reference
        from ..kernels.runner import Out
        c = spec.constants_dict()
        combine = bool(c.get("COMBINE", False))
        experts, n_out, used, rows = int(c.get("N_EXPERT", 6)), 37, 3, 5   # a gated spec fixes the experts
        if c.get("GLU"):   # a gated pair is stored whole: one part, from expert 0
            raw, w, row_bytes, src, x, routes, want = self._expert_data(spec, rows, experts, n_out, used, False)
            lead = weight_lead(spec.wtype)
            return [Case(f"{experts} gate and up experts x {n_out} rows of {src} at byte {lead}, {used} a row", spec,
                         [np.concatenate([np.zeros(lead, np.uint8), raw]), x, routes, Out(want.nbytes)],
                         {"k": w.shape[1], "n": n_out, "row_bytes": row_bytes, "w0": lead, "e0": 0, "e1": experts,
                          "used": used, "x_slot": 0, "x_stride": x.shape[1], "acc": 0},
                         (-(-n_out // 64), rows, used), [Expect("f32", _within(1e-5), want)])]
        e0 = 2
        raw, w, row_bytes, src = self.weight(spec.wtype, experts * n_out, _awkward_k(spec.wtype))
        k = w.shape[1]
        routes = reference.route(self._separated_logits(rows, experts), used, "softmax", True)
        x = self.normal(rows, used * k if combine else k)
        held = routes[:, used:] >= e0
        masked = routes.copy()
        masked[:, :used] *= held   # slots of experts before e0 belong to another part
        want = reference.expert_matmul(x, masked, w, n_out, combine)
        prev = self.normal(*want.shape)
        if combine:
            want = want + prev
        else:
            want = want.reshape(rows, used, n_out)
            want[~held] = np.nan
            want = want.reshape(rows, -1)
        lead = weight_lead(spec.wtype)
        return [Case(f"experts {e0}.. of {experts} x {n_out} rows of {src} at byte {lead}, {used} a row", spec,
                     [np.concatenate([np.zeros(lead, np.uint8), raw[e0 * n_out * row_bytes:]]), x, routes,
                      Out(want.nbytes, init=prev if combine else None)],
                     {"k": k, "n": n_out, "row_bytes": row_bytes, "w0": lead, "e0": e0, "e1": experts, "used": used,
                      "x_slot": k if combine else 0, "x_stride": x.shape[1], "acc": 1},
                     (-(-n_out // 64), rows, 1 if combine else used), [Expect("f32", _within(1e-5), want)])]


    def _expert_groups(self, spec: Any, uses: list[Any]) -> list[Case]:
        from ..kernels.runner import Out
        # each expert on one entry at most: the order within an expert (atomics) cannot vary, so the lists are exact
        experts, used = 11, 3
        rows = experts // used
        ids = self.rng.permutation(experts)[:rows * used].reshape(rows, used)
        routes = np.concatenate([np.full((rows, used), 1 / used), ids], axis=1).astype(np.float32)
        starts = np.cumsum([0] + [int((ids == e).sum()) for e in range(experts)])
        want = np.concatenate([starts, np.argsort(ids.ravel(), kind="stable"), _poisoned((2,))]).astype(np.float32)
        return [Case(f"{rows} rows of {used} distinct experts of {experts}", spec, [routes, Out(want.nbytes)],
                     {"n_expert": experts, "used": used, "rows": rows}, (1, 1, 1), [Expect("f32", _exact(), want)])]

    def _sum_splits(self, spec: Any, uses: list[Any]) -> list[Case]:
        from ..kernels.runner import Out
        splits, m, n, o0, stride = 3, 5, 37, 2, 41
        parts, res = self.normal(splits, m, n), self.normal(m, stride)
        want = _poisoned((m, stride))
        want[:, o0:o0 + n] = parts.sum(axis=0) + (res[:, o0:o0 + n] if spec.constants_dict().get("RES") else 0)
        return [Case(f"{splits} slices of [{m}, {n}] into columns {o0} .. of {stride}", spec,
                     [parts, res, Out(want.nbytes)], {"n": n, "m": m, "splits": splits, "o0": o0, "y_stride": stride},
                     (-(-m * n // 64), 1, 1), [Expect("f32", _within(1e-6), want)])]

    def _expert_combine(self, spec: Any, uses: list[Any]) -> list[Case]:
        from ..kernels.runner import Out
        rows, n, used = 13, 37, 3
        routes = lopsided_routes(self.rng, rows, 5, used)
        t = self.normal(rows, used, n)
        want = np.concatenate([(t * routes[:, :used, None]).sum(axis=1).ravel(), _poisoned((3,))])
        return [Case(f"{rows} rows of {used} slots of {n}", spec, [t, routes, Out(want.nbytes)],
                     {"n": n, "used": used, "rows": rows}, (-(-rows * n // 64), 1, 1),
                     [Expect("f32", _within(1e-6), want)])]


def lopsided_routes(rng: np.random.Generator, rows: int, experts: int, used: int) -> np.ndarray:
    """Routes [rows, 2 used] (route.wgsl's layout) on which expert 1 is every row's, in varying slots, the last
    expert no row's, the rest random; weights positive, summing to 1."""
    ids = np.stack([np.concatenate([[1], rng.permutation([e for e in range(experts - 1) if e != 1])[:used - 1]])
                    for _ in range(rows)])
    ids = np.take_along_axis(ids, rng.permuted(np.tile(np.arange(used), (rows, 1)), axis=1), axis=1)
    w = rng.uniform(0.1, 1, (rows, used))
    return np.concatenate([w / w.sum(axis=1, keepdims=True), ids], axis=1).astype(np.float32)


def weight_lead(wtype: str) -> int:
    """Where a test's weight part starts in its buffer (w0): off the binding's start, as its type allows
    (8 bytes where bytes are read anywhere: blocks of 18 or 34 bytes then also start off word boundaries)."""
    from ..kernels import weight_align
    return max(8, weight_align(wtype))


def _awkward_k(wtype: str) -> int:
    """A row length that is a multiple of the type's block but of no workgroup tile."""
    from ..format.gguf import GGML_TYPE_BY_NAME
    block = GGML_TYPE_BY_NAME[wtype].block
    return {1: 4 * 37, 32: 32 * 7, 256: 256 * 3}[block]


def _kv_type(spec: Any) -> str:
    """The kv_type a KV kernel specialization stores."""
    return "q8_0" if spec.kv == "Q8_0" else "f16" if spec.f16 else "f32"


def _spec_json(spec: Any) -> dict[str, Any]:
    return {"kernel": spec.name, "wtype": spec.wtype, "kv": spec.kv, "f16": spec.f16,
            "constants": {k: v for k, v in spec.constants}, "key": spec.key()}


def _spec_from(entry: dict[str, Any]) -> Any:
    from ..kernels import KernelSpec
    return KernelSpec(entry["kernel"], entry["wtype"], bool(entry["f16"]), tuple(sorted(entry["constants"].items())),
                      entry.get("kv"))


def export_cases(specs: dict[Any, list[Any]], builder: CaseBuilder, runner: Any, blobs: Blobs) -> list[dict]:
    """Build, run (wgpu-native) and reference-check every case of `specs`; their manifest entries."""
    from ..kernels import GRID_TYPES, grid_words
    from ..kernels.runner import Out

    entries = []
    for spec, uses in specs.items():
        for i, case in enumerate(builder.cases(spec, uses)):
            if sum(isinstance(b, Out) for b in case.bindings) != len(case.expects):
                raise AssertionError(f"{spec.key()} ({case.about}): one expectation per output binding needed")
            got = runner.run(case.spec, case.bindings, case.params, case.workgroups)
            bindings, k = [], 0
            for b in case.bindings:
                if not isinstance(b, Out):
                    bindings.append({"input": blobs.put(padded_bytes(np.ascontiguousarray(b).tobytes()))})
                    continue
                ex = case.expects[k]
                actual = got[k].tobytes()
                want = ex.reference.astype(np.float32) if ex.dtype == "f32" else np.ascontiguousarray(ex.reference)
                check = compare(actual, want.tobytes(), ex.dtype, ex.rule)
                if not check["ok"]:
                    raise AssertionError(f"{spec.key()} ({case.about}): wgpu-native output {k} disagrees with "
                                         f"mdst.reference: {check}")
                init = None if b.init is None else blobs.put(padded_bytes(np.ascontiguousarray(b.init).tobytes()))
                bindings.append({"output": {"bytes": b.nbytes, "init": init},
                                 "expect": {**blobs.put(actual, ex.dtype, ex.reference.shape), "compare": ex.rule},
                                 "reference_check": check})
                k += 1
            grid = blobs.put(grid_words(spec.wtype).tobytes(), "u32") if spec.wtype in GRID_TYPES else None
            entries.append({"id": f"{spec.key()}#{i}", **_spec_json(spec), "about": case.about,
                            "workgroups": list(case.workgroups), "params": case.params, "bindings": bindings,
                            "grid": grid})
    return entries


# ---- golden steps and the plan ------------------------------------------------------------------

def layer_outputs(graph: Any, layers: list[int]) -> dict[str, int]:
    """Value id per tapped activation: "embed" (the embedding) and "layer.i" (the residual stream
    after layer i: the last `add` among the nodes of layer i, whose weights are named blk.i.*).
    Values, not nodes: a fused plan computes the same values with fewer nodes."""
    taps: dict[str, int] = {}
    current: int | None = None
    last_add: dict[int, int] = {}
    for i, node in enumerate(graph.nodes):
        if node.op.name == "embed" and "embed" not in taps:
            taps["embed"] = node.out.id
        if node.weights:
            parts = node.weights[0].split(".")
            current = int(parts[1]) if parts[0] == "blk" else None
        if node.op.name == "add" and current is not None:
            last_add[current] = node.out.id
    for layer in layers:
        if layer not in last_add:
            raise ValueError(f"layer {layer} does not exist (the model has layers 0..{max(last_add)})")
        taps[f"layer.{layer}"] = last_add[layer]
    return taps


class PlanExport:
    """Numbers a plan's buffers and writes the plan section of the manifest."""

    def __init__(self, engine: Any, cache: Any, blobs: Blobs):
        self.engine, self.cache, self.blobs = engine, cache, blobs
        self.ids: dict[int, int] = {}
        self.buffers: list[dict[str, Any]] = []
        weights = {id(p.buffer) for w in engine.weights.weights.values() for p in w.parts}
        kv = {id(b) for b in cache.pool.buffers() + cache.conv}
        self.readback = weights | kv  # buffers whose content the step reads

    def buffer(self, buf: Any, init: bytes | None = None, uniform: bool = False, size: int | None = None) -> int:
        """The id of `buf` (numbered on first sight, with its initial content)."""
        key = id(buf)
        if key not in self.ids:
            if init is None and key in self.readback:
                init = self.engine.gpu.queue.read_buffer(buf).tobytes().rstrip(b"\0")
                init += b"\0" * (-len(init) % 4)
            self.ids[key] = len(self.buffers)
            self.buffers.append({"id": len(self.buffers), "label": buf.label, "size": size or buf.size,
                                 "usage": "uniform" if uniform else "storage",
                                 "init": self.blobs.put(init) if init else None})
        return self.ids[key]

    def export(self, plan: Any, node_ends: dict, taps: dict[str, int], step_bytes: bytes) -> dict[str, Any]:
        """The manifest's plan section (without expectations)."""
        from ..kernels import pack_params
        from ..compile.plan import CacheSlot

        # The parameters are laid out again at the largest uniform offset alignment WebGPU allows
        # (the plan used this adapter's, which may be finer than a browser's).
        blocks = [pack_params(d.spec.name, d.params) for d in plan.dispatches]
        params = bytearray(UNIFORM_ALIGNMENT * len(blocks))
        for i, blob in enumerate(blocks):
            params[i * UNIFORM_ALIGNMENT:i * UNIFORM_ALIGNMENT + len(blob)] = blob
        self.buffer(self.engine.step_buffer, step_bytes)
        uniform = self.buffer(plan.param_buffer, bytes(params), uniform=True, size=len(params))
        dispatches = []
        for i, d in enumerate(plan.dispatches):
            binds = []
            for r in d.resources[:-1]:
                if isinstance(r, CacheSlot):
                    r = r.resolve(self.cache)
                buf, off, size = r if isinstance(r, tuple) else (r, 0, r.size)
                binds.append({"buffer": self.buffer(buf), "offset": off, "size": size})
            binds.append({"buffer": uniform, "offset": i * UNIFORM_ALIGNMENT, "size": len(blocks[i])})
            grid = None if d.grid is None else {"buffer": self.buffer(d.grid), "offset": 0, "size": d.grid.size}
            dispatches.append({**_spec_json(d.spec), "label": d.label, "workgroups": list(d.workgroups),
                               "params": d.params, "bindings": binds, "grid": grid})
        tap_list = []
        for name, node in taps.items():
            end, buf, nbytes = node_ends[node]
            tap_list.append({"name": name, "after": end, "buffer": self.buffer(buf), "offset": 0, "bytes": nbytes})
        parts = [{"buffer": self.buffer(o.buffer), "col0": o.col0, "cols": o.cols} for o in plan.outputs]
        return {"rows": plan.rows, "buffers": self.buffers, "dispatches": dispatches, "taps": tap_list,
                "logits": {"rows": plan.rows_out, "parts": parts},
                "token": {"buffer": self.buffer(plan.ids_buffer)} if plan.ids_buffer is not None else None}


def _reference_step(engine: Any, ref_weights: Any, ref_cache: Any, ids: np.ndarray, pos0: int,
                    taps: dict[str, int]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The numpy reference's logits of a step (every row) and its activations at `taps`."""
    from .. import reference
    acts: dict[str, np.ndarray] = {}
    by_node = {v: k for k, v in taps.items()}

    def on_node(i: int, node: Any, value: np.ndarray) -> None:
        if node.out.id in by_node:
            acts[by_node[node.out.id]] = value.copy()

    logits = reference.run(engine.graphs["all"], ref_weights, ref_cache, ids, pos0, on_node)
    return logits, acts


def plan_specs(engine: Any, prompt_rows: int) -> dict[Any, list[Any]]:
    """Every kernel specialization of the decode plans (batched decode's too) and the prompt's prefill plans,
    with the dispatches that use it: the plans this adapter runs, and the plans a GPU or a CPU adapter
    (the other kernel presets) would run, so the browser checks every kernel a model can use."""
    from ..gpu.device import presets_for

    c = engine.compiler
    # f32 specializations only (the browser may lack shader-f16; the f16 GEMM has kernel tests of its own)
    other = replace(presets_for(software=not c.gpu.profile.software), gemm_f16=0)
    specs: dict[Any, list[Any]] = {}
    # and a plan of more rows than a short prompt's, whatever the prompt's length
    for output_rows, rows, pick in [("last", 1, "argmax"), ("last", 1, "logits"), ("last", 1, "sample"),
                                    ("last", prompt_rows, "argmax"), ("all", prompt_rows, "logits"),
                                    ("all", min(engine.max_rows("all"), 2 * GEMV_MAX_XR), "logits")]:
        for plan in (engine.plan(output_rows, rows, pick),
                     c.compile(engine.graphs[output_rows], rows, pick, engine.max_rows(output_rows), presets=other)):
            for d in plan.dispatches:
                specs.setdefault(d.spec, []).append(d)
    # batched decode (two sequences): matmul_row over 2 rows of x on GPUs
    for plan in (engine.batch_plan(2), c.compile(engine.graphs["all"], 2, "argmax", engine.max_rows("all"),
                                                 presets=other, batch=True)):
        for d in plan.dispatches:
            specs.setdefault(d.spec, []).append(d)
    return specs


def export_plan(engine: Any, session: Any, token: int, layers: list[int], blobs: Blobs) -> dict[str, Any]:
    """The plan section for feeding `token` to `session` next (its cache as it is now)."""
    node_ends: dict[int, tuple[int, Any, int]] = {}   # value id -> (dispatches so far, buffer, bytes)

    def on_node(node: Any, dispatches: int, buf: Any, nbytes: int) -> None:
        node_ends[node.out.id] = (dispatches, buf, nbytes)

    plan = engine.compiler.compile(engine.graphs["last"], 1, "argmax", engine.max_rows("last"), on_node=on_node)
    same = engine.plan("last", 1, "argmax")
    if [(d.spec, d.workgroups, d.params) for d in plan.dispatches] != \
            [(d.spec, d.workgroups, d.params) for d in same.dispatches]:
        raise AssertionError("the recompiled decode plan differs from the engine's")
    step = np.zeros(engine.step_buffer.size // 4, np.uint32)
    step[0], step[1], step[4] = session.n_past, 1, token
    section = PlanExport(engine, session.cache, blobs).export(
        plan, node_ends, layer_outputs(engine.graphs["last"], layers), step.tobytes())
    plan.param_buffer.destroy()
    return section


def golden_steps(model: Any, ids: np.ndarray, decode_steps: int, layers: list[int], blobs: Blobs,
                 with_plan: bool, log: Callable[[str], None]) -> tuple[list[dict], dict | None]:
    """Prefill `ids`, then greedy decode steps: each step's golden data; and the last step's plan."""
    from .. import reference
    from ..memory.kv_cache import CpuKVCache

    eng = model.engine
    taps = layer_outputs(eng.graphs["all"], layers)
    ref_weights = reference.ReferenceWeights(model.gguf)
    ref_cache = CpuKVCache.allocate(eng.layout)
    steps, plan = [], None
    with model.session() as s:
        step_ids = ids
        for k in range(decode_steps + 1):
            pos0 = s.n_past
            if with_plan and k == decode_steps:   # the last step is the one replayed
                plan = export_plan(eng, s, int(step_ids[0]), layers, blobs)
            logits = s.feed(step_ids)
            ref_logits, acts = _reference_step(eng, ref_weights, ref_cache, step_ids, pos0, taps)
            nxt = int(np.argmax(logits[-1]))
            steps.append({"pos0": pos0, "ids": blobs.put(step_ids.astype(np.uint32)),
                          "logits": blobs.put(logits.astype(np.float32)),
                          "reference_logits": blobs.put(ref_logits.astype(np.float32)),
                          "reference_rel_l2": _rel_l2(logits, ref_logits), "next_token": nxt,
                          "activations": {n: blobs.put(a) for n, a in acts.items()}})
            log(f"step {k}: pos0 {pos0}, {len(step_ids)} tokens, next {nxt}, "
                f"mdst vs numpy rel-L2 {steps[-1]['reference_rel_l2']:.2e}")
            step_ids = np.array([nxt], np.int64)
    if plan is not None:   # what the replay must reproduce: the last step's golden data
        last = steps[-1]
        plan["step"] = len(steps) - 1
        plan["logits"].update(expect=last["logits"], compare=_within(REPLAY_TOLERANCE))
        if plan["token"] is not None:
            plan["token"]["expect"] = last["next_token"]
        for t in plan["taps"]:
            t.update(expect=last["activations"][t["name"]], compare=_within(REPLAY_TOLERANCE))
    return steps, plan


def write(model_path: str, outdir: str | os.PathLike, *, prompt: str = "The capital of France is",
          decode_steps: int = 2, layers: list[int] | None = None, context_length: int = 64, seed: int = 0,
          with_plan: bool = True, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Write an oracle directory for a model (see the module docstring); returns the manifest."""
    import mdst

    from ..kernels.runner import KernelRunner

    if decode_steps < 1:
        raise ValueError(f"decode_steps must be at least 1, got {decode_steps}")
    out = Path(outdir)
    if (out / "oracle.json").exists():
        shutil.rmtree(out / "blobs", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    blobs = Blobs(out)
    with mdst.load(model_path, device="gpu", kv_type="f32", context_length=context_length,
                   max_binding_size=BROWSER_BINDING_LIMIT) as model:
        eng = model.engine
        ids = np.asarray(model.tokenize(prompt), np.int64)
        if len(ids) + decode_steps > context_length:
            raise ValueError(f"{len(ids)} prompt tokens + {decode_steps} steps exceed context_length {context_length}")

        def read(buf: Any) -> bytes:
            return eng.gpu.queue.read_buffer(buf).tobytes()

        n_layers = len({w.split(".")[1] for w in eng.graphs["all"].weight_names() if w.startswith("blk.")})
        layers = sorted({0, n_layers // 2, n_layers - 1} if layers is None else set(layers))
        layer_outputs(eng.graphs["all"], layers)   # a layer that does not exist fails here, before the work
        specs = plan_specs(eng, len(ids))
        builder = CaseBuilder(model.gguf, read, np.random.default_rng(seed))
        cases = export_cases(specs, builder, KernelRunner(eng.gpu), blobs)
        log(f"{len(cases)} kernel cases for {len(specs)} specializations")
        steps, plan = golden_steps(model, ids, decode_steps, layers, blobs, with_plan, log)
        manifest = {
            "format": FORMAT, "version": VERSION,
            "generator": {"mdst": mdst.__version__, "adapter": model.backend},
            "model": {"file": os.path.basename(model.path), "architecture": model.architecture,
                      "kv_type": model.kv_type, "context_length": context_length, "n_vocab": model.n_vocab,
                      "n_layers": n_layers},
            "variant": {"f16": False, "compiler": "tint"},
            "cases": cases,
            "golden": {"prompt": prompt, "layers": layers, "activations": "residual stream after the layer "
                       "(numpy reference); embed: the scaled embedding", "steps": steps},
            "plan": plan,
        }
    (out / "oracle.json").write_text(json.dumps(manifest, indent=1))
    log(f"wrote {out / 'oracle.json'} and {blobs.files} blobs ({blobs.bytes / 1e6:.1f} MB)")
    return manifest


def _rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


# ---- running an oracle directory on wgpu-native -------------------------------------------------

def load_manifest(outdir: str | os.PathLike) -> dict[str, Any]:
    """The manifest of an oracle directory, format and version checked."""
    path = Path(outdir) / "oracle.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; write it with `mdst oracle MODEL {outdir}`")
    m = json.loads(path.read_text())
    if m.get("format") != FORMAT or m.get("version") != VERSION:
        raise ValueError(f"{path} is not an {FORMAT} v{VERSION} manifest")
    return m


def run_cases(outdir: str | os.PathLike, gpu: Any) -> list[dict[str, Any]]:
    """Every kernel case of an oracle directory, run on wgpu-native: one result per case."""
    from ..kernels.runner import KernelRunner, Out

    root = Path(outdir)
    runner = KernelRunner(gpu)
    results = []
    for c in load_manifest(root)["cases"]:
        bindings, expects = [], []
        for b in c["bindings"]:
            if "input" in b:
                bindings.append(np.frombuffer(read_blob(root, b["input"]), np.uint8))
            else:
                init = b["output"]["init"]
                bindings.append(Out(b["output"]["bytes"],
                                    None if init is None else np.frombuffer(read_blob(root, init), np.uint8)))
                expects.append(b["expect"])
        got = runner.run(_spec_from(c), bindings, c["params"], tuple(c["workgroups"]))
        outs = [compare(g.tobytes(), read_blob(root, e), e["dtype"], e["compare"]) for g, e in zip(got, expects)]
        results.append({"id": c["id"], "ok": all(o["ok"] for o in outs), "outputs": outs})
    return results


def replay(outdir: str | os.PathLike, gpu: Any) -> dict[str, Any]:
    """Replay the directory's plan (one decode step) on wgpu-native from the files alone."""
    import wgpu

    from ..kernels import PipelineCache

    root = Path(outdir)
    plan = load_manifest(root)["plan"]
    if plan is None:
        raise ValueError(f"{root} holds no plan (written with with_plan=False)")
    dev, q = gpu.device, gpu.queue
    u = wgpu.BufferUsage
    bufs = []
    for b in plan["buffers"]:
        usage = u.UNIFORM | u.COPY_DST if b["usage"] == "uniform" else u.STORAGE | u.COPY_DST | u.COPY_SRC
        buf = dev.create_buffer(size=b["size"], usage=usage, label=b["label"])
        if b["init"] is not None:
            q.write_buffer(buf, 0, read_blob(root, b["init"]))
        bufs.append(buf)
    pipelines = PipelineCache(dev)
    passes = []
    for d in plan["dispatches"]:
        p = pipelines.get(_spec_from(d))
        groups = [[{"binding": i, "resource": {"buffer": bufs[e["buffer"]], "offset": e["offset"], "size": e["size"]}}
                   for i, e in enumerate(d["bindings"])]]
        if d.get("grid") is not None:
            e = d["grid"]
            groups.append([{"binding": 0, "resource": {"buffer": bufs[e["buffer"]], "offset": e["offset"],
                                                       "size": e["size"]}}])
        passes.append((p, [dev.create_bind_group(layout=p.get_bind_group_layout(g), entries=entries)
                           for g, entries in enumerate(groups)], d["workgroups"]))

    def run_to(start: int, end: int) -> None:
        enc = dev.create_command_encoder()
        cp = enc.begin_compute_pass()
        for p, groups, wg in passes[start:end]:
            cp.set_pipeline(p)
            for i, g in enumerate(groups):
                cp.set_bind_group(i, g)
            cp.dispatch_workgroups(*wg)
        cp.end()
        q.submit([enc.finish()])

    taps, done = [], 0
    for t in sorted(plan["taps"], key=lambda t: t["after"]):
        run_to(done, t["after"])
        done = t["after"]
        got = q.read_buffer(bufs[t["buffer"]], t["offset"], t["bytes"]).tobytes()
        taps.append({"name": t["name"], **compare(got, read_blob(root, t["expect"]), "f32", t["compare"])})
    run_to(done, len(passes))
    rows = plan["logits"]["rows"]
    blocks = [np.frombuffer(q.read_buffer(bufs[p["buffer"]], 0, rows * p["cols"] * 4), np.float32).reshape(rows, -1)
              for p in plan["logits"]["parts"]]
    logits = np.concatenate(blocks, axis=1).tobytes()
    result = {"logits": compare(logits, read_blob(root, plan["logits"]["expect"]), "f32", plan["logits"]["compare"]),
              "taps": taps}
    if plan["token"] is not None:
        token = int(np.frombuffer(q.read_buffer(bufs[plan["token"]["buffer"]], 0, 4), np.uint32)[0])
        result["token"] = {"got": token, "expect": plan["token"]["expect"], "ok": token == plan["token"]["expect"]}
    for b in bufs:
        b.destroy()
    result["ok"] = result["logits"]["ok"] and all(t["ok"] for t in taps) and result.get("token", {"ok": True})["ok"]
    return result


def check(outdir: str | os.PathLike, gpu: Any = None) -> dict[str, Any]:
    """Run an oracle directory on wgpu-native: the report web/harness.js writes for the browser."""
    from ..gpu.device import open_gpu

    gpu = gpu or open_gpu("gpu")
    if gpu is None:
        raise RuntimeError("no WebGPU adapter for wgpu-native")
    cases = run_cases(outdir, gpu)
    report: dict[str, Any] = {"engine": f"wgpu-native ({gpu.profile.name})", "cases": cases,
                              "passed": sum(c["ok"] for c in cases), "failed": sum(not c["ok"] for c in cases)}
    if load_manifest(outdir)["plan"] is not None:
        report["replay"] = replay(outdir, gpu)
    return report


# ---- command line --------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """`mdst oracle MODEL OUTDIR [--prompt TEXT] [--decode-steps N] [--layers 0,5] [--context N] [--no-plan]`;
    `mdst oracle --check OUTDIR` runs a directory on wgpu-native and prints the report."""
    from ..packaged import resolve_model_path

    p = argparse.ArgumentParser(prog="mdst oracle", description="Write test data for the browser build (web/).")
    p.add_argument("model", nargs="?", help="GGUF file or packaged model name")
    p.add_argument("outdir")
    p.add_argument("--prompt", default="The capital of France is")
    p.add_argument("--decode-steps", type=int, default=2)
    p.add_argument("--layers", default=None, help="layers whose output activations are kept (default: first, "
                                                   "middle, last), e.g. 0,5,29")
    p.add_argument("--context", type=int, default=64, help="KV cache length (kept small: the cache is exported)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-plan", action="store_true", help="skip the plan export (and its weights)")
    p.add_argument("--check", action="store_true", help="run OUTDIR on wgpu-native instead of writing it")
    args = p.parse_args(argv)
    if args.check:
        report = check(args.outdir)
        print(json.dumps(report, indent=1))
        return 0 if report["failed"] == 0 and report.get("replay", {"ok": True})["ok"] else 1
    if args.model is None:
        p.error("MODEL is required unless --check is given")
    layers = None if args.layers is None else [int(x) for x in args.layers.split(",") if x.strip()]
    write(resolve_model_path(args.model), args.outdir, prompt=args.prompt, decode_steps=args.decode_steps,
          layers=layers, context_length=args.context, seed=args.seed, with_plan=not args.no_plan,
          log=lambda s: print(s, file=sys.stderr))
    return 0


if __name__ == "__main__":
    sys.exit(main())
