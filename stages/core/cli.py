"""`python -m stages <step> <example>`: the one entry point dvc.yaml calls.

Steps: download (takes a dataset), preprocess, train, evaluate, plot (take an
example and `--variant`). `repro` runs the whole pipeline with
`dvc repro --keep-going` and prints what ran, what was skipped and why.
Example modules may add commands of their own (e.g. `generate`).

Before a step does any work it validates params.yaml and checks its inputs;
a bad value or a missing input stops it with one paragraph naming the key or
file and what was expected, and no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from stages.core.errors import DatasetUnavailable, InputError, StageError
from stages.core.files import write_text
from stages.core.layout import Layout, raw_dir, run_key
from stages.core.params import STEPS, ParamsError, RunParams, load_run_params, read_params

# Modules beside the examples that are not examples (stages/datasets/ is a package, not a module).
HELPERS = frozenset({"plotting", "report", "training"})

FAILURES = Path("logs/failures")


def discover_examples() -> list[str]:
    """Every module in stages/ that is not a shared helper is an example."""
    here = Path(__file__).parent.parent
    return sorted(p.stem for p in here.glob("*.py") if not p.stem.startswith("_") and p.stem not in HELPERS)


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


def _record_failure(stage: str, err: BaseException) -> None:
    kind = "unavailable" if isinstance(err, DatasetUnavailable) else "error"
    write_text(FAILURES / f"{stage}.txt", f"{kind}\n{err}\n")


def _clear_failure(stage: str) -> None:
    (FAILURES / f"{stage}.txt").unlink(missing_ok=True)


def _first_variant(example: str) -> str:
    """The default variant's name, read leniently (only to name a stage in messages)."""
    try:
        return next(iter(read_params()[example]["variants"]))
    except Exception:
        return "?"


def build_parser(examples: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m stages",
        description="Classic Keras examples as DVC pipelines: download -> preprocess -> train -> evaluate -> plot.",
        epilog=f"examples: {', '.join(examples)}\n"
        "Each step reads its settings from params.yaml; dvc.yaml calls these commands.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="step", required=True, metavar="<step>")
    p = sub.add_parser("download", help="fetch and verify a dataset into data/raw/<dataset>")
    p.add_argument("dataset", metavar="<dataset>", help="a module of stages/datasets/: nietzsche, mnist, fashion_mnist, imdb, reuters")
    for step in STEPS:
        p = sub.add_parser(step, help=f"run the {step} step of an example")
        p.add_argument("example", choices=examples, metavar="<example>", help=", ".join(examples))
        p.add_argument("--variant", help="which of the example's variants in params.yaml (default: the first)")
    p = sub.add_parser("repro", help="dvc repro --keep-going, then a summary of what ran and what was skipped")
    p.add_argument("targets", nargs="*", help="stages to reproduce (default: all)")
    sub.add_parser("summary", help="the summary `repro` prints, for the current state")
    for name in examples:
        module = importlib.import_module(f"stages.{name}") if _declares_commands(name) else None
        if module is not None:
            module.add_commands(sub)
    return parser


def _declares_commands(name: str) -> bool:
    # Only import (TensorFlow-heavy) example modules that add commands of their own.
    text = (Path(__file__).parent.parent / f"{name}.py").read_text(encoding="utf-8")
    return "def add_commands(" in text


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    examples = discover_examples()
    args = build_parser(examples).parse_args(argv)
    if args.step == "repro":
        from stages.report import repro

        return repro(args.targets)
    if args.step == "summary":
        from stages.report import print_summary

        return print_summary()
    if args.step == "download":
        stage = f"download@{args.dataset}"
    elif args.step in STEPS:
        stage = f"{args.step}@{run_key(args.example, args.variant or _first_variant(args.example))}"
    else:
        stage = args.step
    try:
        if args.step == "download":
            from stages.datasets.fetch import fetch

            sources = fetch(args.dataset, raw_dir(args.dataset))
            for name, source in sources.items():
                print(f"{args.dataset}/{name}: verified, from {source}")
        elif args.step in STEPS:
            module, run = make_run(args.example, args.variant)
            check_inputs(args.step, run)
            getattr(module, args.step)(run)
        else:
            args.func(args)
    except StageError as err:
        _record_failure(stage, err)
        print(f"error: {stage}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{stage}: interrupted; re-run it to resume from the last finished epoch.", file=sys.stderr)
        return 130
    except Exception as err:
        _record_failure(stage, err)
        traceback.print_exc()
        return 1
    _clear_failure(stage)
    _report_resources(stage, started)
    return 0


def _report_resources(stage: str, started: float) -> None:
    """One line per stage: wall time and peak resident memory (the numbers the README quotes)."""
    import resource

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    print(f"{stage}: done in {time.perf_counter() - started:.1f} s, peak memory {peak_mb:.0f} MB", file=sys.stderr, flush=True)


