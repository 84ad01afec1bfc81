"""Each task's score rescaled by its chance level, and their mean: `mdst eval`'s one number.

A task's score is its accuracy ("acc"; "exact_match" for generation tasks). Its chance level is what
guessing scores: for a multiple-choice task, the mean over the evaluated docs of 1 / (that doc's number of
choices), read from the task's docs; 0 for other tasks. The rescaled score is

    (score - chance) / (1 - chance)

so 0 is guessing and 1 is every answer right, whatever the number of choices; the aggregate is the mean
of the rescaled scores of the tasks that report a score. A task below chance counts negative.
"""

from __future__ import annotations

from typing import Any

METRICS = ("acc", "exact_match")   # the first one a task reports is its score


def chance_level(task: Any, limit: int | None = None) -> float:
    """Guessing's expected accuracy on an lm_eval task's first `limit` docs (all if None): 0 unless multiple choice."""
    if task.OUTPUT_TYPE != "multiple_choice":
        return 0.0
    inverse = [1 / len(task.doc_to_choice(doc)) for _, doc in task.doc_iterator(limit=limit)]
    return sum(inverse) / len(inverse) if inverse else 0.0


def task_score(metrics: dict[str, Any]) -> tuple[str, float] | None:
    """(metric name, value) of a task's lm_eval results ({"acc,none": 0.5, ...}), or None if it reports none."""
    for name in METRICS:
        for key, value in metrics.items():
            if key.split(",")[0] == name and isinstance(value, (int, float)):
                return name, float(value)
    return None


def rescaled(score: float, chance: float) -> float | None:
    """(score - chance) / (1 - chance): 0 at chance, 1 at every answer right; None when every doc has one choice."""
    return (score - chance) / (1 - chance) if chance < 1 else None


def aggregate(tasks: dict[str, dict[str, Any]]) -> float | None:
    """The mean of the tasks' "rescaled" values (None when no task has one)."""
    values = [t["rescaled"] for t in tasks.values() if t.get("rescaled") is not None]
    return sum(values) / len(values) if values else None
