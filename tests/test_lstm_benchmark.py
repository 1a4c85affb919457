"""lstm_benchmark: the stand-in, scoring, every variant as the same function, and real dvc repro runs (all variants and
compare, then one more variant alone, then the jit variant again: the same bytes). Padding: tests/test_sequences.py."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pandas as pd
import pytest

from stages import lstm_benchmark as lb
from stages.core.errors import ParamsError
from stages.core.layout import STEPS, Layout, compare_dir, run_key
from stages.core.params import read_params, validate_example
from stages.core.run import Run
from tests.conftest import ROOT, add_run, assert_code_deps_match_imports, run, set_param
from tests.fixtures import write_imdb

EXAMPLE = "lstm_benchmark"
VARIANTS = ("standard", "unrolled", "cell_loop", "jit", "cudnn")


def test_fit_reviews_maps_rare_ids_out_of_vocabulary_and_pads_or_truncates_like_imdb():
    x = np.array([[5, 99, 100, 3], [150, 1, 2, 7]], np.int32)
    np.testing.assert_array_equal(lb.fit_reviews(x, 100, 4), [[5, 99, 2, 3], [2, 1, 2, 7]])  # 100 and 150: OOV id 2
    np.testing.assert_array_equal(lb.fit_reviews(x, 100, 2), [[2, 3], [2, 7]])  # keeps the last ids, as pad_sequences
    np.testing.assert_array_equal(lb.fit_reviews(x, 1000, 6), [[0, 0, 5, 99, 100, 3], [0, 0, 150, 1, 2, 7]])
    assert lb.fit_reviews(x, 1000, 4).dtype == np.int32


def test_preprocess_reads_an_imdb_fixture(tmp_path, monkeypatch):
    write_imdb(tmp_path / "raw", n=40, vocab=300)
    p = lb.Preprocess(dataset="imdb", num_words=100, maxlen=10, train_samples=30, test_samples=20)
    monkeypatch.chdir(tmp_path)
    step = Run(EXAMPLE, "standard", "preprocess", p, Layout(run_key(EXAMPLE, "standard")), raw=tmp_path / "raw", _seed=1)
    lb.preprocess(step)
    x = np.load(tmp_path / step.paths.processed / "x_train.npy")
    assert x.shape == (30, 10) and x.max() < 100
    too_many = p.model_copy(update={"test_samples": 21})
    with pytest.raises(ParamsError, match=r"'lstm_benchmark.preprocess.test_samples' = 21, but the test set has 20"):
        lb.preprocess(Run(EXAMPLE, "standard", "preprocess", too_many, step.paths, raw=tmp_path / "raw", _seed=1))


def test_score_by_hand():
    metrics = lb.score(np.array([0.9, 0.2, 0.6, 0.5]), np.array([1, 0, 0, 1]))
    assert metrics["test_samples"] == 4 and metrics["test"]["accuracy"] == 0.5  # 0.5 counts as negative, as Keras'
    expected = -(np.log(0.9) + np.log(0.8) + np.log(0.4) + np.log(0.5)) / 4
    assert metrics["test"]["loss"] == pytest.approx(expected)


def test_cudnn_with_recurrent_dropout_is_refused():
    data = read_params(ROOT / "params.yaml")
    data[EXAMPLE]["variants"]["cudnn"] = {"train": {"implementation": "cudnn"}}
    with pytest.raises(ParamsError, match=r"'lstm_benchmark.variants.cudnn.train.implementation' = 'cudnn' needs "):
        validate_example(data, EXAMPLE, lb.Params)


def test_timing_and_table_rows():
    assert lb.epoch_timings([9.0, 2.0, 4.0]) == {
        "epoch_seconds": [9.0, 2.0, 4.0],
        "first_epoch_seconds": 9.0,
        "seconds_per_epoch": 3.0,
    }
    metrics = {
        "a": {"implementation": "standard", "applicable": True, "dataset": "standin", "test": {"accuracy": 0.5, "loss": 0.7}},
        "b": {"implementation": "cudnn", "applicable": False, "dataset": "standin"},
    }
    table = lb.table_rows(metrics, {"a": {"seconds_per_epoch": 3.0, "peak_memory_mb": 900.0}, "b": {}})
    assert table["variant"] == ["a", "b"] and table["applicable"] == [True, False]
    assert table["timing_seconds_per_epoch"] == [3.0, None] and table["test_accuracy"] == [0.5, None]


@pytest.mark.parametrize("implementation", VARIANTS)
def test_every_variant_is_the_same_function(implementation):
    """The same weights give the same predictions, whichever way the LSTM runs (dropout off: training=False).

    jit runs in a fresh process: Keras drops jit_compile=True once op determinism is on, and another test in
    this process (an in-process train) may have switched it on for good (TensorFlow has no public way back).
    """
    if implementation != "jit":
        return same_function(implementation)
    code = "from tests.test_lstm_benchmark import same_function; same_function('jit')"
    run([sys.executable, "-c", code], ROOT)


def same_function(implementation: str) -> None:
    args = {"num_words": 50, "maxlen": 9, "embedding_dim": 6, "units": 5, "dropout": 0.2, "learning_rate": 0.001}
    reference = lb.build_model(implementation="standard", recurrent_dropout=0.2, **args)
    model = lb.build_model(implementation=implementation, recurrent_dropout=0.0 if implementation == "cudnn" else 0.2, **args)
    rng = np.random.default_rng(3)
    reference.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in reference.get_weights()])
    model.set_weights(reference.get_weights())
    x = rng.integers(0, 50, size=(16, 9)).astype(np.int32)
    expected = np.asarray(reference(x, training=False))
    if implementation == "cudnn" and not lb.gpu_present():
        with pytest.raises(ValueError, match="use_cudnn=True was specified"):
            model(x, training=False)
        return
    np.testing.assert_allclose(np.asarray(model(x, training=False)), expected, atol=1e-5)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-5)  # the compiled (XLA for jit) function
    assert model.jit_compile is (implementation == "jit")


def test_pipeline_end_to_end_then_one_more_variant_alone(built_copy):
    """Real DVC on the tiny stand-in (the session's built project ran every variant): each trained and compare
    drew them; a sixth variant then runs only its own stages and compare."""
    project = built_copy
    epochs = read_params(project / "params.yaml")[EXAMPLE]["train"]["epochs"]
    for variant in VARIANTS:
        paths = Layout(run_key(EXAMPLE, variant))
        metrics = json.loads((project / paths.metrics).read_text())
        timings = json.loads((project / paths.training / lb.TIMINGS).read_text())
        assert metrics["dataset"] == "standin" and metrics["standin"] is True
        assert not {"seconds", "timing", "memory"} & {k.split("_")[-1] for k in metrics}, metrics  # no timings in metrics
        if variant == "cudnn" and not lb.gpu_present():
            assert metrics["applicable"] is False and "GPU" in metrics["reason"] and "applicable" in timings
            continue
        assert metrics["applicable"] is True and metrics["test_samples"] == 32 and 0 <= metrics["test"]["accuracy"] <= 1
        assert len(timings["epoch_seconds"]) == epochs and timings["peak_memory_mb"] > 100
        assert pd.read_csv(project / paths.figures / "history.csv")["epoch"].tolist() == list(range(1, epochs + 1))
    compared = project / compare_dir(EXAMPLE)
    table = pd.read_csv(compared / "table.csv")
    assert table["variant"].tolist() == list(VARIANTS) and (compared / "benchmark.png").is_file()
    steps = {f"{s}@{run_key(EXAMPLE, v)}" for s in ("preprocess", "train", "evaluate", "plot") for v in VARIANTS}
    assert steps | {f"compare@{EXAMPLE}"} <= assert_code_deps_match_imports(project)

    set_param(project, f"{EXAMPLE}.variants.wide", {"train": {"units": 12}})
    add_run(project, EXAMPLE, "wide", "data/raw/imdb_standin", "stages/datasets/imdb_standin.py")
    out = run(["dvc", "repro", f"compare@{EXAMPLE}"], project).stdout
    wide = run_key(EXAMPLE, "wide")
    assert set(re.findall(r"Running stage '([^']+)'", out)) == {f"{s}@{wide}" for s in STEPS} | {f"compare@{EXAMPLE}"}
    assert pd.read_csv(compared / "table.csv")["variant"].tolist() == [*VARIANTS, "wide"]

    # jit compiles before op determinism is switched on (Keras drops jit_compile after it): a re-run repeats exactly
    jit = Layout(run_key(EXAMPLE, "jit"))
    files = (jit.metrics, jit.model / "model.weights.h5", jit.training / "plots" / "metrics" / "val_loss.tsv")
    before = [(project / f).read_bytes() for f in files]
    assert json.loads((project / jit.model / "model.json").read_text())["info"]["jit_compile"] is True
    run(["dvc", "repro", "-f", "-s", f"train@{jit.key}", f"evaluate@{jit.key}"], project)
    assert [(project / f).read_bytes() for f in files] == before


def test_committed_runs_read_what_params_choose():
    """The runs' source (params.yaml runs, resolved by dvc.yaml) matches preprocess.dataset (data/raw/imdb_standin or data/raw/imdb)."""
    from dvc.repo import Repo

    dataset = read_params(ROOT / "params.yaml")[EXAMPLE]["preprocess"]["dataset"]
    expected = "data/raw/imdb_standin" if dataset == "standin" else "data/raw/imdb"
    with Repo(str(ROOT)) as repo:
        stages = {s.name: s for s in repo.index.stages}
    for variant in VARIANTS:
        deps = {d.def_path for d in stages[f"preprocess@{run_key(EXAMPLE, variant)}"].deps}
        assert expected in deps and ("data/raw/imdb" in deps) == (dataset == "imdb"), deps
