"""mnist_siamese: pair creation against the original's definition, metrics, and one real dvc repro."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from stages import mnist_siamese as ms
from tests.conftest import assert_code_deps_match_imports, run, set_param
from tests.fixtures import write_mnist_npz

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def labels_with_counts(counts: list[int], seed: int = 0) -> np.ndarray:
    labels = np.repeat(np.arange(10, dtype=np.uint8), counts)
    np.random.default_rng(seed).shuffle(labels)
    return labels


def reference_pairs(labels: np.ndarray, increments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The original's create_pairs loop, on indices, taking increments[d, i] where it called random.randrange(1, 10)."""
    digit_indices = [np.where(labels == d)[0] for d in range(10)]
    n = min(len(digit_indices[d]) for d in range(10)) - 1
    pairs, same = [], []
    for d in range(10):
        for i in range(n):
            z1, z2 = digit_indices[d][i], digit_indices[d][i + 1]
            pairs += [[z1, z2]]
            inc = increments[d, i]
            dn = (d + inc) % 10
            z1, z2 = digit_indices[d][i], digit_indices[dn][i]
            pairs += [[z1, z2]]
            same += [1, 0]
    return np.array(pairs), np.array(same)


@pytest.mark.parametrize("counts, expected", [(MNIST_TRAIN_COUNTS, 108_400), (MNIST_TEST_COUNTS, 17_820)])
def test_mnist_class_counts_give_the_original_pair_counts(counts, expected):
    labels = labels_with_counts(counts)
    n = ms.pair_count(labels)
    pairs, same = ms.create_pairs(labels, ms.draw_increments(np.random.default_rng(0), n))
    assert len(pairs) == len(same) == expected
    assert pairs.dtype == np.int32 and pairs.shape == (expected, 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pairs_equal_the_definition_for_the_same_draws(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=137)
    labels[:20] = np.repeat(np.arange(10), 2)  # every class has at least two images
    increments = ms.draw_increments(np.random.default_rng(seed + 100), ms.pair_count(labels))
    pairs, same = ms.create_pairs(labels, increments)
    ref_pairs, ref_same = reference_pairs(labels, increments)
    np.testing.assert_array_equal(pairs, ref_pairs)
    np.testing.assert_array_equal(same, ref_same)


def test_pair_labels_match_the_classes():
    labels = labels_with_counts([30 + c for c in range(10)], seed=3)
    pairs, same = ms.create_pairs(labels, ms.draw_increments(np.random.default_rng(1), ms.pair_count(labels)))
    assert (same[::2] == 1).all() and (same[1::2] == 0).all()
    np.testing.assert_array_equal(labels[pairs[:, 0]] == labels[pairs[:, 1]], same == 1)


def test_draws_are_one_to_nine():
    draws = ms.draw_increments(np.random.default_rng(0), 1000)
    assert draws.shape == (10, 1000) and draws.min() == 1 and draws.max() == 9


def test_create_pairs_rejects_wrong_increments():
    labels = np.repeat(np.arange(10), 3)
    with pytest.raises(ValueError, match=r"increments must have shape \(10, 2\)"):
        ms.create_pairs(labels, np.ones((10, 5), dtype=np.int64))


def test_pair_accuracy_is_accuracy_not_precision():
    d = np.array([0.1, 0.2, 0.9, 0.3])
    same = np.array([1, 0, 0, 0])
    assert ms.pair_accuracy(d, same, 0.5) == 0.5  # precision would be 1/3


def test_best_threshold_matches_brute_force():
    rng = np.random.default_rng(0)
    same = rng.integers(0, 2, 300)
    d = np.round(rng.normal(1.0 - 0.6 * same, 0.3), 2)  # ties included
    t, acc = ms.best_threshold(d, same)
    brute = max(ms.pair_accuracy(d, same, c) for c in np.concatenate([np.unique(d), [d.max() + 1]]))
    assert acc == pytest.approx(brute)
    assert ms.pair_accuracy(d, same, t) == pytest.approx(acc)


def test_score_uses_the_threshold_and_picks_the_best_on_train_only():
    same = {"train": np.array([1, 1, 0, 0]), "test": np.array([1, 1, 0, 0])}
    distances = {"train": np.array([0.1, 0.3, 0.7, 0.9]), "test": np.array([0.6, 0.2, 0.4, 0.9])}
    metrics = ms.score(distances, same, threshold=0.5)
    assert metrics["threshold"] == 0.5
    assert metrics["train"] == {"accuracy": 1.0, "roc_auc": 1.0, "pairs": 4}
    # test: 0.6 (same) is missed and 0.4 (different) taken at 0.5; ranks: 0.2 < 0.4 < 0.6 < 0.9 -> AUC 3/4
    assert metrics["test"] == {"accuracy": 0.5, "roc_auc": 0.75, "pairs": 4}
    # chosen on train (midway between 0.3 and 0.7), whatever would suit test better
    assert metrics["best_threshold"] == {"threshold": pytest.approx(0.5), "train_accuracy": 1.0, "test_accuracy": 0.5}
    assert ms.score(distances, same, threshold=0.95)["train"]["accuracy"] == 0.5


def test_histogram_counts_every_pair():
    d = np.array([0.0, 0.1, 0.5, 1.0, 2.0])
    h = ms.histogram(d, np.array([1, 1, 0, 0, 0]), bins=4)
    assert h["same"].sum() == 2 and h["different"].sum() == 3 and len(h["distance"]) == 4


def test_contrastive_loss_and_distance():
    model, base = ms.build_model(1e-3, 0.1, 1.0)
    assert base.count_params() == ms.N_PARAMS
    x = np.random.default_rng(0).random((4, 28, 28)).astype(np.float32)
    d = model.predict([x, x], verbose=0)
    np.testing.assert_allclose(d, np.sqrt(1e-7), rtol=1e-3)  # identical inputs: clamped distance
    loss = model.loss(np.array([0.0, 1.0]), np.array([[0.25], [0.5]], np.float32))
    assert float(loss) == pytest.approx((0.75**2 + 0.5**2) / 2)


def test_pipeline_end_to_end_and_plotted_threshold_follows_evaluate(project):
    """Real DVC: fixture mnist.npz recorded as download@mnist's result, the whole pipeline, then evaluate.threshold 0.8."""
    write_mnist_npz(project / "data/raw/mnist", n_train=600, n_test=200)
    run(["dvc", "commit", "-f", "download@mnist"], project)
    run(["dvc", "repro", "plot@mnist_siamese-mlp"], project)
    metrics = json.loads((project / "metrics/mnist_siamese/mlp.json").read_text())
    assert metrics["train"]["pairs"] == 20 * (60 - 1) and metrics["test"]["pairs"] == 20 * (20 - 1)
    assert metrics["test"]["accuracy"] > 0.6 and metrics["test"]["roc_auc"] > 0.7
    config = json.loads((project / "models/mnist_siamese-mlp/model.json").read_text())
    assert config == {"build": {"learning_rate": 0.001, "dropout": 0.1, "margin": 1.0}, "info": {"parameters": ms.N_PARAMS}}
    figures = project / "plots/mnist_siamese/mlp/figures"
    for name in ("distances.csv", "distances.png", "embeddings.csv", "embeddings.png", "training.png"):
        assert (figures / name).is_file(), name
    assert pd.read_csv(figures / "history.csv")["epoch"].tolist() == [1, 2, 3, 4, 5]  # epochs counted from 1
    drawn = json.loads((figures / "thresholds.json").read_text())
    assert drawn == {"threshold": 0.5, "best_threshold": metrics["best_threshold"]["threshold"]}
    status = run(["dvc", "status", "plot@mnist_siamese-mlp"], project).stdout
    assert "changed" not in status

    # evaluate.threshold changed: evaluate and plot run again, and the line plot draws moves with it
    before = {name: (figures / name).read_bytes() for name in ("distances.csv", "embeddings.csv", "distances.png")}
    set_param(project, "mnist_siamese.evaluate.threshold", 0.8)
    repro = run(["dvc", "repro", "plot@mnist_siamese-mlp"], project).stdout
    assert "Running stage 'evaluate@mnist_siamese-mlp'" in repro and "Running stage 'train@mnist_siamese-mlp'" not in repro
    meta = json.loads((project / "data/predictions/mnist_siamese-mlp/meta.json").read_text())
    assert meta["threshold"] == 0.8
    assert json.loads((figures / "thresholds.json").read_text())["threshold"] == 0.8
    assert json.loads((project / "metrics/mnist_siamese/mlp.json").read_text())["threshold"] == 0.8
    # same predictions, so the data plots are byte-identical (PCA needs no seed); only the picture's line moved
    assert (figures / "distances.csv").read_bytes() == before["distances.csv"]
    assert (figures / "embeddings.csv").read_bytes() == before["embeddings.csv"]
    moved = (figures / "distances.png").read_bytes() != before["distances.png"]
    assert moved, "distances.png is byte-identical after evaluate.threshold changed: its threshold line did not move"
    steps = {f"{step}@mnist_siamese-mlp" for step in ("preprocess", "train", "evaluate", "plot")}
    assert steps <= assert_code_deps_match_imports(project)
