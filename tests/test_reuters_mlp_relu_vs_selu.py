"""reuters_mlp_relu_vs_selu: the loader's split and the bag-of-words against their definitions, the two
networks, scoring, the compare rows, and real dvc repro runs (both networks, then a third one alone)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stages import reuters_mlp_relu_vs_selu as rv
from stages.core.errors import ParamsError
from stages.core.layout import Layout, compare_dir, run_key
from stages.core.run import Run, make_run
from tests.conftest import ROOT, add_run, assert_code_deps_match_imports, run, set_param
from tests.fixtures import write_reuters

EXAMPLE = "reuters_mlp_relu_vs_selu"
CURVES = ("loss", "val_loss", "accuracy", "val_accuracy")  # what Keras' fit logs per epoch, as history.csv has it


def keras_reference(npz: Path, num_words: int = 1000, test_split: float = 0.2, seed: int = 113):
    """reuters.load_data(num_words, test_split) as Keras documents and codes it, then Tokenizer's binary matrix.

    Keras' own load_data cannot read a local fixture (test_keras_loader_refuses_a_local_path),
    so this is its algorithm, step by step, with plain loops.
    """
    with np.load(npz, allow_pickle=True) as f:  # the test's own fixture, never a download
        xs, labels = f["x"], f["y"]
    indices = np.arange(len(xs))
    np.random.RandomState(seed).shuffle(indices)
    xs, labels = xs[indices], labels[indices]
    xs = [[1] + [w + 3 for w in x] for x in xs]  # start_char 1, index_from 3
    xs = [[w if 0 <= w < num_words else 2 for w in x] for x in xs]  # skip_top 0, oov_char 2
    cut = int(len(xs) * (1 - test_split))
    matrix = np.zeros((len(xs), num_words), dtype=bool)
    for i, sequence in enumerate(xs):
        for word in sequence:
            if word < num_words:
                matrix[i, word] = True
    return (matrix[:cut], labels[:cut]), (matrix[cut:], labels[cut:])


def unpacked(packed: np.ndarray, num_words: int) -> np.ndarray:
    """What the tf.data pipeline feeds the model, computed by the module's map_fn."""
    return rv._unpack_fn(num_words)(packed).numpy()


def test_keras_loader_refuses_a_local_path(tmp_path):
    """Why keras_reference exists: Keras 3 takes no path (and would re-download a file of another checksum)."""
    import keras

    npz, _ = write_reuters(tmp_path, n=100)
    with pytest.raises(ValueError, match="Paths are no longer accepted as the `fname` argument"):
        keras.datasets.reuters.load_data(path=str(npz))


def test_bag_of_words_of_a_small_example():
    bits = rv.bag_of_words([[5, 996, 997, 2000], [], [0, 1, 1]], num_words=1000)
    assert bits.shape == (3, 1000) and bits.dtype == bool
    # start 1; 5+3; 996+3 = 999 kept; 997+3 = 1000 and 2003 are out of vocabulary (2)
    assert np.flatnonzero(bits[0]).tolist() == [1, 2, 8, 999]
    assert np.flatnonzero(bits[1]).tolist() == [1]
    assert np.flatnonzero(bits[2]).tolist() == [1, 3, 4]


@pytest.mark.parametrize("num_words", [13, 1000])
def test_bag_of_words_and_its_packed_bits_equal_the_definition(num_words):
    rng = np.random.default_rng(num_words)
    sequences = [rng.integers(0, 2 * num_words, size=int(rng.integers(0, 40))).tolist() for _ in range(50)]
    expected = np.zeros((50, num_words), dtype=bool)
    for i, sequence in enumerate(sequences):
        for word in [1] + [w + 3 for w in sequence]:
            expected[i, word if word < num_words else 2] = True
    bits = rv.bag_of_words(sequences, num_words)
    np.testing.assert_array_equal(bits, expected)
    np.testing.assert_array_equal(unpacked(np.packbits(bits, axis=1), num_words), expected.astype(np.float32))


def test_real_sizes_split_as_keras_does():
    assert rv.split_index(11_228, 0.2) == 8_982  # 8,982 / 2,246
    assert rv.validation_index(8_982, 0.1) == 8_083  # Keras validates on the last 899
    assert rv.validation_index(8_982, 0.0) == 8_982


def test_a_test_split_leaving_no_training_newswire_names_its_key(tmp_path):
    write_reuters(tmp_path / "raw", n=100)
    p = rv.Preprocess(num_words=1000, test_split=0.999, shuffle_seed=113)
    step = Run(EXAMPLE, "relu", "preprocess", p, Layout(run_key(EXAMPLE, "relu")), raw=tmp_path / "raw", _seed=1)
    with pytest.raises(ParamsError, match=rf"'{EXAMPLE}.preprocess.test_split' = 0.999 leaves 0 training and 100 test"):
        rv.preprocess(step)


def test_score_by_hand():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    metrics = rv.score(p, np.array([0, 1, 1, 0]))
    assert metrics["test_samples"] == 4
    assert metrics["test"]["loss"] == pytest.approx(-(np.log(0.7) + np.log(0.8) + np.log(0.3) + np.log(0.2)) / 4)
    assert metrics["test"]["accuracy"] == 0.5
    # predicted 0, 1, 0, 2: F1 of topic 0 = 1/2, of topic 1 = 2/3, of topic 2 (predicted, never true) = 0
    assert metrics["test"]["macro_f1"] == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)


@pytest.mark.parametrize(
    "variant, activation, dropout, rate, initializer",
    [("relu", "relu", "Dropout", 0.5, "GlorotUniform"), ("selu", "selu", "AlphaDropout", 0.1, "LecunNormal")],
)
def test_params_build_the_original_networks(monkeypatch, variant, activation, dropout, rate, initializer):
    monkeypatch.chdir(ROOT)
    _, train = make_run(EXAMPLE, variant, "train")
    assert (train.params.batch_size, train.params.epochs, train.params.validation_split) == (16, 40, 0.1)
    model = rv.build_model(**rv.build_args(train.params, 1000, 46))
    assert model.count_params() == 1000 * 16 + 16 + 5 * (16 * 16 + 16) + 16 * 46 + 46
    dense = [layer for layer in model.layers if type(layer).__name__ == "Dense"]
    drops = [layer for layer in model.layers if "Dropout" in type(layer).__name__]
    assert len(dense) == 7 and dense[-1].units == 46 and {d.units for d in dense[:-1]} == {16}
    assert {type(d.kernel_initializer).__name__ for d in dense[:-1]} == {initializer}
    assert type(dense[-1].kernel_initializer).__name__ == "GlorotUniform"  # the original's output layer default
    assert [type(d).__name__ for d in drops] == [dropout] * 6 and {d.rate for d in drops} == {rate}
    activations = [layer.activation.__name__ for layer in model.layers if type(layer).__name__ == "Activation"]
    assert activations == [activation] * 6 + ["softmax"]
    assert type(model.optimizer).__name__ == "SGD" and float(model.optimizer.learning_rate) == pytest.approx(0.01)


def test_summary_rows():
    table = rv.summary_rows(
        {
            "b": {"test": {"loss": 1.0, "accuracy": 0.5, "macro_f1": 0.25}},
            "a": {"test": {"loss": 2.0, "accuracy": 0.4, "macro_f1": 0.1}},
        }
    )
    assert table == {"variant": ["b", "a"], "test_loss": [1.0, 2.0], "test_accuracy": [0.5, 0.4], "test_macro_f1": [0.25, 0.1]}


def test_pipeline_end_to_end_then_a_third_network_alone(project):
    """Real DVC on a 1,000-newswire fixture (recorded as download@reuters' result): both networks and compare,
    then a third network, which runs only its own stages and compare."""
    npz, _ = write_reuters(project / "data/raw/reuters", n=1000)
    run(["dvc", "commit", "-f", "download@reuters"], project)
    run(["dvc", "repro", f"compare@{EXAMPLE}"], project)

    (x_train, y_train), (x_test, y_test) = keras_reference(npz)
    prior = np.bincount(y_train, minlength=46) / len(y_train)
    prior_loss = rv.cross_entropy(np.tile(prior, (len(y_test), 1)), y_test)  # what knowing only topic frequencies scores
    majority = np.bincount(y_test).max() / len(y_test)
    for variant in ("relu", "selu"):
        paths = Layout(run_key(EXAMPLE, variant))
        processed = project / paths.processed
        np.testing.assert_array_equal(unpacked(np.load(processed / "x_train.npy"), 1000), x_train)
        np.testing.assert_array_equal(unpacked(np.load(processed / "x_test.npy"), 1000), x_test)
        np.testing.assert_array_equal(np.load(processed / "y_train.npy"), y_train)
        np.testing.assert_array_equal(np.load(processed / "y_test.npy"), y_test)
        metrics = json.loads((project / paths.metrics).read_text())["test"]
        # chance is 1/46; both networks beat always answering the commonest topic, and the topic prior's loss
        assert metrics["accuracy"] > majority + 0.08 and metrics["loss"] < prior_loss - 0.25, (variant, metrics, majority)
        info = json.loads((project / paths.model / "model.json").read_text())
        assert info["build"]["activation"] == variant and info["info"]["fit_rows"] == rv.validation_index(800, 0.1)
        history = pd.read_csv(project / paths.figures / "history.csv")
        assert history["epoch"].tolist() == list(range(1, 11)) and set(history.columns) == {"epoch", *CURVES}
        assert (project / paths.figures / "training.png").is_file()
    compared = project / compare_dir(EXAMPLE)
    stacked = pd.read_csv(compared / "history.csv")  # both networks' history.csv, one row per (network, epoch)
    assert stacked[["epoch", "variant"]].values.tolist() == [[e, v] for v in ("relu", "selu") for e in range(1, 11)]
    assert set(stacked.columns) == {"variant", "epoch", *CURVES} and stacked["val_loss"].notna().all()
    assert (compared / "losses.png").is_file() and (compared / "accuracy.png").is_file()
    steps = {f"{step}@{run_key(EXAMPLE, v)}" for step in ("preprocess", "train", "evaluate", "plot") for v in ("relu", "selu")}
    assert steps | {f"compare@{EXAMPLE}"} <= assert_code_deps_match_imports(project)

    # a third network, in params.yaml alone: its variant and its run
    set_param(project, f"{EXAMPLE}.variants.wide_adam", {"train": {"units": 32, "optimizer": "adam", "learning_rate": 0.01}})
    third = run_key(EXAMPLE, "wide_adam")
    add_run(project, EXAMPLE, "wide_adam", "data/raw/reuters", "stages/datasets/reuters.py")
    out = run(["dvc", "repro", f"compare@{EXAMPLE}"], project).stdout
    ran = set(re.findall(r"Running stage '([^']+)'", out))
    assert ran == {f"{s}@{third}" for s in ("preprocess", "train", "evaluate", "plot")} | {f"compare@{EXAMPLE}"}
    assert json.loads((project / Layout(third).model / "model.json").read_text())["build"]["units"] == 32
    variants = ("relu", "selu", "wide_adam")
    table = pd.read_csv(compared / "table.csv")
    assert table["variant"].tolist() == list(variants)
    metrics = [json.loads((project / Layout(run_key(EXAMPLE, v)).metrics).read_text())["test"] for v in variants]
    np.testing.assert_allclose(table["test_accuracy"], [m["accuracy"] for m in metrics], rtol=1e-5)
    shown = run(["dvc", "metrics", "show"], project).stdout
    assert all(str(Layout(run_key(EXAMPLE, v)).metrics) in shown for v in variants), shown
