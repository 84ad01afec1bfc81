"""mdst.text.tokenizer against llama.cpp on the packaged models, and its checks on broken vocabularies.

SmolLM2 has a byte-level BPE vocabulary (tokenizer.ggml.pre "smollm"), Gemma 3 a SentencePiece one.
Ids, detokenized text, single-token pieces, BOS/EOS flags and end-of-generation ids must all be
llama.cpp's (llama-cpp-python on the same file, vocab only).
"""

from __future__ import annotations

import ctypes
import json
import random
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdst.errors import GGUFError, UnsupportedModelError
from mdst.format.gguf import GGUFFile
from mdst.text.tokenizer import Tokenizer

STRINGS = json.loads((Path(__file__).parent / "data" / "tokenizer" / "strings.json").read_text(encoding="utf-8"))

# Building blocks of the generated strings: scripts, digits, punctuation, whitespace runs, emoji.
_BLOCKS = [
    "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789", " ", "\n", "\t", "\r",
    "'", ".,!?;:-_()[]{}<>/\\|@#$%^&*+=~`\"", "äöüßéèêñçåøæœ", "абвгдежзийклмнопрстуфхцчшщъыьэюя",
    "日本語漢字ひらがなカタカナ中文测试", "한국어텍스트", "αβγδεζηθ", "אבגדה", "العربية", "हिन्दीमें", "ไทยภาษา",
    "🦙🚀😶\u200d🌫️✅👍🏽🇫🇷", "①②③٣٤٥½", "\u00a0\u2009\u3000", "\u200b\u200d\ufeff", "e\u0301a\u0308", "\x00\x01\x1b\x7f",
]


def generated_strings(seed: int, n: int, specials: Sequence[str] = ()) -> list[str]:
    """`n` reproducible mixed strings (runs from `_BLOCKS`, whitespace runs, special-token texts)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 10)):
            r = rng.random()
            if r < 0.1 and specials:
                parts.append(rng.choice(specials))
            elif r < 0.2:
                parts.append(rng.choice(" \n\t") * rng.randint(1, 6))
            else:
                block = rng.choice(_BLOCKS)
                parts.append("".join(rng.choice(block) for _ in range(rng.randint(1, 8))))
        out.append("".join(parts))
    return out


def llama_detokenize(llm: Any, ids: Sequence[int], special: bool) -> bytes:
    """llama.cpp's llama_detokenize(remove_special=False, unparse_special=special)."""
    import llama_cpp

    arr = (llama_cpp.llama_token * max(1, len(ids)))(*ids)
    size = 64 + 64 * len(ids)
    buf = ctypes.create_string_buffer(size)
    n = llama_cpp.llama_detokenize(llm._model.vocab, arr, len(ids), buf, size, False, special)
    assert n >= 0, "detokenize buffer too small"
    return buf.raw[:n]


def llama_piece(llm: Any, id: int, special: bool) -> bytes:
    """llama.cpp's llama_token_to_piece(lstrip=0)."""
    import llama_cpp

    buf = ctypes.create_string_buffer(512)
    n = llama_cpp.llama_token_to_piece(llm._model.vocab, id, buf, 512, 0, special)
    assert n >= 0
    return buf.raw[:n]


def llama_eog_ids(llm: Any) -> set[int]:
    """Every id llama.cpp treats as end of generation."""
    import llama_cpp

    vocab = llm._model.vocab
    return {i for i in range(llama_cpp.llama_vocab_n_tokens(vocab)) if llama_cpp.llama_vocab_is_eog(vocab, i)}


def encode_mismatches(tok: Tokenizer, llm: Any, strings: Sequence[str]) -> list[str]:
    """Cases where `tok.encode` and llama.cpp's tokenize disagree, for every add_bos/special combination."""
    bad = []
    for s in strings:
        for special in (True, False):
            model_default = llm.tokenize(s.encode(), add_bos=True, special=special)
            plain = llm.tokenize(s.encode(), add_bos=False, special=special)
            forced = [tok.bos_id] + plain + ([tok.eos_id] if tok.add_eos else [])
            for add_bos, want in ((None, model_default), (False, plain), (True, forced)):
                got = tok.encode(s, add_bos=add_bos, special=special)
                if got != want:
                    bad.append(f"{s!r} add_bos={add_bos} special={special}: want {want[:20]} got {got[:20]}")
    return bad


def decode_mismatches(tok: Tokenizer, llm: Any, strings: Sequence[str]) -> tuple[list[str], int]:
    """Cases where `tok.decode` and llama.cpp's detokenize disagree, and how many strings round-trip."""
    bad, round_trips = [], 0
    for s in strings:
        ids = llm.tokenize(s.encode(), add_bos=False, special=True)
        for special in (False, True):
            want = llama_detokenize(llm, ids, special).decode("utf-8", "replace")
            got = tok.decode(ids, special=special)
            if got != want:
                bad.append(f"{s!r} special={special}: want {want!r} got {got!r}")
        plain = llm.tokenize(s.encode(), add_bos=False, special=False)
        if llama_detokenize(llm, plain, False) == s.encode():
            round_trips += 1
            if tok.decode(tok.encode(s, add_bos=False, special=False)) != s:
                bad.append(f"{s!r}: llama.cpp round-trips, mdst does not")
    return bad, round_trips


@pytest.fixture(scope="module")
def smollm2(smollm2_path: str, llama_cpp: Any) -> tuple[Tokenizer, Any]:
    """SmolLM2's tokenizer and llama.cpp's, loaded once."""
    return Tokenizer.from_gguf(smollm2_path), llama_cpp.Llama(model_path=smollm2_path, vocab_only=True, verbose=False)


@pytest.fixture(scope="module")
def gemma(gemma_path: str, llama_cpp: Any) -> tuple[Tokenizer, Any]:
    """Gemma 3's tokenizer and llama.cpp's, loaded once."""
    return Tokenizer.from_gguf(gemma_path), llama_cpp.Llama(model_path=gemma_path, vocab_only=True, verbose=False)


# SmolLM2 gets >= 100 strings, Gemma 3 >= 200 (the handwritten ones plus generated ones).
CORPUS = {"smollm2": (1, 120), "gemma": (2, 220)}


def corpus(name: str, tok: Tokenizer) -> list[str]:
    seed, n = CORPUS[name]
    specials = [t for t in ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<start_of_turn>", "<end_of_turn>",
                            "<bos>", "<eos>", "<table>", "</td>", "[multimodal]") if tok.token_to_id(t) is not None]
    return STRINGS + generated_strings(seed, n, specials)


@pytest.mark.parametrize("name", ["smollm2", "gemma"])
def test_encode_matches_llama_cpp(name: str, request: pytest.FixtureRequest) -> None:
    tok, llm = request.getfixturevalue(name)
    strings = corpus(name, tok)
    assert len(strings) >= {"smollm2": 100, "gemma": 200}[name]
    bad = encode_mismatches(tok, llm, strings)
    assert not bad, f"{len(bad)} mismatches, first: " + "\n".join(bad[:5])


@pytest.mark.parametrize("name", ["smollm2", "gemma"])
def test_decode_matches_llama_cpp(name: str, request: pytest.FixtureRequest) -> None:
    tok, llm = request.getfixturevalue(name)
    strings = corpus(name, tok)
    bad, round_trips = decode_mismatches(tok, llm, strings)
    assert not bad, f"{len(bad)} mismatches, first: " + "\n".join(bad[:5])
    assert round_trips >= len(strings) // 2  # most text survives the round trip in llama.cpp too


@pytest.mark.parametrize("name", ["smollm2", "gemma"])
@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=40))
def test_any_text_matches_llama_cpp(name: str, text: str, request: pytest.FixtureRequest) -> None:
    tok, llm = request.getfixturevalue(name)
    ids = tok.encode(text)  # never raises, surrogates included
    assert all(0 <= i < tok.n_vocab for i in ids)
    tok.decode(ids, special=True)
    # Unicode assigned after Python's own tables may be classified differently by llama.cpp's
    # newer ones, which only the byte-level pre-tokenizer regexes look at.
    comparable = all(unicodedata.category(c) not in ("Cs", "Cn") for c in text)
    if comparable:
        assert ids == llm.tokenize(text.encode(), add_bos=True, special=True)


def test_add_bos_flags(smollm2: tuple[Tokenizer, Any], gemma: tuple[Tokenizer, Any], llama_cpp: Any) -> None:
    for tok, llm in (smollm2, gemma):
        vocab = llm._model.vocab
        assert tok.add_bos == llama_cpp.llama_vocab_get_add_bos(vocab)
        assert tok.add_eos == llama_cpp.llama_vocab_get_add_eos(vocab)
        assert tok.bos_id == llama_cpp.llama_vocab_bos(vocab)
        assert tok.eos_id == llama_cpp.llama_vocab_eos(vocab)
    s_tok, g_tok = smollm2[0], gemma[0]
    assert (s_tok.add_bos, s_tok.bos_id, s_tok.eos_id) == (False, 1, 2)
    assert (g_tok.add_bos, g_tok.bos_id, g_tok.eos_id) == (True, 2, 1)
    hello = s_tok.encode("Hello")
    assert s_tok.encode("Hello", add_bos=True) == [1] + hello and hello[0] != 1
    assert g_tok.encode("Hello")[0] == 2 and g_tok.encode("Hello", add_bos=False) == g_tok.encode("Hello")[1:]
    assert g_tok.encode("", add_bos=None) == [2] and g_tok.encode("", add_bos=False) == []


def test_special_tokens(smollm2: tuple[Tokenizer, Any], gemma: tuple[Tokenizer, Any]) -> None:
    tok = smollm2[0]
    start, end = tok.token_to_id("<|im_start|>"), tok.token_to_id("<|im_end|>")
    chat = "<|im_start|>user\nHi<|im_end|>"
    ids = tok.encode(chat)
    assert ids[0] == start and ids[-1] == end
    assert start not in tok.encode(chat, special=False)
    assert tok.decode(ids, special=True) == chat
    assert tok.decode(ids) == "user\nHi"
    assert end in tok.eog_ids and tok.eos_id in tok.eog_ids
    g = gemma[0]
    turn = g.token_to_id("<end_of_turn>")
    assert turn in g.eog_ids and g.encode("<end_of_turn>", add_bos=False) == [turn]
    # Gemma's HTML tags are user-defined: matched even when control tokens are not.
    assert g.encode("<table>", add_bos=False, special=False) == [g.token_to_id("<table>")]


def test_eog_ids(smollm2: tuple[Tokenizer, Any], gemma: tuple[Tokenizer, Any]) -> None:
    for tok, llm in (smollm2, gemma):
        assert tok.eog_ids == llama_eog_ids(llm)


def test_token_bytes_and_lookup(smollm2: tuple[Tokenizer, Any], gemma: tuple[Tokenizer, Any], llama_cpp: Any) -> None:
    for (tok, llm), step in ((smollm2, 1), (gemma, 7)):
        vocab = llm._model.vocab
        for i in range(0, tok.n_vocab, step):
            for special in (False, True):
                assert tok.token_bytes(i, special) == llama_piece(llm, i, special), (i, special)
            text = tok.id_to_token(i)
            assert text.encode() == llama_cpp.llama_vocab_get_text(vocab, i)
            assert tok.token_to_id(text) == i
    tok = smollm2[0]
    assert tok.token_to_id("no such token, surely") is None
    # a multi-byte character split over byte tokens: each piece is a part of its UTF-8 bytes
    ids = tok.encode("🦙", add_bos=False)
    assert b"".join(tok.token_bytes(i) for i in ids) == "🦙".encode()


def test_bad_arguments(smollm2: tuple[Tokenizer, Any]) -> None:
    tok = smollm2[0]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([tok.n_vocab])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.token_bytes(-1)
    with pytest.raises(TypeError):
        tok.encode(b"bytes")  # type: ignore[arg-type]
    assert tok.decode(np.array(tok.encode("numpy ids"))) == "numpy ids"


def test_from_open_file(smollm2_path: str, smollm2: tuple[Tokenizer, Any]) -> None:
    with GGUFFile(smollm2_path) as f:
        tok = Tokenizer.from_gguf(f)
    assert tok.encode("same ids either way") == smollm2[0].encode("same ids either way")


# ---- broken vocabularies -------------------------------------------------------------------------
TINY_TOKENS = list("abcdefghijklmnopqrstuvwxyz") + ["Ġ", "he", "ll", "hell", "hello", "<|endoftext|>"]
TINY_MERGES = ["h e", "l l", "he ll", "hell o"]


def write_vocab(path: Path, **changes: Any) -> Path:
    """A tiny "gpt2" vocabulary file; `changes` maps metadata keys (after tokenizer.ggml.) to new values
    (None removes the key; a (value, GGUFValueType) pair writes a scalar of that type)."""
    kv: dict[str, Any] = {"model": "gpt2", "pre": "gpt-2", "tokens": TINY_TOKENS, "merges": TINY_MERGES,
                          "token_type": [1] * (len(TINY_TOKENS) - 1) + [3], "scores": [0.0] * len(TINY_TOKENS),
                          "bos_token_id": (len(TINY_TOKENS) - 1, gguf.GGUFValueType.UINT32),
                          "eos_token_id": (len(TINY_TOKENS) - 1, gguf.GGUFValueType.UINT32)}
    kv.update(changes)
    w = gguf.GGUFWriter(str(path), "gpt2")
    for key, value in kv.items():
        if value is None:
            continue
        if isinstance(value, tuple):
            w.add_key_value(f"tokenizer.ggml.{key}", value[0], value[1])
        elif isinstance(value, str):
            w.add_string(f"tokenizer.ggml.{key}", value)
        else:
            w.add_array(f"tokenizer.ggml.{key}", value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_tiny_vocab_works(tmp_path: Path) -> None:
    tok = Tokenizer.from_gguf(write_vocab(tmp_path / "ok.gguf"))
    ids = {t: i for i, t in enumerate(TINY_TOKENS)}
    assert tok.encode("hello") == [ids["hello"]]
    assert tok.encode("hell help") == [ids["hell"], ids["Ġ"], ids["he"], ids["l"], ids["p"]]
    assert tok.encode("hello<|endoftext|>") == [ids["hello"], ids["<|endoftext|>"]]
    assert tok.decode(tok.encode("hello help")) == "hello help"
    assert tok.eog_ids == {ids["<|endoftext|>"]}


U32 = gguf.GGUFValueType.UINT32


@pytest.mark.parametrize("changes, message", [
    ({"scores": [0.0] * 5}, "scores has 5 entries"),
    ({"token_type": [1] * 5}, "token_type has 5 entries"),
    ({"bos_token_id": (999, U32)}, "bos_token_id = 999 is outside"),
    ({"eos_token_id": (len(TINY_TOKENS), U32)}, "eos_token_id = 32 is outside"),
    ({"merges": ["h e", "hello"]}, r"merges\[1\] = 'hello' is not two tokens"),
    ({"merges": None}, "merges is missing"),
    ({"token_type": [1.0] * len(TINY_TOKENS)}, "token_type must be an array of int32"),
    ({"scores": ["x"] * len(TINY_TOKENS)}, "scores must be an array of float32"),
    ({"tokens": list(range(len(TINY_TOKENS)))}, "tokens must be an array of strings"),
    ({"tokens": None}, "tokens is missing"),
    ({"tokens": ["a", "b", "a"]}, "holds 'a' more than once"),
    ({"model": None}, "tokenizer.ggml.model is missing"),
    ({"model": (7, U32)}, "model must be a string"),
    ({"add_bos_token": "yes"}, "add_bos_token must be a bool"),
    ({"bos_token_id": ("1", gguf.GGUFValueType.STRING)}, "bos_token_id must be an integer"),
])
def test_malformed_vocab_raises(tmp_path: Path, changes: dict, message: str) -> None:
    path = write_vocab(tmp_path / "bad.gguf", **changes)
    with pytest.raises(GGUFError, match=message):
        Tokenizer.from_gguf(path)


@pytest.mark.parametrize("changes, message", [
    ({"model": "rwkv"}, "'rwkv' is not supported; mdst supports 'gpt2', 'llama'"),
    ({"pre": "no-such-pre"}, "tokenizer.ggml.pre='no-such-pre' is not supported; mdst supports .*llama-bpe"),
])
def test_unsupported_vocab_raises(tmp_path: Path, changes: dict, message: str) -> None:
    with pytest.raises(UnsupportedModelError, match=message):
        Tokenizer.from_gguf(write_vocab(tmp_path / "unsupported.gguf", **changes))
