"""Constants the host shares with the kernels are the kernels': Python reads them from the WGSL."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mdst import kernels
from mdst.compile import plan
from mdst.text import sampling
from mdst.kernels import wgsl_const
from mdst.memory.kv_cache import KV_TYPES
from mdst.text.sampling import Draw, SamplingParams


def test_python_values_are_the_wgsl_consts():
    assert plan.MAX_GROUPS == wgsl_const("common.wgsl", "MAX_GROUPS") == 65535  # WebGPU's default limit
    assert plan.TOPK_SLICE == wgsl_const("topk.wgsl", "SLICE")
    assert plan.ARGMAX_SLICE == wgsl_const("argmax.wgsl", "SLICE")
    assert plan.GEMM_WG == wgsl_const("matmul_rows.wgsl", "WG")
    assert plan.gemm_groups(65, 1) == (2, 1, 1) and plan.gemm_groups(257, 17, ty=4) == (2, 2, 1)
    assert plan.GPU_TOP_K == sampling.GPU_TOP_K == wgsl_const("common.wgsl", "KMAX")
    assert sampling.DRAW_WORDS == wgsl_const("common.wgsl", "DRAW_WORDS")
    for fmt, _ in KV_TYPES.values():
        assert wgsl_const(f"kv/{fmt}.wgsl", "KVB") > 0
    assert (plan.ATTN_MAX_GW, plan.ATTN_QS, plan.ATTN_SCORES) == tuple(
        wgsl_const("attention.wgsl", n) for n in ("MAX_GW", "QS", "SCORES"))
    assert plan.MERGE_MAX_SPLITS == wgsl_const("attention_merge.wgsl", "MAX_SPLITS")
    assert plan.GROUP_MAX_EXPERTS == wgsl_const("expert_groups.wgsl", "MAX_EXPERTS")
    assert (plan.FLASH_KVMAX, plan.FLASH_RED, plan.FLASH_NV) == tuple(
        wgsl_const("attention_rows.wgsl", n) for n in ("KVMAX", "RED", "NV"))
    presets = dataclasses.make_dataclass("Presets", [("attention_split", int), ("attention_splits", int)])
    assert plan.attention_splits(100_000, presets(32, 0))[1] <= plan.MERGE_MAX_SPLITS   # no cap: the merge's
    assert plan.attention_splits(1000, presets(32, 64)) == (32, 32)
    assert plan.attention_splits(8192, presets(32, 64)) == (32, 64)   # the kernel lengthens them as keys fill
    assert plan.ACTIVATIONS == {"silu": wgsl_const("common.wgsl", "ACT_SILU"),
                                "gelu_tanh": wgsl_const("common.wgsl", "ACT_GELU_TANH")}
    words = plan.step_words(7, 2, [11, 12], rows=4, row0=3)
    assert words[wgsl_const("common.wgsl", "STEP_POS0")] == 7 and words[wgsl_const("common.wgsl", "STEP_ROWS")] == 2
    assert words[wgsl_const("common.wgsl", "STEP_ROW0")] == 3
    assert plan.GEMV_MAX_XR == wgsl_const("matmul_row.wgsl", "MAX_XR")
    t = wgsl_const("common.wgsl", "STEP_TOKENS")
    assert list(words[t:]) == [11, 12, 0, 0] and len(words) == t + 4


def test_plan_does_not_import_sampling():
    assert "sampling" not in "".join(ln for ln in Path(plan.__file__).read_text().splitlines() if "import" in ln)


def test_wgsl_const_is_strict(monkeypatch):
    texts = {"a.wgsl": "const A: u32 = 7u;\nconst B: u32 = 8;\n  const C: u32 = 1u;\nconst D: i32 = 2;\n"
                       "const E: u32 = 1u;\nconst E: u32 = 2u;\n// const F: u32 = 3u;\n"}
    monkeypatch.setattr(kernels, "read", texts.__getitem__)
    wgsl_const.cache_clear()
    try:
        assert wgsl_const("a.wgsl", "A") == 7 and wgsl_const("a.wgsl", "B") == 8
        for name in ("C", "D", "E", "F", "AB"):  # indented (not module scope), not u32, twice, commented, absent
            with pytest.raises(LookupError, match=f"const {name}: u32"):
                wgsl_const("a.wgsl", name)
    finally:
        wgsl_const.cache_clear()


def test_draw_layout_follows_common_wgsl():
    c = lambda name: wgsl_const("common.wgsl", name)  # noqa: E731
    kmax, hist, counts = c("KMAX"), c("DRAW_HIST"), c("DRAW_COUNTS")
    head = ["TEMPERATURE", "TOP_P", "MIN_P", "U", "TOP_K", "N_HIST", "REPEAT", "PRESENCE", "FREQUENCY", "N_BIAS",
            "MASKED"]
    offsets = [c(f"DRAW_{n}") for n in head]
    assert len(set(offsets)) == len(offsets) and max(offsets) < hist
    bias_ids, bias = c("DRAW_BIAS_IDS"), c("DRAW_BIAS")
    assert hist + kmax <= counts and counts + kmax <= bias_ids and bias_ids + kmax <= bias
    assert bias + kmax <= c("DRAW_WORDS")
    biases = {1000 + i: i - 31.5 for i in range(kmax)}
    p = SamplingParams(temperature=0.7, top_k=40, top_p=0.9, min_p=0.05, repeat_penalty=1.1,
                       presence_penalty=0.3, frequency_penalty=-0.2, logit_bias=biases)
    tokens, n = tuple(range(100, 100 + kmax)), tuple(range(1, kmax + 1))
    w = np.frombuffer(Draw(p, 0.25, tokens, n).encode(), np.uint32)
    f = w.view(np.float32)
    assert w.size == c("DRAW_WORDS")
    assert [f[c(f"DRAW_{k}")] for k in ("TEMPERATURE", "TOP_P", "MIN_P", "U", "REPEAT", "PRESENCE", "FREQUENCY")] \
        == [np.float32(v) for v in (0.7, 0.9, 0.05, 0.25, 1.1, 0.3, -0.2)]
    assert w[c("DRAW_TOP_K")] == 40 and w[c("DRAW_N_HIST")] == kmax
    assert tuple(w[hist:hist + kmax]) == tokens and tuple(w[counts:counts + kmax]) == n
    assert w[c("DRAW_N_BIAS")] == kmax and tuple(w[bias_ids:bias_ids + kmax]) == tuple(biases)
    assert tuple(f[bias:bias + kmax]) == tuple(np.float32(v) for v in biases.values())
    assert w[c("DRAW_MASKED")] == 0
    mask = np.arange(5, dtype=np.uint32) * 0x01010101   # a constrained draw: its bitmask follows the fixed words
    m = np.frombuffer(Draw(p, 0.25, tokens, n, mask.tobytes()).encode(), np.uint32)
    head_words = w.copy()
    head_words[c("DRAW_MASKED")] = 1
    assert np.array_equal(m[:c("DRAW_WORDS")], head_words) and np.array_equal(m[c("DRAW_WORDS"):], mask)


_CHANGED = """
import json, mdst.kernels as K
read = K.read
edits = {"common.wgsl": [("MAX_GROUPS: u32 = 65535u", "MAX_GROUPS: u32 = 1000u"), ("KMAX: u32 = 64u", "KMAX: u32 = 32u"),
                         ("DRAW_HIST: u32 = 16u", "DRAW_HIST: u32 = 20u"), ("DRAW_WORDS: u32 = 272u", "DRAW_WORDS: u32 = 280u")],
         "topk.wgsl": [("SLICE: u32 = 2048u", "SLICE: u32 = 1024u")], "argmax.wgsl": [("SLICE: u32 = 4096u", "SLICE: u32 = 512u")],
         "matmul_rows.wgsl": [("WG: u32 = 256u", "WG: u32 = 32u")]}
def patched(path):
    text = read(path)
    for a, b in edits.get(path, []):
        assert text.count(a) == 1, (path, a)
        text = text.replace(a, b)
    return text
K.read = patched
from mdst.compile import plan
from mdst.text import sampling
w = sampling.Draw(sampling.SamplingParams(repeat_penalty=2.0), 0.5, (7,), (3,)).encode()
print(json.dumps([plan.MAX_GROUPS, plan.TOPK_SLICE, plan.ARGMAX_SLICE, plan.GEMM_WG, plan.GPU_TOP_K,
                  sampling.GPU_TOP_K, sampling.DRAW_WORDS, len(w) // 4, int.from_bytes(w[80:84], "little")]))
"""


def test_changing_the_wgsl_changes_python():
    """A fresh interpreter whose kernel sources say otherwise gets other values: nothing is a copy."""
    out = subprocess.run([sys.executable, "-c", _CHANGED], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [1000, 1024, 512, 32, 32, 32, 280, 280, 7]
