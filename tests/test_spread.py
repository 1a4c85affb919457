"""The spread over seeds, and the diff that measures changes against it."""

from __future__ import annotations

import json
import os

import pytest

from stages import spread

from conftest import HERMETIC, ROOT, git, run


def test_flatten_keeps_every_number_and_drops_the_machine():
    metrics = {"model": {"mse": 2, "mae": 1.5}, "lahead": 1, "standin": True, "computed_on": {"avx512": True, "cpu": "x"}}
    assert spread.flatten(metrics) == {"model.mse": 2.0, "model.mae": 1.5, "lahead": 1.0}


def test_summarise_gives_mean_sample_std_and_range_per_metric():
    per_seed = {
        1: {"metrics/e/a.json": {"loss": 1.0, "acc": 0.5}},
        2: {"metrics/e/a.json": {"loss": 2.0, "acc": 0.5}},
        3: {"metrics/e/a.json": {"loss": 6.0, "acc": 0.5}},
    }
    stats = spread.summarise(per_seed)["metrics/e/a.json"]
    assert stats["loss"] == {"mean": 3.0, "std": pytest.approx(2.6457513), "min": 1.0, "max": 6.0, "n": 3}
    assert stats["acc"]["std"] == 0.0


@pytest.mark.parametrize(
    "change, std, expected",
    [
        (0.5, 1.0, ("0.5", "within 2 std: could be noise")),
        (-3.0, 1.0, ("3.0", "beyond 2 std: likely real")),
        (1.0, None, ("", "no spread measured")),
    ],
)
def test_judge_measures_a_change_in_seed_standard_deviations(change, std, expected):
    assert spread.judge(change, std) == expected


def test_diff_marks_each_change_against_the_measured_spread(tmp_path):
    """A real `dvc metrics diff` between two commits, read against a spread file."""
    (tmp_path / "metrics" / "e").mkdir(parents=True)
    (tmp_path / "dvc.yaml").write_text("metrics:\n  - metrics\n")
    (tmp_path / "metrics" / "e" / "a.json").write_text(json.dumps({"loss": 1.0, "acc": 0.80}))
    git(tmp_path, "init", "-q")
    run(["dvc", "init", "-q"], tmp_path)
    git(tmp_path, "-c", "user.email=t@e.invalid", "-c", "user.name=t", "add", "-A")
    git(tmp_path, "-c", "user.email=t@e.invalid", "-c", "user.name=t", "commit", "-qm", "before")
    (tmp_path / "metrics" / "e" / "a.json").write_text(json.dumps({"loss": 1.05, "acc": 0.70}))
    spread_file = {"metrics": {"metrics/e/a.json": {"loss": {"std": 0.1}, "acc": {"std": 0.02}}}}
    (tmp_path / "metrics" / "spread").mkdir()
    proxy = {**spread_file, "overrides": ["e.preprocess.dataset=fashion_mnist"]}
    (tmp_path / "metrics" / "spread" / "e.json").write_text(json.dumps(proxy))
    done = run(["python", "-m", "stages", "diff", "HEAD"], tmp_path, PYTHONPATH=os.pathsep.join([str(HERMETIC), str(ROOT)]))
    assert "measured with e.preprocess.dataset=fashion_mnist: a proxy for the defaults" in done.stderr
    out = done.stdout.splitlines()
    rows = {line.split()[1]: line for line in out[1:]}
    assert out[0].split()[:2] == ["Path", "Metric"] and set(rows) == {"loss", "acc"}
    assert "0.5" in rows["loss"] and "within 2 std" in rows["loss"]
    assert "5.0" in rows["acc"] and "beyond 2 std" in rows["acc"]


def test_experiment_names_keep_settings_apart():
    """Without overrides, the names the committed spreads used; with them, a tag of their own, whatever their order."""
    assert spread.experiment_names("e", 1337, 2) == {1337: "spread-e-seed1337", 1338: "spread-e-seed1338"}
    tagged = spread.experiment_names("e", 1, 2, ["a.b=1", "c=x"])
    assert tagged == spread.experiment_names("e", 1, 2, ["c=x", "a.b=1"])
    assert tagged[1].startswith("spread-e-") and tagged[1].endswith("-seed1") and tagged[1] != "spread-e-seed1"
    assert tagged != spread.experiment_names("e", 1, 2, ["a.b=2", "c=x"])


@pytest.mark.parametrize(
    "overrides, message",
    [(["epochs"], "expected KEY=VALUE"), (["=3"], "expected KEY=VALUE"), (["seed=3"], "the spread sets `seed` itself")],
)
def test_overrides_are_checked_before_anything_is_queued(overrides, message):
    from stages.core.errors import InputError

    with pytest.raises(InputError, match=message):
        spread.check_overrides(overrides)
    assert spread.check_overrides(["e.train.epochs=2"]) == ["e.train.epochs=2"]
