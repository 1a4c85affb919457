"""stateful_lstm: the series, the lahead targets, the model, and its pipeline outputs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from stages import stateful_lstm as sl
from stages.core.layout import MODEL, WEIGHTS, Layout
from stages.core.metrics import regression_metrics
from stages.datasets import damped_cosine


def series_of(n_points: int, amplitude: float, period: float, damping: float) -> np.ndarray:
    params = damped_cosine.Params(n_points=n_points, amplitude=amplitude, period=period, damping=damping)
    return damped_cosine.synthesize(params)["series"]


def loop_targets(series: np.ndarray, lahead: int) -> np.ndarray:
    """The original's definition, written as its loop."""
    out = np.zeros((len(series), 1))
    for i in range(len(series) - lahead):
        out[i, 0] = np.mean(series[i + 1 : i + lahead + 1])
    return out


@pytest.mark.parametrize("lahead", [1, 3, 20, 499, 500, 700])
def test_lahead_targets_equal_the_definition(lahead):
    series = series_of(500, 100.0, 37.0, 1e-3)
    targets = sl.lahead_targets(series, lahead)
    assert targets.shape == (500, 1) and targets.dtype == np.float32
    np.testing.assert_allclose(targets, loop_targets(series.astype(np.float64), lahead), rtol=1e-5, atol=1e-4)


def test_lahead_one_is_the_next_value_and_tail_is_zero():
    series = series_of(100, 1.0, 10.0, 0.0)
    targets = sl.lahead_targets(series, 1)
    np.testing.assert_allclose(targets[:-1, 0], series[1:, 0, 0], atol=1e-6)
    assert targets[-1, 0] == 0.0
    assert np.all(sl.lahead_targets(series, 5)[-5:] == 0.0)


def test_model_has_the_original_parameter_count():
    model = sl.build_model(batch_size=25, learning_rate=1e-3)
    assert model.count_params() == sl.N_PARAMS == 30_651
    assert model.input_shape == (25, 1, 1) and model.output_shape == (25, 1)


def test_regression_metrics():
    m = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 4.0, 2.0]))
    assert m == {"mse": pytest.approx(5 / 3), "mae": pytest.approx(1.0)}


SERIES = np.array([1.0, 2.0, 4.0, 7.0, 0.0], np.float32).reshape(5, 1, 1)
TARGETS = np.array([2.0, 4.0, 7.0, 0.0, 0.0], np.float32).reshape(5, 1)  # lahead 2: last two are placeholders
PREDICTED = np.array([3.0, 4.0, 5.0, 9.0, -1.0], np.float32).reshape(5, 1)


def test_score_leaves_out_the_zero_tail_and_compares_with_repeating_the_current_value():
    metrics = sl.score(SERIES, TARGETS, PREDICTED, lahead=2, exclude_zero_tail=True)
    # rows 0..2: model errors 1, 0, -2; naive (the current value) errors -1, -2, -3
    assert metrics == {
        "model": {"mse": pytest.approx(5 / 3), "mae": pytest.approx(1.0)},
        "naive_last_value": {"mse": pytest.approx(14 / 3), "mae": pytest.approx(2.0)},
        "rows_scored": 3,
        "lahead": 2,
        "mse_ratio_to_naive": pytest.approx(5 / 14),
    }


def test_score_with_the_tail_scores_every_row():
    metrics = sl.score(SERIES, TARGETS, PREDICTED, lahead=2, exclude_zero_tail=False)
    assert metrics["rows_scored"] == 5
    assert metrics["model"] == regression_metrics(TARGETS, PREDICTED)
    assert metrics["naive_last_value"]["mse"] == pytest.approx((1 + 4 + 9 + 49 + 0) / 5)


def test_score_ratio_survives_a_perfect_naive_forecast():
    flat = np.ones((4, 1, 1), np.float32)
    metrics = sl.score(flat, np.ones((4, 1), np.float32), np.full((4, 1), 2.0, np.float32), lahead=1, exclude_zero_tail=False)
    assert metrics["naive_last_value"]["mse"] == 0.0
    assert metrics["mse_ratio_to_naive"] == pytest.approx(1e12)


@pytest.mark.parametrize("variant, lahead", [("lahead1", 1), ("lahead20", 20), ("lahead5000", 5000)])
def test_pipeline_outputs(built_project, variant, lahead):
    paths = Layout(f"stateful_lstm-{variant}")
    root = built_project
    x = np.load(root / paths.processed / "x.npy")
    y = np.load(root / paths.processed / "y.npy")
    assert x.shape == (6000, 1, 1) and y.shape == (6000, 1)  # tests/tiny_params.yaml: n_points 6000
    np.testing.assert_allclose(y, sl.lahead_targets(x, lahead))

    metrics = json.loads((root / paths.metrics).read_text())
    assert metrics["lahead"] == lahead
    assert metrics["rows_scored"] == 6000 - lahead
    predicted = np.load(root / paths.predictions / "predicted.npy")
    assert metrics.pop("computed_on")["cpu"]
    assert metrics == json.loads(json.dumps(sl.score(x, y, predicted, lahead, exclude_zero_tail=True)))

    model = json.loads((root / paths.model / MODEL).read_text())
    decay_steps = 2 * 6000 // 25  # epochs x batches: the cosine schedule reaches 0 at the last step
    assert model == {
        "build": {"batch_size": 25, "learning_rate": 0.001, "decay_steps": decay_steps},
        "info": {"parameters": sl.N_PARAMS, "state_rows": "contiguous"},
    }

    live = pd.read_csv(root / paths.training / "plots" / "metrics" / "loss.tsv", sep="\t")
    assert list(live["step"]) == [0, 1]  # two epochs, as DVCLive counts them
    history = pd.read_csv(root / paths.figures / "history.csv")
    assert history["epoch"].tolist() == [1, 2]  # as everything else counts them
    np.testing.assert_allclose(history["loss"], live["loss"], rtol=1e-5)

    predictions = pd.read_csv(root / paths.figures / "predictions.csv")
    assert list(predictions.columns) == ["point", "expected", "predicted"]
    assert len(predictions) == 100 and predictions["point"].iloc[-1] == 5999  # plot.max_points, evenly over the series
    for name in ("predictions.png", "loss.png"):
        assert (root / paths.figures / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (root / paths.model / WEIGHTS).is_file()


def test_row_order_interleaved_is_the_original_and_contiguous_walks_segments():
    assert sl.row_order(6, 2, "interleaved").tolist() == [0, 1, 2, 3, 4, 5]
    order = sl.row_order(12, 3, "contiguous")
    batches = order.reshape(-1, 3)  # one batch a row: state row k is column k
    assert batches[:, 0].tolist() == [0, 1, 2, 3] and batches[:, 2].tolist() == [8, 9, 10, 11]
    assert sorted(order.tolist()) == list(range(12))  # a permutation: every point once
