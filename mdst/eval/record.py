"""`mdst eval`: lm_eval's tasks on an mdst model, and the JSON record of the run.

The record: the model file (path, sha256 of its first MiB, which names it without reading gigabytes),
the device asked for and the adapter used, the mdst, lm_eval and wgpu versions, the date (UTC), each task's
score, chance level and rescaled score (`scores.py`), their aggregate, and lm_eval's own results.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import importlib.metadata
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

from .harness import MdstLM
from .scores import aggregate, chance_level, rescaled, task_score

HEAD_BYTES = 1 << 20


def file_head_sha256(path: str) -> str:
    """sha256 of a file's first MiB (hex)."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read(HEAD_BYTES)).hexdigest()


def version(package: str) -> str | None:
    """An installed distribution's version, or None."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_tasks(tasks: Sequence[str] | str) -> list[str]:
    """Task names from a list or a comma-separated string; ValueError when none."""
    names = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks)]
    if not names or not all(names):
        raise ValueError(f"tasks must name lm_eval tasks (T1,T2 ...), got {tasks!r}; `lm-eval ls tasks` lists them")
    return names


def check_limit(limit: object) -> int | None:
    """`limit` as a positive int of docs per task, or None (all); ValueError otherwise."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int (docs per task), got {limit!r}; leave it out for all")
    return limit


@dataclass(frozen=True)
class Tasks:
    """lm_eval tasks ready to run: their manager and each leaf task (a group's members) by name."""

    manager: Any
    by_name: dict[str, Any]


@functools.lru_cache(maxsize=4)
def task_manager(include_path: str | None = None) -> Any:
    """lm_eval's TaskManager (the index of every task YAML it ships, and those under include_path), built once
    per include_path: indexing takes seconds, and Task objects are made anew from it each time."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path)


def load_tasks(tasks: Sequence[str] | str, include_path: str | None = None) -> Tasks:
    """lm_eval's `tasks` (names; `include_path` adds a folder of task YAMLs) with their docs, before any model
    is loaded, so a misspelt name or a missing dataset costs no load; ValueError for unknown names."""
    from lm_eval.api.task import Task
    from lm_eval.tasks import get_task_dict

    names = check_tasks(tasks)
    manager = task_manager(include_path)
    unknown = [t for t in names if t not in manager.all_tasks]
    if unknown:
        raise ValueError(f"unknown lm_eval task(s): {', '.join(unknown)}; `lm-eval ls tasks` lists them"
                         + ("" if include_path else ", and --include-path adds a folder of your own task YAMLs"))
    with warnings.catch_warnings():   # newer lm_eval deprecates get_task_dict for TaskManager.load, which 0.4.9 lacks
        warnings.simplefilter("ignore", DeprecationWarning)
        return Tasks(manager, dict(_leaf_tasks(get_task_dict(names, manager), Task)))


def evaluate(lm: MdstLM, tasks: Tasks, limit: int | None = None, device: str | None = None) -> dict[str, Any]:
    """Run `tasks` on `lm`, at most `limit` docs each; returns the run record (`device`: what was asked for)."""
    from lm_eval import evaluator

    check_limit(limit)
    leaves = tasks.by_name
    out = evaluator.simple_evaluate(model=lm, tasks=list(leaves.values()), limit=limit, task_manager=tasks.manager)
    per_task = {}
    for name, task in leaves.items():
        metrics = out["results"].get(name, {})
        got = task_score(metrics)
        entry: dict[str, Any] = {"metric": None, "score": None, "chance": None, "rescaled": None}
        if got is not None:
            chance = chance_level(task, limit)
            entry = {"metric": got[0], "score": got[1], "chance": chance, "rescaled": rescaled(got[1], chance)}
        per_task[name] = {**entry, "samples": out.get("n-samples", {}).get(name, {}).get("effective")}
    model = lm.model
    return {
        "model": {"path": model.path, "sha256_first_mib": file_head_sha256(model.gguf.paths[0]),
                  "architecture": model.architecture},
        "device": device, "adapter": model.backend, "kv_type": model.kv_type,
        "context_length": model.context_length,
        "versions": {p: version(p) for p in ("mdst", "lm_eval", "wgpu")},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "limit": limit, "tasks": per_task, "aggregate": aggregate(per_task),
        "aggregate_formula": "mean over tasks of (score - chance) / (1 - chance), chance = mean 1/choices",
        "lm_eval_results": out["results"],
    }


def _leaf_tasks(task_dict: dict, task_type: type) -> list[tuple[str, Any]]:
    """(name, Task) of every task in lm_eval's (possibly nested, by group) task dict."""
    leaves = []
    for value in task_dict.values():
        if isinstance(value, task_type):
            leaves.append((value.config.task, value))
        elif isinstance(value, dict):
            leaves.extend(_leaf_tasks(value, task_type))
    return leaves
