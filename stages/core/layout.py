"""Where each step of each run reads and writes: the single source of the paths.

dvc.yaml declares the same paths with `${key}` (the run key, `<example>-<variant>`)
and `${item.example}`/`${item.variant}`; tests/test_pipeline.py checks that every
stage DVC resolves lists exactly these, so the code and the pipeline cannot drift
apart.

Layers, by example run (<run> = <example>-<variant>):
    data/raw/<dataset>/                  download or synthesize (DVC cache)
    data/processed/<run>/                preprocess   (DVC cache)
    models/<run>/                        train        (DVC cache)
    plots/<example>/<variant>/training/  train        (git: DVCLive per-epoch metrics)
    data/predictions/<run>/              evaluate     (DVC cache)
    metrics/<example>/<variant>.json     evaluate     (git)
    plots/<example>/<variant>/figures/   plot         (git: CSV/JSON for DVC templates, PNGs)
    plots/compare/<example>/             compare      (git: every variant side by side)
    .checkpoints/<run>/                  train        (neither: resume state while training runs)
metrics and plots are grouped by example so that the compare stage can depend
on one example's folders (metrics/<example>, plots/<example>) whatever its
number of variants: adding a variant re-runs only its own stages and compare.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STEPS = ("preprocess", "train", "evaluate", "plot")  # the steps after download, each run through all

# The steps whose stages list `seed` in dvc.yaml: a step's Run has a seed only if its step is here.
SEEDED_STEPS = ("preprocess", "train", "evaluate")

# File names inside a run's folders, named once.
META = "meta.json"  # data/processed/<run>/: what the arrays are
WEIGHTS = "model.weights.h5"  # models/<run>/
MODEL = "model.json"  # models/<run>/: how to build the model again, and facts about it

STAGES_DIR = Path(__file__).resolve().parent.parent


def discover_examples(params_file: str | Path = "params.yaml") -> list[str]:
    """The examples: the sections of params.yaml (all but `seed`) that have a module stages/<name>.py.

    params.yaml is read leniently here (only its top-level names); validation
    reports what is wrong with it, including a section without a module.
    """
    import yaml

    try:
        sections = yaml.safe_load(Path(params_file).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []
    if not isinstance(sections, dict):
        return []
    return sorted(name for name in sections if name != "seed" and (STAGES_DIR / f"{name}.py").is_file())


def run_key(example: str, variant: str) -> str:
    return f"{example}-{variant}"


def raw_dir(dataset: str) -> Path:
    return Path("data/raw") / dataset


@dataclass(frozen=True)
class Layout:
    """All paths of one run, relative to the project root."""

    key: str  # <example>-<variant>; example names (module names) hold no '-'

    @property
    def example(self) -> str:
        return self.key.split("-", 1)[0]

    @property
    def variant(self) -> str:
        return self.key.split("-", 1)[1]

    @property
    def processed(self) -> Path:
        return Path("data/processed") / self.key

    @property
    def model(self) -> Path:
        return Path("models") / self.key

    @property
    def training(self) -> Path:
        return Path("plots") / self.example / self.variant / "training"

    @property
    def predictions(self) -> Path:
        return Path("data/predictions") / self.key

    @property
    def metrics(self) -> Path:
        return Path("metrics") / self.example / f"{self.variant}.json"

    @property
    def figures(self) -> Path:
        return Path("plots") / self.example / self.variant / "figures"

    @property
    def checkpoints(self) -> Path:
        return Path(".checkpoints") / self.key

    def outputs(self, step: str) -> list[Path]:
        """The outputs dvc.yaml must declare for `step` of this run."""
        return {
            "preprocess": [self.processed],
            "train": [self.model, self.training],
            "evaluate": [self.predictions, self.metrics],
            "plot": [self.figures],
        }[step]


def compare_dir(example: str) -> Path:
    """Where compare@<example> writes: beside, not inside, the folders it reads (metrics/<example>, plots/<example>)."""
    return Path("plots") / "compare" / example
