"""Reading and validating params.yaml, the one place for every setting.

Each example module declares its parameters as pydantic models (one per step),
with types and ranges but no defaults: the values live in params.yaml only, so
DVC tracks every value a stage reads. `load_run_params` checks the whole of an
example's section (and the top level) before a stage does any work, and turns
pydantic's report into one paragraph that names the key and what it accepts.

A run is one example under one named variant. `<example>.variants.<name>` holds
overrides for the step sections (same nesting, a subset of keys); they are
merged over the base values and the result is validated as a whole.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from stages.core.errors import ParamsError
from stages.core.layout import STEPS

TOP_LEVEL_KEYS = ("seed",)


class Section(BaseModel):
    """Base of every step's parameter model: unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ExampleParams(BaseModel):
    """Base of an example's whole parameter model: one field per step."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class RunParams:
    """Validated parameters of one run (example x variant)."""

    example: str
    variant: str
    seed: int
    steps: ExampleParams

    def __getattr__(self, name: str) -> Any:
        # run.train, run.preprocess ...: the validated step sections.
        if name in STEPS:
            return getattr(self.steps, name)
        raise AttributeError(name)


def read_params(path: str | os.PathLike = "params.yaml") -> dict[str, Any]:
    """Read params.yaml; a missing or malformed file is a ParamsError."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path} not found: run from the project root, where params.yaml lives.") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{path} must hold a mapping of sections (seed, one per example); got {type(data).__name__}.")
    return data


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Return `base` with `override` merged in, recursively for nested mappings."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _describe(model: type[BaseModel], loc: tuple) -> str:
    """What the field at `loc` accepts, from its annotation and constraints."""
    field = None
    current: Any = model
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            break
        field = fields[part]
        current = field.annotation
    if field is None:
        return ""
    annotation = getattr(field.annotation, "__name__", None) or str(field.annotation).replace("typing.", "")
    bounds = [str(m) for m in field.metadata]
    text = f"expected {annotation}"
    if bounds:
        text += " with " + ", ".join(bounds)
    if field.description:
        text += f" ({field.description})"
    return text


def _format_errors(prefix: str, model: type[BaseModel], err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join([prefix, *map(str, loc)])
        if e["type"] == "extra_forbidden":
            parent = model
            for part in loc[:-1]:
                parent = parent.model_fields[part].annotation
            known = ", ".join(sorted(getattr(parent, "model_fields", {}))) or "none"
            lines.append(f"unknown key '{key}' (known keys here: {known}; check the spelling)")
        elif e["type"] == "missing":
            lines.append(f"missing key '{key}': {_describe(model, loc) or 'required'}")
        else:
            accepts = _describe(model, loc)
            lines.append(f"'{key}' = {e.get('input')!r} is invalid: {e['msg']}" + (f"; {accepts}" if accepts else ""))
    return "; ".join(lines)


def validate_top_level(data: dict[str, Any], examples: list[str], path: str = "params.yaml") -> int:
    """Check the top-level keys and the seed; return the seed."""
    unknown = sorted(set(data) - set(TOP_LEVEL_KEYS) - set(examples))
    if unknown:
        raise ParamsError(
            f"{path}: unknown top-level key(s) {', '.join(map(repr, unknown))}. "
            f"Top-level keys are {', '.join(TOP_LEVEL_KEYS)} and one section per example "
            f"({', '.join(examples)})."
        )
    seed = data.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ParamsError(f"{path}: 'seed' = {seed!r} is invalid; expected an integer in [0, 2**32).")
    return seed


def validate_example(
    data: dict[str, Any], example: str, model: type[ExampleParams], path: str = "params.yaml"
) -> dict[str, ExampleParams]:
    """Validate an example's section under every variant; return {variant: params}."""
    section = data.get(example)
    if not isinstance(section, dict):
        raise ParamsError(f"{path}: section '{example}' is missing or not a mapping; it needs keys variants, {', '.join(STEPS)}.")
    section = dict(section)
    variants = section.pop("variants", None)
    if not isinstance(variants, dict) or not variants:
        raise ParamsError(
            f"{path}: '{example}.variants' must map each variant name to its overrides "
            "(use {} for a variant that keeps the base values); dvc.yaml runs one pipeline per variant."
        )
    try:
        model.model_validate(section)
    except ValidationError as err:
        raise ParamsError(f"{path}: {_format_errors(example, model, err)}.") from None
    result = {}
    for name, override in variants.items():
        prefix = f"{example}.variants.{name}"
        if not isinstance(override, dict):
            raise ParamsError(f"{path}: '{prefix}' must be a mapping of step sections to override ({{}} for none).")
        bad = sorted(set(override) - set(STEPS))
        if bad:
            raise ParamsError(f"{path}: unknown key(s) {', '.join(bad)} in '{prefix}'; a variant overrides the steps {', '.join(STEPS)}.")
        try:
            result[name] = model.model_validate(deep_merge(section, override))
        except ValidationError as err:
            raise ParamsError(f"{path}: with variant '{name}' applied: {_format_errors(example, model, err)}.") from None
    return result


def load_run_params(
    example: str,
    variant: str | None,
    model: type[ExampleParams],
    examples: list[str],
    path: str | os.PathLike = "params.yaml",
) -> RunParams:
    """Validate params.yaml for `example` and return the merged params of `variant`.

    `variant=None` picks the example's first variant.
    """
    data = read_params(path)
    seed = validate_top_level(data, examples, str(path))
    by_variant = validate_example(data, example, model, str(path))
    if variant is None:
        variant = next(iter(by_variant))
    if variant not in by_variant:
        raise ParamsError(
            f"{path}: '{example}' has no variant '{variant}'; its variants are "
            f"{', '.join(by_variant)} (add one under '{example}.variants' and a run in dvc.yaml)."
        )
    return RunParams(example=example, variant=variant, seed=seed, steps=by_variant[variant])
