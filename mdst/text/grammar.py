"""Constrained decoding: JSON schemas, JSON mode and GBNF/Lark grammars as a token mask per step.

The grammar engine is llguidance: it compiles the constraint against the model's vocabulary (token
bytes from mdst's own tokenizer, control tokens marked as special) and, at each step, writes a
bitmask of the tokens that may come next (ceil(n_vocab / 32) u32 words, bit i of word w: token
32 w + i). The mask goes with the step's draw (mdst.text.sampling.Draw), so the pick (the GPU's
kernels, or Sampler.pick on the host) sees a forbidden token as -inf; the generation loop feeds the
picked token back. The constraint is `done` when the grammar admits nothing more, which ends generation
even without an end-of-generation token (those are allowed whenever the grammar is complete).
"""

from __future__ import annotations

import json
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import MdstError
from .sampling import allowed_tokens, mask_words

if TYPE_CHECKING:
    import llguidance

    from .tokenizer import Tokenizer

# Compact JSON with one space after ',' and ':' (as models write it), and no free whitespace, which a
# small model can otherwise fill forever.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
RESPONSE_FORMATS = ("text", "json_object", "json_schema")

_engine_tokenizers: "weakref.WeakKeyDictionary[Tokenizer, llguidance.LLTokenizer]" = weakref.WeakKeyDictionary()


def _llguidance() -> Any:
    try:
        import llguidance
    except ImportError:   # a dependency of mdst; only a broken install lacks it
        raise ImportError("structured output needs the llguidance package: pip install llguidance") from None
    return llguidance


def grammar_for(response_format: Any = None, grammar: Any = None) -> str | None:
    """The llguidance grammar for generate()'s `response_format` and `grammar` (None: unconstrained).

    response_format: None, {"type": "text"}, {"type": "json_object"} or {"type": "json_schema",
    "json_schema": {"name": ..., "schema": {...}}} (OpenAI's); grammar: GBNF or Lark text.
    """
    llg = _llguidance()
    if grammar is not None:
        if not isinstance(grammar, str) or not grammar.strip():
            raise TypeError("grammar must be GBNF or Lark text (a non-empty str)")
        if _response_type(response_format) != "text":
            raise ValueError("grammar and response_format both constrain the output; pass one of them")
        try:
            rules = llg.grammar_from("grammar", grammar)
        except Exception as e:   # the converter raises bare Exceptions for undefined rules
            raise ValueError(f"grammar is not valid GBNF or Lark: {e}") from None
        return _checked(rules, "grammar is not valid GBNF or Lark")
    kind = _response_type(response_format)
    if kind == "text":
        return None
    schema: Any = {"type": "object"}
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), (dict, bool)):
            raise ValueError('response_format json_schema must be {"type": "json_schema", "json_schema": '
                             '{"name": ..., "schema": {...}}} with the schema a JSON object')
        schema = spec.get("schema", {})
    why = "response_format has a JSON schema that is not valid or not supported"
    try:
        rules = llg.LLMatcher.grammar_from_json_schema(json.dumps(schema), overrides=JSON_OPTIONS)
    except ValueError as e:
        raise ValueError(f"{why}: {e}") from None
    return _checked(rules, why)


def lark_rules(lark: str, why: str) -> str:
    """The llguidance grammar of Lark text built by mdst (a forced tool call); ValueError saying `why` if the
    engine refuses it (a tool's JSON schema it cannot use)."""
    try:
        rules = _llguidance().LLMatcher.grammar_from_lark(lark)
    except ValueError as e:
        raise ValueError(f"{why}: {e}") from None
    return _checked(rules, why)


def _checked(rules: str, why: str) -> str:
    """`rules`, or a ValueError saying `why` and the engine's message."""
    failed, messages = _llguidance().LLMatcher.validate_grammar_with_warnings(rules)
    if failed:
        raise ValueError(f"{why}: {messages[0].strip()}")
    return rules


def _response_type(response_format: Any) -> str:
    if response_format is None:
        return "text"
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind not in RESPONSE_FORMATS:
        raise ValueError(f"response_format must be an object with type one of {list(RESPONSE_FORMATS)}, got "
                         f"{json.dumps(response_format, default=repr)}")
    return kind


def engine_tokenizer(tokenizer: "Tokenizer") -> "llguidance.LLTokenizer":
    """llguidance's view of `tokenizer` (each token's bytes, control tokens marked, the end-of-generation
    ids); built once per tokenizer (0.1 s for a 49k vocabulary)."""
    got = _engine_tokenizers.get(tokenizer)
    if got is None:
        llg = _llguidance()
        ends = sorted(tokenizer.eog_ids) or ([tokenizer.eos_id] if tokenizer.eos_id is not None else [])
        if not ends:
            raise ValueError("this vocabulary has no end-of-generation token, which constrained decoding needs")
        got = llg.LLTokenizer(llg.TokenizerWrapper(_TokenList(tokenizer, ends[0])), eos_token=ends)
        _engine_tokenizers[tokenizer] = got
    return got


class _TokenList:
    """What llguidance's TokenizerWrapper reads: token bytes (control tokens as 0xFF + their text, its
    convention for special tokens), BOS/EOS and an encoder of text."""

    def __init__(self, tokenizer: "Tokenizer", eos: int):
        self._tokenizer = tokenizer
        plain = [tokenizer.token_bytes(i) for i in range(tokenizer.n_vocab)]
        shown = [tokenizer.token_bytes(i, special=True) for i in range(tokenizer.n_vocab)]
        self.tokens = [p if p or not s else b"\xff" + s for p, s in zip(plain, shown)]
        self.special_token_ids = [i for i, (p, s) in enumerate(zip(plain, shown)) if s and not p]
        self.eos_token_id = eos
        self.bos_token_id = tokenizer.bos_id

    def __call__(self, text: bytes | str) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return self._tokenizer.encode(text, add_bos=False, special=False)


class Constraint:
    """One generation's grammar state: the mask of allowed next tokens, fed each picked token."""

    def __init__(self, grammar: str, tokenizer: "Tokenizer"):
        llg = _llguidance()
        self.n_vocab = tokenizer.n_vocab
        self._matcher = llg.LLMatcher(engine_tokenizer(tokenizer), grammar, log_level=0)
        if self._matcher.is_error():
            raise ValueError(f"the grammar or JSON schema cannot be used: {self._matcher.get_error()}")
        self._words = np.zeros(mask_words(self.n_vocab), np.uint32)

    def bitmask(self) -> np.ndarray:
        """The allowed next tokens: u32 words, bit i of word w set when token 32 w + i may come next."""
        self._matcher.unsafe_compute_mask_ptr(self._words.ctypes.data, self._words.nbytes)
        self._check()
        return self._words

    def allowed(self) -> np.ndarray:
        """The allowed next tokens as a bool per token id."""
        return allowed_tokens(self.bitmask(), self.n_vocab)

    def advance(self, token: int) -> None:
        """Feed the picked token (one the mask allowed)."""
        self._matcher.consume_token(int(token))
        self._check()

    @property
    def done(self) -> bool:
        """Whether the grammar admits no more tokens (the output is complete)."""
        return self._matcher.is_stopped()

    def _check(self) -> None:
        if self._matcher.is_error():
            raise MdstError(f"the grammar engine failed: {self._matcher.get_error()}")
