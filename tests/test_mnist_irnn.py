"""mnist_irnn: sequences, metrics, model shape, and one real dvc repro."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from stages import mnist_irnn as mi
from stages.core.layout import MODEL
from stages.core.metrics import confusion_matrix, cross_entropy
from stages.plotting import read_live_metrics
from tests.conftest import run, set_param
from tests.fixtures import write_mnist_npz


def test_pixel_sequences_are_rows_in_order():
    images = np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 28, 28).astype(np.uint8)
    seq = mi.pixel_sequences(images)
    assert seq.shape == (2, 784, 1) and seq.dtype == np.uint8
    np.testing.assert_array_equal(seq[1, :, 0], images[1].reshape(-1))
    assert seq[0, 29, 0] == images[0, 1, 1]


def test_confusion_matrix_rows_are_actual():
    m = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], n_classes=3)
    np.testing.assert_array_equal(m, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    assert m.sum() == 6


def probabilities_of(picked: list[float], labels: list[int]) -> np.ndarray:
    """(N, 10) rows summing to 1 that give each label the probability in `picked` and the rest evenly."""
    p = np.repeat([(1 - np.array(picked)) / 9], 10, axis=0).T
    p[np.arange(len(labels)), labels] = picked
    return p.astype(np.float32)


def test_score_loss_accuracy_and_accuracy_per_class():
    labels = np.array([0, 1, 1, 2], np.uint8)
    p = probabilities_of([0.9, 0.8, 0.05, 0.5], [0, 1, 1, 2])  # row 2 puts 0.95 / 9 on every other class
    metrics = mi.score(p, labels)
    assert metrics["test_samples"] == 4
    assert metrics["test"]["loss"] == pytest.approx(-(np.log(0.9) + np.log(0.8) + np.log(0.05) + np.log(0.5)) / 4, rel=1e-6)
    assert metrics["test"]["accuracy"] == pytest.approx(3 / 4)
    per_class = metrics["test"]["per_class_accuracy"]
    assert list(per_class) == [str(c) for c in range(10)]
    assert per_class["0"] == 1.0 and per_class["1"] == 0.5 and per_class["2"] == 1.0
    assert per_class["3"] == 0.0  # a class absent from the labels scores 0, not NaN


def test_score_loss_is_the_shared_cross_entropy_normalised_then_clipped():
    """A probability of 0 for the label costs -ln(1e-7), not infinity; unnormalised rows are divided by their sum."""
    p = np.zeros((2, 10), np.float32)
    p[0, 3] = 1.0  # label 0 gets probability 0
    p[1, 4] = 2.0  # sums to 2: normalised to 1
    metrics = mi.score(p, np.array([0, 4]))
    assert metrics["test"]["loss"] == pytest.approx(-np.log(1e-7) / 2 - np.log(1 - 1e-7) / 2)
    assert metrics["test"]["loss"] == cross_entropy(p, np.array([0, 4]))
    assert metrics["test"]["accuracy"] == 0.5


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
    metrics = json.loads((project / "metrics/mnist_irnn/irnn.json").read_text())
    assert metrics.pop("computed_on")["keras"]  # what the numbers were computed on, beside them
    assert metrics["test_samples"] == 200
    assert metrics["test"]["accuracy"] > 0.15  # chance (and a collapsed model) is 0.1 on the balanced fixture
    figures = project / "plots/mnist_irnn/irnn/figures"
    confusion = pd.read_csv(figures / "confusion.csv")
    assert list(confusion.columns) == ["actual", "predicted"] and len(confusion) == 200
    for name in ("confusion.png", "training.png"):
        assert (figures / name).is_file(), name
    history = pd.read_csv(figures / "history.csv")  # DVCLive's steps 0..3 as epochs 1..4
    assert history["epoch"].tolist() == [1, 2, 3, 4] and set(history.columns) == {
        "epoch",
        "loss",
        "val_loss",
        "accuracy",
        "val_accuracy",
    }
    assert (project / "plots/mnist_irnn/irnn/training/plots/metrics/val_accuracy.tsv").is_file()
    assert "changed" not in run(["dvc", "status", "plot@mnist_irnn-irnn"], project).stdout
    probabilities = np.load(project / "data/predictions/mnist_irnn-irnn/probabilities.npy")
    y_test = np.load(project / "data/processed/mnist_irnn-irnn/y_test.npy")
    assert metrics == json.loads(json.dumps(mi.score(probabilities, y_test)))
    build = {"hidden_units": 100, "learning_rate": 0.00001, "clipnorm": 1.0}  # tests/tiny_params.yaml
    assert json.loads((project / "models/mnist_irnn-irnn" / MODEL).read_text()) == {
        "build": build,
        "info": {"parameters": mi.N_PARAMS},
    }


def test_train_samples_beyond_the_data_names_the_key(project):
    """Asking for more training images than the dataset holds stops train with the params key, before any training."""
    write_mnist_npz(project / "data/raw/mnist", n_train=50, n_test=20)
    run(["python", "-m", "stages", "preprocess", "mnist_irnn"], project)
    set_param(project, "mnist_irnn.train.train_samples", 51)
    out = run(["python", "-m", "stages", "train", "mnist_irnn"], project, check=False)
    assert out.returncode == 2, out.stderr
    assert "'mnist_irnn.train.train_samples' = 51 exceeds the 50 training images" in out.stderr
    assert not (project / "models/mnist_irnn-irnn").exists()
