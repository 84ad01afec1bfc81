"""Comparison measures shared by the tests."""

from __future__ import annotations

import json

import numpy as np

FIGURES: list[str] = []  # printed at the end of the run by conftest's terminal summary


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / ||b|| in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of rows whose argmax agrees."""
    return float(np.mean(np.argmax(a, axis=-1) == np.argmax(b, axis=-1)))


def report(name: str, **figures: object) -> None:
    """Record a measured figure for the end-of-run summary."""
    FIGURES.append(json.dumps({"figure": name, **figures}))
