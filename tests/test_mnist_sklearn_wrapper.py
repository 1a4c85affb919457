"""mnist_sklearn_wrapper: the builder, the grid, a search that must pick the right candidate, and one real dvc repro."""

from __future__ import annotations

import functools
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
from pydantic import ValidationError

from stages import mnist_sklearn_wrapper as m
from stages import training as wrappers
from stages.core.errors import ParamsError
from stages.core.layout import Layout
from stages.core.metrics import cross_entropy
from stages.core.parallel import Parallel
from tests.conftest import ROOT, run
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
    assert len(m.take_first(x, y, 0, "k.train_samples")[0]) == 5
    with pytest.raises(ParamsError, match=r"'k\.train_samples' = 6 is more than the 5 images"):
        m.take_first(x, y, 6, "k.train_samples")


def train_section(**overrides) -> m.Train:
    parallel = Parallel(backend="in_process", processes=2, scheduler="", threads=0)
    settings = {"grid": grid(), "batch_size": 32, "learning_rate": 1.0, "cv": 2, "scoring": "neg_log_loss", "parallel": parallel}
    return m.Train(**{**settings, **overrides})


def test_candidate_table_is_best_first_with_every_column_plot_and_dvc_read():
    params = m.param_grid(grid(dense_layer_sizes=[[32], [64, 64]], epochs=[3]), 32)
    cv_results = {
        "params": [{k: v[0] for k, v in p.items()} for p in params],
        "rank_test_score": np.array([2, 1]),
        "mean_test_score": np.array([-0.9, -0.4]),
        "std_test_score": np.array([0.1, 0.05]),
        "mean_fit_time": np.array([3.0, 5.0]),
        "std_fit_time": np.array([0.2, 0.3]),
        "split0_test_score": np.array([-1.0, -0.45]),
        "split1_test_score": np.array([-0.8, -0.35]),
    }
    table = m.candidate_table(cv_results, 2, "neg_log_loss")
    assert list(table) == [
        "candidate",
        *m.GRID_KEYS,
        "rank",
        "scoring",
        "mean_score",
        "std_score",
        "mean_fit_time",
        "std_fit_time",
        "split0_score",
        "split1_score",
    ]
    assert table["candidate"] == ["dense [64, 64]", "dense [32]"]  # only the varying key labels the bars
    assert table["dense_layer_sizes"] == ["64-64", "32"] and table["rank"] == [1, 2]
    assert table["mean_score"] == [-0.4, -0.9] and table["split1_score"] == [-0.35, -0.8]
    assert table["scoring"] == ["neg_log_loss"] * 2 and all(len(v) == 2 for v in table.values())


def test_score_uses_the_shared_clipped_cross_entropy():
    probabilities = np.array([[1.0, 0.0], [0.25, 0.75], [0.5, 0.5]], np.float32)
    labels = np.array([0, 0, 1])
    search = {"best_params": {"epochs": 6}, "best_cv_score": -0.1, "scoring": "neg_log_loss", "cv": 3, "candidates": 8}
    metrics = m.score(probabilities, labels, search, {"dataset": "mnist", "train": 9, "test": 3})
    # 1.0 is clipped to 1 - 1e-7: a certain right answer costs 1e-7 nats, not 0.
    assert metrics["test_loss"] == pytest.approx((1e-7 + np.log(4) + np.log(2)) / 3, rel=1e-12)
    assert metrics["test_accuracy"] == pytest.approx(1 / 3)  # argmax of [0.5, 0.5] is class 0
    assert metrics["best_params"] == {"epochs": 6} and metrics["candidates"] == 8 and metrics["cv"] == 3
    assert (metrics["dataset"], metrics["train_samples"], metrics["test_samples"]) == ("mnist", 9, 3)


def test_keras_classifier_clones_with_fit_kwargs_and_pickles_by_name():
    from sklearn.base import clone

    builder = functools.partial(m.make_model, seed=0, learning_rate=1.0)
    clf = wrappers.keras_classifier(builder, model_kwargs={"filters": 2}, fit_kwargs={"epochs": 4, "verbose": 0})
    copied = clone(clf)
    assert copied.fit_kwargs == {"epochs": 4, "verbose": 0} and copied.fit_kwargs is not clf.fit_kwargs
    assert copied.model_kwargs == {"filters": 2}
    restored = pickle.loads(pickle.dumps(clf))
    assert type(restored) is wrappers.KerasClassifier and restored.fit_kwargs == clf.fit_kwargs
    assert f"{wrappers.__name__}\nKerasClassifier" in pickle.dumps(clf, protocol=0).decode("latin-1")
    with pytest.raises(AttributeError, match="has no attribute 'Missing'"):
        wrappers.Missing  # noqa: B018


def test_importing_the_module_and_wrapper_does_not_import_keras():
    code = "import sys, stages.mnist_sklearn_wrapper, stages.training; print('keras' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_grid_search_picks_the_clearly_better_candidate():
    # A 1-unit bottleneck cannot separate 10 classes; 64 units can.
    images, labels = image_arrays(400, seed=3)
    x = m.scale(m.as_images(images))
    search = m.grid_search(
        x, labels.astype(np.int64), train_section(grid=grid(dense_layer_sizes=[[1], [64]], epochs=[2])), seed=0
    )
    assert m.flatten_candidate(search.best_params_)["dense_layer_sizes"] == [64]
    table = m.candidate_table(search.cv_results_, 2, "neg_log_loss")
    by_size = dict(zip(table["dense_layer_sizes"], table["mean_score"], strict=True))
    assert by_size["64"] > by_size["1"] + 0.3
    assert search.best_estimator_.predict_proba(x[:3]).shape == (3, 10)
    assert (search.best_estimator_.predict(x[:50]) == labels[:50]).mean() > 0.5


def test_grid_search_in_two_processes_scores_as_in_one():
    # Workers unpickle KerasClassifier by name; re-seeding per candidate makes their scores the one process's.
    images, labels = image_arrays(60, seed=4)
    x, y = m.scale(m.as_images(images)), labels.astype(np.int64)
    p = train_section(grid=grid(dense_layer_sizes=[[4], [8]], epochs=[1], filters=[2]), batch_size=16)
    one = m.grid_search(x, y, p, seed=1)
    two = m.grid_search(x, y, p.model_copy(update={"parallel": p.parallel.model_copy(update={"backend": "processes"})}), seed=1)
    assert type(two.best_estimator_).__name__ == "KerasClassifier"
    np.testing.assert_allclose(two.cv_results_["mean_test_score"], one.cv_results_["mean_test_score"], rtol=1e-5)


def test_dvc_repro_end_to_end(project):
    write_mnist_npz(project / "data/raw/mnist", n_train=300, n_test=100)
    run(["dvc", "commit", "-f", "download@mnist"], project)  # record the fixture as download's output
    run(["dvc", "repro", "plot@mnist_sklearn_wrapper-grid"], project)
    key = "mnist_sklearn_wrapper-grid"
    metrics = json.loads((project / Layout(key).metrics).read_text())
    assert metrics.pop("computed_on")["keras"]
    assert set(metrics) == {
        "best_params",
        "best_cv_score",
        "scoring",
        "candidates",
        "cv",
        "test_loss",
        "test_accuracy",
        "dataset",
        "train_samples",
        "test_samples",
    }
    assert metrics["candidates"] == 2 and metrics["test_samples"] == 100
    assert set(metrics["best_params"]) == {"dense_layer_sizes", "epochs", "filters", "kernel_size", "pool_size"}
    probabilities = np.load(project / f"data/predictions/{key}/probabilities.npy")
    y_test = np.load(project / f"data/processed/{key}/y_test.npy")
    assert probabilities.shape == (100, 10) and metrics["test_loss"] == cross_entropy(probabilities, y_test)
    saved = json.loads((project / f"models/{key}/model.json").read_text())
    assert set(saved["build"]) == {"dense_layer_sizes", "filters", "kernel_size", "pool_size", "learning_rate", "n_classes"}
    assert saved["info"]["best_params"] == metrics["best_params"] and saved["info"]["parameters"] > 0
    lines = (project / Layout(key).training / "candidates.csv").read_text().splitlines()
    assert lines[0].startswith("candidate,dense_layer_sizes,epochs") and len(lines) == 1 + 2
    assert sorted(p.name for p in (project / Layout(key).figures).iterdir()) == ["candidates.png"]
    assert sorted(p.name for p in (project / f"data/predictions/{key}").iterdir()) == ["predicted.npy", "probabilities.npy"]
    # Everything is recorded: a second repro has nothing to do.
    assert "up to date" in run(["dvc", "status", "plot@mnist_sklearn_wrapper-grid"], project).stdout
