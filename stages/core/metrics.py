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
    write_json(path, metrics)
