"""Chat templates: the prompt text a model expects for a conversation, rendered as Hugging Face renders it.

`render(template, messages, ...)` returns exactly what transformers' `apply_chat_template(..., tokenize=False)`
returns for the same template and inputs: the same jinja2 settings (`trim_blocks`, `lstrip_blocks`, no
autoescape, one trailing newline dropped), the same extras (`raise_exception(msg)`, `strftime_now(fmt)`, a
`tojson` filter that keeps non-ASCII text and takes `indent`/`separators`/`sort_keys`, `{% break %}` and
`{% continue %}`, `{% generation %}`, a `dict` and a `namespace` that refuse underscore names) and the same input
clean-up (message keys whose value is None are dropped, `reasoning_content`/`thinking`/`reasoning` are aliased,
everything is rebuilt from plain JSON types, `tools` and `documents` default to None).

Templates come from model files, so they are untrusted code. They run in jinja2's ImmutableSandboxedEnvironment
(no underscore attributes, no mutating methods; here an unsafe attribute raises at once rather than becoming an
undefined value that prints as ""), with these bounds on top (`LIMITS`); breaking one raises TemplateError:

- source: at most `template_chars` characters and `template_depth` levels of syntax nesting, checked before
  Python compiles the generated code (CPython's compiler recurses in C);
- time: a `seconds` deadline for compiling and one for rendering, checked at every token parsed, loop iteration,
  call, filter, test, attribute lookup, operator, literal and piece of output;
- size: no string the template builds may pass `value_chars` characters, no list or dict `value_chars` as text
  (shared references counted as often as repr() prints them), no integer `int_bits` bits, no container `nesting`
  levels, and the output may not pass `output_chars`. Where a result's size is predictable it is checked before
  the operation runs (`'x' * n`, `+`, `~`, `%` and `format()` widths, `range`, `n ** m`, `center`, `indent`,
  `replace`, `join`, `batch`, `str.ljust`, `int.to_bytes`, `tojson(indent=...)`, `lipsum`, ...), so nothing
  large is allocated first;
- memory: every value built (operators, calls, filters and their lazy items, slices, literals, call arguments,
  `{% set %}`-block and macro output) is charged, in characters or 8 per item, against `work`; so many values
  that are each allowed can't add up. The one refund: a large value replaced in a namespace attribute with no
  other reference left (it is freed there and then) gives back what it was charged, which keeps the common
  `{% set ns.out = ns.out ~ piece %}` pattern linear rather than quadratic in the budget.

What is not bounded cheaply, and so only bounded indirectly:

- A builtin operation runs to completion once started; the deadline is checked between operations. Their inputs
  are capped so the worst case stays well under a second: sort, dictsort, groupby, wordwrap (quadratic in
  CPython's textwrap), urlize, xmlattr, urlencode and slice take at most `slow_items` items, pprint ten times
  that as text, and everything else is linear in a value of at most `value_chars`.
- Sizes are counted in characters and items, not bytes: text outside Latin-1 takes 2-4 bytes a character, and
  a few operations (escape, encode, repr of a string) can briefly make a value several times larger before the
  check on their result fails. Values that are never stored (a loop variable, a temporary) are charged but
  their memory is freed, so the budget over-counts: it is an upper bound on what a render can hold at once.
- The conversation is trusted: its size is whatever the caller passes (only its nesting depth is checked).
- Recursive macros are bounded by Python's recursion limit; a host that raises that limit lets templates
  recurse deeper.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import inspect
import itertools
import json
import re
import sys
import time
import traceback
import types
from collections.abc import ItemsView, Iterator, KeysView, Mapping, Sequence, ValuesView
from datetime import datetime
from typing import Any, Callable

import jinja2
import jinja2.ext
import jinja2.nodes as nodes
import jinja2.sandbox
import jinja2.utils
import numpy as np
from jinja2.compiler import CodeGenerator
from jinja2.filters import make_attrgetter
from jinja2.runtime import markup_join, str_join
from markupsafe import EscapeFormatter, Markup

from ..errors import GGUFError, MdstError
from ..format.gguf import GGUFFile

__all__ = ["LIMITS", "SandboxLimits", "TemplateError", "render", "require_template", "special_tokens",
           "template_from_gguf"]


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    """The bounds every chat template compile and render runs under (see the module docstring)."""

    template_chars: int = 256 * 1024       # largest template source; real ones are under 20 KB
    template_depth: int = 200              # deepest nesting of the parsed template's syntax tree
    seconds: float = 2.0                   # wall-clock deadline of one compile or one render
    output_chars: int = 4 * 1024 * 1024    # longest rendered prompt
    value_chars: int = 4 * 1024 * 1024     # longest string/list/dict (as text) a template may build
    work: int = 64 * 1024 * 1024           # characters + 8 per item, summed over everything built
    range_items: int = 100_000             # longest range()
    int_bits: int = 16_384                 # largest integer `*` and `**` may produce
    nesting: int = 100                     # deepest nesting of containers, built or passed in
    slow_items: int = 100_000              # largest input of the superlinear or per-item-Python filters


LIMITS = SandboxLimits()
_MIN_JINJA = (3, 1, 6)  # older releases have known sandbox escapes (format_map, |attr)
_TEMPLATE_KEY = "tokenizer.chat_template"
_SPECIAL_TOKEN_KEYS = {
    "bos_token": "tokenizer.ggml.bos_token_id",
    "eos_token": "tokenizer.ggml.eos_token_id",
    "unk_token": "tokenizer.ggml.unknown_token_id",
    "sep_token": "tokenizer.ggml.seperator_token_id",  # llama.cpp's spelling
    "pad_token": "tokenizer.ggml.padding_token_id",
    "cls_token": "tokenizer.ggml.cls_token_id",
    "mask_token": "tokenizer.ggml.mask_token_id",
}
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")  # transformers' order
_REFUND_MIN = 4096  # smallest cost recorded for a refund (smaller values are never refunded)


class TemplateError(MdstError, ValueError):
    """A chat template could not be compiled or rendered: bad syntax, raise_exception(), an unsafe operation,
    a sandbox limit, or a model without a template."""


class _LimitExceeded(BaseException):
    """A sandbox bound was hit. A BaseException, so no `except Exception` in jinja2 or a filter swallows it."""


class _TemplateRaised(Exception):
    """The template called raise_exception()."""


# ---- the per-render budget ----------------------------------------------------------------------------------

class _Budget:
    """Deadline and work left of the compile or render running in this context."""

    __slots__ = ("deadline", "work_left", "refundable")

    def __init__(self) -> None:
        self.deadline = time.monotonic() + LIMITS.seconds
        self.work_left = LIMITS.work
        self.refundable: dict[int, int] = {}  # id -> cost, of the large values charged so far

    def tick(self) -> None:
        """Fail once the deadline has passed."""
        if time.monotonic() > self.deadline:
            raise _LimitExceeded(f"it ran longer than {LIMITS.seconds:g} s")

    def charge(self, units: int) -> None:
        """Count `units` of built data against the work budget."""
        self.work_left -= units
        if self.work_left < 0:
            raise _LimitExceeded(f"it built more than {LIMITS.work} characters and items in total")

    def refund(self, value: Any) -> None:
        """Give back the recorded cost of a value that is being freed (nothing for a value never charged)."""
        self.work_left += self.refundable.pop(id(value), 0)


_BUDGET: contextvars.ContextVar[_Budget] = contextvars.ContextVar("mdst_chat_budget")


def _budget() -> _Budget:
    return _BUDGET.get()


def _require_size(n: int, what: str) -> None:
    if n > LIMITS.value_chars:
        raise _LimitExceeded(f"{what} would be {n} characters or items long (the limit is {LIMITS.value_chars})")


def _require_slow(n: int, what: str) -> None:
    if n > LIMITS.slow_items:
        raise _LimitExceeded(f"{what} has {n} items (the limit for it is {LIMITS.slow_items})")


# ---- how big a value is as text ----------------------------------------------------------------------------

_CONTAINERS = (list, tuple, set, frozenset, dict, KeysView, ValuesView, ItemsView, jinja2.utils.Namespace)


def _leaf_weight(value: Any) -> int | None:
    """Upper estimate of len(repr(value)) for a non-container; None for a container."""
    if isinstance(value, (str, bytes, bytearray)):
        return len(value) + 3
    if isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return value.bit_length() // 3 + 2
    if isinstance(value, float) or value is None:
        return 24
    if isinstance(value, _CONTAINERS):
        return None
    return 100  # object reprs: "<Macro 'x'>", "<... object at 0x...>", Undefined


def _children(value: Any, limit: int, what: str) -> Iterator[Any]:
    if isinstance(value, jinja2.utils.Namespace):
        value = value._Namespace__attrs
    if 4 * len(value) > limit:  # every item adds at least 4 to the estimate: fail without walking them
        raise _LimitExceeded(f"{what} would be more than {limit} characters long as text")
    if isinstance(value, dict):
        return itertools.chain.from_iterable(value.items())
    return iter(value)


def _text_weight(value: Any, limit: int, what: str) -> int:
    """Upper estimate of len(repr(value)), failing once it passes `limit` or nests deeper than LIMITS.nesting.

    Shared sub-containers are measured once but counted every time they appear, as repr() would print them;
    a container that contains itself counts as "[...]". Iterative: depth costs no Python stack.
    """
    weight = _leaf_weight(value)
    if weight is not None:
        if weight > limit:
            raise _LimitExceeded(f"{what} would be more than {limit} characters long as text")
        return weight
    budget = _budget()
    measured: dict[int, int] = {id(value): 5}
    alive = [value]  # keeps transient containers (dict-view items) alive so their ids stay unique
    stack = [[value, _children(value, limit, what), 2]]  # [container, its remaining children, its weight so far]
    while stack:
        top = stack[-1]
        total, deeper = top[2], None
        for child in top[1]:
            kind = type(child)  # the common leaves first, without a call
            weight = (len(child) + 3 if kind is str else child.bit_length() // 3 + 2 if kind is int
                      else _leaf_weight(child))
            if weight is None:
                weight = measured.get(id(child))
                if weight is None:
                    deeper = child
                    break
            total += weight + 2
            if total > limit:
                raise _LimitExceeded(f"{what} would be more than {limit} characters long as text")
        top[2] = total
        if deeper is not None:  # measure the child first; this container's iterator resumes after it
            if len(stack) >= LIMITS.nesting:
                raise _LimitExceeded(f"{what} nests deeper than {LIMITS.nesting} levels")
            budget.tick()
            measured[id(deeper)] = 5
            alive.append(deeper)
            stack.append([deeper, _children(deeper, limit, what), 2])
            continue
        stack.pop()
        measured[id(top[0])] = total
        if stack:
            stack[-1][2] += total + 2
            if stack[-1][2] > limit:
                raise _LimitExceeded(f"{what} would be more than {limit} characters long as text")
    return total


def _text_len(value: Any, what: str) -> int:
    """Length of str(value), exact for strings and estimated from above for everything else."""
    if isinstance(value, str):
        return len(value)
    return _text_weight(value, LIMITS.value_chars, what)


def _cost(value: Any) -> int:
    """What building `value` is charged: its characters, or 8 per item of a container (its pointers)."""
    if isinstance(value, (str, bytes, bytearray)):
        return len(value)
    if isinstance(value, _CONTAINERS) and not isinstance(value, jinja2.utils.Namespace):
        return 8 * len(value)
    return 0


def _accept(value: Any, what: str) -> Any:
    """Check a value the template just built against the size limits, charge it, and return it."""
    if isinstance(value, (str, bytes, bytearray)):
        _require_size(len(value), what)
    elif isinstance(value, _CONTAINERS):
        _text_weight(value, LIMITS.value_chars, what)
    cost = _cost(value)
    if cost:
        budget = _budget()
        budget.charge(cost)
        if cost >= _REFUND_MIN:
            budget.refundable[id(value)] = cost
    return value


def _accept_items(items: Iterator[Any], what: str) -> Iterator[Any]:
    """A filter's lazy result, whose items are checked and charged as they are made."""
    for item in items:
        yield _accept(item, what)


# ---- checks made before an operation runs ------------------------------------------------------------------

_PRINTF_SPEC = re.compile(
    r"%(?:\((?P<key>[^)]*)\))?[-#0 +]*(?P<width>\*|\d+)?(?:\.(?P<precision>\*|\d+))?[hlL]?(?P<conversion>.?)",
    re.S)
_FLOAT_TEXT = 330  # "%f" of the largest float is 316 characters


def _number(digits: str) -> int:
    return LIMITS.value_chars + 1 if len(digits) > 12 else int(digits)


def _check_printf(template: str, args: Any) -> None:
    """Fail if `template % args` could be longer than value_chars (counting widths, precisions and arguments)."""
    positional = args if isinstance(args, tuple) else (args,)
    index, total = 0, len(template)
    for spec in _PRINTF_SPEC.finditer(template):
        if spec["conversion"] == "%":
            continue
        for part in ("width", "precision"):
            field = spec[part]
            if field == "*":
                star = positional[index] if index < len(positional) else 0
                index += 1
                total += abs(star) if isinstance(star, int) else 0
            elif field:
                total += _number(field)
        if spec["key"] is not None:
            arg = args.get(spec["key"]) if isinstance(args, Mapping) else None
        else:
            arg = positional[index] if index < len(positional) else None
            index += 1
        total += _FLOAT_TEXT + _text_weight(arg, LIMITS.value_chars, "a '%' formatting argument")
        _require_size(total, "the result of '%' formatting")


def _check_binop(operator: str, left: Any, right: Any) -> None:
    sequences = (str, bytes, bytearray, list, tuple)
    if operator == "+":
        if isinstance(left, sequences) and isinstance(right, sequences):
            _require_size(len(left) + len(right), "the result of '+'")
    elif operator == "*":
        if isinstance(left, sequences) and isinstance(right, int):
            _require_size(len(left) * max(right, 0), "the result of '*'")
        elif isinstance(right, sequences) and isinstance(left, int):
            _require_size(len(right) * max(left, 0), "the result of '*'")
        elif isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > LIMITS.int_bits:
                raise _LimitExceeded(f"the product would have more than {LIMITS.int_bits} bits")
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
            if abs(left).bit_length() * right > LIMITS.int_bits:
                raise _LimitExceeded(f"the power would have more than {LIMITS.int_bits} bits")
    elif operator == "%" and isinstance(left, str):
        _check_printf(left, right)


def _replace_size(text: Any, old: Any, new: Any, count: Any) -> int:
    if not (isinstance(text, (str, bytes)) and isinstance(old, type(text)) and isinstance(new, type(text))):
        return 0  # the operation itself raises TypeError
    found = len(text) + 1 if not old else text.count(old)
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * max(0, len(new) - len(old))


def _check_text_method(method: Any, args: tuple, kwargs: dict) -> tuple:
    """Size check for the str/bytes/int methods whose result can be far larger than their input.

    Returns the arguments to call with (an iterable passed to join() is turned into a list first)."""
    owner, name = getattr(method, "__self__", None), getattr(method, "__name__", None)
    if not isinstance(owner, (str, bytes, bytearray, int)):
        return args
    if isinstance(owner, int):
        if name == "to_bytes":
            length = args[0] if args else kwargs.get("length", 1)
            if isinstance(length, int):
                _require_size(length, "the result of to_bytes()")
        return args
    what = f"the result of {name}()"
    if name in ("center", "ljust", "rjust", "zfill") and args and isinstance(args[0], int):
        _require_size(max(len(owner), args[0]), what)
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(size, int):
            tabs = owner.count("\t" if isinstance(owner, str) else b"\t")
            _require_size(len(owner) + tabs * max(size, 0), what)
    elif name == "replace" and len(args) >= 2:
        _require_size(_replace_size(owner, args[0], args[1], args[2] if len(args) > 2 else kwargs.get("count")),
                      what)
    elif name == "join" and args:
        items = list(args[0])
        _require_size(sum(len(x) for x in items if isinstance(x, (str, bytes, bytearray)))
                      + len(owner) * max(len(items) - 1, 0), what)
        return (items, *args[1:])
    elif name == "translate" and args and isinstance(owner, str):
        table = args[0]
        values = table.values() if isinstance(table, Mapping) else table if isinstance(table, (list, tuple)) else ()
        longest = max((len(v) for v in values if isinstance(v, str)), default=1)
        _require_size(len(owner) * max(longest, 1), what)
    return args


def _check_format_spec(spec: str) -> None:
    for digits in re.findall(r"\d+", spec):
        _require_size(_number(digits), "a format() field")


# ---- filters, tests and globals ---------------------------------------------------------------------------

def _materialize(arguments: dict, key: str, attribute_key: str | None = None) -> list:
    """Turn the filter's input into a list (applying its `attribute`), so it can be measured and still used."""
    items = arguments[key]
    if attribute_key is not None and arguments.get(attribute_key) is not None:
        env = arguments.get("environment") or arguments["eval_ctx"].environment
        items = map(make_attrgetter(env, arguments[attribute_key]), items)
        arguments[attribute_key] = None
    items = list(items)
    arguments[key] = items
    return items


def _check_center(a: dict) -> None:
    if isinstance(a["width"], int):
        _require_size(max(_text_len(a["value"], "center()'s input"), a["width"]), "the result of center()")


def _check_indent(a: dict) -> None:
    width, text = a["width"], a["s"]
    if isinstance(width, int):
        _require_size(width, "indent()'s width")
    step = width if isinstance(width, int) else len(width) if isinstance(width, str) else 0
    length = _text_len(text, "indent()'s input")
    lines = text.count("\n") + 1 if isinstance(text, str) else length + 1
    _require_size(length + lines * max(step, 0), "the result of indent()")


def _check_format(a: dict) -> None:
    value = a["value"] if isinstance(a["value"], str) else str(a["value"])
    _check_printf(value, a["kwargs"] or a["args"])


def _check_replace(a: dict) -> None:
    texts = [x if isinstance(x, str) else str(x) for x in (a["s"], a["old"], a["new"])]
    _require_size(_replace_size(*texts, a["count"]), "the result of replace()")


def _check_join(a: dict) -> None:
    items = _materialize(a, "value", "attribute")
    separator = a["d"] if isinstance(a["d"], str) else str(a["d"])
    _require_size(sum(_text_len(x, "a joined item") for x in items) + len(separator) * max(len(items) - 1, 0),
                  "the result of join()")


def _check_batch(a: dict) -> None:
    if isinstance(a["linecount"], int):
        _require_size(a["linecount"], "batch()'s line count")


def _check_slice(a: dict) -> None:
    if isinstance(a["slices"], int):
        _require_slow(a["slices"], "slice()'s slice count")


def _check_sum(a: dict) -> None:
    items = _materialize(a, "iterable", "attribute")
    start = a["start"]
    if isinstance(start, (int, float)):
        return
    # Summing sequences copies the running total at every step.
    total = sum(len(x) for x in itertools.chain((start,), items) if isinstance(x, (str, bytes, list, tuple)))
    _require_size(total, "the result of sum()")
    _budget().charge(len(items) * total)


def _slow_items(key: str) -> Callable[[dict], None]:
    def check(a: dict) -> None:
        value = a[key]
        if not hasattr(value, "__len__"):
            value = _materialize(a, key)
        _require_slow(len(value), "this filter's input")
    return check


def _slow_text(key: str) -> Callable[[dict], None]:
    def check(a: dict) -> None:
        _require_slow(_text_len(a[key], "this filter's input"), "this filter's input")
    return check


def _check_pprint(a: dict) -> None:
    _text_weight(a["value"], 10 * LIMITS.slow_items, "pprint()'s input")


_FILTER_CHECKS: dict[str, Callable[[dict], None]] = {
    "center": _check_center, "indent": _check_indent, "format": _check_format, "replace": _check_replace,
    "join": _check_join, "batch": _check_batch, "slice": _check_slice, "sum": _check_sum, "pprint": _check_pprint,
    "sort": _slow_items("value"), "dictsort": _slow_items("value"), "groupby": _slow_items("value"),
    "xmlattr": _slow_items("d"), "urlencode": _slow_items("value"), "wordwrap": _slow_text("s"),
    "urlize": _slow_text("value"),
}


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | str | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    """transformers' tojson (json.dumps without HTML escaping), built chunk by chunk under the limits."""
    if indent is not None:
        step = indent if isinstance(indent, int) else len(indent) if isinstance(indent, str) else 0
        _require_size(step * LIMITS.nesting, "tojson()'s indentation")
    encoder = json.JSONEncoder(ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                               sort_keys=sort_keys)
    budget, pieces, length = _budget(), [], 0
    for piece in encoder.iterencode(value):
        length += len(piece)
        _require_size(length, "the result of tojson()")
        budget.tick()
        pieces.append(piece)
    return "".join(pieces)


def _guard_filter(name: str, func: Callable) -> Callable:
    check = _FILTER_CHECKS.get(name)
    what = f"the result of the {name} filter"
    if check is not None:
        # jinja2's sync/async filters take an eval context their signature (the sync function's) doesn't show.
        target = inspect.unwrap(func)
        hidden = int(getattr(func, "jinja_pass_arg", None) is not None
                     and getattr(target, "jinja_pass_arg", None) is None)
        signature = inspect.signature(target)

    @functools.wraps(func)  # keeps jinja2's pass_context/pass_environment marker
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _budget().tick()
        if check is not None:
            bound = signature.bind(*args[hidden:], **kwargs)
            bound.apply_defaults()
            check(bound.arguments)
            args, kwargs = (*args[:hidden], *bound.args), bound.kwargs
        result = func(*args, **kwargs)
        if isinstance(result, Iterator):  # map, select, batch, ...: items can be new values too
            return _accept_items(result, what)
        return _accept(result, what)
    return guarded


def _guard_test(func: Callable) -> Callable:
    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _budget().tick()
        return func(*args, **kwargs)
    return guarded


def _range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > LIMITS.range_items:
        raise _LimitExceeded(f"range() of {len(numbers)} items (the limit is {LIMITS.range_items})")
    return numbers


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002 (jinja2's names)
    if isinstance(n, int) and isinstance(max, int):
        _require_slow(n * max, "lipsum()'s word count")
    return jinja2.utils.generate_lorem_ipsum(n=n, html=html, min=min, max=max)


def _raise_exception(message: Any) -> None:
    raise _TemplateRaised(message)


def _strftime_now(format: str) -> str:  # noqa: A002 (transformers' name)
    if isinstance(format, str):
        _require_size(16 * len(format), "strftime_now()'s result")  # "%c" is the longest expansion per character
    return datetime.now().strftime(format)


class _DictFactory:
    """The template's `dict`: builds dicts, but exposes nothing of the dict type (as in transformers)."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


class _Namespace(jinja2.utils.Namespace):
    """jinja2's namespace without underscore names (as in transformers), whose text form is charged as built."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # jinja2's signature trick: `namespace(self=1)` works
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _Namespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _Namespace._check_name(name)
        attrs = object.__getattribute__(self, "_Namespace__attrs")
        old = attrs.get(name)
        attrs[name] = value
        # `{% set ns.out = ns.out ~ piece %}` builds prompts; charging every copy would make that quadratic
        # pattern fail on long conversations. A replaced value that nothing else holds (the refcount counts
        # only `old` and getrefcount's argument) is freed now, so what it was charged is given back.
        if old is not None and sys.getrefcount(old) == 2:
            budget = _BUDGET.get(None)
            if budget is not None:
                budget.refund(old)

    def __repr__(self) -> str:
        # A namespace is the one container a template can change after it is put in a list, so its text
        # size can't be checked where the list is built; it is paid for each time it is printed instead.
        text = jinja2.utils.Namespace.__repr__(self)
        budget = _BUDGET.get(None)
        if budget is not None:
            budget.charge(len(text))
        return text

    @staticmethod
    def _check_name(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"a namespace can't hold the underscore name {name!r}")


class _ParseDeadline(jinja2.ext.Extension):
    """Checks the deadline at every token the parser reads (jinja2 parses with no hook of its own)."""

    def filter_stream(self, stream: Any) -> Iterator[Any]:
        budget = _budget()
        for token in stream:
            budget.tick()
            yield token


class _GenerationBlock(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}`: transformers' marker for assistant text; renders its body."""

    tags = {"generation"}

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Callable[[], str]) -> str:
        return caller()


# ---- the sandbox ------------------------------------------------------------------------------------------

class _BoundedFormatter(jinja2.sandbox.SandboxedFormatter):
    """str.format() for templates: each field's width is checked before it is formatted, the total after."""

    def __init__(self, env: jinja2.Environment, **kwargs: Any) -> None:
        super().__init__(env, **kwargs)
        self._length = 0

    def format_field(self, value: Any, format_spec: str) -> str:
        _check_format_spec(format_spec)
        text = super().format_field(value, format_spec)
        self._length += len(text)
        _require_size(self._length, "the result of format()")
        return text


class _BoundedEscapeFormatter(_BoundedFormatter, EscapeFormatter):
    pass


class _OutputBuffer(list):
    """Output of a `{% set %}` block, macro, call or filter block, charged to the work budget as it grows."""

    __slots__ = ()

    def append(self, piece: str) -> None:
        budget = _budget()
        budget.tick()
        budget.charge(len(piece) + 8)
        super().append(piece)

    def extend(self, pieces: Any) -> None:
        for piece in pieces:
            self.append(piece)


class _GuardedCodeGenerator(CodeGenerator):
    """jinja2's code generator, with the sandbox's hooks added where jinja2 has none: loops, `~`, literals and
    output buffers."""

    def buffer(self, frame: Any) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.output_buffer()")

    def visit_For(self, node: nodes.For, frame: Any) -> None:
        node.iter = nodes.Call(nodes.EnvironmentAttribute("checked_iter"), [node.iter], [], None, None,
                               lineno=node.iter.lineno).set_environment(self.environment)
        super().visit_For(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Any) -> None:
        self.write("environment.join_values(context, (")
        for part in node.nodes:
            self.visit(part, frame)
            self.write(", ")
        self.write("))")

    def _checked(self, visit: Callable, node: nodes.Node, frame: Any) -> None:
        self.write("environment.checked_literal(")
        visit(node, frame)
        self.write(")")

    def visit_Const(self, node: nodes.Const, frame: Any) -> None:
        if isinstance(node.value, (list, dict)):  # a folded literal, built afresh each time it runs
            self._checked(super().visit_Const, node, frame)
        else:
            super().visit_Const(node, frame)

    def visit_List(self, node: nodes.List, frame: Any) -> None:
        self._checked(super().visit_List, node, frame)

    def visit_Dict(self, node: nodes.Dict, frame: Any) -> None:
        self._checked(super().visit_Dict, node, frame)

    def visit_Tuple(self, node: nodes.Tuple, frame: Any) -> None:
        if node.ctx == "load":
            self._checked(super().visit_Tuple, node, frame)
        else:  # an assignment target
            super().visit_Tuple(node, frame)


class _ChatEnvironment(jinja2.sandbox.ImmutableSandboxedEnvironment):
    """transformers' chat template environment, with every operation that can grow or loop bounded."""

    code_generator_class = _GuardedCodeGenerator
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})  # all: each result is checked

    def __init__(self) -> None:
        super().__init__(trim_blocks=True, lstrip_blocks=True,
                         extensions=[jinja2.ext.loopcontrols, _GenerationBlock, _ParseDeadline])
        self.filters["tojson"] = _tojson
        self.filters = {name: _guard_filter(name, f) for name, f in self.filters.items()}
        self.tests = {name: _guard_test(f) for name, f in self.tests.items()}
        self.globals.update(range=_range, lipsum=_lipsum, dict=_DictFactory(), namespace=_Namespace,
                            raise_exception=_raise_exception, strftime_now=_strftime_now)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _budget().tick()
        _check_binop(operator, left, right)
        return _accept(super().call_binop(context, operator, left, right), f"the result of {operator!r}")

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.tick()
        budget.charge(8 * (len(args) + len(kwargs)))  # `f(*list, **dict)` copies them (a macro's varargs)
        args = _check_text_method(obj, args, kwargs)
        name = getattr(obj, "__name__", type(obj).__name__)
        return _accept(super().call(context, obj, *args, **kwargs), f"the result of {name}()")

    def getattr(self, obj: Any, attribute: str) -> Any:
        _budget().tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _budget().tick()
        if isinstance(argument, slice):  # a copy
            return _accept(super().getitem(obj, argument), "a slice")
        return super().getitem(obj, argument)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        raise jinja2.exceptions.SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe.")

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if not (isinstance(value, (types.MethodType, types.BuiltinMethodType))
                and value.__name__ in ("format", "format_map") and isinstance(value.__self__, str)):
            return None
        text, is_map = value.__self__, value.__name__ == "format_map"

        def bounded_format(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs:
                    raise TypeError("format_map() takes no keyword arguments")
                if len(args) != 1:
                    raise TypeError(f"format_map() takes exactly one argument ({len(args)} given)")
                args, kwargs = (), args[0]
            formatter = (_BoundedEscapeFormatter(self, escape=text.escape) if isinstance(text, Markup)
                         else _BoundedFormatter(self))
            return type(text)(formatter.vformat(text, args, kwargs))
        return functools.update_wrapper(bounded_format, value)

    # Hooks the generated code calls directly (see _GuardedCodeGenerator).
    def concat(self, pieces: Any) -> str:
        """Join rendered output pieces (buffers, blocks) under the size limit."""
        collected, length = [], 0
        for piece in pieces:
            length += len(piece)
            _require_size(length, "a block of output")
            collected.append(piece)
        return _accept("".join(collected), "a block of output")

    def output_buffer(self) -> _OutputBuffer:
        return _OutputBuffer()

    def checked_iter(self, iterable: Any) -> Iterator[Any]:
        budget = _budget()
        for item in iterable:
            budget.tick()
            yield item

    def join_values(self, context: Any, parts: tuple) -> str:
        _budget().tick()
        _require_size(sum(_text_len(p, "a '~' operand") for p in parts), "the result of '~'")
        joined = markup_join(parts) if context.eval_ctx.autoescape else str_join(parts)
        return _accept(joined, "the result of '~'")

    def checked_literal(self, value: Any) -> Any:
        _budget().tick()
        return _accept(value, "a literal")


@functools.cache
def _environment() -> _ChatEnvironment:
    version = tuple(int(x) for x in re.findall(r"\d+", jinja2.__version__)[:3])
    if version < _MIN_JINJA:
        raise MdstError(f"chat templates need jinja2>={'.'.join(map(str, _MIN_JINJA))} (older releases have known "
                        f"sandbox escapes); found {jinja2.__version__}: pip install -U jinja2")
    return _ChatEnvironment()


# ---- compiling and rendering -----------------------------------------------------------------------------

def _template_line(exc: BaseException) -> str:
    """' (template line N)' for the innermost template frame of exc's traceback, or ''."""
    line = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        compiled = frame.f_globals.get("__jinja_template__")
        if compiled is not None:
            line = compiled.get_corresponding_lineno(lineno)
        elif frame.f_code.co_filename == "<template>":  # a frame jinja2 already rewrote to template lines
            line = lineno
    return "" if line is None else f" (template line {line})"


def _short(text: Any, limit: int = 300) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "..."


@contextlib.contextmanager
def _sandboxed() -> Iterator[None]:
    """Run a compile or render under a fresh budget, turning every failure into a TemplateError."""
    token = _BUDGET.set(_Budget())
    try:
        yield
    except _LimitExceeded as e:
        raise TemplateError(f"the chat template exceeded a sandbox limit: {e}{_template_line(e)}") from None
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"chat template syntax error at line {e.lineno}: {_short(e.message)}") from None
    except _TemplateRaised as e:
        raise TemplateError(f"the chat template rejected the conversation: {_short(e)}{_template_line(e)}") from None
    except jinja2.exceptions.SecurityError as e:
        raise TemplateError(f"the chat template tried an unsafe operation: {_short(e)}{_template_line(e)}") from None
    except RecursionError as e:
        raise TemplateError(f"the chat template nests or recurses too deeply{_template_line(e)}") from None
    except Exception as e:
        raise TemplateError(f"the chat template failed: {type(e).__name__}: {_short(e)}{_template_line(e)}") from e
    finally:
        _BUDGET.reset(token)


def _check_syntax_depth(tree: nodes.Template) -> None:
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > LIMITS.template_depth:
            raise _LimitExceeded(f"its syntax nests deeper than {LIMITS.template_depth} levels "
                                 f"(template line {node.lineno})")
        stack.extend((child, depth + 1) for child in node.iter_child_nodes())


@functools.lru_cache(maxsize=16)
def _compile(source: str) -> jinja2.Template:
    env = _environment()
    with _sandboxed():  # constant folding runs filters at compile time, under the same limits
        tree = env.parse(source)
        _check_syntax_depth(tree)
        return env.from_string(tree)


def _compiled(template: str) -> jinja2.Template:
    if not isinstance(template, str):
        raise TypeError(f"a chat template is a str of jinja2 source, not {type(template).__name__}")
    if len(template) > LIMITS.template_chars:
        raise TemplateError(f"the chat template is {len(template)} characters long; the limit is "
                            f"{LIMITS.template_chars}")
    return _compile(template)


def _plain(value: Any, depth: int = 0) -> Any:
    """`value` rebuilt from plain JSON types, as transformers rebuilds template inputs (other objects become
    a "<TypeName>" placeholder); never shares containers, so the template sees exactly what was passed."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if depth >= LIMITS.nesting:
        raise TemplateError(f"the template inputs nest deeper than {LIMITS.nesting} levels")
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k, depth + 1): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, depth + 1) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v, depth + 1) for v in value)
    if isinstance(value, np.generic):
        return _plain(value.item(), depth)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):  # pydantic models, e.g. the OpenAI SDK's messages
        return _plain(value.model_dump(), depth)
    return f"<{type(value).__name__}>"


def _message(message: Any, index: int) -> dict:
    if dataclasses.is_dataclass(message) and not isinstance(message, type):
        message = {f.name: getattr(message, f.name) for f in dataclasses.fields(message)}
    elif callable(getattr(message, "model_dump", None)):
        message = message.model_dump()
    if not isinstance(message, Mapping):
        raise TypeError(f"message {index} is a {type(message).__name__}; each message must be a dict like "
                        "{'role': 'user', 'content': '...'}")
    # Keys set to None are dropped: templates handle a missing key, but many print "None" or fail on a None.
    message = _plain({k: v for k, v in message.items() if v is not None})
    reasoning = next((message[k] for k in _REASONING_FIELDS if message.get(k) is not None), None)
    if reasoning is not None:  # templates read it under different names
        message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
    return message


def _list_of_dicts(value: Any, what: str, hint: str) -> list:
    if not isinstance(value, (list, tuple)) or not all(isinstance(x, Mapping) for x in value):
        raise TypeError(f"{what} must be a list of dicts ({hint})")
    return [_plain(x) for x in value]


def _template_variables(messages: Any, add_generation_prompt: bool, variables: dict) -> dict:
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise TypeError(f"messages must be a list of dicts, not {type(messages).__name__}")
    if not messages:
        raise TemplateError("the conversation is empty; give at least one message")
    tools, documents = variables.pop("tools", None), variables.pop("documents", None)
    if tools is not None:
        tools = _list_of_dicts(tools, "tools", "JSON schemas; transformers.utils.get_json_schema() makes one "
                                               "from a Python function")
    if documents is not None:
        documents = _plain(documents)
        _list_of_dicts(documents, "documents", "with 'title' and 'text' keys")
    return {"messages": [_message(m, i) for i, m in enumerate(messages)], "tools": tools, "documents": documents,
            "add_generation_prompt": add_generation_prompt, **_plain(variables)}


def _generate(compiled: jinja2.Template, variables: dict) -> str:
    budget, pieces, length = _budget(), [], 0
    stream = compiled.generate(variables)
    try:
        for piece in stream:
            length += len(piece)
            if length > LIMITS.output_chars:
                raise _LimitExceeded(f"its output passed {LIMITS.output_chars} characters")
            budget.tick()
            budget.charge(len(piece))
            pieces.append(piece)
    finally:
        stream.close()
    return "".join(pieces)


def render(template: str, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True,
           **variables: Any) -> str:
    """The prompt `template` makes of `messages`: transformers' apply_chat_template(..., tokenize=False) output.

    `variables` are passed to the template: bos_token, eos_token, tools, documents, enable_thinking, ...
    Any failure (bad syntax, raise_exception(), an unsafe operation, a sandbox limit) raises TemplateError.
    """
    compiled = _compiled(template)
    context = _template_variables(messages, add_generation_prompt, dict(variables))
    with _sandboxed():
        return _generate(compiled, context)


# ---- GGUF files -------------------------------------------------------------------------------------------

def template_from_gguf(gguf: GGUFFile, name: str | None = None) -> str | None:
    """The chat template stored in a GGUF file (`tokenizer.chat_template`, or `.<name>`), or None if absent."""
    key = _TEMPLATE_KEY if name is None else f"{_TEMPLATE_KEY}.{name}"
    value = gguf.metadata.get(key)
    if value is not None and not isinstance(value, str):
        raise GGUFError(f"{gguf.path}: {key} is a {type(value).__name__}, not a string")
    return value


def require_template(gguf: GGUFFile, name: str | None = None) -> str:
    """The GGUF file's chat template; TemplateError saying what to do instead if the file has none."""
    template = template_from_gguf(gguf, name)
    if template is not None:
        return template
    prefix = _TEMPLATE_KEY + "."
    named = sorted(k[len(prefix):] for k in gguf.metadata if k.startswith(prefix))
    if name is not None:
        raise TemplateError(f"{gguf.path} has no chat template named {name!r} (no {prefix}{name} in its metadata); "
                            f"its named templates: {', '.join(named) or 'none'}")
    also = f"; it does have named templates ({', '.join(named)}): choose one by name" if named else ""
    raise TemplateError(f"{gguf.path} has no chat template ({_TEMPLATE_KEY} is not in its metadata), so chat "
                        "messages can't be turned into a prompt; pass the template text yourself (template= in Python, "
                        "--chat-template FILE on the command line; e.g. the chat_template of the model's "
                        "tokenizer_config.json) or generate from a plain prompt"
                        + also)


def special_tokens(gguf: GGUFFile) -> dict[str, str]:
    """The special-token template variables transformers passes (bos_token, eos_token, ...), from a GGUF vocab."""
    tokens = gguf.metadata.get("tokenizer.ggml.tokens")
    found = {}
    for variable, key in _SPECIAL_TOKEN_KEYS.items():
        index = gguf.metadata.get(key)
        if isinstance(tokens, list) and isinstance(index, int) and 0 <= index < len(tokens):
            found[variable] = tokens[index]
    return found
