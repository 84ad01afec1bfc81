"""A tiny generated Qwen 3 model carrying the real Qwen vocabulary: text in, tokens, logits and text out.

The model is synth's qwen3-tiny (narrowed, so the 151,936-row embedding stays small) with every
`tokenizer.*` key replaced by those of llama.cpp's `ggml-vocab-qwen2.gguf`. Tokenization,
detokenization, logits and greedy continuations must all be llama.cpp's on the same file.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGUFValueType as V

import mdst
from mdst.format.gguf import GGUFFile
from mdst.dev import llamacpp, synth
from metrics import agreement, rel_l2, report
from test_families import generator_version
from test_tokenizer import llama_detokenize

# Narrow layers: the file is mostly the tied embedding, 151,936 x 64 F32 (39 MB).
SHAPE = {"n_layers": 2, "d_model": 64, "n_heads": 4, "n_kv_heads": 2, "head_dim": 32, "d_ff": 128}
CONTEXT = 256
N_LOGITS = 48
N_GREEDY = 12

TEXTS = {
    "english": "The quick brown fox jumps over the lazy dog. It's 5 o'clock; they'll've left by then!",
    "chinese": "北京是中华人民共和国的首都，也是全国的政治、文化中心。",
    "japanese-korean": "東京タワーは高さ333メートルです。서울은 한국의 수도입니다.",
    "cyrillic-greek-arabic": "Москва — столица России. Η Αθήνα είναι αρχαία. القاهرة عاصمة مصر.",
    "accents-emoji": "Ça déborde: naïve Straße, señor, smörgåsbord 🦙🚀👍🏽 ½ ①",
    "code": "def add(a: int, b: int) -> int:\n\treturn a + b  # sum\n\nif __name__ == \"__main__\":\n"
            "    print(add(12345, 678))\n",
    "numbers-whitespace": "In 2024, 1234567 people paid $3.50 each.   Three  spaces\n\n\n\tand tabs\t\there.",
    "chat": "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"
            "<|im_start|>assistant\n",
}
PROMPTS = ["The capital of France is", "def fibonacci(n):\n    ", "北京是中国的首都，",
           "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n"]

# numpy element types of GGUF arrays, for copying array-valued keys.
_ARRAY_TYPES = {np.dtype(t): v for t, v in [
    (np.uint8, V.UINT8), (np.int8, V.INT8), (np.uint16, V.UINT16), (np.int16, V.INT16), (np.uint32, V.UINT32),
    (np.int32, V.INT32), (np.uint64, V.UINT64), (np.int64, V.INT64), (np.float32, V.FLOAT32),
    (np.float64, V.FLOAT64), (np.bool_, V.BOOL)]}


def _add_key(w: gguf.GGUFWriter, f: GGUFFile, key: str) -> None:
    value, vtype = f.metadata[key], V(f.metadata_types[key])
    if vtype != V.ARRAY:
        w.add_key_value(key, value, vtype)
    elif isinstance(value, np.ndarray):
        w.add_key_value(key, value.tolist(), vtype, sub_type=_ARRAY_TYPES[value.dtype])
    elif all(isinstance(x, str) for x in value):
        w.add_key_value(key, value, vtype, sub_type=V.STRING)
    else:
        raise ValueError(f"{f.path}: cannot copy array key {key!r} of mixed or nested values")


def with_vocab(model: Path, vocab: Path, out: Path) -> None:
    """Copy the all-F32 `model` to `out` with its tokenizer.* keys replaced by those of `vocab`."""
    with GGUFFile(model) as m, GGUFFile(vocab) as v:
        w = gguf.GGUFWriter(str(out), m.architecture)
        for key in m.metadata:
            if not key.startswith(("tokenizer.", "GGUF.")) and key not in ("general.architecture", "general.alignment"):
                _add_key(w, m, key)
        for key in v.metadata:
            if key.startswith("tokenizer."):
                _add_key(w, v, key)
        for t in m:
            if t.type.name != "F32":
                raise ValueError(f"{t.name} is {t.type.name}; with_vocab copies F32 tensors only")
            w.add_tensor(t.name, np.frombuffer(m.tensor_bytes(t.name), np.float32).reshape(tuple(reversed(t.shape))))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()


@pytest.fixture(scope="module")
def vocab_path(llama_cpp_src) -> Path:
    return llama_cpp_src / "models" / "ggml-vocab-qwen2.gguf"


@pytest.fixture(scope="module")
def n_vocab(vocab_path) -> int:
    with GGUFFile(vocab_path) as v:
        return len(v.metadata["tokenizer.ggml.tokens"])


@pytest.fixture(scope="module")
def path(vocab_path, n_vocab, cache_dir, tmp_path_factory) -> Path:
    """The model file, made once per generator, vocabulary and recipe (cached)."""
    key = hashlib.sha256(json.dumps([generator_version(), llamacpp.file_hash(vocab_path), SHAPE,
                                     inspect.getsource(with_vocab), inspect.getsource(_add_key)])
                         .encode()).hexdigest()[:16]
    out = Path(cache_dir) / f"qwen3-tiny-qwen-vocab-{key}.gguf"
    if not out.exists():
        base = synth.write(tmp_path_factory.mktemp("qwen") / "base.gguf", "qwen3-tiny", types="F32",
                           n_vocab=n_vocab, **SHAPE)
        partial = out.with_name(out.name + ".partial")
        with_vocab(base, vocab_path, partial)
        partial.rename(out)
    return out


@pytest.fixture(scope="module")
def models(path, gpu):
    ms = {d: mdst.load(path, device=d, kv_type="f32", context_length=CONTEXT) for d in ("gpu", "cpu")}
    yield ms
    for m in ms.values():
        m.close()


@pytest.fixture(scope="module")
def llm(path, llama_cpp):
    """llama.cpp on the same file (the whole model, not only its vocabulary)."""
    m = llama_cpp.Llama(model_path=str(path), vocab_only=False, n_ctx=CONTEXT, n_threads=1, verbose=False)
    yield m
    m.close()


def test_file_carries_the_real_vocabulary(path, vocab_path, n_vocab, models):
    with GGUFFile(path) as f, GGUFFile(vocab_path) as v:
        for key in v.metadata:
            if key.startswith("tokenizer."):
                got, want = f.metadata[key], v.metadata[key]
                assert (np.array_equal(got, want) if isinstance(want, np.ndarray) else got == want), key
        assert not any(k.startswith("tokenizer.") and k not in v.metadata for k in f.metadata)
        assert tuple(reversed(f.tensors["token_embd.weight"].shape)) == (n_vocab, SHAPE["d_model"])
    assert n_vocab == 151936
    assert models["cpu"].n_vocab == models["gpu"].n_vocab == n_vocab


@pytest.mark.parametrize("special", [True, False])
@pytest.mark.parametrize("name", TEXTS)
def test_text_to_tokens_matches_llama_cpp(models, llm, name, special):
    text, m = TEXTS[name], models["cpu"]
    ids = m.tokenize(text, special=special)
    assert ids == llm.tokenize(text.encode(), add_bos=True, special=special)     # the file's own BOS/EOS rule
    assert m.tokenize(text, add_bos=False, special=special) == llm.tokenize(text.encode(), add_bos=False,
                                                                             special=special)
    assert m.detokenize(ids) == llama_detokenize(llm, ids, False).decode("utf-8", "replace")
    if not special or name != "chat":       # byte-level BPE round-trips everything but dropped control tokens
        assert m.detokenize(ids) == text


@pytest.fixture(scope="module")
def text_ids(models) -> list[int]:
    ids = models["cpu"].tokenize(" ".join(TEXTS.values()))
    assert len(ids) >= N_LOGITS
    return ids[:N_LOGITS]


@pytest.mark.parametrize("device", ["gpu", "cpu"])
def test_logits_match_llama_cpp(models, path, text_ids, cache_dir, llama_cpp, device):
    ref = llamacpp.logits(path, text_ids, cache_dir)
    got = models[device].logits(text_ids)
    assert got.shape == ref.shape == (N_LOGITS, 151936)
    rel, agree = rel_l2(got, ref), agreement(got, ref)
    report(f"qwen3-tiny with the Qwen vocabulary F32 {device} vs llama.cpp", tokens=N_LOGITS, rel_l2=rel,
           top1_agreement=agree)
    assert rel < 2e-3


def greedy_ids(m: mdst.Model, ids: list[int], n: int) -> list[int]:
    """mdst's greedy continuation, token by token, ending at n tokens or after an end-of-generation token."""
    out: list[int] = []
    with m.session() as s:
        tok = int(s.prefill(ids, greedy=True))
        while True:
            out.append(tok)
            if len(out) == n or tok in m.tokenizer.eog_ids:
                return out
            tok = int(s.prefill([tok], greedy=True))


@pytest.mark.parametrize("device", ["gpu", "cpu"])
@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_text_matches_llama_cpp(models, llm, path, cache_dir, llama_cpp, device, prompt):
    m = models[device]
    ids = m.tokenize(prompt)
    assert ids == llm.tokenize(prompt.encode(), add_bos=True, special=True)
    want = [int(t) for t in llamacpp.greedy(path, ids, N_GREEDY, cache_dir)]
    assert greedy_ids(m, ids, N_GREEDY) == want
    text = m.generate(prompt, max_tokens=N_GREEDY)
    assert text == m.detokenize(want) == llama_detokenize(llm, want, False).decode("utf-8", "replace")
    report(f"qwen-vocab greedy {device}", prompt=prompt, tokens=len(want), text=text)
