"""llama.cpp's tokenizer test vocabularies (models/ggml-vocab-*.gguf) through mdst.text.tokenizer.

Each vocabulary with `.inp`/`.out` files must give the recorded ids for every case, read as
llama.cpp's tests/test-tokenizer-0.cpp reads them: cases separated by "\\n__ggml_vocab_test__\\n",
one line of space-separated ids per case, tokenized without BOS/EOS and without parsing special
tokens. Decoding must match llama.cpp's detokenizer, and round-trip wherever llama.cpp's does.
Every `tokenizer.ggml.pre` name mdst accepts is also checked against llama.cpp on a copy of the
GPT-2 vocabulary that carries that name.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import gguf
import pytest
from metrics import report
from test_tokenizer import encode_mismatches, generated_strings, llama_detokenize, llama_eog_ids

from mdst.errors import UnsupportedModelError
from mdst.format.gguf import GGUFFile
from mdst.text.tokenizer import _PRE_TYPES, Tokenizer

CASE_SEPARATOR = "\n__ggml_vocab_test__\n"
WITH_CASES = ["bert-bge", "command-r", "deepseek-coder", "deepseek-llm", "falcon", "gemma-4", "gpt-2", "llama-bpe",
              "llama-spm", "mpt", "phi-3", "qwen2", "qwen35", "refact", "starcoder"]
WITHOUT_CASES = ["aquila", "baichuan", "gpt-neox"]  # no .inp/.out: checked on the other files' cases
UNSUPPORTED = {"nomic-bert-moe": "t5"}


def read_cases(vocab: Path) -> dict[str, list[int]]:
    """The vocabulary's test cases: input text -> expected ids (a later duplicate wins, as in llama.cpp)."""
    raw = Path(f"{vocab}.inp").read_bytes().decode("utf-8")
    lines = Path(f"{vocab}.out").read_text(encoding="utf-8").split("\n")
    if lines[-1] == "":
        lines.pop()
    inputs, pos = [], 0
    while pos < len(raw):
        nxt = raw.find(CASE_SEPARATOR, pos)
        if nxt < 0:
            inputs.append(raw[pos:])
            break
        inputs.append(raw[pos:nxt])
        pos = nxt + len(CASE_SEPARATOR)
    assert len(inputs) == len(lines), f"{vocab.name}: {len(inputs)} inputs but {len(lines)} outputs"
    return {s: [int(t) for t in line.split()] for s, line in zip(inputs, lines)}


def models_dir(src: Path) -> Path:
    return src / "models"


def test_inventory(llama_cpp_src: Path) -> None:
    """Every vocabulary file llama.cpp ships is either checked here or expected to be refused."""
    files = {p.name[len("ggml-vocab-"):-len(".gguf")] for p in models_dir(llama_cpp_src).glob("ggml-vocab-*.gguf")}
    assert files == set(WITH_CASES) | set(WITHOUT_CASES) | set(UNSUPPORTED)
    with_inp = {p.name[len("ggml-vocab-"):-len(".gguf.inp")] for p in models_dir(llama_cpp_src).glob("*.gguf.inp")}
    assert with_inp == set(WITH_CASES)


@pytest.fixture(scope="module", params=WITH_CASES + WITHOUT_CASES)
def vocab(request: pytest.FixtureRequest, llama_cpp_src: Path, llama_cpp: Any) -> tuple[str, Path, Tokenizer, Any]:
    """(name, path, mdst tokenizer, llama.cpp vocab-only model), one vocabulary at a time."""
    path = models_dir(llama_cpp_src) / f"ggml-vocab-{request.param}.gguf"
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    return request.param, path, Tokenizer.from_gguf(path), llm


@pytest.fixture(scope="module")
def shared_cases(llama_cpp_src: Path) -> list[str]:
    """The inputs of two case files, for vocabularies that have none of their own."""
    d = models_dir(llama_cpp_src)
    return sorted(set(read_cases(d / "ggml-vocab-llama-bpe.gguf")) | set(read_cases(d / "ggml-vocab-qwen35.gguf")))


def cases_of(vocab: tuple[str, Path, Tokenizer, Any], shared_cases: list[str]) -> dict[str, list[int]]:
    """Expected ids per input: the recorded ones, or llama.cpp's own for vocabularies without case files."""
    name, path, _, llm = vocab
    if name in WITH_CASES:
        return read_cases(path)
    return {s: llm.tokenize(s.encode(), add_bos=False, special=False) for s in shared_cases}


def test_cases(vocab: tuple[str, Path, Tokenizer, Any], shared_cases: list[str]) -> None:
    name, _, tok, _ = vocab
    cases = cases_of(vocab, shared_cases)
    failed = [s for s, ids in cases.items() if tok.encode(s, add_bos=False, special=False) != ids]
    report("tokenizer vocab cases", vocab=name, type=tok.model_type, pre=tok.pre_type, cases=len(cases),
           passed=len(cases) - len(failed))
    assert not failed, f"{name}: {len(failed)} of {len(cases)} cases differ, e.g. {failed[:3]!r}"


def test_decode_and_round_trip(vocab: tuple[str, Path, Tokenizer, Any], shared_cases: list[str]) -> None:
    name, _, tok, llm = vocab
    bad, round_trips = [], 0
    for s, ids in cases_of(vocab, shared_cases).items():
        for special in (False, True):
            want = llama_detokenize(llm, ids, special).decode("utf-8", "replace")
            if tok.decode(ids, special=special) != want:
                bad.append((s, special))
        if llama_detokenize(llm, ids, False) == s.encode():
            round_trips += 1
            if tok.decode(tok.encode(s, add_bos=False, special=False)) != s:
                bad.append((s, "round trip"))
    report("tokenizer vocab round trips", vocab=name, round_trips=round_trips)
    assert not bad, f"{name}: decode differs from llama.cpp for {bad[:3]!r}"
    assert round_trips > 0


def test_specials_match_llama_cpp(vocab: tuple[str, Path, Tokenizer, Any], llama_cpp: Any) -> None:
    _, _, tok, llm = vocab
    v = llm._model.vocab
    assert (tok.bos_id if tok.bos_id is not None else -1) == llama_cpp.llama_vocab_bos(v)
    assert (tok.eos_id if tok.eos_id is not None else -1) == llama_cpp.llama_vocab_eos(v)
    assert (tok.add_bos, tok.add_eos) == (llama_cpp.llama_vocab_get_add_bos(v), llama_cpp.llama_vocab_get_add_eos(v))
    assert tok.eog_ids == llama_eog_ids(llm)
    assert tok.n_vocab == llama_cpp.llama_vocab_n_tokens(v)


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_unsupported_vocab(name: str, llama_cpp_src: Path) -> None:
    with pytest.raises(UnsupportedModelError, match=f"'{UNSUPPORTED[name]}' is not supported"):
        Tokenizer.from_gguf(models_dir(llama_cpp_src) / f"ggml-vocab-{name}.gguf")


# ---- every pre-tokenizer name, on GPT-2's vocabulary ------------------------------------------------
def pre_names() -> list[str]:
    """One `tokenizer.ggml.pre` name per distinct behaviour (regexes and flags) mdst implements."""
    first: dict[object, str] = {}
    for name, pre in _PRE_TYPES.items():
        first.setdefault(pre, name)
    return sorted(first.values())


@pytest.fixture(scope="module")
def gpt2_vocab(llama_cpp_src: Path) -> dict[str, Any]:
    with GGUFFile(models_dir(llama_cpp_src) / "ggml-vocab-gpt-2.gguf") as f:
        return {k: f.metadata[f"tokenizer.ggml.{k}"] for k in ("tokens", "token_type", "merges")}


def write_gpt2_with_pre(path: Path, vocab: dict[str, Any], pre: str) -> Path:
    """GPT-2's vocabulary under another pre-tokenizer name (with the hyperparameters llama.cpp's loader wants)."""
    w = gguf.GGUFWriter(str(path), "gpt2")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(vocab["tokens"])
    w.add_token_types(vocab["token_type"].tolist())
    w.add_token_merges(vocab["merges"])
    w.add_bos_token_id(50256)
    w.add_eos_token_id(50256)
    for add, value in ((w.add_context_length, 1024), (w.add_embedding_length, 64), (w.add_block_count, 1),
                       (w.add_head_count, 1), (w.add_feed_forward_length, 64)):
        add(value)
    w.add_layer_norm_eps(1e-5)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("pre", pre_names())
def test_pre_tokenizer_matches_llama_cpp(pre: str, gpt2_vocab: dict[str, Any], shared_cases: list[str],
                                         tmp_path: Path, llama_cpp: Any) -> None:
    path = write_gpt2_with_pre(tmp_path / f"{pre}.gguf", gpt2_vocab, pre)
    tok = Tokenizer.from_gguf(path)
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    strings = shared_cases + generated_strings(zlib.crc32(pre.encode()), 60, ["<|endoftext|>"])
    bad = encode_mismatches(tok, llm, strings)
    assert not bad, f"pre {pre!r}: {len(bad)} mismatches, first: " + "\n".join(bad[:3])
