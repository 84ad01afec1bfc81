"""Weight layout: which matrices share a buffer, how each is split, what stays resident and what is paged.

Decided from the graph and the tensor table alone (no device), so that the weight store uploads
exactly what it says and the compiler reads the same decisions.

Without a budget, each (gate, up) pair of a GLU that fits one binding shares a buffer, up after
gate, so one dispatch reads both; and so does each run of sibling matmuls (one input, one type and
row length), which is then also readable as one matrix under `run_name(run)`. With a budget (bytes
for resident parts plus the slots), matrices are split into parts small enough for the slots to
take an eighth of it, the longest run of parts in first-use order that fits stays resident and the
rest is paged. A 3-D tensor of experts is n_expert matrices one after another; its parts hold
whole experts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import UnsupportedModelError
from ..ir.fusion import plain_matmul, uses
from ..ir.graph import Graph, Node
from ..ir.ops import ExpertMatmul, Glu

PAGE_SLOTS = 2   # slot buffers paged parts take turns in


def glu_operand(n: Node) -> bool:
    """Whether n can be the gate or the up matmul of a stored pair: a plain matmul, or an expert matmul whose
    slots stay apart."""
    return plain_matmul(n) or (isinstance(n.op, ExpertMatmul) and not n.op.combine and n.op.up is None)


def glu_pairs(graph: Graph, tensors: dict[str, Any]) -> list[tuple[str, str]]:
    """(gate, up) weight names whose matmuls (both plain, or both through experts) feed only a GLU, from the
    same inputs, of the same type and shape."""
    producer = {n.out.id: n for n in graph.nodes}
    count = uses(graph)
    pairs = []
    for n in graph.nodes:
        if not isinstance(n.op, Glu):
            continue
        g, u = (producer.get(v.id) for v in n.inputs)
        if not (g and u and glu_operand(g) and glu_operand(u) and type(g.op) is type(u.op)):
            continue
        if [v.id for v in g.inputs] != [v.id for v in u.inputs] or count[g.out.id] != 1 or count[u.out.id] != 1:
            continue
        tg, tu = tensors[g.weights[0]], tensors[u.weights[0]]
        if tg.type == tu.type and tg.shape == tu.shape:
            pairs.append((g.weights[0], u.weights[0]))
    return pairs


VIEW_ALIGN = 256  # a view's byte offset must be a multiple of this (WebGPU's largest minStorageBufferOffsetAlignment)


def sibling_runs(graph: Graph, tensors: dict[str, Any], paired: list[tuple[str, str]]) -> list[tuple[str, ...]]:
    """Runs of plain matmuls in graph order that read the same input with weights of one type and row
    length, each member's output starting at a multiple of VIEW_ALIGN bytes in the run's output."""
    skip = {n for pair in paired for n in pair}
    by_input: dict[int, list[str]] = {}
    for n in graph.nodes:
        if plain_matmul(n) and n.weights[0] not in skip:
            by_input.setdefault(n.inputs[0].id, []).append(n.weights[0])
    runs = []
    for names in by_input.values():
        run = names[:1]
        for name in names[1:]:
            head, t = tensors[run[0]], tensors[name]
            offset = sum(tensors[m].n_rows for m in run)   # the candidate's first output column
            if t.type == head.type and t.row_bytes == head.row_bytes and offset * 4 % VIEW_ALIGN == 0:
                run.append(name)
                continue
            if len(run) > 1:
                runs.append(tuple(run))
            run = [name]
        if len(run) > 1:
            runs.append(tuple(run))
    return runs


@dataclass(frozen=True)
class Part:
    """Rows [row0, row0 + rows) of matrix `name`, `nbytes` long, stored in a buffer of its own or paged."""

    name: str
    row0: int
    rows: int
    nbytes: int


@dataclass
class WeightLayout:
    """Every decision the weight store carries out, and the compiler reads (`paired`, `runs`)."""

    shared: list[tuple[str, ...]] = field(default_factory=list)  # matrices stored back to back in one buffer
    paired: set[str] = field(default_factory=set)                # gate matrices stored with their up matrix after them
    runs: dict[str, tuple[str, ...]] = field(default_factory=dict)  # run name -> sibling matrices readable as one
    parts: list[Part] = field(default_factory=list)              # the other matrices' parts, in first-use order
    resident: int = 0                                            # the first `resident` parts have buffers
    slot_bytes: int = 0                                          # size of each paging slot (0: nothing paged)
    budget_used: int = 0                                         # bytes of resident parts and slots

    @property
    def slots(self) -> int:
        """How many paging slots the layout needs."""
        return PAGE_SLOTS if self.slot_bytes else 0


def padded(nbytes: int) -> int:
    """GPU buffer size for nbytes: a multiple of 4, at least 4."""
    return max(4, -(-nbytes // 4) * 4)


def unit_rows(t: Any) -> int:
    """Rows a part keeps together: an expert's matrix for a 3-D tensor of experts (so each part holds whole
    experts, which the expert matmul picks by index), else one row."""
    return t.shape[1] if len(t.shape) == 3 else 1


def split_rows(n_rows: int, row_bytes: int, max_bytes: int, unit: int = 1) -> list[tuple[int, int]]:
    """(row0, rows) parts of at most max_bytes each, on boundaries of `unit` rows."""
    per = max_bytes // (row_bytes * unit) * unit
    if per < 1:
        what = f"one expert ({unit} rows)" if unit > 1 else "one row"
        raise UnsupportedModelError(f"{what} of {row_bytes * unit} bytes exceeds the binding limit of {max_bytes} bytes")
    return [(r, min(per, n_rows - r)) for r in range(0, n_rows, per)]


def run_name(run: tuple[str, ...]) -> str:
    """The name of matrices stored as one: "blk.0.attn_q+attn_k.weight" for blk.0's attn_q and attn_k."""
    parts = [n.split(".") for n in run]
    if all(len(p) == 4 and p[:2] == parts[0][:2] and p[3] == parts[0][3] for p in parts):
        return ".".join(parts[0][:2] + ["+".join(p[2] for p in parts)] + parts[0][3:])
    return "+".join(run)


def _shareable(runs: list[tuple[str, ...]], tensors: dict[str, Any], cap: int, taken: set[str]
               ) -> list[tuple[str, ...]]:
    """The runs whose matrices fit one binding together, each ending on a 4-byte boundary (as copies
    need), and none already stored; adds their matrices to `taken`."""
    done = []
    for run in runs:
        sizes = [tensors[n].n_rows * tensors[n].row_bytes for n in run]
        if any(n in taken for n in run) or sum(sizes) > cap or any(b % 4 for b in sizes):
            continue
        taken.update(run)
        done.append(run)
    return done


def plan_layout(graph: Graph, tensors: dict[str, Any], budget: int | None, max_binding_size: int) -> WeightLayout:
    """The layout of `graph`'s matrices: shared buffers without a budget, resident and paged parts with one."""
    layout = WeightLayout()
    names = graph.matrix_names()
    cap = max_binding_size
    if budget is None:
        taken: set[str] = set()
        pairs = glu_pairs(graph, tensors)
        stored_pairs = _shareable(pairs, tensors, cap, taken)
        siblings = _shareable(sibling_runs(graph, tensors, pairs), tensors, cap, taken)
        layout.shared = stored_pairs + siblings
        layout.paired = {run[0] for run in stored_pairs}
        layout.runs = {run_name(run): run for run in siblings}
        names = [n for n in names if n not in taken]
    elif names:
        # The slots are as large as the largest paged part: parts of at most a sixteenth of the
        # budget keep the slots to an eighth of it (a tied embedding can be most of the weights).
        cap = min(cap, max(budget // (8 * PAGE_SLOTS), max(tensors[n].row_bytes * unit_rows(tensors[n]) for n in names)))
    for name in names:
        t = tensors[name]
        layout.parts += [Part(name, row0, rows, rows * t.row_bytes)
                         for row0, rows in split_rows(t.n_rows, t.row_bytes, cap, unit_rows(t))]
    sizes = [p.nbytes for p in layout.parts]

    def need(resident: int) -> int:   # bytes of the first `resident` parts and of the slots for the rest
        return sum(padded(n) for n in sizes[:resident]) + PAGE_SLOTS * padded(max(sizes[resident:], default=0))

    layout.resident = len(sizes)
    while budget is not None and layout.resident > 0 and need(layout.resident) > budget:
        layout.resident -= 1
    layout.budget_used = need(layout.resident)
    if layout.resident < len(sizes):
        layout.slot_bytes = padded(max(sizes[layout.resident:]))
    return layout
