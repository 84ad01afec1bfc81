"""`mdst oracle`: the exported data, run back on wgpu-native from the files alone, and the
JavaScript twin of the kernel source rules (web/kernels.js) under node against Python's."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import need
from metrics import report

from mdst.dev import oracle
from mdst.kernels import TYPE_STEPS, WEIGHT_TYPES, compose, pack_params, param_fields, read, variant

REPO = Path(__file__).resolve().parent.parent
WEB = REPO / "web"

# Tiny synthetic models whose plans use every kernel and every weight type between them.
EVERY_TYPE = {"blk.0.attn_q.*": "F32", "blk.0.attn_k.*": "F16", "blk.0.attn_v.*": "BF16",
              "blk.0.attn_output.*": "Q4_0", "blk.0.ffn_gate.*": "Q4_1", "blk.0.ffn_up.*": "Q5_0",
              "blk.0.ffn_down.*": "Q5_1", "blk.1.attn_q.*": "Q2_K", "blk.1.attn_k.*": "Q3_K",
              "blk.1.attn_v.*": "Q4_K", "blk.1.attn_output.*": "Q5_K", "blk.1.ffn_gate.*": "Q6_K",
              "blk.1.ffn_up.*": "IQ4_NL", "blk.1.ffn_down.*": "IQ4_XS", "*": "Q8_0"}
LFM2_TYPES = {"blk.0.ffn_gate.*": "MXFP4", "blk.0.ffn_up.*": "TQ1_0", "blk.0.ffn_down.*": "TQ2_0", "*": "Q8_0"}
PRESETS = {"llama-tiny": EVERY_TYPE, "gemma3-tiny": "Q4_K_M", "lfm2-tiny": LFM2_TYPES,
           "ministral3-tiny": {"blk.0.attn_q.*": "IQ2_XXS", "blk.0.attn_k.*": "IQ2_XS", "blk.0.attn_v.*": "IQ3_XXS",
                               "blk.0.attn_output.*": "IQ3_S", "blk.0.ffn_gate.*": "IQ2_S", "blk.0.ffn_up.*": "IQ1_S",
                               "blk.0.ffn_down.*": "IQ1_M", "*": "Q5_K"},
           "lfm2moe-tiny": "Q4_K_M"}   # the router (sigmoid, biased) and the expert matmuls


def write_oracles(root: Path) -> dict[str, Path]:
    """An oracle directory per preset under root."""
    from mdst.dev import synth

    out = {}
    for preset, types in PRESETS.items():
        gguf = synth.write(root / f"{preset}.gguf", preset, types=types)
        out[preset] = root / preset
        oracle.write(str(gguf), out[preset])
    return out


@pytest.fixture(scope="module")
def oracles(tmp_path_factory, gpu) -> dict[str, Path]:
    return write_oracles(tmp_path_factory.mktemp("oracles"))


def kernel_names() -> list[str]:
    return sorted(p.stem for p in (REPO / "mdst" / "kernels").glob("*.wgsl") if p.stem not in ("common", "weights"))


# ---- the data -----------------------------------------------------------------------------------

def test_manifest_covers_the_plans(oracles):
    kernels, types = set(), set()
    for d in oracles.values():
        m = oracle.load_manifest(d)
        ids = [c["id"] for c in m["cases"]]
        assert len(ids) == len(set(ids))
        keys = {c["key"] for c in m["cases"]}
        assert {x["key"] for x in m["plan"]["dispatches"]} <= keys, "a decode-plan kernel has no case"
        for c in m["cases"]:
            for b in c["bindings"]:
                for ref in [b.get("input"), b.get("expect"), (b.get("output") or {}).get("init")]:
                    if ref is not None:
                        assert (d / ref["file"]).stat().st_size == ref["bytes"]
                if "expect" in b:
                    assert b["reference_check"]["ok"]
        for b in m["plan"]["buffers"]:
            assert b["init"] is None or b["init"]["bytes"] <= b["size"]
        steps = m["golden"]["steps"]
        assert len(steps) == 3 and steps[0]["pos0"] == 0
        assert all(s["reference_rel_l2"] < 1e-4 for s in steps)
        kernels |= {c["kernel"] for c in m["cases"]}
        types |= {c["wtype"] for c in m["cases"] if c["wtype"]}
    assert kernels >= {"get_rows", "rms_norm", "rope_store", "attention", "attention_merge", "glu", "take_row",
                       "argmax", "argmax_merge", "shortconv", "matmul_by_output", "matmul_row", "matmul_rows",
                       "penalize", "topk", "sample", "route", "matmul_experts", "expert_groups", "expert_combine"}
    assert types == set(WEIGHT_TYPES)


@pytest.mark.parametrize("preset", PRESETS)
def test_cases_and_replay_pass_on_wgpu_native(oracles, gpu, preset):
    r = oracle.check(oracles[preset], gpu)
    assert r["failed"] == 0, [c for c in r["cases"] if not c["ok"]]
    assert r["passed"] == len(oracle.load_manifest(oracles[preset])["cases"])
    rp = r["replay"]
    assert rp["ok"], rp
    assert rp["logits"]["rel_l2"] <= 1e-3
    report("oracle on wgpu-native", preset=preset, cases=r["passed"], replay_logits_rel_l2=rp["logits"]["rel_l2"])


def tampered(src: Path, dst: Path) -> Path:
    """A copy of an oracle whose first case's first expectation and whose plan logits are wrong."""
    shutil.copytree(src, dst)
    m = json.loads((dst / "oracle.json").read_text())
    exp = next(b for b in m["cases"][0]["bindings"] if "expect" in b)["expect"]
    data = bytearray(oracle.read_blob(dst, exp))
    data[:4] = np.float32(12345.0).tobytes() if exp["dtype"] == "f32" else b"\x07\0\0\0"
    (dst / "blobs" / "tampered-case.bin").write_bytes(data)
    exp["file"] = "blobs/tampered-case.bin"
    logits = np.frombuffer(oracle.read_blob(dst, m["plan"]["logits"]["expect"]), np.float32) * np.float32(1.01)
    (dst / "blobs" / "tampered-logits.bin").write_bytes(logits.tobytes())
    m["plan"]["logits"]["expect"]["file"] = "blobs/tampered-logits.bin"
    (dst / "oracle.json").write_text(json.dumps(m))
    return dst


def test_check_reports_mismatches(oracles, gpu, tmp_path):
    r = oracle.check(tampered(oracles["ministral3-tiny"], tmp_path / "bad"), gpu)
    assert r["failed"] == 1 and not r["cases"][0]["ok"]
    assert not r["replay"]["ok"] and 9e-3 < r["replay"]["logits"]["rel_l2"] < 1.1e-2


def test_compare_rule():
    f = lambda *v: np.array(v, np.float32).tobytes()
    nan = float("nan")
    assert oracle.compare(f(1, nan, 3), f(1, nan, 3), "f32", {"exact": True})["ok"]
    assert not oracle.compare(f(1, 2, 3), f(1, nan, 3), "f32", {"rel_l2": 1.0})["ok"]      # wrote a poisoned slot
    assert not oracle.compare(f(1, nan, 3), f(1, 2, 3), "f32", {"rel_l2": 1.0})["ok"]      # left one unwritten
    assert oracle.compare(f(1, 2, 3.0001), f(1, 2, 3), "f32", {"rel_l2": 1e-4})["ok"]
    assert not oracle.compare(f(1, 2, 3.01), f(1, 2, 3), "f32", {"rel_l2": 1e-4})["ok"]
    assert not oracle.compare(f(1, 2, 3.0001), f(1, 2, 3), "f32", {"exact": True})["ok"]
    assert not oracle.compare(f(1, 2), f(1, 2, 3), "f32", {"exact": True})["ok"]
    u = np.array([1, 2], np.uint32).tobytes()
    assert oracle.compare(u, u, "u32", {"exact": True})["ok"]


def test_cli(oracles, tmp_path, capsys):
    assert oracle.main(["--check", str(oracles["lfm2-tiny"])]) == 0
    assert json.loads(capsys.readouterr().out)["failed"] == 0
    with pytest.raises(FileNotFoundError, match="mdst oracle MODEL"):
        oracle.main(["--check", str(tmp_path / "missing")])
    with pytest.raises(ValueError, match="layer 9 does not exist"):
        oracle.write(str(oracles["lfm2-tiny"].parent / "lfm2-tiny.gguf"), tmp_path / "o", layers=[9])


# ---- the JavaScript twin under node --------------------------------------------------------------

NODE_SCRIPT = """
import { readFileSync } from "node:fs";
import { compose, variant, paramFields, packParams } from "%(web)s/kernels.js";
import { compare } from "%(web)s/harness.js";
const input = JSON.parse(readFileSync(0, "utf8"));
const read = async (p) => readFileSync("%(kernels)s/" + p, "utf8");
const tryVariant = (s, f16, compiler) => { try { return variant(s, { f16, compiler }); } catch (e) { return "error"; } };
const out = { sources: [], raw: [], fields: {}, packed: [], compared: [] };
for (const [name, wtype] of input.kernels) {
  const src = await compose(read, name, wtype);
  for (const f16 of [false, true]) for (const c of ["naga", "tint"]) out.sources.push(tryVariant(src, f16, c));
}
for (const s of input.raw) for (const f16 of [false, true]) for (const c of ["naga", "tint"]) out.raw.push(tryVariant(s, f16, c));
for (const name of input.names) out.fields[name] = paramFields(await read(name + ".wgsl"));
for (const [name, values] of input.packs) {
  out.packed.push(Buffer.from(packParams(name, out.fields[name], values)).toString("hex"));
}
const b64 = (s) => { const b = Buffer.from(s, "base64"); return b.buffer.slice(b.byteOffset, b.byteOffset + b.length); };
for (const [a, e, dtype, rule] of input.compares) out.compared.push(compare(b64(a), b64(e), dtype, rule));
console.log(JSON.stringify(out));
"""

RAW_SOURCES = [
    "alias half = f32;\nfn f() {}\n",
    "// head\n\n  enable subgroups;\n\nalias half = f32;\nenable f16, subgroups ;\nfoo\nenable  chromium_x;\nalias half = f32;",
    "a\r\nenable f16;\r\nalias half = f32;\r\nb",
    "enable f16;enable subgroups;\nx",          # not one directive per line: left alone by both
    "no precision line\nenable subgroups;\n",
]


def py_variant(s: str, f16: bool, compiler: str) -> str:
    try:
        return variant(s, f16=f16, compiler=compiler)
    except ValueError:
        return "error"


def test_js_twin_matches_python():
    node = shutil.which("node")
    need(node is not None, "node is not installed (apt-get install nodejs)")
    names = kernel_names()
    kernels = [(n, w) for n in names
               for w in (WEIGHT_TYPES if "deq4(" in read(f"{n}.wgsl") or n in TYPE_STEPS else [None])]
    rng = np.random.default_rng(0)
    packs = []
    for n in names:
        vals = {f: (int(rng.integers(0, 2**32)) if t == "u32" else int(rng.integers(-2**31, 2**31)) if t == "i32"
                    else float(rng.standard_normal() * 10.0 ** rng.integers(-8, 8))) for f, t in param_fields(n)}
        packs.append((n, vals))
    enc = lambda *v: base64.b64encode(np.array(v, np.float32).tobytes()).decode()
    nan = float("nan")
    compares = [(enc(1, nan, 3.0001), enc(1, nan, 3), "f32", {"rel_l2": 1e-4}),
                (enc(1, 2, 3), enc(1, nan, 3), "f32", {"rel_l2": 1.0}),
                (enc(1, nan, 3), enc(1, 2, 3), "f32", {"exact": True}),
                (enc(1, 2, 3.5), enc(1, 2, 3), "f32", {"exact": True}),
                (enc(1, 2), enc(1, 2, 3), "f32", {"exact": True}),
                (enc(7, 8), enc(7, 9), "u32", {"exact": True})]
    script = NODE_SCRIPT % {"web": WEB.as_uri(), "kernels": REPO / "mdst" / "kernels"}
    proc = subprocess.run([node, "--input-type=module", "-e", script], check=False, capture_output=True, text=True,
                          timeout=60, input=json.dumps({"kernels": kernels, "raw": RAW_SOURCES, "names": names,
                                                        "packs": packs, "compares": compares}))
    assert proc.returncode == 0, proc.stderr
    js = json.loads(proc.stdout)
    want = [py_variant(compose(n, w), f16, c) for n, w in kernels for f16 in (False, True) for c in ("naga", "tint")]
    assert len(js["sources"]) == len(want)
    for i, (a, b) in enumerate(zip(js["sources"], want)):
        assert a == b, f"source {i // 4} ({kernels[i // 4]}) differs between web/kernels.js and mdst.kernels"
    assert js["raw"] == [py_variant(s, f16, c) for s in RAW_SOURCES for f16 in (False, True) for c in ("naga", "tint")]
    assert "enable subgroups;" in js["raw"][5] and "enable subgroups;" not in js["raw"][4]   # tint keeps, naga drops
    assert {n: [tuple(f) for f in v] for n, v in js["fields"].items()} == {n: list(param_fields(n)) for n in names}
    assert js["packed"] == [pack_params(n, v).hex() for n, v in packs]
    for got, (a, e, dtype, rule) in zip(js["compared"], compares):
        want_c = oracle.compare(base64.b64decode(a), base64.b64decode(e), dtype, rule)
        for key in ("ok", "mismatches", "nan_mismatch"):
            assert got.get(key) == want_c.get(key), (key, got, want_c)
        if "rel_l2" in want_c:
            assert got["rel_l2"] == pytest.approx(want_c["rel_l2"], rel=1e-9, abs=1e-15)
