"""mnist_sklearn_wrapper: the builder, the grid, a search that must pick the right candidate, and one real dvc repro."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from stages import mnist_sklearn_wrapper as m
from stages.core.errors import ParamsError
from tests.conftest import run
from tests.fixtures import image_arrays, write_mnist_npz

ORIGINAL_GRID = {
    "dense_layer_sizes": [[32], [64], [32, 32], [64, 64]],
    "epochs": [3, 6],
    "filters": [8],
    "kernel_size": [3],
    "pool_size": [2],
}


def grid(**overrides) -> m.Grid:
    return m.Grid(**{**ORIGINAL_GRID, **overrides})


def test_builder_matches_the_original_layers():
    model = m.build_model([64, 64], filters=8, kernel_size=3, pool_size=2, learning_rate=1.0)
    # conv 80 + conv 584 + dense 12*12*8*64+64 + dense 64*64+64 + out 650
    assert model.count_params() == 80 + 584 + 73_792 + 4_160 + 650
    assert model.input_shape == (None, 784) and model.output_shape == (None, 10)
    assert float(model.optimizer.learning_rate) == pytest.approx(1.0)
    assert m.build_model([32], 8, 3, 2, 1.0).count_params() == 80 + 584 + 36_896 + 330


def test_scale_flattens_to_unit_range():
    x = m.scale(np.full((2, 28, 28, 1), 255, np.uint8))
    assert x.shape == (2, 784) and x.dtype == np.float32 and x.max() == 1.0


def test_original_grid_has_eight_candidates_in_fixed_order():
    cands = m.candidates(grid())
    assert len(cands) == 8 and len(m.param_grid(grid(), 32)) == 8
    assert cands[0] == {"dense_layer_sizes": [32], "epochs": 3, "filters": 8, "kernel_size": 3, "pool_size": 2}
    assert m.flatten_candidate({k: v[0] for k, v in m.param_grid(grid(), 32)[-1].items()}) == cands[-1]
    assert m.candidate_label(cands[-1], m.varying_keys(cands)) == "dense [64, 64], epochs 6"


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"kernel_size": [15]}, "leaves no pixels"),
        ({"epochs": [3, 3]}, "repeats"),
        ({"dense_layer_sizes": [[]]}, "non-empty"),
        ({"dense_layer_sizes": [[32], [32]]}, "repeats"),
        ({"filters": [0]}, "positive"),
    ],
)
def test_check_grid_names_the_bad_key(bad, words):
    with pytest.raises(ParamsError, match=words):
        m.check_grid(grid(**bad))


def test_grid_schema_rejects_wrong_types_and_empty_lists():
    with pytest.raises(ValidationError):
        m.Grid(**{**ORIGINAL_GRID, "epochs": []})
    with pytest.raises(ValidationError):
        m.Grid(**{**ORIGINAL_GRID, "dense_layer_sizes": [32, 64]})  # must be lists of widths
    with pytest.raises(ValidationError):
        m.Grid(**ORIGINAL_GRID, extra=[1])


def test_take_first_refuses_more_than_there_is():
    x, y = np.zeros((5, 28, 28), np.uint8), np.zeros(5, np.uint8)
    assert len(m.take_first(x, y, 0, "train_samples")[0]) == 5
    with pytest.raises(ParamsError, match="train_samples"):
        m.take_first(x, y, 6, "train_samples")


def test_grid_search_picks_the_clearly_better_candidate():
    # A 1-unit bottleneck cannot separate 10 classes; 64 units can.
    images, labels = image_arrays(400, seed=3)
    x = m.scale(m.as_images(images))
    search = m.grid_search(
        x,
        labels.astype(np.int64),
        grid(dense_layer_sizes=[[1], [64]], epochs=[2]),
        batch_size=32,
        learning_rate=1.0,
        cv=2,
        scoring="neg_log_loss",
        n_jobs=1,
        seed=0,
    )
    assert m.flatten_candidate(search.best_params_)["dense_layer_sizes"] == [64]
    rows = m.summarize(search.cv_results_, 2)
    by_size = {tuple(r["dense_layer_sizes"]): r["mean_score"] for r in rows}
    assert by_size[(64,)] > by_size[(1,)] + 0.3
    assert search.best_estimator_.predict_proba(x[:3]).shape == (3, 10)
    assert (search.best_estimator_.predict(x[:50]) == labels[:50]).mean() > 0.5


def test_dvc_repro_end_to_end(project):
    write_mnist_npz(project / "data/raw/mnist", n_train=300, n_test=100)
    run(["dvc", "commit", "-f", "download@mnist"], project)  # record the fixture as download's output
    run(["dvc", "repro", "plot@mnist_sklearn_wrapper-grid"], project)
    key = "mnist_sklearn_wrapper-grid"
    metrics = json.loads((project / f"metrics/{key}.json").read_text())
    assert {"best_params", "best_cv_score", "test_loss", "test_accuracy", "candidates"} <= set(metrics)
    assert metrics["candidates"] == 2 and metrics["test_samples"] == 100
    assert set(metrics["best_params"]) == {"dense_layer_sizes", "epochs", "filters", "kernel_size", "pool_size"}
    lines = (project / f"plots/{key}/figures/candidates.csv").read_text().splitlines()
    assert lines[0].startswith("candidate,rank,mean_score") and len(lines) == 1 + 2
    assert len((project / f"plots/{key}/training/candidates.csv").read_text().splitlines()) == 1 + 2
    assert (project / f"plots/{key}/figures/candidates.png").stat().st_size > 0
    assert (project / f"models/{key}/model.weights.h5").is_file()
    assert np.load(project / f"data/predictions/{key}/probabilities.npy").shape == (100, 10)
    # Everything is recorded: a second repro has nothing to do.
    assert "up to date" in run(["dvc", "status", "plot@mnist_sklearn_wrapper-grid"], project).stdout
