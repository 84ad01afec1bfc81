"""plan_layout on synthetic tensor tables: the weight layout decided without a device."""

from __future__ import annotations

import pytest

from mdst.errors import UnsupportedModelError
from mdst.format.gguf import GGML_TYPE_BY_NAME, TensorInfo
from mdst.ir.graph import Graph, build
from mdst.memory.layout import PAGE_SLOTS, WeightLayout, padded, plan_layout

D, FFN, VOCAB = 64, 128, 256
ROW = D // 32 * 34   # bytes of a Q8_0 row of D values
QKV = "blk.0.attn_q+attn_k+attn_v.weight"


def table() -> dict[str, TensorInfo]:
    """One block's tensors: Q8_0 matrices [rows, D] (ffn_down [D, FFN]) and an F32 norm."""
    q8, f32 = GGML_TYPE_BY_NAME["Q8_0"], GGML_TYPE_BY_NAME["F32"]
    shapes = {"token_embd.weight": (D, VOCAB), "blk.0.attn_q.weight": (D, D), "blk.0.attn_k.weight": (D, D),
              "blk.0.attn_v.weight": (D, D), "blk.0.ffn_gate.weight": (D, FFN), "blk.0.ffn_up.weight": (D, FFN),
              "blk.0.ffn_down.weight": (FFN, D), "output.weight": (D, VOCAB)}
    out = {n: TensorInfo(n, q8, s, 0, s[1] * s[0] // 32 * 34) for n, s in shapes.items()}
    out["blk.0.attn_norm.weight"] = TensorInfo("blk.0.attn_norm.weight", f32, (D,), 0, 4 * D)
    return out


def graph(tensors: dict[str, TensorInfo]) -> Graph:
    def forward(b):
        x = b.rms_norm(b.embed("token_embd.weight"), "blk.0.attn_norm.weight", 1e-5)
        h = b.add(b.add(b.matmul(x, "blk.0.attn_q.weight"), b.matmul(x, "blk.0.attn_k.weight")),
                  b.matmul(x, "blk.0.attn_v.weight"))
        g = b.glu(b.matmul(h, "blk.0.ffn_gate.weight"), b.matmul(h, "blk.0.ffn_up.weight"), "silu")
        b.logits(b.matmul(b.last_row(b.matmul(g, "blk.0.ffn_down.weight")), "output.weight"))
    return build(forward, tensors, "last")


def need(layout: WeightLayout) -> int:
    """Bytes of the resident parts and the slots."""
    return sum(padded(p.nbytes) for p in layout.parts[:layout.resident]) + layout.slots * layout.slot_bytes


def test_without_a_budget_pairs_and_sibling_runs_share_buffers_and_all_is_resident():
    t = table()
    lay = plan_layout(graph(t), t, None, 1 << 20)
    assert lay.paired == {"blk.0.ffn_gate.weight"}
    assert lay.runs == {QKV: ("blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight")}
    assert lay.shared == [("blk.0.ffn_gate.weight", "blk.0.ffn_up.weight"), lay.runs[QKV]]
    assert [p.name for p in lay.parts] == ["token_embd.weight", "blk.0.ffn_down.weight", "output.weight"]
    assert lay.resident == len(lay.parts) and lay.slots == 0 and lay.slot_bytes == 0


def test_matrices_that_do_not_fit_one_binding_together_are_not_shared_and_large_ones_split():
    t = table()
    cap = 3 * D * ROW   # q, k and v fit together, gate and up do not; the embedding needs two parts
    lay = plan_layout(graph(t), t, None, cap)
    assert lay.paired == set() and list(lay.runs) == [QKV]
    assert "blk.0.ffn_gate.weight" in {p.name for p in lay.parts}
    embd = [p for p in lay.parts if p.name == "token_embd.weight"]
    assert [(p.row0, p.rows) for p in embd] == [(0, 3 * D), (3 * D, VOCAB - 3 * D)]
    assert all(p.nbytes <= cap for p in lay.parts)


def test_a_budget_pages_the_parts_used_last_and_shares_nothing():
    t = table()
    names = graph(t).matrix_names()
    total = sum(t[n].nbytes for n in names)
    budget = total // 2
    lay = plan_layout(graph(t), t, budget, 1 << 20)
    assert lay.paired == set() and lay.runs == {} and lay.shared == []
    assert list(dict.fromkeys(p.name for p in lay.parts)) == names   # first-use order
    assert all(p.nbytes <= max(budget // (8 * PAGE_SLOTS), ROW) for p in lay.parts)
    assert 0 < lay.resident < len(lay.parts) and lay.slots == PAGE_SLOTS
    assert lay.slot_bytes == padded(max(p.nbytes for p in lay.parts[lay.resident:]))
    assert lay.budget_used == need(lay) <= budget
    bigger = plan_layout(graph(t), t, budget + lay.slot_bytes * 4, 1 << 20)
    assert bigger.resident > lay.resident   # the longest prefix that fits stays resident


def test_a_budget_that_holds_everything_pages_nothing_but_still_shares_nothing():
    t = table()
    lay = plan_layout(graph(t), t, 1 << 30, 1 << 20)
    assert lay.shared == [] and lay.resident == len(lay.parts) and lay.slots == 0


def test_a_row_over_the_binding_limit_is_refused():
    t = table()
    with pytest.raises(UnsupportedModelError, match="exceeds the binding limit"):
        plan_layout(graph(t), t, None, ROW - 4)


def test_expert_tensors_split_on_expert_boundaries():
    """A 3-D tensor of 5 experts of 3 rows: parts hold whole experts; one expert over the limit is refused."""
    q8 = GGML_TYPE_BY_NAME["Q8_0"]
    t = table()
    t["blk.0.ffn_gate_exps.weight"] = TensorInfo("blk.0.ffn_gate_exps.weight", q8, (D, 3, 5), 0, 15 * ROW)
    t["blk.0.ffn_gate_inp.weight"] = TensorInfo("blk.0.ffn_gate_inp.weight", q8, (D, 5), 0, 5 * ROW)

    def forward(b):
        x = b.embed("token_embd.weight")
        routes = b.route(b.matmul(x, "blk.0.ffn_gate_inp.weight"), 2, "softmax", True)
        b.logits(b.expert_matmul(x, routes, "blk.0.ffn_gate_exps.weight"))
    g = build(forward, t, "last")
    parts = [(p.row0, p.rows) for p in plan_layout(g, t, None, 7 * ROW).parts if p.name.endswith("exps.weight")]
    assert parts == [(0, 6), (6, 6), (12, 3)]
    with pytest.raises(UnsupportedModelError, match="one expert .3 rows. of .* exceeds the binding limit"):
        plan_layout(g, t, None, 3 * ROW - 1)
