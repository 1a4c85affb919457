"""Reading and validating params.yaml, the one place for every setting.

Each example module declares its parameters as pydantic models (one per step),
with types and ranges but no defaults: the values live in params.yaml only, so
DVC tracks every value a stage reads. `load_run_params` checks the whole of an
example's section (and the top level) before a stage does any work, and turns
pydantic's report into one paragraph that names the key and what it accepts.

A run is one example under one named variant. `<example>.variants.<name>` holds
overrides for the step sections (same nesting, a subset of keys); they are
merged over the base values and the result is validated as a whole, so checks
that relate keys of different steps (an example's `model_validator`) see every
section at every step: a bad evaluate value stops train before it trains.

Values must mean what they say: a boolean is not a number (`epochs: true`),
a float must be finite (`.inf`, `.nan`), a string is not a number; an integer
is still accepted where a float is expected.
"""

from __future__ import annotations

import copy
import functools
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo
from pydantic.fields import FieldInfo

from stages.core.errors import ParamsError
from stages.core.layout import STEPS

TOP_LEVEL_KEYS = ("seed", "runs", "synthetic")  # runs: checked by stages/core/run.py; synthetic: stages/datasets/synthetic.py


class Section(BaseModel):
    """Base of every step's parameter model.

    Unknown keys are an error; strict types, so a YAML boolean or string is
    never taken for a number (pydantic's lax mode reads `true` as 1); floats
    must be finite. Strict mode still accepts an int for a float field.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


_UNSET = object()


def dotted_key(example: str, variant: str | None, override: Mapping[str, Any], *path: str) -> str:
    """The params.yaml key a merged value came from: the variant's override if it sets it, else the base.

    `dotted_key("stateful_lstm", "lahead20", {"preprocess": {"lahead": 20}}, "preprocess", "lahead")`
    is "stateful_lstm.variants.lahead20.preprocess.lahead".
    """
    node: Any = override
    for part in path:
        node = node.get(part, _UNSET) if isinstance(node, Mapping) else _UNSET
    if variant is not None and node is not _UNSET:
        return ".".join((example, "variants", variant, *path))
    return ".".join((example, *path))


class ExampleParams(BaseModel):
    """Base of an example's whole parameter model: one field per step.

    Checks across keys go in a `model_validator(mode="after")` of the example's
    Params; it raises ParamsError, naming keys with `self.key_namer(info)`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    def key_namer(self, info: ValidationInfo) -> Callable[..., str]:
        """`name("preprocess", "lahead")` -> the dotted key that value came from (see dotted_key).

        validate_example passes the example, variant and override as the
        validation context; without one (a model built in code) the example is
        the module's name and every key is a base key.
        """
        context = info.context or {}
        example = context.get("example") or type(self).__module__.rpartition(".")[2]
        return functools.partial(dotted_key, example, context.get("variant"), context.get("override") or {})


@dataclass(frozen=True)
class RunParams:
    """Validated parameters of one run (example x variant)."""

    example: str
    variant: str
    seed: int
    steps: ExampleParams
    overrides: Mapping[str, Any] = field(default_factory=dict)  # the variant's, as in params.yaml

    def key(self, *path: str) -> str:
        """The dotted params.yaml key of a value of this run, e.g. key("preprocess", "corpus")."""
        return dotted_key(self.example, self.variant, self.overrides, *path)

    def __getattr__(self, name: str) -> Any:
        # run.train, run.preprocess ...: the validated step sections.
        if name in STEPS:
            return getattr(self.steps, name)
        raise AttributeError(name)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading `1e-4` as a number (YAML 1.2, as DVC reads it) rather than text."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def read_params(path: str | os.PathLike = "params.yaml") -> dict[str, Any]:
    """Read params.yaml; a missing or malformed file is a ParamsError."""
    path = Path(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
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


def _field(model: type[BaseModel], loc: tuple) -> FieldInfo | None:
    """The declaration of the field at `loc` (the list holding an item, for an item's loc)."""
    field = None
    current: Any = model
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            break
        field = fields[part]
        current = field.annotation
    return field


def _describe(model: type[BaseModel], loc: tuple) -> str:
    """What the field at `loc` accepts, from its annotation and constraints."""
    field = _field(model, loc)
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


def _error_key(example: str, variant: str | None, override: Mapping[str, Any], loc: tuple) -> str:
    """'stateful_lstm.train.epochs', or 'lstm_text_generation.train.temperatures[1]' for a list item."""
    names = []
    for part in loc:
        if isinstance(part, int):
            break
        names.append(str(part))
    indices = "".join(f"[{part}]" for part in loc[len(names) :])
    return dotted_key(example, variant, override, *names) + indices


def _format_errors(
    example: str,
    model: type[BaseModel],
    err: ValidationError,
    variant: str | None = None,
    override: Mapping[str, Any] | None = None,
) -> str:
    """pydantic's report as one line per problem, each naming the params.yaml key it is about."""
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = _error_key(example, variant, override or {}, loc)
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, ParamsError):  # an example's check across keys: its message names them
            lines.append(str(cause).rstrip("."))
        elif e["type"] == "extra_forbidden":
            parent = model
            for part in loc[:-1]:
                parent = parent.model_fields[part].annotation
            known = ", ".join(sorted(getattr(parent, "model_fields", {}))) or "none"
            lines.append(f"unknown key '{key}' (known keys here: {known}; check the spelling)")
        elif e["type"] == "missing":
            lines.append(f"missing key '{key}': {_describe(model, loc) or 'required'}")
        elif e["type"] == "literal_error":
            field = _field(model, loc)
            about = f" ({field.description})" if field is not None and field.description else ""
            what = "a known dataset; the known datasets here are" if loc[-1:] == ("dataset",) else "one of the accepted values:"
            lines.append(f"'{key}' = {e.get('input')!r} is not {what} {e['ctx']['expected']}{about}")
        elif not loc:
            lines.append(f"'{example}' is invalid: {e['msg']}")
        else:
            accepts = _describe(model, loc)
            lines.append(f"'{key}' = {e.get('input')!r} is invalid: {e['msg']}" + (f"; {accepts}" if accepts else ""))
    return "; ".join(lines)


def validate_top_level(data: dict[str, Any], examples: list[str], path: str = "params.yaml") -> int:
    """Check the top-level keys and the seed; return the seed."""
    unknown = sorted(set(data) - set(TOP_LEVEL_KEYS) - set(examples))
    if unknown:
        raise ParamsError(
            f"{path}: unknown top-level key(s) {', '.join(map(repr, unknown))}: no module stages/<name>.py "
            f"defines such an example. Top-level keys are {', '.join(TOP_LEVEL_KEYS)} and one section per example "
            f"({', '.join(examples)}); check the spelling."
        )
    seed = data.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ParamsError(f"{path}: 'seed' = {seed!r} is invalid; expected an integer in [0, 2**32).")
    return seed


def validate_section(values: Any, key: str, model: type[Section], path: str = "params.yaml") -> Section:
    """One section that is not an example's (e.g. synthetic.damped_cosine), validated strictly; errors name its keys."""
    if not isinstance(values, dict):
        raise ParamsError(f"{path}: '{key}' must be a mapping of {', '.join(model.model_fields)}.")
    try:
        return model.model_validate(values)
    except ValidationError as err:
        raise ParamsError(f"{path}: {_format_errors(key, model, err)}.") from None


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
            "(use {} for a variant that keeps the base values); each variant has a run under 'runs'."
        )
    try:
        model.model_validate(section, context={"example": example})
    except ValidationError as err:
        raise ParamsError(f"{path}: {_format_errors(example, model, err)}.") from None
    result = {}
    for name, override in variants.items():
        prefix = f"{example}.variants.{name}"
        if not isinstance(override, dict):
            raise ParamsError(f"{path}: '{prefix}' must be a mapping of step sections to override ({{}} for none).")
        bad = sorted(set(override) - set(STEPS))
        if bad:
            raise ParamsError(
                f"{path}: unknown key(s) {', '.join(bad)} in '{prefix}'; a variant overrides the steps {', '.join(STEPS)}."
            )
        context = {"example": example, "variant": name, "override": override}
        try:
            result[name] = model.model_validate(deep_merge(section, override), context=context)
        except ValidationError as err:
            details = _format_errors(example, model, err, name, override)
            raise ParamsError(f"{path}: with variant '{name}' applied: {details}.") from None
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
            f"{', '.join(by_variant)} (add one under '{example}.variants' and its run under 'runs')."
        )
    overrides = data[example]["variants"][variant]
    return RunParams(example=example, variant=variant, seed=seed, steps=by_variant[variant], overrides=overrides)
