"""Text <-> token ids from a GGUF file's `tokenizer.ggml.*` metadata, with llama.cpp's ids.

llama.cpp is the reference implementation of the format, so every decision it makes around the
merge loop is reproduced here: which pre-tokenizer regexes a `tokenizer.ggml.pre` name selects,
how special tokens are cut out of the text first (longest first, user-defined ones always,
control ones only when asked), SentencePiece's space prefix and "▁" escape, token attributes
(including the ones it infers from token texts), the end-of-generation set, and the clean-up
applied when ids are turned back into text. The merge loops themselves run in HF `tokenizers`:

- "gpt2" (byte-level BPE): the file's merges, `Split` pre-tokenizers with llama.cpp's regexes.
- "llama" (SentencePiece): llama.cpp merges adjacent symbols whose concatenation is a token,
  highest score first; that is BPE with one merge per (left, right) split of every token,
  ranked by the merged token's score, plus byte fallback to `<0xNN>` tokens.
- "gemma4" (SentencePiece-style BPE): the file's merges over raw UTF-8 with "▁" for spaces.
- "bert" (WordPiece): llama.cpp's own normalization and word split, then HF's greedy longest match.

Other vocabulary types ("t5" unigram, "rwkv", "plamo2", ...) raise UnsupportedModelError, as do
pre-tokenizer names whose llama.cpp splitter is hand-written rather than a regex (kimi-k2, afmoe, ...).
Encoding runs one fragment at a time (no HF batch parallelism, so forking servers stay quiet).
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tokenizers as hf

from ..errors import GGUFError, UnsupportedModelError
from ..format.gguf import T_BOOL, T_INT8, T_INT16, T_INT32, T_INT64, T_STRING, T_UINT8, T_UINT16, T_UINT32, T_UINT64, GGUFFile

# Token attributes (llama.cpp's llama_token_attr bits).
UNDEFINED, UNKNOWN, UNUSED, NORMAL, CONTROL, USER_DEFINED, BYTE = 0, 1, 2, 4, 8, 16, 32
LSTRIP, RSTRIP = 128, 256
# tokenizer.ggml.token_type values -> attributes.
_TYPE_ATTR = {0: UNDEFINED, 1: NORMAL, 2: UNKNOWN, 3: CONTROL, 4: USER_DEFINED, 5: UNUSED, 6: BYTE}

SPACE_ESCAPE = "\u2581"  # "▁": SentencePiece's visible space
_INT_TYPES = {T_UINT8, T_INT8, T_UINT16, T_INT16, T_UINT32, T_INT32, T_UINT64, T_INT64}

# ---- pre-tokenizer regexes (Oniguruma syntax, as HF `tokenizers` runs them) ---------------------
# Each `tokenizer.ggml.pre` name selects a list of regexes; each regex splits every piece that the
# previous ones produced, keeping matches and the text between them as separate pieces.
_CONTRACTIONS = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_QWEN2 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_QWEN35 = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+"
           r"|\s+(?!\S)|\s+")
# Written with escapes: these ranges need the exact code points (an editor's NFC would break some).
# llama.cpp matches these regexes after replacing every non-ASCII space with "\v", so its classes
# never match a space; "&&\S" keeps that true here.
_PORO = " ?[^(\\s|.,!?\u2026\u3002\uff0c\u3001\u0964\u06d4\u060c)]+"
_CJK = "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff&&\\S]+"
_DEEPSEEK_LETTERS = (
    "A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af\u0370-\u0373"
    "\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481"
    "\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf"
    "\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d"
    "\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4"
    "\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107"
    "\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139\u213c-\u213f"
    "\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d"
    "\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17"
    "\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3\U000104d8-\U000104fb"
    "\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df\U0001e900-\U0001e943")
_DEEPSEEK_PUNCT = "[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002&&\\S]"
_KANA_HAN = "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+"
_DEEPSEEK3_MAIN = (r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+"
                   r"| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_UPPER_THEN_LOWER = r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
_UPPER_RUN = r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
_GPT4O = (r"[^\r\n\p{L}\p{N}]?" + _UPPER_THEN_LOWER + _CONTRACTIONS + r"?|[^\r\n\p{L}\p{N}]?" + _UPPER_RUN
          + _CONTRACTIONS + r"?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_TEKKEN = (r"[^\r\n\p{L}\p{N}]?" + _UPPER_THEN_LOWER + r"|[^\r\n\p{L}\p{N}]?" + _UPPER_RUN
           + r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")

_SPLITS: dict[str, list[str]] = {
    "default": [r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"],
    "gpt2": [_GPT2],
    "starcoder": [r"\p{N}", _GPT2],
    "falcon": [r"[\p{P}\$\+<=>\^~\|`]+", _GPT2, r"[0-9][0-9][0-9]"],
    "llama3": [_LLAMA3],
    "qwen2": [_QWEN2],
    "qwen35": [_QWEN35],
    "deepseek-llm": [r"[\r\n]", r"\s?[" + _DEEPSEEK_LETTERS + "]+", r"\s?" + _DEEPSEEK_PUNCT + "+", r"\s+\z", _CJK,
                     r"\p{N}+"],
    "deepseek-coder": [r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", _CJK, r"\p{N}"],
    "deepseek3": [r"\p{N}{1,3}", _KANA_HAN, _DEEPSEEK3_MAIN],
    "poro": [_PORO],
    "viking": [_PORO, r"\p{N}"],
    "gpt4o": [_GPT4O],
    "tekken": [_TEKKEN],
    "seed-coder": [_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+"
                   r"|\s+(?!\S)|\s+"],
    "bailingmoe": [(r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+")],
    "minicpm5": [r"\p{N}{1,3}", _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+"],
}


@dataclass(frozen=True)
class _Pre:
    """What one `tokenizer.ggml.pre` name means to llama.cpp for a "gpt2" vocabulary."""

    splits: str
    ignore_merges: bool = False  # a pre-token that is itself a token skips the merges
    clean_spaces: bool = True  # decode removes " " before ?!., and around some apostrophes
    add_bos: bool = False  # default when tokenizer.ggml.add_bos_token is absent
    no_bos: bool = False  # these vocabularies have no BOS token at all


def _pres(names: str, pre: _Pre) -> dict[str, _Pre]:
    return {n: pre for n in names.split()}


_PRE_TYPES: dict[str, _Pre] = {
    "default": _Pre("default"),
    **_pres("llama3 llama-v3 llama-bpe falcon3 falcon-h1 pixtral midm-2.0 lfm2 jina-v5-nano",
            _Pre("llama3", ignore_merges=True, add_bos=True)),
    **_pres("dbrx smaug-bpe", _Pre("llama3")),
    "deepseek-llm": _Pre("deepseek-llm", clean_spaces=False),
    "deepseek-coder": _Pre("deepseek-coder", clean_spaces=False),
    **_pres("deepseek-v3 hunyuan-dense joyai-llm hy_v4", _Pre("deepseek3", clean_spaces=False)),
    "falcon": _Pre("falcon"),
    **_pres("gpt-2 phi-2 jina-es jina-de gigachat jina-v2-es jina-v2-de a.x-4.0 mellum modern-bert jina-v1-en "
            "jina-v2-code roberta-bpe mpt olmo jais exaone4", _Pre("gpt2")),
    **_pres("trillion granite-docling", _Pre("gpt2", clean_spaces=False)),
    **_pres("starcoder refact codeshell exaone minerva-7b mellum2", _Pre("starcoder")),
    **_pres("command-r smollm", _Pre("starcoder", clean_spaces=False)),
    **_pres("stablelm2 megrez", _Pre("qwen2")),
    **_pres("qwen2 deepseek-r1-qwen kormo f2llmv2 hunyuan solar-open grok-2", _Pre("qwen2", clean_spaces=False)),
    "qwen35": _Pre("qwen35", clean_spaces=False),
    "poro-chat": _Pre("poro", clean_spaces=False),
    **_pres("bloom gpt3-finnish", _Pre("poro")),
    "viking": _Pre("viking", clean_spaces=False),
    "chatglm-bpe": _Pre("llama3", no_bos=True),
    **_pres("glm4 glm5", _Pre("llama3", ignore_merges=True, no_bos=True)),
    "tekken": _Pre("tekken", ignore_merges=True, clean_spaces=False, add_bos=True),
    **_pres("gpt-4o llama4 kanana2 talkie", _Pre("gpt4o", clean_spaces=False)),
    "seed-coder": _Pre("seed-coder", clean_spaces=False),
    **_pres("bailingmoe bailingmoe2 llada-moe", _Pre("bailingmoe", clean_spaces=False)),
    "minicpm5": _Pre("minicpm5", ignore_merges=True),
}

# Texts that llama.cpp treats as end of generation (and so as control tokens), whatever their type.
_EOG_TEXTS = frozenset([
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>",
    "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
    "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>", "[e~[",
])
# Texts by which llama.cpp finds the fill-in-the-middle tokens when the file does not name them.
_FIM_TEXTS = {
    "fim_pre": ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
                "<|code_prefix|>", "<|prefix|>"),
    "fim_suf": ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>",
                "<|code_suffix|>", "<|suffix|>"),
    "fim_mid": ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>",
                "<|code_middle|>", "<|middle|>"),
    "fim_pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "fim_rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "fim_sep": ("<|file_sep|>",),
}
# Special-id keys in the order llama.cpp reads them (the deprecated FIM names override the new ones).
_SPECIAL_KEYS = [
    ("bos", "bos_token_id"), ("eos", "eos_token_id"), ("eot", "eot_token_id"), ("eom", "eom_token_id"),
    ("unk", "unknown_token_id"), ("sep", "seperator_token_id"), ("pad", "padding_token_id"),
    ("mask", "mask_token_id"), ("fim_pre", "fim_pre_token_id"), ("fim_suf", "fim_suf_token_id"),
    ("fim_mid", "fim_mid_token_id"), ("fim_pad", "fim_pad_token_id"), ("fim_rep", "fim_rep_token_id"),
    ("fim_sep", "fim_sep_token_id"), ("fim_pre", "prefix_token_id"), ("fim_suf", "suffix_token_id"),
    ("fim_mid", "middle_token_id"),
]
# Default special ids per vocabulary type, before the file's own.
_DEFAULT_IDS = {"llama": {"bos": 1, "eos": 2, "unk": 0}, "gpt2": {"bos": 11, "eos": 11}, "gemma4": {},
                "bert": {"bos": 101, "unk": 100, "sep": 102, "pad": 0, "mask": 103}}
_SUPPORTED_MODELS = ("gpt2", "llama", "gemma4", "bert")


def _gpt2_byte_chars() -> list[str]:
    """GPT-2's byte -> printable character map (the alphabet of byte-level BPE vocabularies)."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


_BYTE_OF_CHAR = {c: b for b, c in enumerate(_gpt2_byte_chars())}


# ---- metadata ----------------------------------------------------------------------------------
@dataclass
class _Vocab:
    """The tokenizer metadata of one file, checked, with llama.cpp's defaults and inferences applied."""

    model: str
    pre: str
    tokens: list[str]
    scores: np.ndarray
    attrs: list[int]
    merges: list[tuple[str, str]]
    ids: dict[str, int | None] = field(default_factory=dict)
    add_bos: bool = False
    add_eos: bool = False
    add_space_prefix: bool = False
    clean_spaces: bool = False
    lowercase: bool = True  # WordPiece normalization
    strip_accents: bool = True
    eog: set[int] = field(default_factory=set)


def _meta(md: dict, types: dict, path: str, key: str, kind: str, default: Any = None) -> Any:
    """`tokenizer.ggml.<key>` checked to be of `kind` ('str', 'bool', 'uint', 'strings', 'int32s', 'scores')."""
    name = f"tokenizer.ggml.{key}"
    if name not in md:
        return default
    v, t = md[name], types.get(name)
    ok = {
        "str": t == T_STRING,
        "bool": t == T_BOOL,
        "uint": t in _INT_TYPES and isinstance(v, int),
        "strings": isinstance(v, list),
        "int32s": isinstance(v, np.ndarray) and v.dtype == np.dtype("<i4"),
        "scores": isinstance(v, np.ndarray) and v.dtype in (np.dtype("<f4"), np.dtype("<i4")),
    }[kind]
    if not ok:
        want = {"str": "a string", "bool": "a bool", "uint": "an integer", "strings": "an array of strings",
                "int32s": "an array of int32", "scores": "an array of float32 (or int32)"}[kind]
        got = f"array of {v.dtype}" if isinstance(v, np.ndarray) else type(v).__name__
        raise GGUFError(f"{path}: {name} must be {want}, found {got}; the file's tokenizer metadata is malformed "
                        "- re-convert the model")
    return v


def _read_vocab(md: dict, types: dict, path: str) -> _Vocab:
    """Read and check the tokenizer metadata, then apply llama.cpp's defaults and token-text rules."""
    model = _meta(md, types, path, "model", "str")
    if model is None:
        raise GGUFError(f"{path}: tokenizer.ggml.model is missing, so the file has no tokenizer; "
                        "use a GGUF converted with its vocabulary")
    if model not in _SUPPORTED_MODELS:
        raise UnsupportedModelError(f"{path}: tokenizer.ggml.model {model!r} is not supported; mdst supports "
                                    f"{', '.join(map(repr, _SUPPORTED_MODELS))}")
    raw_pre = pre = _meta(md, types, path, "pre", "str")
    if model == "gemma4":
        pre = "gemma4"
    elif model == "gpt2":
        pre = pre or "default"
        if pre not in _PRE_TYPES:
            raise UnsupportedModelError(f"{path}: pre-tokenizer tokenizer.ggml.pre={pre!r} is not supported; mdst "
                                        f"supports {', '.join(sorted(_PRE_TYPES))}")
    else:
        pre = "default"

    tokens = _meta(md, types, path, "tokens", "strings")
    if not tokens:
        raise GGUFError(f"{path}: tokenizer.ggml.tokens is missing or empty; the file has no vocabulary")
    n = len(tokens)
    tokens = [t if t else f"[EMPTY_{i}]" for i, t in enumerate(tokens)]  # llama.cpp's name for empty tokens
    if len(set(tokens)) != n:
        seen: set[str] = set()
        dup = next(t for t in tokens if t in seen or seen.add(t))
        raise GGUFError(f"{path}: tokenizer.ggml.tokens holds {dup!r} more than once; the vocabulary is corrupt")

    scores = _meta(md, types, path, "scores", "scores")
    if scores is None:
        scores = np.zeros(n, np.float32)
    elif len(scores) < n:
        raise GGUFError(f"{path}: tokenizer.ggml.scores has {len(scores)} entries for {n} tokens; "
                        "the vocabulary is corrupt - re-convert the model")
    scores = scores[:n].astype(np.float32)

    token_types = _meta(md, types, path, "token_type", "int32s")
    if token_types is None:
        attrs = [NORMAL] * n
    else:
        if len(token_types) < n:
            raise GGUFError(f"{path}: tokenizer.ggml.token_type has {len(token_types)} entries for {n} tokens; "
                            "the vocabulary is corrupt - re-convert the model")
        attrs = [_TYPE_ATTR.get(t, UNDEFINED) for t in token_types[:n].tolist()]

    merges: list[tuple[str, str]] = []
    if model in ("gpt2", "gemma4"):
        raw = _meta(md, types, path, "merges", "strings")
        if raw is None:
            raise GGUFError(f"{path}: tokenizer.ggml.merges is missing; a {model!r} vocabulary needs its BPE merges")
        for i, m in enumerate(raw):
            cut = m.find(" ", 1)
            if cut < 0:
                raise GGUFError(f"{path}: tokenizer.ggml.merges[{i}] = {m!r} is not two tokens separated by a "
                                "space; the vocabulary is corrupt")
            merges.append((m[:cut], m[cut + 1:]))

    v = _Vocab(model, pre, tokens, scores, attrs, merges)
    pre_type = _PRE_TYPES.get(pre)
    if model == "llama":
        v.add_bos, v.add_space_prefix = True, True
    elif model == "bert":
        v.add_bos, v.clean_spaces = True, True
    elif model == "gemma4":
        v.clean_spaces = True
    else:
        v.add_bos, v.clean_spaces = pre_type.add_bos, pre_type.clean_spaces
    v.add_space_prefix = _meta(md, types, path, "add_space_prefix", "bool", v.add_space_prefix)

    ids: dict[str, int | None] = {k: None for k, _ in _SPECIAL_KEYS}
    for k, default in _DEFAULT_IDS[model].items():
        ids[k] = default if default < n else None
    if pre_type is not None and pre_type.no_bos:
        ids["bos"] = None
    for k, key in _SPECIAL_KEYS:
        new = _meta(md, types, path, key, "uint")
        if new is None:
            continue
        if not 0 <= new < n:
            raise GGUFError(f"{path}: tokenizer.ggml.{key} = {new} is outside the vocabulary of {n} tokens; "
                            "the file's tokenizer metadata is corrupt")
        ids[k] = new
    v.ids = ids
    v.add_bos = _meta(md, types, path, "add_bos_token", "bool", v.add_bos)
    v.add_eos = _meta(md, types, path, "add_eos_token", "bool", v.add_eos)
    if model == "gemma4":
        v.add_bos = True  # llama.cpp always adds BOS for Gemma 4
    v.lowercase = _meta(md, types, path, "normalizer.lowercase", "bool", True)
    v.strip_accents = _meta(md, types, path, "normalizer.strip_accents", "bool", v.lowercase)
    if model == "bert" and (ids["bos"] is None or ids["sep"] is None or ids["unk"] is None):
        raise GGUFError(f"{path}: a 'bert' vocabulary needs CLS (bos), SEP and UNK tokens; re-convert the model")
    if v.add_bos and ids["bos"] is None:
        raise GGUFError(f"{path}: tokenizer.ggml.add_bos_token is set but the vocabulary has no BOS token")
    if v.add_eos and ids["eos"] is None:
        raise GGUFError(f"{path}: tokenizer.ggml.add_eos_token is set but the vocabulary has no EOS token")
    _infer_special(v, raw_pre or "", str(md.get("general.name", "")), str(md.get("general.architecture", "")))
    return v


def _infer_special(v: _Vocab, pre: str, model_name: str, arch: str) -> None:
    """Apply llama.cpp's rules that find end-of-generation, FIM and unused tokens by their text."""
    ids, attrs, tokens = v.ids, v.attrs, v.tokens
    index = {t: i for i, t in enumerate(tokens)}

    def mark_control(i: int) -> None:
        attrs[i] |= CONTROL

    if ids["eot"] is None:
        found = [index[t] for t in ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                                    "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>",
                                    "<end_of_utterance>") if t in index]
        if found:
            ids["eot"] = min(found)
            mark_control(ids["eot"])
    if ids["eom"] is None and "<|eom_id|>" in index:
        ids["eom"] = index["<|eom_id|>"]
        mark_control(ids["eom"])
    for k, texts in _FIM_TEXTS.items():
        if ids[k] is None:
            found = [index[t] for t in texts if t in index]
            if found:
                ids[k] = min(found)
                mark_control(ids[k])
    for i, t in enumerate(tokens):
        if attrs[i] & CONTROL and "unused" in t:
            attrs[i] |= UNUSED

    eog = {ids[k] for k in ("fim_pad", "fim_rep", "fim_sep") if ids[k] is not None}
    for t in _EOG_TEXTS:
        if t in index:
            eog.add(index[t])
            mark_control(index[t])
    for t in ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"):  # gpt-oss: always rendered
        if t in index:
            attrs[index[t]] = USER_DEFINED
    eog.update(ids[k] for k in ("eos", "eot", "eom") if ids[k] is not None)
    texts = {tokens[i]: i for i in eog}
    if "<|end|>" in texts and (("<|return|>" in texts and "<|call|>" in texts)
                               or ("<|calls|>" in texts and "<|flush|>" in texts)):
        eog.discard(texts["<|end|>"])  # o200k_harmony / solar-open: "<|end|>" ends a message, not generation
        attrs[texts["<|end|>"]] = USER_DEFINED
    if "</s>" in texts and ("<|tool_response>" in texts or "<|plamo:eos|>" in texts):
        eog.discard(texts["</s>"])  # an ordinary token in these vocabularies
        attrs[texts["</s>"]] = NORMAL
    v.eog = eog

    # Per-model strip rules for the text around some special tokens.
    name = model_name.lower()
    if any(s in pre for s in ("jina-v2-de", "jina-v2-es", "jina-v2-code")) or arch in ("nomic-bert-moe",
                                                                                         "jina-bert-v3"):
        if "<mask>" in index:
            attrs[index["<mask>"]] |= LSTRIP
    elif "phi-3" in name or "phi3" in name:
        for i, a in enumerate(attrs):
            if a & (CONTROL | USER_DEFINED | UNKNOWN):
                attrs[i] |= RSTRIP
        if "</s>" in index:
            attrs[index["</s>"]] |= RSTRIP
        for t in ("<unk>", "<s>", "<|endoftext|>"):
            if t in index:
                attrs[index[t]] &= ~RSTRIP
    elif "modern-bert" in name and "[MASK]" in index:
        attrs[index["[MASK]"]] |= LSTRIP


def _piece(v: _Vocab, i: int) -> bytes:
    """The bytes llama.cpp renders for token `i` when special tokens are rendered."""
    text, a = v.tokens[i], v.attrs[i]
    if a & (UNKNOWN | CONTROL | USER_DEFINED):
        return text.encode()
    if a & NORMAL:
        if v.model == "gpt2":
            out = bytearray()
            for c in text:
                b = _BYTE_OF_CHAR.get(c)
                if b is None:  # not a byte-level character: llama.cpp writes this marker
                    out += f"[UNK_BYTE_0x{c.encode().hex()}{text}]".encode()
                else:
                    out.append(b)
            return bytes(out)
        return text.replace(SPACE_ESCAPE, " ").encode()
    if a & BYTE:
        digits = re.match(r"[0-9a-fA-F]*", text[3:5]).group()
        return bytes([int(digits, 16) if digits else 0])
    return b""


# ---- merge models -------------------------------------------------------------------------------
def _usable_merges(merges: Sequence[tuple[str, str]], vocab: dict[str, int]) -> list[tuple[str, str]]:
    """The merges HF's BPE accepts: both parts and the result are tokens (others can never fire usefully)."""
    return [(a, b) for a, b in merges if a in vocab and b in vocab and a + b in vocab]


class _ByteLevelBPE:
    """Byte-level BPE ("gpt2"): llama.cpp's regex splits, GPT-2 byte alphabet, the file's merges."""

    def __init__(self, v: _Vocab, vocab: dict[str, int]):
        pre = _PRE_TYPES[v.pre]
        model = hf.models.BPE(vocab=vocab, merges=_usable_merges(v.merges, vocab), ignore_merges=pre.ignore_merges)
        self.tok = hf.Tokenizer(model)
        splits = [hf.pre_tokenizers.Split(hf.Regex(rx), behavior="isolated") for rx in _SPLITS[pre.splits]]
        self.tok.pre_tokenizer = hf.pre_tokenizers.Sequence(
            splits + [hf.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [self.tok.encode(t, add_special_tokens=False).ids for t in texts]


class _SentencePiece:
    """SentencePiece ("llama"): llama.cpp's score-ordered bigram merging, as BPE with derived merges."""

    def __init__(self, v: _Vocab, vocab: dict[str, int]):
        self.space_prefix = v.add_space_prefix
        # Every split of every token into two tokens is a merge, ranked by the merged token's score.
        # llama.cpp breaks score ties by position; the tie-break here (token id, split point) only
        # differs where two different merges of equal score overlap, which real vocabularies avoid
        # (their ordinary tokens have distinct scores).
        scores = v.scores.tolist()
        ranked = []
        for t, i in vocab.items():
            for k in range(1, len(t)):
                a, b = t[:k], t[k:]
                if a in vocab and b in vocab:
                    ranked.append((-scores[i], i, k, a, b))
        ranked.sort()
        unk = v.ids["unk"]
        model = hf.models.BPE(vocab=vocab, merges=[(a, b) for *_, a, b in ranked], byte_fallback=True,
                              unk_token=v.tokens[unk] if unk is not None else None)
        self.tok = hf.Tokenizer(model)

    def encode(self, texts: list[str]) -> list[list[int]]:
        prefix = " " if self.space_prefix else ""
        texts = [(prefix + t).replace(" ", SPACE_ESCAPE) for t in texts]
        return [self.tok.encode(t, add_special_tokens=False).ids for t in texts]


class _SentencePieceBPE:
    """Gemma 4's BPE: the file's merges over raw UTF-8 with "▁" for spaces, split at newline runs."""

    def __init__(self, v: _Vocab, vocab: dict[str, int]):
        self.vocab = vocab
        self.tok = hf.Tokenizer(hf.models.BPE(vocab=vocab, merges=_usable_merges(v.merges, vocab),
                                              byte_fallback=True))

    def encode(self, texts: list[str]) -> list[list[int]]:
        words = [re.findall(r"[^\n]+|\n+", t.replace(" ", SPACE_ESCAPE)) for t in texts]
        todo = [w for ws in words for w in ws if not (w[0] == "\n" and w in self.vocab)]
        merged = (self.tok.encode(w, add_special_tokens=False) for w in todo)
        out = []
        for ws in words:
            ids: list[int] = []
            for w in ws:
                if w[0] == "\n" and w in self.vocab:  # a whole newline run that is a token skips the merges
                    ids.append(self.vocab[w])
                else:
                    ids.extend(next(merged).ids)
            out.append(ids)
        return out


class _WordPiece:
    """BERT's WordPiece ("bert"): llama.cpp's normalization and word split, then greedy longest match.

    The file spells word-initial pieces with a leading "▁" and continuations bare; HF's WordPiece
    spells them bare and with "##". llama.cpp matches the vocabulary against "▁" + word, so inside a
    word that holds a "▁" every token can match as a continuation, "▁"-initial ones included.
    """

    def __init__(self, v: _Vocab, vocab: dict[str, int]):
        pieces: dict[str, int] = {}
        for t, i in vocab.items():
            pieces["##" + t] = i
            if t.startswith(SPACE_ESCAPE) and len(t) > 1:
                pieces[t[1:]] = i
        unk = v.tokens[v.ids["unk"]]
        pieces.setdefault(unk, v.ids["unk"])
        self.tok = hf.Tokenizer(hf.models.WordPiece(vocab=pieces, unk_token=unk, max_input_chars_per_word=1 << 30))
        self.lowercase, self.strip_accents = v.lowercase, v.strip_accents

    def words(self, text: str) -> list[str]:
        """llama.cpp's WordPiece pre-processing: clean, normalize, split at spaces and punctuation."""
        words, word = [], []
        for c in text:
            if self.strip_accents:
                c = unicodedata.normalize("NFD", c)[0]  # llama.cpp keeps the first code point only
            if c in _SPACES:
                if word:
                    words.append("".join(word))
                    word = []
                continue
            cat = unicodedata.category(c)
            if c in "\x00\ufffd" or cat in ("Cc", "Cf", "Co", "Cs") or (self.strip_accents and cat[0] == "M"):
                continue
            piece = c.lower()[0] if self.lowercase else c
            if cat[0] == "P" or (c < "\x7f" and cat[0] == "S") or _is_cjk(ord(c)):
                if word:
                    words.append("".join(word))
                    word = []
                words.append(piece)
            else:
                word.append(piece)
        if word:
            words.append("".join(word))
        return words

    def encode(self, texts: list[str]) -> list[list[int]]:
        out = []
        for t in texts:
            words = self.words(t)
            out.append(self.tok.encode(words, is_pretokenized=True, add_special_tokens=False).ids if words else [])
        return out


# llama.cpp's white space (Unicode White_Space), and BERT's CJK ranges as llama.cpp has them.
_SPACES = frozenset("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
                    "\u2028\u2029\u202f\u205f\u3000")
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
               (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _is_cjk(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


_ENCODERS = {"gpt2": _ByteLevelBPE, "llama": _SentencePiece, "gemma4": _SentencePieceBPE, "bert": _WordPiece}


# ---- the tokenizer -------------------------------------------------------------------------------
class Tokenizer:
    """A GGUF model's tokenizer: `encode` and `decode` give the ids and text llama.cpp gives."""

    def __init__(self, vocab: _Vocab):
        self._v = vocab
        self._index = {t: i for i, t in enumerate(vocab.tokens)}
        self._encoder = _ENCODERS[vocab.model](vocab, self._index)
        self._pieces = [_piece(vocab, i) for i in range(len(vocab.tokens))]
        specials = [i for i, a in enumerate(vocab.attrs) if a & (CONTROL | USER_DEFINED | UNKNOWN)]
        specials.sort(key=lambda i: -len(vocab.tokens[i].encode()))  # llama.cpp tries longer texts first
        self._specials = [(vocab.tokens[i], i, vocab.attrs[i]) for i in specials]
        self._specials_by_first: dict[str, list[int]] = {}  # first character -> indexes into _specials
        for k, (tok, _, _) in enumerate(self._specials):
            self._specials_by_first.setdefault(tok[0], []).append(k)
        self.n_vocab: int = len(vocab.tokens)
        self.bos_id: int | None = vocab.ids["bos"]
        self.eos_id: int | None = vocab.ids["eos"]
        self.add_bos: bool = vocab.add_bos
        self.add_eos: bool = vocab.add_eos
        self.eog_ids: frozenset[int] = frozenset(vocab.eog)
        self.model_type: str = vocab.model
        self.pre_type: str = vocab.pre
        # what llama.cpp appends when it adds special tokens: SEP for BERT, else EOS if the model asks
        self._end_id = vocab.ids["sep"] if vocab.model == "bert" else (self.eos_id if self.add_eos else None)

    @classmethod
    def from_gguf(cls, source: str | os.PathLike | GGUFFile) -> Tokenizer:
        """Build the tokenizer described by a GGUF file's metadata (a model or a vocab-only file)."""
        if isinstance(source, GGUFFile):
            return cls(_read_vocab(source.metadata, source.metadata_types, source.path))
        with GGUFFile(source) as f:
            return cls(_read_vocab(f.metadata, f.metadata_types, f.path))

    # ---- text -> ids --------------------------------------------------------------------------
    def encode(self, text: str, add_bos: bool | None = None, special: bool = True) -> list[int]:
        """Token ids of `text`, as llama.cpp's llama_tokenize.

        `add_bos`: None follows the model (BOS if its add_bos flag is set, EOS if its add_eos flag is),
        False adds neither, True adds BOS whatever the flag (and EOS as the model says).
        `special`: match control tokens written in the text (user-defined ones always match).
        """
        if not isinstance(text, str):
            raise TypeError(f"encode() takes a str, not {type(text).__name__}")
        if add_bos and self.bos_id is None:
            raise ValueError("this vocabulary has no BOS token; call encode() with add_bos=False or None")
        # Lone surrogates have no UTF-8 form (llama-cpp-python refuses them); they become U+FFFD here.
        text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace") if _has_surrogate(text) else text
        parts = self._partition(text, special)
        texts = [p for p in parts if isinstance(p, str)]
        encoded = iter(self._encoder.encode(texts)) if texts else iter(())
        ids = [self.bos_id] if (self.add_bos if add_bos is None else add_bos) else []
        for p in parts:
            if isinstance(p, str):
                ids.extend(next(encoded))
            else:
                ids.append(p)
        if add_bos is not False and self._end_id is not None:
            ids.append(self._end_id)
        return ids

    def _partition(self, text: str, special: bool) -> list[str | int]:
        """Cut special-token texts out of `text`, as llama.cpp's tokenizer_st_partition (longest first)."""
        if not text:
            return []
        parts: list[str | int] = [text]
        candidates = sorted(k for c in set(text) for k in self._specials_by_first.get(c, ()))
        for k in candidates:
            tok, tid, attr = self._specials[k]
            if (not special and attr & (CONTROL | UNKNOWN)) or tok not in text:
                continue
            out: list[str | int] = []
            for p in parts:
                if isinstance(p, int) or tok not in p:
                    out.append(p)
                    continue
                start = 0
                while True:
                    at = p.find(tok, start)
                    if at < 0:
                        if start < len(p):
                            out.append(p[start:])
                        break
                    left = p[start:at]
                    if attr & LSTRIP:
                        left = left.rstrip(_C_SPACE)
                    if left:
                        out.append(left)
                    out.append(tid)
                    start = at + len(tok)
                    if attr & RSTRIP:
                        while start < len(p) and p[start] in _C_SPACE:
                            start += 1
            parts = out
        return parts

    # ---- ids -> text --------------------------------------------------------------------------
    def token_bytes(self, id: int, special: bool = False) -> bytes:
        """The raw bytes of one token's piece (control and unknown tokens are empty unless `special`)."""
        i = self._check_id(id)
        if not special and self._v.attrs[i] & (CONTROL | UNKNOWN):
            return b""
        return self._pieces[i]

    def decode(self, ids: Sequence[int], special: bool = False) -> str:
        """Text of `ids`, as llama.cpp's llama_detokenize(remove_special=False, unparse_special=special)."""
        out = bytearray()
        for n, id in enumerate(ids):
            piece = self.token_bytes(id, special)
            if n == 0 and self._v.add_space_prefix and piece[:1] == b" ":
                piece = piece[1:]  # the space the tokenizer put in front of the text
            out += piece
        if self._v.clean_spaces:
            out = _clean_up_spaces(out)
        return out.decode("utf-8", "replace")

    def token_to_id(self, text: str) -> int | None:
        """The id of the vocabulary entry spelled exactly `text`, or None."""
        return self._index.get(text)

    def id_to_token(self, id: int) -> str:
        """The vocabulary entry of `id` (as stored in the file, e.g. 'Ġthe' or '▁the')."""
        return self._v.tokens[self._check_id(id)]

    def _check_id(self, id: int) -> int:
        i = int(id)
        if not 0 <= i < self.n_vocab or i != id:
            raise ValueError(f"token id {id!r} is outside the vocabulary (0..{self.n_vocab - 1})")
        return i

    def __repr__(self) -> str:
        return f"Tokenizer({self.model_type!r}, pre={self.pre_type!r}, n_vocab={self.n_vocab})"


_C_SPACE = " \t\n\v\f\r"  # what C's isspace() accepts


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def _clean_up_spaces(buf: bytearray) -> bytearray:
    """llama.cpp's clean_up_tokenization_spaces: three in-place passes over the bytes."""
    sp, ap = ord(" "), ord("'")
    # 1: drop a space before ? ! . ,
    out = bytearray()
    for i, x in enumerate(buf):
        if i and buf[i - 1] == sp and x in b"?!.," and out:
            out.pop()
        out.append(x)
    # 2: " ' " -> "'" (the apostrophe loses both spaces; the next character is then not seen as a space)
    buf, out, i = out, bytearray(), 0
    if buf:
        out.append(buf[0])
    i = 1
    prev = buf[0] if buf else 0
    while i < len(buf):
        x = buf[i]
        if x == ap and i + 1 < len(buf) and prev == sp and buf[i + 1] == sp:
            out.pop()
            out.append(x)
            prev, i = 0, i + 2  # the skipped space reads as NUL for the next check
            continue
        out.append(x)
        prev, i = x, i + 1
    # 3: " 's", " 'm", " 're", " 've" lose their space
    buf, out = out, bytearray()
    for i, x in enumerate(buf):
        if i and buf[i - 1] == sp and x == ap and i + 1 < len(buf) and out:
            x1 = buf[i + 1]
            x2 = buf[i + 2] if i + 2 < len(buf) else None
            if x1 in b"sm" or (x2 is not None and (x1, x2) in ((ord("r"), ord("e")), (ord("v"), ord("e")))):
                out.pop()
        out.append(x)
    return out
