"""`python -m stages <step> <example>`: the one entry point dvc.yaml calls.

Steps: download and synthesize (take a dataset), preprocess, train, evaluate, plot (take an
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
import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path

# Only what every command needs is imported here; each command imports the
# rest itself, so a download runs (and its stage depends on) no more code than
# the dataset layer's. dvc.yaml does not list this module: it dispatches, and
# changing how arguments are parsed changes no result.
from stages.core.errors import StageError
from stages.core.layout import STEPS, discover_examples, raw_dir, run_key
from stages.report import clear_failure, record_failure

_AFTER_INTERRUPT = {
    "download": "Nothing was kept: the partly downloaded files were removed; run it again to start over.",
    "train": "Run it again: it resumes after the last finished epoch if params, data and code are unchanged.",
}


# TensorFlow prints these from C++ on every import (absl's pre-init notice, oneDNN's and the CPU
# feature notes); TF_CPP_MIN_LOG_LEVEL no longer hides them (TensorFlow 2.21).
_TF_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called|I\d{4} .*\] oneDNN custom operations|"
    r"I\d{4} .*cpu_feature_guard|To enable the following instructions:)"
)


def quiet_tensorflow_import() -> None:
    """Hold stderr while `import tensorflow` runs, then pass on all of it but TensorFlow's start-up notices.

    Installed by `python -m stages`, so stages are quiet however they are
    started (dvc repro, make, by hand). STAGES_TF_LOGS=1 turns the notices back on.
    """
    if os.environ.get("STAGES_TF_LOGS") == "1" or "tensorflow" in sys.modules:
        return

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "tensorflow":
                return None
            sys.meta_path.remove(self)
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is not None and spec.loader is not None:
                spec.loader.exec_module = _holding_stderr(spec.loader.exec_module)
            return spec

    sys.meta_path.insert(0, Finder())


def _holding_stderr(exec_module):
    def run(module):
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile() as held:
            os.dup2(held.fileno(), 2)
            try:
                exec_module(module)
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                held.seek(0)
                lines = held.read().decode("utf-8", "replace").splitlines(keepends=True)
                sys.stderr.write("".join(line for line in lines if not _TF_NOISE.match(line)))

    return run


def _first_variant(example: str) -> str:
    """The default variant's name, read leniently (only to name a stage in messages)."""
    try:
        import yaml

        return next(iter(yaml.safe_load(Path("params.yaml").read_text(encoding="utf-8"))[example]["variants"]))
    except Exception:
        return "?"


def _add_spread_commands(subparsers: argparse._SubParsersAction, examples: list[str]) -> None:
    """`spread` and `diff` (stages/spread.py, imported only when one of them runs)."""
    p = subparsers.add_parser(
        "spread",
        help="run an example at several seeds (DVC's queue) and write metrics/spread/<example>.json",
        description="Queue one DVC experiment per seed (params.yaml's seed, seed+1, ...), run them with --jobs "
        "workers, and write every metric's mean, standard deviation, min and max to metrics/spread/<example>.json.",
    )
    p.add_argument("example", choices=examples, metavar="<example>", help=", ".join(examples))
    p.add_argument("--seeds", type=int, default=3, help="how many seeds (default 3)")
    p.add_argument("--jobs", type=int, default=1, help="queue workers (default 1; each trains with every core)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a params.yaml value for every seed's experiment, as `dvc exp run -S` (repeatable; recorded in the spread file)",
    )
    p = subparsers.add_parser(
        "diff",
        help="dvc metrics diff, each change measured in seed standard deviations",
        description="Run `dvc metrics diff <rev>` and mark each change as within or beyond two seed standard "
        "deviations, as measured by `python -m stages spread`.",
    )
    p.add_argument("rev", nargs="?", default="HEAD", help="the revision to compare the workspace with (default HEAD)")


def build_parser(examples: list[str], with_example_commands: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m stages",
        description="Classic Keras examples as DVC pipelines: download -> preprocess -> train -> evaluate -> plot.",
        epilog=f"examples: {', '.join(examples)}\nEach step reads its settings from params.yaml; dvc.yaml calls these commands.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="step", required=True, metavar="<step>")
    p = sub.add_parser("download", help="fetch and verify a dataset into data/raw/<dataset>")
    p.add_argument(
        "dataset", metavar="<dataset>", help="a module of stages/datasets/: nietzsche, mnist, fashion_mnist, imdb, reuters"
    )
    p = sub.add_parser(
        "synthesize", help="make a synthetic dataset into data/raw/<dataset> from params.yaml's synthetic.<dataset>"
    )
    p.add_argument(
        "dataset", metavar="<dataset>", help="a module of stages/datasets/ with synthesize: damped_cosine, imdb_standin"
    )
    for step in STEPS:
        p = sub.add_parser(step, help=f"run the {step} step of an example")
        p.add_argument("example", choices=examples, metavar="<example>", help=", ".join(examples))
        p.add_argument("--variant", help="which of the example's variants in params.yaml (default: the first)")
    p = sub.add_parser("compare", help="draw every variant of an example side by side (examples with several variants)")
    p.add_argument("example", choices=examples, metavar="<example>", help=", ".join(examples))
    p = sub.add_parser("repro", help="dvc repro --keep-going, then a summary of what ran and what was skipped")
    p.add_argument("targets", nargs="*", help="stages to reproduce (default: all)")
    sub.add_parser("summary", help="the summary `repro` prints, for the current state")
    sub.add_parser("check", help="validate params.yaml for every example and variant (repro does this first)")
    _add_spread_commands(sub, examples)
    for name in examples if with_example_commands else ():
        module = importlib.import_module(f"stages.{name}")  # examples import Keras only inside their steps
        if hasattr(module, "add_commands"):
            module.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    examples = discover_examples()
    argv = sys.argv[1:] if argv is None else argv
    # A pipeline step needs no example's own commands: building them would import
    # (and make the step run) example modules the step has nothing to do with.
    builtin = bool(argv) and argv[0] in (
        "download",
        "synthesize",
        *STEPS,
        "compare",
        "repro",
        "summary",
        "check",
        "spread",
        "diff",
    )
    args = build_parser(examples, with_example_commands=not builtin).parse_args(argv)
    if args.step in ("repro", "check"):
        from stages.core.params import read_params
        from stages.core.run import check_all_params
        from stages.datasets.synthetic import validate

        try:
            runs = check_all_params()
            validate(read_params())
        except StageError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if args.step == "check":
            print(f"params.yaml is valid for every run: {', '.join(runs)}")
            return 0
        from stages.report import repro

        return repro(args.targets)
    if args.step == "summary":
        from stages.report import print_summary

        return print_summary()
    if args.step in ("spread", "diff"):
        from stages import spread

        try:
            return spread.main(args)
        except StageError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    if args.step in ("download", "synthesize"):
        stage = f"{args.step}@{args.dataset}"
    elif args.step in STEPS:
        stage = f"{args.step}@{run_key(args.example, args.variant or _first_variant(args.example))}"
    elif args.step == "compare":
        stage = f"compare@{args.example}"
    else:
        stage = args.step
    try:
        if args.step == "download":
            from stages.datasets.fetch import fetch

            sources = fetch(args.dataset, raw_dir(args.dataset))
            for name, source in sources.items():
                print(f"{args.dataset}/{name}: verified, from {source}")
        elif args.step == "synthesize":
            from stages.datasets.synthetic import synthesize

            shapes = synthesize(args.dataset)
            print(f"{args.dataset}: {', '.join(f'{k} {v}' for k, v in shapes.items())}")
        elif args.step in STEPS:
            from stages.core.run import check_inputs, make_run

            module, run = make_run(args.example, args.variant, args.step)
            check_inputs(args.step, run)
            getattr(module, args.step)(run)
        elif args.step == "compare":
            from stages.core.run import make_comparison

            module, comparison = make_comparison(args.example)
            module.compare(comparison)
        else:
            args.func(args)
    except StageError as err:
        record_failure(stage, err)
        print(f"error: {stage}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{stage}: interrupted. {_AFTER_INTERRUPT.get(args.step, 'Nothing was written; run it again.')}", file=sys.stderr)
        return 130
    except Exception as err:
        record_failure(stage, err)
        traceback.print_exc()
        return 1
    clear_failure(stage)
    _report_resources(stage, started)
    return 0


def _report_resources(stage: str, started: float) -> None:
    """One line per stage: wall time and peak resident memory (the numbers the README quotes)."""
    import resource

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    print(f"{stage}: done in {time.perf_counter() - started:.1f} s, peak memory {peak_mb:.0f} MB", file=sys.stderr, flush=True)
