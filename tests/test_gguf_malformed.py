"""Malformed GGUF files end in GGUFError, never in a crash, a hang or an allocation sized by an unchecked count.

Every input is opened in a worker process (tests/gguf_cases.py) under an address-space limit and a hang
timeout, by mdst and by llama.cpp's own GGUF reader, which is the judge of what is valid:
- the corruption matrix of llama.cpp's tests/test-gguf.cpp, with valid controls;
- every tensor type id, which mdst must accept exactly when llama.cpp does;
- every truncation of a small valid file;
- hypothesis mutations of small valid files and of the two real models' headers.
A file mdst loads must be one llama.cpp accepts, read the same way (metadata, tensor table, offsets).
The run's "measured figures" give how many inputs were tried and how many ended otherwise (target 0).
"""

from __future__ import annotations

import sys
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gguf_cases as gc
import metrics
from conftest import need

# What may become of an input: mdst loads it (llama.cpp accepting it and reading the same), or GGUFError.
GOOD_OUTCOMES = ("loaded-valid", "GGUFError")
# Rules mdst has and llama.cpp's reader lacks; a file llama.cpp accepts may fail only these.
MDST_ONLY_RULES = ("not valid UTF-8", "dimensions; GGUF allows 1 to", "more than the 65535 allowed")


class Tally:
    """Outcomes per group of inputs, reported (tests/metrics.py) when the module ends."""

    def __init__(self) -> None:
        self.outcomes: dict[str, Counter] = {}
        self.started = time.monotonic()

    def add(self, group: str, result: dict) -> str:
        """Count one result; return its outcome: loaded-valid, GGUFError, or what went wrong."""
        outcome = result["mdst"]
        if outcome == "loaded":
            outcome = "loaded-INVALID" if result["problems"] else "loaded-valid"
        elif outcome == "GGUFError" and result.get("llama") == "accepted":
            outcome = "GGUFError" if any(r in result["mdst_detail"] for r in MDST_ONLY_RULES) else "GGUFError-on-valid"
        self.outcomes.setdefault(group, Counter())[outcome] += 1
        return outcome

    def report(self) -> None:
        """One figure per group and one for all: tried, loaded (valid), GGUFError, other (target 0)."""
        total: Counter = Counter()
        for group, c in [*self.outcomes.items(), ("all", total)]:
            if group != "all":
                total.update(c)
            other = {k: v for k, v in c.items() if k not in GOOD_OUTCOMES}
            figures = dict(group=group, tried=sum(c.values()), loaded_valid=c["loaded-valid"],
                           gguf_error=c["GGUFError"], other=sum(other.values()), other_kinds=other)
            if group == "all":
                figures["seconds"] = round(time.monotonic() - self.started, 1)
            metrics.report("gguf malformed inputs", **figures)


@pytest.fixture(scope="module")
def tally():
    """The module's outcome counts, reported at the end."""
    t = Tally()
    yield t
    t.report()


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> gc.Bases:
    """The small valid files, written with GGUFWriter."""
    return gc.Bases(tmp_path_factory.mktemp("gguf_bases"))


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, llama_cpp):
    """The worker (mdst and llama.cpp's reader, address space limited); llama_cpp checks the pinned version."""
    need(sys.platform == "linux", "the sandbox limits address space with RLIMIT_AS and reads /proc (Linux)")
    sb = gc.Sandbox(tmp_path_factory.mktemp("gguf_sandbox"))
    yield sb
    sb.close()


def _explain(name: str, result: dict) -> str:
    return (f"{name}: mdst {result['mdst']}, llama.cpp {result.get('llama')}\n"
            f"mdst: {result.get('mdst_detail', '')[-3000:]}\nllama.cpp: {result.get('llama_detail', '')[-500:]}\n"
            f"problems: {result['problems']}")


def test_sandbox_stops_runaway_allocations_hangs_and_crashes(sandbox):
    """The harness itself: the limit holds, a hang and a dead worker are reported, and it recovers."""
    assert sandbox.request({"alloc": 64 << 20}) == {"allocated": 64 << 20}
    assert sandbox.request({"alloc": gc.WORKER_ADDRESS_SPACE + (1 << 30)}) == {"allocated": 0}
    assert sandbox.request({"sleep": 10}, timeout_s=0.5)["mdst"] == "hang"
    assert sandbox.request({"alloc": 1}) == {"allocated": 1}
    sandbox.proc.kill()
    assert sandbox.request({"alloc": 1})["mdst"] == "crash"
    assert sandbox.request({"alloc": 1}) == {"allocated": 1}


@pytest.mark.parametrize("case", gc.MATRIX, ids=[c.name for c in gc.MATRIX])
def test_corruption_matrix(case, bases, sandbox, tally):
    """Each case loads or raises GGUFError as listed, and llama.cpp agrees that it is (in)valid."""
    result = sandbox.judge(case.build(bases))
    tally.add("matrix", result)
    want_mdst = "loaded" if case.expect == gc.LOAD else "GGUFError"
    want_llama = "rejected" if case.expect == gc.REJECT else "accepted"
    assert (result["mdst"], result.get("llama"), result["problems"]) == (want_mdst, want_llama, []), \
        _explain(case.name, result)


def test_tensor_type_ids_match_llama_cpp(bases, sandbox, tally):
    """mdst accepts exactly the tensor type ids llama.cpp accepts (its table holds all of ggml's types)."""
    wrong = []
    for type_id in [*range(64), 2**31 - 1, 2**31, 2**32 - 1]:
        result = sandbox.judge(gc.type_probe(bases, type_id))
        tally.add("type ids", result)
        if (result["mdst"] == "loaded") != (result.get("llama") == "accepted") or result["problems"]:
            wrong.append(_explain(f"type id {type_id}", result))
    assert not wrong, "\n\n".join(wrong)


def test_every_truncation(bases, sandbox, tally):
    """Every prefix of a valid file (all value types, five tensor types) loads only if still valid."""
    wrong = []
    base = bases.plain
    for size in range(base.size + 1):
        result = sandbox.judge(base.patch(size=size))
        if tally.add("truncation", result) not in GOOD_OUTCOMES:
            wrong.append(_explain(f"truncated to {size} of {base.size} bytes", result))
    assert not wrong, "\n\n".join(wrong[:5]) + f"\n({len(wrong)} prefixes failed)"


# ---- hypothesis mutations ------------------------------------------------------------------------

INTERESTING = [0, 1, 2, 3, 4, 5, 7, 8, 9, 12, 13, 16, 31, 32, 33, 63, 64, 65, 255, 256, 2**16 - 1, 2**16,
               2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**61, 2**62, 2**63 - 1, 2**63, 2**64 - 32, 2**64 - 1]
FIELD_INDEX = st.integers(0, 2**20)  # taken modulo the number of integer fields
EDIT = st.one_of(
    st.tuples(st.just("field"), FIELD_INDEX, st.sampled_from(INTERESTING) | st.integers(0, 2**64 - 1)),
    st.tuples(st.just("add"), FIELD_INDEX, st.sampled_from([-64, -32, -1, 1, 32, 64]) | st.integers(-2**33, 2**33)),
    st.tuples(st.just("to_end"), FIELD_INDEX, st.integers(-9, 9)),
    st.tuples(st.just("bytes"), st.integers(0, 2**24), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("insert"), st.integers(0, 2**24), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), st.integers(0, 2**24), st.integers(1, 16)),
    st.tuples(st.just("truncate"), st.integers(0, 2**24)),
)
EDITS = st.lists(EDIT, min_size=1, max_size=3)
MUTATION_SETTINGS = dict(derandomize=True, database=None, deadline=None, print_blob=True,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _check_mutation(group: str, base: gc.Base, edits: list, sandbox, tally) -> None:
    result = sandbox.judge(gc.mutate(base, edits))
    outcome = tally.add(group, result)
    assert outcome in GOOD_OUTCOMES, _explain(f"{group} with edits {edits}", result)


@settings(max_examples=3000, **MUTATION_SETTINGS)
@given(which=st.sampled_from(["plain", "aligned", "kv_only"]), edits=EDITS)
def test_mutated_small_files(which, edits, bases, sandbox, tally):
    """A mutated small file loads only if llama.cpp accepts it and reads it the same way; else GGUFError."""
    _check_mutation("mutated small files", getattr(bases, which), edits, sandbox, tally)


@pytest.fixture(scope="module")
def real_bases(smollm2_path, gemma_path) -> dict[str, gc.Base]:
    """The two real models' headers (tensor data left as holes of the same size)."""
    return {"smollm2": gc.Bases.real(smollm2_path), "gemma": gc.Bases.real(gemma_path)}


@settings(max_examples=200, **MUTATION_SETTINGS)
@given(which=st.sampled_from(["smollm2", "gemma"]), edits=EDITS)
def test_mutated_real_headers(which, edits, real_bases, sandbox, tally):
    """The same for the headers of SmolLM2 (49152-token BPE vocabulary) and Gemma 3 (262144 tokens)."""
    _check_mutation("mutated real headers", real_bases[which], edits, sandbox, tally)
