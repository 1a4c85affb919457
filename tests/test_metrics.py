"""write_metrics: finite numbers are written as write_json writes them; anything else names its key and writes nothing."""

from __future__ import annotations

import re

import numpy as np
import pytest

from stages.core import metrics
from stages.core.errors import StageError
from stages.core.files import read_json, write_json
from stages.core.metrics import MetricError, non_finite, write_metrics

GOOD = {"model": {"mse": 0.5, "mae": np.float32(0.25)}, "rows_scored": 10, "losses": [1.0, 2.0], "name": "x"}


def test_finite_metrics_are_written_like_write_json(tmp_path):
    write_metrics(tmp_path / "m.json", GOOD)
    write_json(tmp_path / "j.json", {**GOOD, "computed_on": metrics.computed_on()})
    assert (tmp_path / "m.json").read_bytes() == (tmp_path / "j.json").read_bytes()
    assert read_json(tmp_path / "m.json")["model"] == {"mse": 0.5, "mae": 0.25}


@pytest.mark.parametrize(
    "metrics, key",
    [
        ({"model": {"mse": float("nan"), "mae": 1.0}}, "model.mse"),
        ({"val_loss": float("inf")}, "val_loss"),
        ({"model": {"mae": np.float32("-inf")}}, "model.mae"),
        ({"losses": [1.0, float("nan")]}, "losses[1]"),
    ],
)
def test_a_non_finite_metric_is_named_and_nothing_is_written(tmp_path, metrics, key):
    path = tmp_path / "metrics" / "run.json"
    write_json(path, GOOD)
    before = path.read_bytes()
    with pytest.raises(MetricError, match=re.escape(f"'{key}' = ") + r"-?(nan|inf) is not a finite number"):
        write_metrics(path, {**GOOD, **metrics})
    assert path.read_bytes() == before  # the last good metrics stay, byte for byte
    assert sorted(p.name for p in path.parent.iterdir()) == ["run.json"]  # no temporary file left behind
    assert issubclass(MetricError, StageError)  # printed as one paragraph by the CLI, no traceback


def test_non_finite_lists_every_bad_key():
    bad = non_finite({"a": {"b": float("nan")}, "c": float("inf"), "d": 1.0, "e": 3, "f": "nan"})
    assert [key for key, _ in bad] == ["a.b", "c"] and np.isnan(bad[0][1]) and bad[1][1] == float("inf")


def test_cross_entropy_normalises_then_clips_as_keras_does():
    probabilities = np.array([[0.5, 0.5], [2.0, 0.0], [0.0, 1.0]])  # the second row sums to 2
    labels = np.array([0, 1, 1])
    expected = -(np.log(0.5) + np.log(1e-7) + np.log(1 - 1e-7)) / 3
    assert metrics.cross_entropy(probabilities, labels) == pytest.approx(expected, rel=1e-12)


def test_accuracy_confusion_and_regression_definitions():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert metrics.accuracy(probabilities, np.array([0, 1, 1])) == pytest.approx(2 / 3)
    matrix = metrics.confusion_matrix(np.array([0, 1, 1]), np.array([0, 1, 0]), 2)
    assert matrix.tolist() == [[1, 0], [1, 1]]  # row = actual, column = predicted
    assert metrics.regression_metrics(np.array([0.0, 2.0]), np.array([1.0, 0.0])) == {"mse": 2.5, "mae": 1.5}


def test_metrics_record_what_they_were_computed_on(tmp_path):
    """Results differ across CPUs and builds: each metrics file says which it came from."""
    import json
    from importlib import metadata

    from stages.core.metrics import write_metrics

    write_metrics(tmp_path / "m.json", {"test": {"accuracy": 0.5}})
    written = json.loads((tmp_path / "m.json").read_text())
    assert written["test"] == {"accuracy": 0.5}
    on = written["computed_on"]
    assert on["keras"] == metadata.version("keras") and on["numpy"] == metadata.version("numpy")
    assert on["tensorflow"] == metadata.version("tensorflow-cpu") and isinstance(on["avx512"], bool) and on["cpu"]
