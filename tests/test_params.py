"""Parameter validation: every bad value stops a stage with a message naming the key."""

from __future__ import annotations

import copy

import pytest
import yaml

from conftest import ROOT
from stages import stateful_lstm
from stages.core.run import discover_examples
from stages.core.errors import ParamsError
from stages.core.params import deep_merge, load_run_params, validate_example, validate_top_level

PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def _write(tmp_path, data):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _load(tmp_path, data, variant=None):
    return load_run_params("stateful_lstm", variant, stateful_lstm.Params, discover_examples(), _write(tmp_path, data))


def test_project_params_are_valid_for_every_variant():
    runs = validate_example(PARAMS, "stateful_lstm", stateful_lstm.Params)
    assert sorted(runs) == ["lahead1", "lahead20", "lahead5000"]
    assert [runs[v].preprocess.lahead for v in ("lahead1", "lahead20", "lahead5000")] == [1, 20, 5000]


def test_variant_overrides_merge_over_base(tmp_path):
    params = _load(tmp_path, PARAMS, "lahead20")
    assert params.preprocess.lahead == 20
    assert params.train.epochs == PARAMS["stateful_lstm"]["train"]["epochs"]
    assert params.seed == PARAMS["seed"]


def test_default_variant_is_the_first(tmp_path):
    assert _load(tmp_path, PARAMS).variant == "lahead1"


@pytest.mark.parametrize(
    "edit, expected",
    [
        (("train", "epohcs", 3), "unknown key 'stateful_lstm.train.epohcs'"),
        (("train", "epochs", "ten"), "'stateful_lstm.train.epochs' = 'ten' is invalid"),
        (("train", "epochs", 0), "'stateful_lstm.train.epochs' = 0 is invalid"),
        (("train", "learning_rate", -1.0), "greater than 0"),
        (("preprocess", "damping", "fast"), "'stateful_lstm.preprocess.damping'"),
    ],
)
def test_bad_values_name_the_key(tmp_path, edit, expected):
    data = copy.deepcopy(PARAMS)
    step, key, value = edit
    data["stateful_lstm"][step][key] = value
    with pytest.raises(ParamsError) as err:
        _load(tmp_path, data)
    assert expected in str(err.value)


def test_unknown_key_lists_the_known_ones(tmp_path):
    data = copy.deepcopy(PARAMS)
    data["stateful_lstm"]["train"]["batchsize"] = 5
    with pytest.raises(ParamsError, match=r"known keys here: batch_size, epochs, learning_rate"):
        _load(tmp_path, data)


def test_missing_key_is_reported(tmp_path):
    data = copy.deepcopy(PARAMS)
    del data["stateful_lstm"]["train"]["epochs"]
    with pytest.raises(ParamsError, match=r"missing key 'stateful_lstm.train.epochs': expected int"):
        _load(tmp_path, data)


def test_bad_variant_override_is_reported_with_the_variant(tmp_path):
    data = copy.deepcopy(PARAMS)
    data["stateful_lstm"]["variants"]["lahead20"] = {"preprocess": {"lahead": 0}}
    with pytest.raises(ParamsError, match=r"variant 'lahead20'.*stateful_lstm.preprocess.lahead"):
        _load(tmp_path, data, "lahead1")


def test_unknown_variant_lists_the_variants(tmp_path):
    with pytest.raises(ParamsError, match=r"no variant 'lahead2'; its variants are lahead1, lahead20, lahead5000"):
        _load(tmp_path, PARAMS, "lahead2")


def test_unknown_top_level_key_and_bad_seed():
    with pytest.raises(ParamsError, match=r"unknown top-level key\(s\) 'stateful_lsmt'"):
        validate_top_level({"seed": 1, "stateful_lsmt": {}}, ["stateful_lstm"])
    with pytest.raises(ParamsError, match=r"'seed' = -1 is invalid"):
        validate_top_level({"seed": -1}, [])
    with pytest.raises(ParamsError, match=r"'seed' = True"):
        validate_top_level({"seed": True}, [])


def test_malformed_yaml_is_reported(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: [1,\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_run_params("stateful_lstm", None, stateful_lstm.Params, ["stateful_lstm"], path)


def test_deep_merge_does_not_touch_its_inputs():
    base = {"a": {"b": 1, "c": 2}}
    merged = deep_merge(base, {"a": {"b": 5}})
    assert merged == {"a": {"b": 5, "c": 2}} and base == {"a": {"b": 1, "c": 2}}
