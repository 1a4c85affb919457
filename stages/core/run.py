"""One run (an example under one variant): its validated params, paths and inputs.

Every step of every example starts here: `make_run` finds the example module,
validates the whole of its params.yaml section (all steps, every variant) and
returns the `Run` the step function receives. `check_inputs` stops a step whose
inputs DVC has not built yet, with a message saying which stage to run.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from stages.core.errors import InputError, ParamsError, StageError
from stages.core.layout import SEEDED_STEPS, Layout, compare_dir, discover_examples, raw_dir, run_key
from stages.core.params import dotted_key, load_run_params, read_params, validate_example, validate_top_level


def load_example(name: str) -> ModuleType:
    examples = discover_examples()
    if name not in examples:
        raise ParamsError(f"unknown example '{name}'; the examples are {', '.join(examples)}.")
    return importlib.import_module(f"stages.{name}")


@dataclass(frozen=True)
class Run:
    """What one step of one run receives: its own params section, its paths, and (preprocess) its raw data.

    A step sees only what its stage declares in dvc.yaml: `params` is the
    step's section with the variant's overrides merged (`<example>.<step>` and
    `<example>.variants.<variant>`), and `seed` is there only for the steps that
    list it (SEEDED_STEPS). A value from another step comes from the step's
    input files, never from params.yaml.
    """

    example: str
    variant: str
    step: str
    params: Any
    paths: Layout
    raw: Path | None = None
    _seed: int | None = field(default=None, repr=False)
    _overrides: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def seed(self) -> int:
        if self._seed is None:
            raise StageError(
                f"{self.step}@{self.paths.key} reads 'seed', which its stage does not list in dvc.yaml; "
                f"only {', '.join(SEEDED_STEPS)} do."
            )
        return self._seed

    def param_key(self, *path: str) -> str:
        """The params.yaml key of one of this step's values, e.g. param_key("corpus"): the variant's if it sets it."""
        return dotted_key(self.example, self.variant, self._overrides, self.step, *path)


RUN_FIELDS = ("example", "variant", "source", "loader")


def expected_source(example: str, module: ModuleType, steps: Any) -> tuple[str, str]:
    """(source, loader) that a run's entry in `runs` must name, as the example's params choose them.

    A dataset (downloaded by download@<dataset>, or made from params by
    synthesize@<dataset>): data/raw/<dataset> read by stages/datasets/<dataset>.py.
    A file of the user's own (an example's `own_source`): that file, read by its loader.
    """
    name = module.dataset(steps)
    if name:
        return str(raw_dir(name)), f"stages/datasets/{name}.py"
    own = module.own_source(steps) if hasattr(module, "own_source") else None
    if own is None:
        raise StageError(
            f"stages/{example}.py: dataset() names no dataset and the module has no own_source(): a run reads nothing."
        )
    return own


def check_run_entry(data: dict[str, Any], example: str, variant: str, steps: Any, module: ModuleType, path: str) -> None:
    """The run's entry under `runs` exists and names what its params choose (dvc.yaml builds its stages from it)."""
    key = run_key(example, variant)
    source, loader = expected_source(example, module, steps)
    line = f"{key}: {{example: {example}, variant: {variant}, source: {source}, loader: {loader}}}"
    runs = data.get("runs")
    entry = runs.get(key) if isinstance(runs, dict) else None
    if entry is None:
        raise ParamsError(
            f"{path}: variant '{example}.variants.{variant}' has no run: dvc.yaml builds a run's stages from "
            f"params.yaml's 'runs' mapping. Add under 'runs' the line `{line}`."
        )
    expected = {"example": example, "variant": variant, "source": source, "loader": loader}
    if not isinstance(entry, dict) or set(entry) != set(RUN_FIELDS):
        got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise ParamsError(
            f"{path}: 'runs.{key}' must be a mapping of exactly {', '.join(RUN_FIELDS)}; got {got}. Expected `{line}`."
        )
    wrong = [f"'runs.{key}.{k}' = {entry[k]!r}" for k in RUN_FIELDS if entry[k] != expected[k]]
    if wrong:
        raise ParamsError(
            f"{path}: {', '.join(wrong)} disagree(s) with the example's params, which make this run read "
            f"{source} with {loader} (a run's source follows its example's dataset or corpus setting, and its "
            f"key is <example>-<variant>). Set the entry to `{line}`, or change the params that choose the data."
        )


def check_runs(data: dict[str, Any], examples: list[str], path: str) -> None:
    """Every entry under `runs` is a run of a known example's variant (the entries for variants are checked per example)."""
    runs = data.get("runs")
    if not isinstance(runs, dict) or not runs:
        raise ParamsError(
            f"{path}: 'runs' must map each run key (<example>-<variant>) to {{{', '.join(RUN_FIELDS)}}}; "
            "dvc.yaml builds one pipeline per entry."
        )
    for key, entry in runs.items():
        example, variant = (entry.get("example"), entry.get("variant")) if isinstance(entry, dict) else (None, None)
        if example not in examples:
            raise ParamsError(
                f"{path}: 'runs.{key}.example' = {example!r} is not an example; the examples are {', '.join(examples)}."
            )
        variants = data.get(example, {}).get("variants") if isinstance(data.get(example), dict) else None
        if not isinstance(variants, dict) or variant not in variants:
            known = ", ".join(variants) if isinstance(variants, dict) else "none"
            raise ParamsError(
                f"{path}: 'runs.{key}.variant' = {variant!r} is not a variant of {example} (its variants: {known}); "
                f"add it under '{example}.variants' or remove the run."
            )
        if isinstance(example, str) and isinstance(variant, str) and key != run_key(example, variant):
            raise ParamsError(
                f"{path}: run '{key}' must be keyed '{run_key(example, variant)}' (<example>-<variant>), the key of its paths."
            )


def make_run(example: str, variant: str | None, step: str, params_file: str = "params.yaml") -> tuple[ModuleType, Run]:
    """Validate the example's whole params section (every step, every variant) and the run's entry; return (module, Run)."""
    module = load_example(example)
    params = load_run_params(example, variant, module.Params, discover_examples(params_file), params_file)
    check_run_entry(read_params(params_file), example, params.variant, params.steps, module, params_file)
    dataset = module.dataset(params.steps) if step == "preprocess" else None
    return module, Run(
        example=example,
        variant=params.variant,
        step=step,
        params=getattr(params.steps, step),
        paths=Layout(run_key(example, params.variant)),
        raw=raw_dir(dataset) if dataset else None,
        _seed=params.seed if step in SEEDED_STEPS else None,
        _overrides=params.overrides,
    )


_INPUTS = {
    "preprocess": lambda run: [run.raw] if run.raw else [],
    "train": lambda run: [run.paths.processed],
    "evaluate": lambda run: [run.paths.processed, run.paths.model],
    "plot": lambda run: [run.paths.processed, run.paths.predictions, run.paths.training],
}


def check_inputs(step: str, run: Run) -> None:
    missing = [str(p) for p in _INPUTS[step](run) if not p.exists()]
    if missing:
        raise InputError(
            f"{step}@{run.paths.key} needs {', '.join(missing)}, which does not exist yet; "
            f"run `dvc repro {step}@{run.paths.key}` so DVC builds the stages before it."
        )


def check_all_params(params_file: str = "params.yaml") -> list[str]:
    """Validate every example's section (all steps, every variant); return the run keys.

    `python -m stages repro` and `python -m stages check` call this before DVC
    starts, so a bad value anywhere stops everything with a message naming its
    key: plain `dvc repro` would otherwise meet some of them only as a missing
    path (a `dataset` outside the registry names a data/raw folder no stage makes).
    """
    data = read_params(params_file)
    examples = discover_examples(params_file)
    validate_top_level(data, examples, params_file)
    check_runs(data, examples, params_file)
    problems, runs = [], []
    for example in examples:
        module = load_example(example)
        try:
            variants = validate_example(data, example, module.Params, params_file)
            for variant, steps in variants.items():
                check_run_entry(data, example, variant, steps, module, params_file)
        except ParamsError as err:
            problems.append(str(err))
            continue
        runs += [run_key(example, variant) for variant in variants]
    if problems:
        raise ParamsError(" ".join(problems))
    return runs


@dataclass(frozen=True)
class Comparison:
    """What an example's compare step receives: every variant's paths, the example's plot section, its output folder.

    compare@<example> depends on metrics/<example> and plots/<example> (every
    variant's metrics and plot folders) and on `<example>.plot` and
    `<example>.variants` in params.yaml; `params` is the plot section with no
    variant merged.
    """

    example: str
    variants: tuple[str, ...]
    runs: dict[str, Layout]
    params: Any
    out: Path


def make_comparison(example: str, params_file: str = "params.yaml") -> tuple[ModuleType, Comparison]:
    """Validate the example's params; return (module, Comparison); the module must define `compare`."""
    module = load_example(example)
    data = read_params(params_file)
    validate_top_level(data, discover_examples(params_file), params_file)
    variants = tuple(validate_example(data, example, module.Params, params_file))
    if not hasattr(module, "compare"):
        raise InputError(f"example '{example}' has no compare step (stages/{example}.py defines no compare function).")
    base = {k: v for k, v in data[example].items() if k != "variants"}
    comparison = Comparison(
        example=example,
        variants=variants,
        runs={v: Layout(run_key(example, v)) for v in variants},
        params=module.Params.model_validate(base).plot,
        out=compare_dir(example),
    )
    missing = [str(p) for layout in comparison.runs.values() for p in (layout.metrics, layout.training) if not p.exists()]
    if missing:
        raise InputError(
            f"compare@{example} needs {', '.join(missing)}, which does not exist yet; "
            f"run `dvc repro compare@{example}` so DVC builds every variant first."
        )
    return module, comparison
