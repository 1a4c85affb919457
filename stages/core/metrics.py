"""Writing metrics/<run>.json: only finite numbers reach git.

A NaN or infinite metric (a diverged model, an empty slice averaged) would be
committed and compared by `dvc metrics diff` as if it were a result. evaluate
writes through `write_metrics`, which refuses such a value, naming its key,
and then writes nothing, so the previous metrics file stays as it was.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from stages.core.errors import StageError
from stages.core.files import write_json


class MetricError(StageError):
    """evaluate computed a metric that is not a finite number."""


def _numbers(value: Any, key: str) -> Iterator[tuple[str, float]]:
    """Every float of a nested dict/list, with its dotted key ('model.mse', 'losses[2]')."""
    if isinstance(value, Mapping):
        for name, item in value.items():
            yield from _numbers(item, f"{key}.{name}" if key else str(name))
    elif isinstance(value, (list, tuple, np.ndarray)):
        for i, item in enumerate(value):
            yield from _numbers(item, f"{key}[{i}]")
    elif isinstance(value, (float, np.floating)):
        yield key, float(value)


def non_finite(metrics: Mapping[str, Any]) -> list[tuple[str, float]]:
    """The (dotted key, value) pairs of `metrics` that are NaN or infinite."""
    return [(key, value) for key, value in _numbers(metrics, "") if not math.isfinite(value)]


def write_metrics(path: str | os.PathLike, metrics: Mapping[str, Any]) -> None:
    """Write `metrics` as stages.core.files.write_json does, if every number in it is finite.

    Raises MetricError (a StageError) naming each non-finite metric; nothing is
    written then, so an existing file at `path` is left untouched.
    """
    bad = non_finite(metrics)
    if bad:
        listed = ", ".join(f"'{key}' = {value}" for key, value in bad)
        raise MetricError(
            f"{path} not written: metric {listed} is not a finite number, which usually means training "
            "diverged (try a lower learning rate) or nothing was left to score; the previous file is left as it was."
        )
    write_json(path, {**metrics, "computed_on": computed_on()})


def computed_on() -> dict[str, Any]:
    """What a metrics file was computed on: the same inputs give the same numbers only on the same CPU and builds.

    Math kernels differ by instruction set (AVX-512 or not) and by TensorFlow
    build, so `dvc metrics diff` across branches made on different machines
    shows these strings too, and the README says how far apart results on two
    machines may be.
    """
    import platform
    from importlib import metadata

    def version(*dists: str) -> str:
        for dist in dists:
            try:
                return metadata.version(dist)
            except metadata.PackageNotFoundError:
                continue
        return "not installed"

    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                cpu = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "avx512": "avx512f" in flags,
        "tensorflow": version("tensorflow-cpu", "tensorflow"),
        "keras": version("keras"),
        "numpy": version("numpy"),
    }


# --- the metric definitions every example shares -----------------------------
# One definition each, so "test loss" means the same in every metrics file.


def cross_entropy(probabilities: np.ndarray, labels: np.ndarray, epsilon: float = 1e-7) -> float:
    """Mean categorical cross-entropy (nats) of (N, C) class probabilities against (N,) integer labels.

    As Keras computes it from probabilities: each row is divided by its sum,
    then clipped to [epsilon, 1 - epsilon], so one confident mistake costs at
    most -ln(1e-7) = 16.1 nats instead of infinity.
    """
    p = np.asarray(probabilities, np.float64)
    p = np.clip(p / p.sum(axis=1, keepdims=True), epsilon, 1 - epsilon)
    y = np.asarray(labels, np.int64).reshape(-1)
    return float(-np.mean(np.log(p[np.arange(len(y)), y])))


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose most probable class is the label."""
    return float(np.mean(np.asarray(probabilities).argmax(axis=1) == np.asarray(labels).reshape(-1)))


def confusion_matrix(actual: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) int64 counts; row = actual class, column = predicted class."""
    actual = np.asarray(actual, np.int64).reshape(-1)
    predicted = np.asarray(predicted, np.int64).reshape(-1)
    return np.bincount(actual * n_classes + predicted, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def regression_metrics(expected: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Mean squared and mean absolute error of two equally long series."""
    err = np.asarray(predicted, np.float64).reshape(-1) - np.asarray(expected, np.float64).reshape(-1)
    return {"mse": float(np.mean(err**2)), "mae": float(np.mean(np.abs(err)))}
