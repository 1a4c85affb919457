"""One run (an example under one variant): its validated params, paths and inputs.

Every step of every example starts here: `make_run` finds the example module,
validates the whole of its params.yaml section (all steps, every variant) and
returns the `Run` the step function receives. `check_inputs` stops a step whose
inputs DVC has not built yet, with a message saying which stage to run.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from stages.core.errors import InputError, ParamsError
from stages.core.layout import Layout, discover_examples, raw_dir, run_key
from stages.core.params import RunParams, load_run_params, read_params, validate_example, validate_top_level


def load_example(name: str) -> ModuleType:
    examples = discover_examples()
    if name not in examples:
        raise ParamsError(f"unknown example '{name}'; the examples are {', '.join(examples)}.")
    return importlib.import_module(f"stages.{name}")


@dataclass(frozen=True)
class Run:
    """What a step function receives: validated params, its paths, its raw data."""

    params: RunParams
    paths: Layout
    raw: Path | None

    @property
    def seed(self) -> int:
        return self.params.seed


def make_run(example: str, variant: str | None, params_file: str = "params.yaml") -> tuple[ModuleType, Run]:
    module = load_example(example)
    params = load_run_params(example, variant, module.Params, discover_examples(), params_file)
    dataset = module.dataset(params) if hasattr(module, "dataset") else None
    return module, Run(params=params, paths=Layout(run_key(example, params.variant)), raw=raw_dir(dataset) if dataset else None)


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
    examples = discover_examples()
    validate_top_level(data, examples, params_file)
    problems, runs = [], []
    for example in examples:
        try:
            variants = validate_example(data, example, load_example(example).Params, params_file)
        except ParamsError as err:
            problems.append(str(err))
            continue
        runs += [run_key(example, variant) for variant in variants]
    if problems:
        raise ParamsError(" ".join(problems))
    return runs
