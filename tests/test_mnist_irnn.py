"""mnist_irnn: sequences, metrics, model shape, and one real dvc repro."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from stages import mnist_irnn as mi
from stages.plotting import read_live_metrics
from tests.conftest import run
from tests.fixtures import write_mnist_npz


def test_pixel_sequences_are_rows_in_order():
    images = np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 28, 28).astype(np.uint8)
    seq = mi.pixel_sequences(images)
    assert seq.shape == (2, 784, 1) and seq.dtype == np.uint8
    np.testing.assert_array_equal(seq[1, :, 0], images[1].reshape(-1))
    assert seq[0, 29, 0] == images[0, 1, 1]


def test_confusion_matrix_rows_are_actual():
    m = mi.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], n_classes=3)
    np.testing.assert_array_equal(m, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    assert m.sum() == 6


def test_classification_metrics():
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    m = mi.classification_metrics(p, np.array([0, 1, 1]))
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["loss"] == pytest.approx(-(np.log(0.9) + np.log(0.8) + np.log(0.4)) / 3)


def test_model_is_the_original_irnn():
    model = mi.build_model(100, 1e-6, None)
    assert model.count_params() == mi.N_PARAMS
    rnn = model.layers[0]
    kernel, recurrent, bias = (w.numpy() for w in rnn.weights)
    np.testing.assert_array_equal(recurrent, np.eye(100))
    assert abs(kernel.std() - 0.001) < 0.0005 and (bias == 0).all()
    assert rnn.activation.__name__ == "relu"
    assert model.optimizer.clipnorm is None


def test_read_live_metrics(tmp_path):
    folder = tmp_path / "plots" / "metrics"
    folder.mkdir(parents=True)
    (folder / "loss.tsv").write_text("timestamp\tstep\tloss\n1\t0\t2.0\n2\t1\t1.5\n")
    curves = read_live_metrics(tmp_path)
    np.testing.assert_array_equal(curves["loss"][0], [0, 1])
    np.testing.assert_array_equal(curves["loss"][1], [2.0, 1.5])


def test_pipeline_end_to_end(project):
    """Real DVC: fixture mnist.npz recorded as download@mnist's result, then the whole pipeline."""
    write_mnist_npz(project / "data/raw/mnist", n_train=600, n_test=200)
    run(["dvc", "commit", "-f", "download@mnist"], project)
    run(["dvc", "repro", "plot@mnist_irnn-irnn"], project)
    metrics = json.loads((project / "metrics/mnist_irnn-irnn.json").read_text())
    assert metrics["test_samples"] == 200
    assert metrics["test"]["accuracy"] > 0.15  # chance (and a collapsed model) is 0.1 on the balanced fixture
    figures = project / "plots/mnist_irnn-irnn/figures"
    confusion = pd.read_csv(figures / "confusion.csv")
    assert list(confusion.columns) == ["actual", "predicted"] and len(confusion) == 200
    for name in ("confusion.png", "training.png"):
        assert (figures / name).is_file(), name
    assert (project / "plots/mnist_irnn-irnn/training/plots/metrics/val_accuracy.tsv").is_file()
    assert "changed" not in run(["dvc", "status", "plot@mnist_irnn-irnn"], project).stdout
