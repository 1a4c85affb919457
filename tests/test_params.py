"""Parameter validation: every bad value stops a stage with a message naming the key."""

from __future__ import annotations

import copy
import re
import sys
import typing

import pytest
import yaml

from stages import lstm_text_generation, mnist_irnn, mnist_siamese, mnist_sklearn_wrapper, stateful_lstm
from stages.core.errors import ParamsError
from stages.core.params import deep_merge, dotted_key, load_run_params, read_params, validate_example, validate_top_level
from stages.core.run import discover_examples
from stages.datasets.fetch import known_datasets

from conftest import ROOT, run, set_param

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
        (
            ("train", "learning_rate", -1.0),
            "'stateful_lstm.train.learning_rate' = -1.0 is invalid: Input should be greater than 0",
        ),
        (("preprocess", "lahead", "far"), "'stateful_lstm.preprocess.lahead' = 'far' is invalid"),
    ],
)
def test_bad_values_name_the_key(tmp_path, edit, expected):
    data = copy.deepcopy(PARAMS)
    step, key, value = edit
    data["stateful_lstm"][step][key] = value
    with pytest.raises(ParamsError, match=re.escape(expected)):
        _load(tmp_path, data)


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
    with pytest.raises(
        ParamsError, match=r"variant 'lahead20' applied: 'stateful_lstm\.variants\.lahead20\.preprocess\.lahead' = 0 is invalid"
    ):
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


# --- values that validate but mean nothing -----------------------------------


def _params_with(example: str, step: str, key: str, value, variant: str | None = None) -> dict:
    """params.yaml's values with one key set, in the base section or in a variant's override."""
    data = copy.deepcopy(PARAMS)
    node = data[example]["variants"].setdefault(variant, {}).setdefault(step, {}) if variant else data[example][step]
    node[key] = value
    return data


def _validate_text(tmp_path, data: dict, example: str, model) -> dict:
    """Write `data` as YAML and read it back as the stages do, so YAML's own spellings (.inf, 1e-4) are tested."""
    return validate_example(read_params(_write(tmp_path, data)), example, model)


@pytest.mark.parametrize(
    "example, model, step, key, value, named",
    [
        ("stateful_lstm", stateful_lstm.Params, "train", "epochs", True, "'stateful_lstm.train.epochs' = True"),
        ("stateful_lstm", stateful_lstm.Params, "train", "learning_rate", True, "'stateful_lstm.train.learning_rate' = True"),
        ("stateful_lstm", stateful_lstm.Params, "preprocess", "lahead", 20.0, "'stateful_lstm.preprocess.lahead' = 20.0"),
        (
            "lstm_text_generation",
            lstm_text_generation.Params,
            "train",
            "temperatures",
            [0.5, False],
            "'lstm_text_generation.train.temperatures[1]' = False",
        ),
        ("mnist_sklearn_wrapper", mnist_sklearn_wrapper.Params, "train", "cv", True, "'mnist_sklearn_wrapper.train.cv' = True"),
    ],
)
def test_booleans_and_floats_are_not_integers(tmp_path, example, model, step, key, value, named):
    with pytest.raises(ParamsError, match=re.escape(named) + " is invalid: Input should be a valid"):
        _validate_text(tmp_path, _params_with(example, step, key, value), example, model)


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")], ids=["inf", "-inf", "nan"])
@pytest.mark.parametrize(
    "example, model, step, key, wrap, named",
    [
        ("stateful_lstm", stateful_lstm.Params, "train", "learning_rate", False, "'stateful_lstm.train.learning_rate'"),
        ("mnist_irnn", mnist_irnn.Params, "train", "clipnorm", False, "'mnist_irnn.train.clipnorm'"),
        (
            "lstm_text_generation",
            lstm_text_generation.Params,
            "evaluate",
            "temperatures",
            True,
            "'lstm_text_generation.evaluate.temperatures[0]'",
        ),
    ],
)
def test_non_finite_floats_are_rejected(tmp_path, value, example, model, step, key, wrap, named):
    data = _params_with(example, step, key, [value] if wrap else value)
    assert ".inf" in _write(tmp_path, data).read_text() or ".nan" in _write(tmp_path, data).read_text()
    with pytest.raises(ParamsError, match=re.escape(named) + r" = -?(inf|nan) is invalid: Input should be a finite number"):
        _validate_text(tmp_path, data, example, model)


def test_integers_and_exponents_still_read_as_floats(tmp_path):
    data = _params_with("lstm_text_generation", "train", "temperatures", [1, 2])
    data["lstm_text_generation"]["train"]["learning_rate"] = 1
    path = _write(tmp_path, data)
    path.write_text(path.read_text().replace("validation_fraction: 0.05", "validation_fraction: 5e-2"))
    runs = validate_example(read_params(path), "lstm_text_generation", lstm_text_generation.Params)
    params = runs["nietzsche"]
    assert params.train.temperatures == [1.0, 2.0] and all(type(t) is float for t in params.train.temperatures)
    assert type(params.train.learning_rate) is float and params.train.learning_rate == 1.0
    assert params.preprocess.validation_fraction == 0.05  # YAML 1.2, as DVC reads it; PyYAML alone gives '5e-2'


def test_a_float_as_dvc_writes_it_is_a_number(tmp_path):
    """`dvc exp run -S stateful_lstm.train.learning_rate=1e-6` writes `1e-06`: text to PyYAML, so strict types would refuse it."""
    from dvc.utils.serialize._yaml import dumps_yaml

    data = _params_with("stateful_lstm", "train", "learning_rate", 1e-6)
    path = tmp_path / "params.yaml"
    path.write_text(dumps_yaml(data))
    assert (
        "learning_rate: 1e-06" in path.read_text()
        and yaml.safe_load(path.read_text())["stateful_lstm"]["train"]["learning_rate"] == "1e-06"
    )
    assert validate_example(read_params(path), "stateful_lstm", stateful_lstm.Params)["lahead1"].train.learning_rate == 1e-6


def test_text_temperatures_must_be_positive():
    data = _params_with("lstm_text_generation", "evaluate", "temperatures", [0.5, 0.0])
    with pytest.raises(
        ParamsError,
        match=re.escape("'lstm_text_generation.evaluate.temperatures[1]' = 0.0 is invalid: Input should be greater than 0"),
    ):
        validate_example(data, "lstm_text_generation", lstm_text_generation.Params)


def test_text_max_chars_must_leave_both_parts_a_window():
    data = _params_with("lstm_text_generation", "preprocess", "max_chars", 100, variant="nietzsche")
    with pytest.raises(
        ParamsError,
        match=re.escape(
            "'lstm_text_generation.variants.nietzsche.preprocess.max_chars' = 100 "
            "with 'lstm_text_generation.preprocess.validation_fraction' = 0.05 "
            "leaves 95 training and 5 held-out characters"
        ),
    ):
        validate_example(data, "lstm_text_generation", lstm_text_generation.Params)


@pytest.mark.parametrize(
    "grid, message",
    [
        (
            {"kernel_size": [15]},
            "'mnist_sklearn_wrapper.variants.big.train.grid.kernel_size' 15 with "
            "'mnist_sklearn_wrapper.train.grid.pool_size' 2 leaves no pixels",
        ),
        ({"epochs": [3, 3]}, "'mnist_sklearn_wrapper.variants.big.train.grid.epochs' = [3, 3] repeats a value"),
    ],
)
def test_grid_checks_run_in_validation_and_name_the_variant_key(grid, message):
    data = copy.deepcopy(PARAMS)
    data["mnist_sklearn_wrapper"]["variants"]["big"] = {"train": {"grid": grid}}
    with pytest.raises(ParamsError, match=r"with variant 'big' applied: " + re.escape(message)):
        validate_example(data, "mnist_sklearn_wrapper", mnist_sklearn_wrapper.Params)


@pytest.mark.parametrize(
    "example, model",
    [
        ("mnist_irnn", mnist_irnn.Params),
        ("mnist_siamese", mnist_siamese.Params),
        ("mnist_sklearn_wrapper", mnist_sklearn_wrapper.Params),
    ],
)
def test_unknown_dataset_lists_the_known_ones(example, model):
    data = _params_with(example, "preprocess", "dataset", "imagenet")
    with pytest.raises(
        ParamsError,
        match=re.escape(
            f"'{example}.preprocess.dataset' = 'imagenet' is not a known dataset; "
            "the known datasets here are 'mnist' or 'fashion_mnist'"
        ),
    ):
        validate_example(data, example, model)
    accepted = typing.get_args(model.model_fields["preprocess"].annotation.model_fields["dataset"].annotation)
    assert set(accepted) <= set(known_datasets())  # what params accept, the download stage can fetch


def test_dotted_key_names_the_override_or_the_base():
    override = {"train": {"grid": {"epochs": [1]}}}
    assert dotted_key("m", "big", override, "train", "grid", "epochs") == "m.variants.big.train.grid.epochs"
    assert dotted_key("m", "big", override, "train", "cv") == "m.train.cv"
    assert dotted_key("m", None, override, "train", "grid", "epochs") == "m.train.grid.epochs"


def test_a_bad_evaluate_value_stops_train_before_it_trains(project):
    """Every section is validated at every step: train refuses to start on an evaluate value that would fail later."""
    set_param(project, "lstm_text_generation.evaluate.temperatures", [0.5, -1.0])
    result = run([sys.executable, "-m", "stages", "train", "lstm_text_generation"], project, check=False)
    assert result.returncode == 2, result.stderr
    assert "'lstm_text_generation.evaluate.temperatures[1]' = -1.0 is invalid" in result.stderr
    assert "Traceback" not in result.stderr and not (project / "models").exists()


def _check_all(tmp_path, edit) -> str:
    from stages.core.run import check_all_params

    data = copy.deepcopy(PARAMS)
    edit(data)
    with pytest.raises(ParamsError) as err:
        check_all_params(str(_write(tmp_path, data)))
    return str(err.value)


def test_every_variant_needs_its_run_and_the_message_gives_the_line(tmp_path):
    message = _check_all(tmp_path, lambda d: d["runs"].pop("stateful_lstm-lahead20"))
    assert "variant 'stateful_lstm.variants.lahead20' has no run" in message
    assert (
        "`stateful_lstm-lahead20: {example: stateful_lstm, variant: lahead20, source: data/raw/damped_cosine, "
        "loader: stages/datasets/damped_cosine.py}`" in message
    )


def test_a_run_must_read_what_its_params_choose(tmp_path):
    message = _check_all(tmp_path, lambda d: d["mnist_irnn"]["preprocess"].update(dataset="fashion_mnist"))
    assert (
        "'runs.mnist_irnn-irnn.source' = 'data/raw/mnist', 'runs.mnist_irnn-irnn.loader' = 'stages/datasets/mnist.py'" in message
    )
    assert "source: data/raw/fashion_mnist, loader: stages/datasets/fashion_mnist.py}`" in message


@pytest.mark.parametrize(
    "edit, expected",
    [
        (
            lambda d: d["runs"].update(foo=dict(d["runs"]["stateful_lstm-lahead1"])),
            "run 'foo' must be keyed 'stateful_lstm-lahead1'",
        ),
        (
            lambda d: d["runs"]["stateful_lstm-lahead1"].update(variant="lahead7"),
            "'runs.stateful_lstm-lahead1.variant' = 'lahead7' is not",
        ),
        (
            lambda d: d["runs"]["stateful_lstm-lahead1"].update(example="mnist"),
            "'runs.stateful_lstm-lahead1.example' = 'mnist' is not an",
        ),
        (lambda d: d["runs"]["stateful_lstm-lahead1"].pop("loader"), "'runs.stateful_lstm-lahead1' must be a mapping of exactly"),
        (lambda d: d.pop("runs"), "'runs' must map each run key (<example>-<variant>)"),
    ],
)
def test_malformed_runs_are_named(tmp_path, edit, expected):
    assert expected in _check_all(tmp_path, edit)


def test_a_set_param_override_changes_one_line_of_params_yaml(tmp_path):
    """`dvc exp run -S key=value` rewrites params.yaml; written as DVC writes it, only that line changes."""
    from conftest import git

    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "dvc.yaml").write_text("stages:\n  echo:\n    cmd: echo ok\n    params: [seed]\n")
    git(tmp_path, "init", "-q")
    run(["dvc", "init", "-q"], tmp_path)
    git(tmp_path, "-c", "user.email=t@e.invalid", "-c", "user.name=t", "add", "-A")
    git(tmp_path, "-c", "user.email=t@e.invalid", "-c", "user.name=t", "commit", "-qm", "params")
    for override in ("mnist_sklearn_wrapper.train.cv=4", "lstm_text_generation.train.epochs=9"):
        run(["dvc", "exp", "run", "-S", override], tmp_path)
        changed = [line for line in git(tmp_path, "diff", "-U0", "params.yaml").splitlines() if line[:1] in "+-"]
        assert len(changed) == 4, changed  # ---/+++ headers, the old line and the new one
        git(tmp_path, "checkout", "params.yaml")
