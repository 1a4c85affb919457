"""Synthetic datasets: made from params.yaml's `synthetic` section by synthesize@<name>, then read like a download."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stages.core.errors import DatasetError, ParamsError
from stages.core.layout import Layout, raw_dir
from stages.core.params import read_params
from stages.datasets import damped_cosine, imdb_standin, synthetic
from stages.datasets.fetch import remote_files
from tests.conftest import ROOT, run, set_param, stages_cmd


def test_damped_cosine_values_and_shape():
    p = damped_cosine.Params(n_points=50_000, amplitude=100.0, period=1000.0, damping=1e-4)
    series = damped_cosine.synthesize(p)["series"]
    assert series.shape == (50_000, 1, 1) and series.dtype == np.float32
    assert series[0, 0, 0] == pytest.approx(100.0)
    assert series[500, 0, 0] == pytest.approx(-100 * np.exp(-0.05), rel=1e-6)  # half a period
    assert series[1000, 0, 0] == pytest.approx(100 * np.exp(-0.1), rel=1e-6)
    i = np.arange(0, 50_000, 777)
    np.testing.assert_allclose(series[i, 0, 0], 100 * np.cos(2 * np.pi * i / 1000) * np.exp(-1e-4 * i), rtol=1e-5, atol=1e-4)


def test_imdb_standin_has_imdbs_padded_shape_and_is_seeded():
    p = imdb_standin.Params(seed=5, reviews=100, maxlen=80, num_words=20_000)
    arrays = imdb_standin.synthesize(p)
    x, y = arrays["x_train"], arrays["y_train"]
    assert x.shape == (100, 80) and x.dtype == np.int32 and 1 <= x.min() and x.max() < 20_000
    assert set(np.unique(y)) == {0, 1} and y.dtype == np.uint8 and arrays["x_test"].shape == (100, 80)
    np.testing.assert_array_equal(imdb_standin.synthesize(p)["x_test"], arrays["x_test"])
    assert not np.array_equal(imdb_standin.synthesize(p.model_copy(update={"seed": 6}))["x_train"], x)


def test_synthesize_writes_what_load_reads(tmp_path, monkeypatch):
    data = read_params(ROOT / "params.yaml")
    data["synthetic"]["imdb_standin"].update(reviews=10, maxlen=7)
    (tmp_path / "params.yaml").write_text(json.dumps(data))  # JSON is YAML
    monkeypatch.chdir(tmp_path)
    shapes = synthetic.synthesize("imdb_standin")
    assert shapes["x_train"] == "(10, 7) int32"
    splits = imdb_standin.load(raw_dir("imdb_standin"))
    params = imdb_standin.Params(**data["synthetic"]["imdb_standin"])
    np.testing.assert_array_equal(splits["test"][0], imdb_standin.synthesize(params)["x_test"])
    meta = json.loads((raw_dir("imdb_standin") / "meta.json").read_text())
    assert meta["params"] == data["synthetic"]["imdb_standin"]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s["damped_cosine"].update(n_points=1.5), "'synthetic.damped_cosine.n_points' = 1.5 is invalid"),
        (lambda s: s["damped_cosine"].update(periode=3), "unknown key 'synthetic.damped_cosine.periode'"),
        (lambda s: s["imdb_standin"].pop("seed"), "missing key 'synthetic.imdb_standin.seed'"),
        (lambda s: s.update(sine={"n": 1}), "'synthetic.sine': no synthetic dataset is called 'sine'"),
    ],
)
def test_bad_synthetic_settings_are_named(edit, message):
    data = read_params(ROOT / "params.yaml")
    edit(data["synthetic"])
    with pytest.raises(ParamsError) as err:
        synthetic.validate(data)
    assert message in str(err.value)
    if "'synthetic.sine'" in message:  # the known ones are listed
        assert "the synthetic datasets are damped_cosine, imdb_standin" in str(err.value)


def test_a_synthetic_dataset_is_not_downloaded():
    with pytest.raises(DatasetError, match=r"'damped_cosine' is made from params.yaml's synthetic.damped_cosine, not downloaded"):
        remote_files("damped_cosine")


def test_stateful_lahead_must_leave_points_to_score(project):
    """A check across sections (stateful_lstm's lahead, the series' length) stops preprocess, naming both keys."""
    set_param(project, "stateful_lstm.variants.lahead5000", {"preprocess": {"lahead": 6000}})  # tiny n_points: 6000
    run(stages_cmd("synthesize", "damped_cosine"), project)
    out = run(stages_cmd("preprocess", "stateful_lstm", "--variant", "lahead5000"), project, check=False)
    assert out.returncode == 2
    assert (
        "'stateful_lstm.variants.lahead5000.preprocess.lahead' = 6000 must be less than the series' 6000 points "
        "('synthetic.damped_cosine.n_points')" in out.stderr
    )
    assert not (project / Layout("stateful_lstm-lahead5000").processed).exists()


def test_stateful_batch_size_must_divide_the_series(project):
    """Whole batches or nothing: train stops before building a model, and names both keys and the nearest fits."""
    set_param(project, "stateful_lstm.train.batch_size", 7)
    run(stages_cmd("synthesize", "damped_cosine"), project)
    run(stages_cmd("preprocess", "stateful_lstm", "--variant", "lahead1"), project)
    out = run(stages_cmd("train", "stateful_lstm", "--variant", "lahead1"), project, check=False)
    assert out.returncode == 2
    assert (
        "'stateful_lstm.train.batch_size' = 7 must divide the series' 6000 points ('synthetic.damped_cosine.n_points')"
        in out.stderr
    )
    assert "(the nearest n_points that fit: 5999 or 6006)" in out.stderr
    assert not (project / Layout("stateful_lstm-lahead1").model).exists()


def test_check_validates_the_synthetic_section(project):
    set_param(project, "synthetic.damped_cosine.damping", -1.0)
    out = run(stages_cmd("check"), project, check=False)
    assert out.returncode == 2 and "'synthetic.damped_cosine.damping' = -1.0 is invalid" in out.stderr
