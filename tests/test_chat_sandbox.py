"""Hostile chat templates end in TemplateError within mdst.text.chat's bounds: no escape, hang or memory blow-up.

Each template runs in a worker process under an address-space limit, which reports how long the render took
and how much its resident memory grew (Linux's VmHWM, reset before each case); a runaway allocation there is a
MemoryError or a dead worker, and a hang is a timeout, all failures here.

Which bound ends a case must not depend on the machine's speed or load, yet reaching some bounds takes about
as long as the 2 s deadline on a loaded 2-core machine (parsing 50,000 operators; using up the work budget with
item-heavy values, 8 Mi items at 8 units each). So the cases for every other bound run under a deadline the
clock can't reach (`UNREACHED_SECONDS`), and the cases for the deadline run past it by hours.
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import need
from mdst.text import chat
from mdst.text.chat import LIMITS, TemplateError, render, require_template, template_from_gguf
from mdst.format.gguf import GGUFFile

REPO = Path(__file__).resolve().parents[1]
WORKER_ADDRESS_SPACE_MARGIN = 2 << 30  # on top of the worker's size after imports
MAX_SECONDS = LIMITS.seconds + 1.0     # the deadline, plus one builtin step that can't be interrupted
UNREACHED_SECONDS = 120.0              # the deadline of the cases for the other bounds
DEADLINE_FRAGMENT = "longer than"      # what the deadline's TemplateError says
MAX_PEAK_MIB = 256                     # resident growth allowed for one render (the work budget is 64 Mi units)

# Runs in the worker: one JSON request per line in, one JSON result per line out.
WORKER = r"""
import dataclasses, json, resource, sys, time
from mdst.text import chat

DEFAULT_LIMITS = chat.LIMITS

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))

limit = status("VmSize:") + int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    chat.LIMITS = dataclasses.replace(DEFAULT_LIMITS, **request["limits"])
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    rss = status("VmRSS:")
    start = time.monotonic()
    try:
        text = chat.render(request["template"], [{"role": "user", "content": "hi"}])
        result = {"outcome": "rendered", "message": text[:200]}
    except chat.TemplateError as e:
        result = {"outcome": "TemplateError", "message": str(e)}
    except BaseException as e:
        result = {"outcome": type(e).__name__, "message": str(e)[:500]}
    result["seconds"] = time.monotonic() - start
    result["peak_mib"] = (status("VmHWM:") - rss) / 2**20
    print(json.dumps(result), flush=True)
"""


class Worker:
    """The worker process, restarted after a hang or a death."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, str(WORKER_ADDRESS_SPACE_MARGIN)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert self._read(60) == {"ready": True}

    def _read(self, timeout: float) -> dict | None:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        return json.loads(line) if line else None

    def render(self, template: str, **limits: float) -> dict:
        """The worker's result for `template` under LIMITS with `limits` changed, or outcome "hang"/"died"."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        self.proc.stdin.write(json.dumps({"template": template, "limits": limits}) + "\n")
        self.proc.stdin.flush()
        result = self._read(limits.get("seconds", LIMITS.seconds) + 21)
        if result is None:
            outcome = "hang" if self.proc.poll() is None else "died"
            self.close()
            return {"outcome": outcome, "message": "", "seconds": None, "peak_mib": None}
        return result

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture(scope="module")
def worker():
    need(sys.platform == "linux", "the worker limits address space with RLIMIT_AS and reads /proc (Linux)")
    w = Worker()
    yield w
    w.close()


def _repeat(text: str, n: int, sep: str = ", ") -> str:
    return sep.join([text] * n)


# name -> (template, a fragment the TemplateError's message must contain)
HOSTILE = {
    # sandbox escapes
    "str_class_mro_subclasses": ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "unsafe"),
    "bare_class": ("{{ messages.__class__ }}", "unsafe"),
    "function_globals": ("{{ cycler.__init__.__globals__ }}", "unsafe"),
    "lipsum_globals": ("{{ lipsum.__globals__['os'] }}", "unsafe"),
    "namespace_init": ("{{ namespace.__init__ }}", "unsafe"),
    "type_mro": ("{{ namespace.mro() }}", "unsafe"),
    "format_string_attribute": ("{{ '{0.__class__.__mro__}'.format('') }}", "unsafe"),
    "format_map_attribute": ("{{ '{m.__class__}'.format_map({'m': messages}) }}", "unsafe"),
    "attr_filter": ("{{ messages|attr('__class__') }}", "unsafe"),
    "list_mutation": ("{{ messages.append(1) }}", "unsafe"),
    "dict_mutation": ("{{ messages[0].update(role='system') }}", "unsafe"),
    "namespace_dunder_set": ("{% set ns = namespace() %}{% set ns.__class__ = 1 %}", "underscore"),
    "namespace_dunder_init": ("{{ namespace(__init__=1) }}", "underscore"),
    "include": ("{% include 'other.jinja' %}", "no loader"),
    "import": ("{% import 'other.jinja' as other %}", "no loader"),
    # growth checked before it happens
    "str_times_huge": ("{{ 'x' * 10**9 }}", "'*'"),
    "list_times_huge": ("{{ [0] * 10**9 }}", "'*'"),
    "power": ("{{ 10 ** (10 ** 10) }}", "bits"),
    "repeated_squaring": ("{% set ns = namespace(x=3) %}{% for i in range(64) %}{% set ns.x = ns.x * ns.x %}"
                          "{% endfor %}", "bits"),
    "huge_range": ("{% for i in range(10**9) %}{% endfor %}", "range()"),
    "doubling_concat": ("{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
                        "{% endfor %}{{ ns.s }}", "'~'"),
    "doubling_plus": ("{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
                      "{% endfor %}", "'+'"),
    "doubling_list": ("{% set ns = namespace(s=[1]) %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
                      "{% endfor %}", "'+'"),
    "printf_width": ("{{ '%0999999999d' % 1 }}", "formatting"),
    "printf_star_width": ("{{ '%*d' % (999999999, 1) }}", "formatting"),
    "format_width": ("{{ '{:>999999999}'.format(1) }}", "format()"),
    "format_nested_width": ("{{ '{:>{w}}'.format(1, w=999999999) }}", "format()"),
    "format_filter": ("{{ '%999999999s'|format('x') }}", "formatting"),
    "center": ("{{ 'x'|center(10**9) }}", "center()"),
    "ljust": ("{{ 'x'.ljust(10**9) }}", "ljust()"),
    "zfill": ("{{ 'x'.zfill(10**9) }}", "zfill()"),
    "expandtabs": ("{{ ('\t' * 1000).expandtabs(10**6) }}", "expandtabs()"),
    "indent": ("{{ ('\n' * 100000)|indent(100000) }}", "indent()"),
    "replace_empty": ("{{ ('x' * 100000)|replace('', 'y' * 1000) }}", "replace()"),
    "replace_method": ("{{ ('x' * 100000).replace('x', 'y' * 1000) }}", "replace()"),
    "join_filter": ("{{ ('x' * 1000000)|join('y' * 1000) }}", "join()"),
    "join_method": ("{{ ('y' * 1000).join('x' * 1000000) }}", "join()"),
    "translate": ("{{ ('x' * 100000).translate({120: 'y' * 100000}) }}", "translate()"),
    "to_bytes": ("{{ (1).to_bytes(10**9, 'big') }}", "to_bytes()"),
    "batch": ("{{ [1]|batch(10**9, 0)|list }}", "batch()"),
    "slice": ("{{ [1]|slice(10**9)|list }}", "slice()"),
    "tojson_indent": ("{{ messages|tojson(indent=10**9) }}", "tojson()"),
    "lipsum": ("{{ lipsum(10**6) }}", "lipsum()"),
    "strftime_format": ("{{ strftime_now('%c' * 1000000) }}", "strftime_now()"),
    "wordwrap_quadratic": ("{{ ('x' * 1000000)|wordwrap(3) }}", "this filter's input"),
    "sort_huge": ("{{ ('x' * 1000000)|list|sort }}", "as text"),
    "sum_of_lists": ("{{ range(100000)|map('string')|map('list')|sum(start=[]) }}", "characters and items"),
    # values whose text is far larger than their memory (shared references)
    "shared_list_text": ("{% set ns = namespace(s=['x' * 1000000]) %}{% for i in range(40) %}"
                         "{% set ns.s = [ns.s, ns.s] %}{% endfor %}{{ ns.s }}", "as text"),
    "repeated_namespace_text": ("{% set ns = namespace(s='x' * 4000000) %}{% set l = [ns] * 100000 %}{{ l }}",
                                "as text"),
    "fromkeys_shared_value": ("{{ dict.fromkeys(range(100000), 'x' * 1000000) }}", "as text"),
    "deep_tuple_hash": ("{% set ns = namespace(x=1) %}{% for i in range(100000) %}{% set ns.x = (ns.x,) %}"
                        "{% endfor %}{{ ns.x|unique|list }}", "nests deeper"),
    # output and accumulated work
    "big_output": ("{% for i in range(100000) %}{{ 'y' * 1000 }}{% endfor %}", "output passed"),
    "big_literal_output": ("{% for i in range(100000) %}" + "z" * 10000 + "{% endfor %}", "output passed"),
    "set_block_buffer": ("{% set x %}{% for i in range(100000) %}{% for j in range(1000) %}" + "w" * 100
                         + "{% endfor %}{% endfor %}{% endset %}", "characters and items"),
    "many_big_values": ("{{ range(100000)|map('center', 4000000)|list|length }}", "characters and items"),
    "namespaces_retaining": ("{% set holders = [" + _repeat("namespace()", 200) + "] %}{% for h in holders %}"
                             "{% set h.v = 'x' * 4000000 %}{% endfor %}", "characters and items"),
    # refunds for replaced namespace values can't be had for values that were never charged
    "refund_of_constant_lists": ("{% set ns = namespace(x=none) %}{% for i in range(2000) %}{% set ns.x = ["
                                 + _repeat("1", 5000) + "] %}{% endfor %}{% set holders = ["
                                 + _repeat("namespace()", 200) + "] %}{% for h in holders %}"
                                 "{% set h.v = 'x' * 4000000 %}{% endfor %}", "characters and items"),
    "refund_of_macro_kwargs": ("{% set ns = namespace(x=none) %}{% set d = dict.fromkeys(range(5000)|map('string')"
                               "|map('replace', '', 'k')) %}{% macro m() %}{% set ns.x = kwargs %}{% endmacro %}"
                               "{% for i in range(100000) %}{{ m(**d) }}{% endfor %}", "characters and items"),
    "set_difference": ("{% set d = dict.fromkeys(range(100000)) %}{% set ns = namespace() %}"
                       "{% for i in range(1000) %}{% set ns.x = d.keys() - [] %}{% endfor %}", "characters and items"),
    # time
    "nested_loops": ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                     "longer than"),
    "buffered_empty_output": ("{% set x %}{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}"
                              "{% endfor %}{% endfor %}{% endset %}", "longer than"),
    "exponential_macro": ("{% macro f(n) %}{% if n < 60 %}{{ f(n + 1) }}{{ f(n + 1) }}{% endif %}{% endmacro %}"
                          "{{ f(0) }}", "longer than"),
    "exponential_recursive_loop": ("{% for x in range(30) recursive %}{% if loop.depth < 30 %}"
                                   "{{ loop(range(30)) }}{% endif %}{% endfor %}", "longer than"),
    "infinite_macro_recursion": ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "recurses too deeply"),
    "infinite_loop_recursion": ("{% for x in [1] recursive %}{{ loop([1, 2]) }}{% endfor %}", "recurses too deeply"),
    # the template itself
    "deep_if_nesting": (_repeat("{% if true %}", 300, "") + _repeat("{% endif %}", 300, ""), "too deeply"),
    "deep_parentheses": ("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}", "too deeply"),
    "deep_attribute_chain": ("{{ x" + ".a" * 20000 + " }}", "nests deeper than"),
    "deep_operator_chain": ("{{ 1" + " + 1" * 50000 + " }}", "nests deeper than"),
    "too_long": ("a" * (LIMITS.template_chars + 1), "characters long"),
    "raise_exception": ("{{ raise_exception('no thanks') }}", "rejected the conversation: no thanks"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_template_ends_in_template_error(worker, name):
    template, fragment = HOSTILE[name]
    deadline_case = fragment == DEADLINE_FRAGMENT
    result = worker.render(template, **({} if deadline_case else {"seconds": UNREACHED_SECONDS}))
    assert result["outcome"] == "TemplateError", result
    assert fragment in result["message"], result["message"]
    assert "MemoryError" not in result["message"], result["message"]  # the address-space limit was hit
    if deadline_case:
        assert result["seconds"] <= MAX_SECONDS, result
    assert result["peak_mib"] <= MAX_PEAK_MIB, result


def test_worker_catches_a_blow_up(worker):
    """The harness can fail: jinja2's own sandbox (no mdst bounds) runs out of address space on 'x' * 10**10."""
    result = worker.render("{{ 'x' * 10**10 }}")  # mdst's own check ends this one
    assert result["outcome"] == "TemplateError" and result["peak_mib"] < 64
    raw = subprocess.run([sys.executable, "-c",
                          "import resource, jinja2.sandbox as s; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, "
                          "2 << 30)); s.ImmutableSandboxedEnvironment().from_string(\"{{ 'x' * 10**10 }}\").render()"],
                         capture_output=True, text=True)
    assert "MemoryError" in raw.stderr


def test_legit_long_conversation_renders(monkeypatch):
    """The size and work bounds leave room for a conversation close to the output limit, built the quadratic way
    (about 1.7 s on a loaded 2-core machine, so under a deadline the clock can't reach)."""
    monkeypatch.setattr(chat, "LIMITS", dataclasses.replace(LIMITS, seconds=UNREACHED_SECONDS))
    template = ("{% set ns = namespace(out='') %}{% for m in messages %}"
                "{% set ns.out = ns.out ~ '<|' ~ m.role ~ '|>' ~ m.content ~ '\n' %}{% endfor %}{{ ns.out }}")
    messages = [{"role": "user", "content": "z" * 10_000} for _ in range(LIMITS.output_chars // 10_100)]
    assert len(render(template, messages)) > 0.95 * LIMITS.output_chars
    with pytest.raises(TemplateError, match=f"output passed|limit is {LIMITS.value_chars}"):
        render(template, messages + messages[:len(messages) // 10])


def test_bad_inputs_are_named():
    template = "{{ messages|length }}"
    with pytest.raises(TemplateError, match="empty"):
        render(template, [])
    with pytest.raises(TypeError, match="message 1 is a str"):
        render(template, [{"role": "user", "content": "a"}, "b"])
    with pytest.raises(TypeError, match="messages must be a list"):
        render(template, {"role": "user", "content": "a"})
    with pytest.raises(TypeError, match="get_json_schema"):
        render(template, [{"role": "user", "content": "a"}], tools=[len])
    with pytest.raises(TypeError, match="a chat template is a str"):
        render(None, [{"role": "user", "content": "a"}])
    with pytest.raises(TemplateError, match="syntax error at line 2"):
        render("ok\n{% if %}", [{"role": "user", "content": "a"}])
    with pytest.raises(TemplateError, match="nest deeper"):
        deep: list = []
        for _ in range(LIMITS.nesting + 5):
            deep = [deep]
        render(template, [{"role": "user", "content": deep}])


def test_model_without_template_is_a_clear_error(gemma_path, smollm2_path):
    """require_template(gguf) is what Model.chat calls: the template, or an error naming the file and the fix."""
    with GGUFFile(smollm2_path) as f:
        assert require_template(f) == template_from_gguf(f) and "<|im_start|>" in require_template(f)
    with GGUFFile(gemma_path) as f:
        assert template_from_gguf(f) is None
        with pytest.raises(TemplateError) as e:
            require_template(f)
        assert f.path in str(e.value) and "has no chat template" in str(e.value)
        assert "pass the template text yourself" in str(e.value)
        assert "template= in Python, --chat-template FILE on the command line" in str(e.value)
        with pytest.raises(TemplateError, match="no chat template named 'tool_use'"):
            require_template(f, "tool_use")
