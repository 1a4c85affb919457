"""Datasets made from params instead of downloaded: `python -m stages synthesize <name>`.

A synthetic dataset is a module of stages/datasets/ with `Params` (its section
`synthetic.<name>` in params.yaml, validated strictly), a pure
`synthesize(params)` that returns named arrays (the same params give the same
bytes), and `load(folder)`. synthesize@<name> writes the arrays to
data/raw/<name>/, where a run's preprocess reads them as it reads a download
(source data/raw/<name>, loader stages/datasets/<name>.py). An example's own
params (stateful_lstm's lahead) then leave the data alone, and changing
`synthetic.<name>` makes it again and re-runs every run that reads it.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from stages.core.errors import ParamsError
from stages.core.files import atomic_dir, save_arrays, write_json
from stages.core.layout import META, raw_dir
from stages.core.params import read_params, validate_section

SECTION = "synthetic"


def synthetic_modules() -> list[str]:
    """The datasets (fetch.known_datasets) that define `synthesize`; imports every dataset module: for messages only."""
    from stages.datasets.fetch import known_datasets

    return [n for n in known_datasets() if hasattr(importlib.import_module(f"stages.datasets.{n}"), "synthesize")]


def module_of(name: str) -> ModuleType:
    """stages/datasets/<name>.py, which must be a synthetic dataset."""
    path = Path(__file__).parent / f"{name}.py"
    module = importlib.import_module(f"stages.datasets.{name}") if path.is_file() else None
    if module is None or not hasattr(module, "synthesize"):
        raise ParamsError(
            f"'{SECTION}.{name}': no synthetic dataset is called '{name}' (a module stages/datasets/<name>.py with "
            f"Params, synthesize and load); the synthetic datasets are {', '.join(synthetic_modules())}."
        )
    return module


def _validated(module: ModuleType, name: str, values: Any, path: str) -> Any:
    """`synthetic.<name>` checked by the dataset's own Params."""
    return validate_section(values, f"{SECTION}.{name}", module.Params, path)


def validate(data: dict[str, Any], path: str = "params.yaml") -> dict[str, Any]:
    """Every entry of params.yaml's `synthetic` section, validated by its module's Params: {name: params}."""
    section = data.get(SECTION, {})
    if not isinstance(section, dict):
        raise ParamsError(f"{path}: '{SECTION}' must map each synthetic dataset's name to its settings.")
    return {name: _validated(module_of(name), name, values, path) for name, values in section.items()}


def synthesize(name: str, params_file: str = "params.yaml") -> dict[str, Any]:
    """Make data/raw/<name>/ from `synthetic.<name>`: one .npy per array, and meta.json (the params and shapes)."""
    section = read_params(params_file).get(SECTION)
    if not isinstance(section, dict) or name not in section:
        raise ParamsError(
            f"{params_file}: '{SECTION}.{name}' is missing: the settings synthesize@{name} makes its data from "
            f"(stages/datasets/{name}.py's Params says which keys)."
        )
    module = module_of(name)
    params = _validated(module, name, section[name], params_file)
    arrays = module.synthesize(params)
    shapes = {key: f"{tuple(a.shape)} {a.dtype}" for key, a in arrays.items()}
    with atomic_dir(raw_dir(name)) as out:
        save_arrays(out, arrays)
        write_json(out / META, {"params": params.model_dump(), "arrays": shapes})
    return shapes
