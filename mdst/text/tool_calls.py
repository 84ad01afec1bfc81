"""Tool calls in a model's reply: the format its chat template teaches, found from the template text, and parsed.

A `ToolCallFormat` knows the strings that open a tool-call section (`openings`, anywhere in the reply; `leading`,
only at its start), how to read the calls of a section (`scan`), and the prompt text that starts one call
(`opening`, how a call is forced where mdst.text.tool_grammar has no grammar for the format). `detect(template)`
picks the format from the template source, as llama.cpp does; templates that never mention `tools` get
`FALLBACK` (Hermes-style calls, described to the model by `fallback_system_prompt`), and templates with a format
mdst does not read (gpt-oss's channels, DeepSeek V3.2's DSML, Gemma 4, ...) get None: their replies stay
content. `parse(fmt, text)` splits a whole reply into its content and its calls; a section that does not parse
stays in the content, as written.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import secrets
import string
from typing import Any, Callable

_JSON = json.JSONDecoder()
_ALNUM = string.ascii_letters + string.digits

# A scanner reads calls from the start of a section: ([(name, arguments, id or None)], characters consumed).
Call = tuple[str, Any, "str | None"]
Scan = Callable[[str, dict], tuple[list[Call], int]]


@dataclasses.dataclass(frozen=True)
class ToolCallFormat:
    """One way models write tool calls."""
    name: str
    detect: Callable[[str], bool]            # does this template teach this format?
    openings: tuple[str, ...]                 # text that starts a tool-call section anywhere in the reply
    scan: Scan                                # reads a section's calls
    opening: Callable[[str | None], str]      # prompt text that begins a call (of the named function)
    leading: tuple[str, ...] = ()             # text that starts a section only at the reply's start
    short_ids: bool = False                   # the template insists on 9-alphanumeric call ids (Mistral)
    standalone: bool = False                  # each call is complete on its own (no list or section around
                                              # them), so a stream can report one as soon as text follows it

    def new_id(self) -> str:
        """A fresh tool-call id in the shape this format's templates accept."""
        if self.short_ids:
            return "".join(secrets.choice(_ALNUM) for _ in range(9))
        return "call_" + "".join(secrets.choice(_ALNUM) for _ in range(24))


# ---- reading pieces ------------------------------------------------------------------------------------------

def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _json_at(text: str, i: int) -> tuple[Any, int]:
    """The JSON value starting at text[i] (after whitespace) and where it ends; ValueError if none."""
    return _JSON.raw_decode(text, _skip_space(text, i))


def _expect(text: str, i: int, literal: str) -> int:
    """The index after `literal` at text[i] (after whitespace); ValueError if it is not there."""
    i = _skip_space(text, i)
    if not text.startswith(literal, i):
        raise ValueError(f"expected {literal!r}")
    return i + len(literal)


def _named(obj: Any, args_keys: tuple[str, ...] = ("arguments", "parameters"),
           name_key: str = "name", id_key: str | None = "id") -> Call:
    """(name, arguments, id) of a JSON call object; ValueError if it is not one."""
    if not isinstance(obj, dict) or not isinstance(obj.get(name_key), str):
        raise ValueError("not a call object")
    args = next((obj[k] for k in args_keys if k in obj), {})
    call_id = obj.get(id_key) if id_key else None
    return obj[name_key], args, call_id if isinstance(call_id, str) else None


def _param_value(raw: str, name: str, param: str, tools: dict) -> Any:
    """An XML-style parameter's value: text for string parameters, else JSON where it parses."""
    properties = tools.get(name, {}).get("properties")
    schema = properties.get(param) if isinstance(properties, dict) else None
    if isinstance(schema, dict) and schema.get("type") == "string":
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _repeat(one: Callable[[str, int, dict], tuple[Call, int]]) -> Scan:
    """A scanner reading `one` call after another (whitespace between) until one does not parse."""
    def scan(text: str, tools: dict) -> tuple[list[Call], int]:
        calls, end = [], 0
        while True:
            try:
                call, i = one(text, _skip_space(text, end), tools)
            except (ValueError, SyntaxError, RecursionError):
                return calls, end
            calls.append(call)
            end = i

    return scan


def _wrapped_list(start: str, end: str | None, read: Callable[[Any], Call]) -> Scan:
    """A scanner for `start` + a JSON list of calls + `end` (end optional when None)."""
    def scan(text: str, tools: dict) -> tuple[list[Call], int]:
        try:
            items, i = _json_at(text, _expect(text, 0, start))
            if not isinstance(items, list) or not items:
                raise ValueError("not a list of calls")
            calls = [read(item) for item in items]
            if end is not None:
                i = _expect(text, i, end)
        except ValueError:
            return [], 0
        return calls, i

    return scan


def _optional_close(text: str, i: int, close: str) -> int:
    """After a call: its closing tag, which a reply may leave out at its very end."""
    j = _skip_space(text, i)
    if text.startswith(close, j):
        return j + len(close)
    if j == len(text):
        return j
    raise ValueError(f"expected {close!r}")


def _quoted(name: str) -> str:
    return json.dumps(name, ensure_ascii=False)


# ---- the formats ---------------------------------------------------------------------------------------------

def _hermes_call(text: str, i: int, tools: dict) -> tuple[Call, int]:
    obj, i = _json_at(text, _expect(text, i, "<tool_call>"))
    return _named(obj), _optional_close(text, i, "</tool_call>")


def _xml_function_call(open_tag: str, close_tag: str) -> Callable[[str, int, dict], tuple[Call, int]]:
    """<open>\\n<function=NAME>\\n<parameter=K>\\nV\\n</parameter>...</function>\\n<close> (Qwen3-Coder, Seed-OSS)."""
    function = re.compile(r"\s*<function=([^>\n]+)>")
    parameter = re.compile(r"\s*<parameter=([^>\n]+)>(.*?)</parameter>", re.S)
    end = re.compile(r"\s*</function>")

    def one(text: str, i: int, tools: dict) -> tuple[Call, int]:
        i = _expect(text, i, open_tag)
        m = function.match(text, i)
        if not m:
            raise ValueError("expected <function=NAME>")
        name, i, args = m.group(1).strip(), m.end(), {}
        while (p := parameter.match(text, i)) is not None:
            raw = p.group(2).removeprefix("\n").removesuffix("\n")
            args[p.group(1).strip()] = _param_value(raw, name, p.group(1).strip(), tools)
            i = p.end()
        m = end.match(text, i)
        if not m:
            raise ValueError("expected </function>")
        return (name, args, None), _optional_close(text, m.end(), close_tag)

    return one


def _glm_call(text: str, i: int, tools: dict) -> tuple[Call, int]:
    """<tool_call>NAME\\n<arg_key>K</arg_key>\\n<arg_value>V</arg_value>...</tool_call> (GLM 4.5+)."""
    i = _expect(text, i, "<tool_call>")
    m = re.compile(r"([^<\n]+)").match(text, i)
    if not m:
        raise ValueError("expected a function name")
    name, i, args = m.group(1).strip(), m.end(), {}
    pair = re.compile(r"\s*<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.S)
    while (p := pair.match(text, i)) is not None:
        args[p.group(1).strip()] = _param_value(p.group(2), name, p.group(1).strip(), tools)
        i = p.end()
    return (name, args, None), _optional_close(text, i, "</tool_call>")


def _minimax_scan(text: str, tools: dict) -> tuple[list[Call], int]:
    """<minimax:tool_call>\\n<invoke name="N">\\n<parameter name="K">V</parameter>...</invoke>...
    </minimax:tool_call> (MiniMax M2)."""
    invoke = re.compile(r'\s*<invoke name="([^"]+)">(.*?)</invoke>', re.S)
    parameter = re.compile(r'<parameter name="([^"]+)">(.*?)</parameter>', re.S)
    calls: list[Call] = []
    end = 0
    while True:
        try:
            i = _expect(text, end, "<minimax:tool_call>")
        except ValueError:
            return calls, end
        block: list[Call] = []
        while (m := invoke.match(text, i)) is not None:
            name = m.group(1)
            args = {p.group(1): _param_value(p.group(2).strip("\n"), name, p.group(1), tools)
                    for p in parameter.finditer(m.group(2))}
            block.append((name, args, None))
            i = m.end()
        try:
            i = _optional_close(text, i, "</minimax:tool_call>")
        except ValueError:
            return calls, end
        if not block:
            return calls, end
        calls += block
        end = i


def _mistral_args_call(text: str, i: int, tools: dict) -> tuple[Call, int]:
    """[TOOL_CALLS]NAME[ARGS]{json}, or [TOOL_CALLS]NAME[CALL_ID]ID[ARGS]{json} (Mistral Small 3.2)."""
    m = re.compile(r"\[TOOL_CALLS\]([^\[\]\s]+)(?:\[CALL_ID\]([A-Za-z0-9]+))?\[ARGS\]").match(text, i)
    if not m:
        raise ValueError("expected [TOOL_CALLS]NAME[ARGS]")
    args, i = _json_at(text, m.end())
    return (m.group(1), args, m.group(2)), i


def _llama3_call(text: str, i: int, tools: dict) -> tuple[Call, int]:
    """{"name": ..., "parameters": ...}, optionally after <|python_tag|>, calls separated by ';' (Llama 3.x)."""
    j = _skip_space(text, i)
    if text.startswith("<|python_tag|>", j):
        j += len("<|python_tag|>")
    elif text.startswith(";", j):
        j += 1
    obj, j = _json_at(text, j)
    return _named(obj, id_key=None), j


def _functionary_call(text: str, i: int, tools: dict) -> tuple[Call, int]:
    """<function=NAME>{json}</function> (Functionary v3.1)."""
    m = re.compile(r"<function=([^>\s]+)>").match(text, _skip_space(text, i))
    if not m:
        raise ValueError("expected <function=NAME>")
    args, i = _json_at(text, m.end())
    return (m.group(1), args, None), _optional_close(text, i, "</function>")


_DS_CALLS_BEGIN, _DS_CALLS_END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
_DS_CALL_BEGIN, _DS_CALL_END, _DS_SEP = "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>"


def _deepseek_scan(text: str, tools: dict) -> tuple[list[Call], int]:
    """<｜tool▁calls▁begin｜> then calls, each `function<sep>NAME\\n```json\\n{..}\\n```` (R1) or `NAME<sep>{..}`
    (V3.1) between call begin/end, then <｜tool▁calls▁end｜>."""
    fenced = re.compile(r"\s*(?:function)?" + re.escape(_DS_SEP) + r"([^\n]+)\n```(?:json)?\s*")
    plain = re.compile(r"\s*([^<\n]+?)" + re.escape(_DS_SEP))
    try:
        i = _expect(text, 0, _DS_CALLS_BEGIN)
    except ValueError:
        return [], 0
    calls: list[Call] = []
    while True:
        try:
            j = _expect(text, i, _DS_CALL_BEGIN)
            if (m := fenced.match(text, j)) is not None:
                args, j = _json_at(text, m.end())
                j = _expect(text, j, "```")
            elif (m := plain.match(text, j)) is not None:
                args, j = _json_at(text, m.end())
            else:
                break
            i = _expect(text, j, _DS_CALL_END)
            calls.append((m.group(1).strip(), args, None))
        except ValueError:
            break
    if not calls:
        return [], 0
    try:
        return calls, _optional_close(text, i, _DS_CALLS_END)
    except ValueError:
        return calls, i


def _kimi_scan(text: str, tools: dict) -> tuple[list[Call], int]:
    """<|tool_calls_section_begin|><|tool_call_begin|>functions.NAME:IDX<|tool_call_argument_begin|>{..}
    <|tool_call_end|>...<|tool_calls_section_end|> (Kimi K2)."""
    call = re.compile(r"\s*<\|tool_call_begin\|>\s*((?:functions\.)?([^:<\s]+)(?::\d+)?)\s*"
                      r"<\|tool_call_argument_begin\|>")
    try:
        i = _expect(text, 0, "<|tool_calls_section_begin|>")
    except ValueError:
        return [], 0
    calls: list[Call] = []
    while (m := call.match(text, i)) is not None:
        try:
            args, j = _json_at(text, m.end())
            i = _expect(text, j, "<|tool_call_end|>")
        except ValueError:
            break
        calls.append((m.group(2), args, m.group(1)))
    if not calls:
        return [], 0
    try:
        return calls, _optional_close(text, i, "<|tool_calls_section_end|>")
    except ValueError:
        return calls, i


def _python_calls(expr: str) -> list[Call]:
    """[f(a=1, b="x"), g()] as calls; keyword arguments must be Python literals. ValueError otherwise."""
    tree = ast.parse(expr.strip(), mode="eval").body
    items = tree.elts if isinstance(tree, ast.List) else [tree]
    calls = []
    for item in items:
        if not isinstance(item, ast.Call) or item.args or not isinstance(item.func, (ast.Name, ast.Attribute)):
            raise ValueError("not a call with keyword arguments")
        calls.append((ast.unparse(item.func), {k.arg: ast.literal_eval(k.value) for k in item.keywords}, None))
    return calls


def _lfm2_scan(text: str, tools: dict) -> tuple[list[Call], int]:
    """<|tool_call_start|>[name(arg="v", ...), ...]<|tool_call_end|> (LFM2, Python call syntax)."""
    try:
        i = _expect(text, 0, "<|tool_call_start|>")
        j = text.find("<|tool_call_end|>", i)
        calls = _python_calls(text[i:] if j < 0 else text[i:j])
    except (ValueError, SyntaxError, RecursionError):
        return [], 0
    return calls, len(text) if j < 0 else j + len("<|tool_call_end|>")


def _json_block_scan(text: str, tools: dict) -> tuple[list[Call], int]:
    """<tool_calls> + a JSON list of calls, or JSON call objects one after another, + </tool_calls> (Apriel,
    MiniMax-M1)."""
    try:
        i = _expect(text, 0, "<tool_calls>")
        first, j = _json_at(text, i)
        items = first if isinstance(first, list) else [first]
        while not isinstance(first, list):
            try:
                obj, j = _json_at(text, j)
            except ValueError:
                break
            items.append(obj)
        calls = [_named(item) for item in items]
        return calls, _optional_close(text, j, "</tool_calls>")
    except ValueError:
        return [], 0


def _apertus_read(item: Any) -> Call:
    if not isinstance(item, dict) or len(item) != 1:
        raise ValueError("an Apertus call is {\"NAME\": {arguments}}")
    (name, args), = item.items()
    return name, args, None


def _cohere_read(item: Any) -> Call:
    return _named(item, ("parameters",), name_key="tool_name", id_key="tool_call_id")


def _named_opening(prefix: str, args_key: str, after: str = "") -> Callable[[str | None], str]:
    """Openings of JSON-object calls: prefix + {"name": "NAME", "<args_key>": (or just the prefix)."""
    def opening(name: str | None) -> str:
        return prefix if name is None else f'{prefix}{{"name": {_quoted(name)}, "{args_key}": {after}'
    return opening


def _has(*needles: str) -> Callable[[str], bool]:
    return lambda src: all(n in src for n in needles)


def _hermes_template(src: str) -> bool:
    return "<tool_call>" in src and "<invoke name=" not in src  # MiniMax M3 wraps <invoke> XML in <tool_call>


def _function_opening(prefix: str, named: str) -> Callable[[str | None], str]:
    """Openings `prefix`, or `named` with NAME replaced by the function's name."""
    return lambda n: prefix if n is None else named.replace("NAME", n)


FORMATS: list[ToolCallFormat] = [  # tried in order: the more specific markers first
    ToolCallFormat("kimi_k2", _has("<|tool_calls_section_begin|>"), ("<|tool_calls_section_begin|>",), _kimi_scan,
                   _function_opening("<|tool_calls_section_begin|>", "<|tool_calls_section_begin|><|tool_call_begin|>"
                                     "functions.NAME:0<|tool_call_argument_begin|>")),
    ToolCallFormat("deepseek", _has(_DS_CALLS_BEGIN), (_DS_CALLS_BEGIN,), _deepseek_scan,
                   _function_opening(_DS_CALLS_BEGIN, f"{_DS_CALLS_BEGIN}{_DS_CALL_BEGIN}NAME{_DS_SEP}")),
    ToolCallFormat("minimax_m2", _has("<minimax:tool_call>"), ("<minimax:tool_call>",), _minimax_scan,
                   _function_opening("<minimax:tool_call>\n", '<minimax:tool_call>\n<invoke name="NAME">\n')),
    ToolCallFormat("seed_oss", _has("<seed:tool_call>"), ("<seed:tool_call>",),
                   _repeat(_xml_function_call("<seed:tool_call>", "</seed:tool_call>")),
                   _function_opening("<seed:tool_call>\n", "<seed:tool_call>\n<function=NAME>\n"), standalone=True),
    ToolCallFormat("glm", _has("<tool_call>", "<arg_key>"), ("<tool_call>",), _repeat(_glm_call),
                   _function_opening("<tool_call>", "<tool_call>NAME\n"), standalone=True),
    ToolCallFormat("qwen3_coder", _has("<tool_call>", "<function=", "<parameter="), ("<tool_call>",),
                   _repeat(_xml_function_call("<tool_call>", "</tool_call>")),
                   _function_opening("<tool_call>\n", "<tool_call>\n<function=NAME>\n"), standalone=True),
    ToolCallFormat("tool_calls_json", _has("<tool_calls>"), ("<tool_calls>",), _json_block_scan,
                   _named_opening("<tool_calls>[", "arguments")),
    ToolCallFormat("hermes", _hermes_template, ("<tool_call>",), _repeat(_hermes_call),
                   _named_opening("<tool_call>\n", "arguments"), standalone=True),
    ToolCallFormat("nemotron", _has("<TOOLCALL>"), ("<TOOLCALL>",),
                   _wrapped_list("<TOOLCALL>", "</TOOLCALL>", _named), _named_opening("<TOOLCALL>[", "arguments")),
    ToolCallFormat("mistral_args", _has("[TOOL_CALLS]", "[ARGS]"), ("[TOOL_CALLS]",), _repeat(_mistral_args_call),
                   _function_opening("[TOOL_CALLS]", "[TOOL_CALLS]NAME[ARGS]"), short_ids=True, standalone=True),
    ToolCallFormat("mistral", _has("[TOOL_CALLS]"), ("[TOOL_CALLS]",), _wrapped_list("[TOOL_CALLS]", None, _named),
                   _named_opening("[TOOL_CALLS][", "arguments"), short_ids=True),
    ToolCallFormat("granite", _has("<|tool_call|>"), ("<|tool_call|>",), _wrapped_list("<|tool_call|>", None, _named),
                   _named_opening("<|tool_call|>[", "arguments")),
    ToolCallFormat("command_r", _has("<|START_ACTION|>"), ("<|START_ACTION|>",),
                   _wrapped_list("<|START_ACTION|>", "<|END_ACTION|>", _cohere_read),
                   lambda n: "<|START_ACTION|>[" if n is None else
                   f'<|START_ACTION|>[\n    {{"tool_call_id": "0", "tool_name": {_quoted(n)}, "parameters": '),
    ToolCallFormat("apertus", _has("<|tools_prefix|>"), ("<|tools_prefix|>",),
                   _wrapped_list("<|tools_prefix|>", "<|tools_suffix|>", _apertus_read),
                   lambda n: "<|tools_prefix|>[" if n is None else f"<|tools_prefix|>[{{{_quoted(n)}: "),
    ToolCallFormat("lfm2", _has("List of tools: "), ("<|tool_call_start|>",), _lfm2_scan,
                   _function_opening("<|tool_call_start|>[", "<|tool_call_start|>[NAME(")),
    ToolCallFormat("functionary_v3_1", _has("<function=", "<|python_tag|>"), ("<function=",),
                   _repeat(_functionary_call), _function_opening("<function=", "<function=NAME>"), standalone=True),
    ToolCallFormat("llama3", _has("<|start_header_id|>", '"parameters": '), ("<|python_tag|>",),
                   _repeat(_llama3_call), lambda n: '{"name": "' if n is None else _named_opening("", "parameters")(n),
                   leading=("{",), standalone=True),
]
FALLBACK = next(f for f in FORMATS if f.name == "hermes")


def detect(template: str) -> ToolCallFormat | None:
    """The tool-call format `template` teaches: FALLBACK (Hermes) for a template that knows no tools, None for
    one whose format mdst does not read (its replies stay content)."""
    if not knows_tools(template):
        return FALLBACK
    return next((f for f in FORMATS if f.detect(template)), None)


def knows_tools(template: str) -> bool:
    """Whether `template` renders tool definitions itself (reads the `tools` variable)."""
    return re.search(r"\btools\b", template) is not None


def fallback_system_prompt(tools: list) -> str:
    """Hermes-style tool instructions, for templates that never render `tools` (the text Qwen 2.5's template writes)."""
    listed = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
            "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
            f"{listed}\n</tools>\n\nFor each function call, return a json object with function name and arguments "
            "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
            '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>')


def schemas(tools: list | None) -> dict[str, dict]:
    """Each function's parameter schema by name (how XML-style arguments get their types)."""
    found = {}
    for tool in tools or ():
        function = tool.get("function", tool) if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            params = function.get("parameters")
            found[function["name"]] = params if isinstance(params, dict) else {}
    return found


def section_start(fmt: ToolCallFormat, text: str, at_start: bool) -> int:
    """Where the first tool-call section begins in `text` (-1 if none); `at_start`: text begins the reply."""
    if at_start and fmt.leading and text.lstrip().startswith(fmt.leading):
        return len(text) - len(text.lstrip())
    found = [i for i in (text.find(o) for o in fmt.openings) if i >= 0]
    return min(found, default=-1)


def openai_call(fmt: ToolCallFormat, call: Call) -> dict:
    """An OpenAI tool call (id, type "function", function.name, function.arguments as JSON text)."""
    name, args, call_id = call
    arguments = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
    return {"id": call_id or fmt.new_id(), "type": "function", "function": {"name": name, "arguments": arguments}}


def parse_section(fmt: ToolCallFormat, section: str, tools: list | None = None) -> tuple[list[dict], str]:
    """A tool-call section's calls (OpenAI shape) and the text after them; no calls if the section is malformed."""
    try:
        calls, end = fmt.scan(section, schemas(tools))
    except RecursionError:  # JSON nested past Python's recursion limit: not a call mdst can read
        return [], section
    if not calls:
        return [], section
    return [openai_call(fmt, c) for c in calls], section[end:]


def parse(fmt: ToolCallFormat, text: str, tools: list | None = None) -> tuple[str, list[dict]]:
    """A reply's content (text before and after its calls) and its tool calls in OpenAI's shape."""
    start = section_start(fmt, text, at_start=True)
    if start < 0:
        return text, []
    calls, rest = parse_section(fmt, text[start:], tools)
    if not calls:
        return text, []
    return (text[:start].rstrip() + rest).strip(), calls
