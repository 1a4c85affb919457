"""Plot helpers: matplotlib's Agg backend only (never a window), atomic PNG writes.

Plots are written twice: as data (CSV/JSON) that `dvc plots show` draws with its
templates, and as a PNG where a picture says more than a template can. The same
rules hold for both: a title, axis labels with units, epochs counted from 1, a
log axis for losses (they span orders of magnitude), and at most MAX_POINTS
points per series, thinned evenly.

Per-epoch curves go one way for every example: plot turns the run's DVCLive
logs (0-based `step`) into figures/history.csv (`epoch` from 1, one column per
metric), and compare stacks its variants' history.csv files into one long
compare/<example>/history.csv with a `variant` column.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from stages.core.files import atomic_file


@contextlib.contextmanager
def png(path: str | os.PathLike, **figure_kwargs) -> Iterator:
    """Yield a new matplotlib Figure; save it to `path` (PNG, atomically) and close it."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig = plt.figure(**figure_kwargs)
    try:
        yield fig
        fig.tight_layout()
        with atomic_file(path, suffix=".png") as tmp:
            # No timestamps in the PNG, so the same figure gives the same bytes.
            fig.savefig(tmp, format="png", metadata={"Software": None})
    finally:
        plt.close(fig)


MAX_POINTS = 1000  # the most points one series keeps in a plot file or a figure: readable, and a small page
HISTORY = "history.csv"  # per-epoch curves: plots/<example>/<variant>/figures/ and plots/compare/<example>/
MARKERS = ("o", "s", "^", "D", "v", "P", "X")  # hollow, one shape per run: identical curves stay visible


def thin(n: int, max_points: int = MAX_POINTS) -> np.ndarray:
    """Indices of at most `max_points` evenly spaced rows out of `n` (for plot files)."""
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))


def read_live_metrics(folder: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{metric: (steps, values)} from a DVCLive folder's plots/metrics/*.tsv files."""
    from pathlib import Path

    import pandas as pd

    curves = {}
    for path in sorted((Path(folder) / "plots" / "metrics").glob("*.tsv")):
        table = pd.read_csv(path, sep="\t")
        curves[path.stem] = (table["step"].to_numpy(), table[path.stem].to_numpy())
    return curves


def history_columns(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], max_points: int = MAX_POINTS) -> dict[str, np.ndarray]:
    """One row per epoch from read_live_metrics' curves: `epoch` counted from 1, then each metric (loss, val_loss, ...).

    DVCLive numbers epochs from step 0; every file and figure here counts them
    from 1, as Keras prints them. A metric missing at an epoch is blank (NaN);
    past `max_points` epochs the rows are thinned evenly.
    """
    steps = np.unique(np.concatenate([np.asarray(s) for s, _ in curves.values()])) if curves else np.array([], np.int64)
    columns: dict[str, np.ndarray] = {"epoch": steps.astype(np.int64) + 1}
    for name in sorted(curves, key=lambda n: (n.removeprefix("val_") != "loss", n.removeprefix("val_"), n)):
        at, values = curves[name]
        column = np.full(len(steps), np.nan)
        column[np.searchsorted(steps, at)] = values
        columns[name] = column
    keep = thin(len(steps), max_points)
    return {name: column[keep] for name, column in columns.items()}


def read_history(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A history.csv as {column: values}."""
    import pandas as pd

    return {name: column.to_numpy() for name, column in pd.read_csv(path).items()}


def stack_histories(histories: Mapping[str, Mapping[str, Any]]) -> dict[str, list]:
    """Long form of several runs' history columns: {epoch, variant, every metric}, one row per (variant, epoch).

    A metric that a run did not log is blank in its rows.
    """
    names = list(dict.fromkeys(n for h in histories.values() for n in h if n != "epoch"))
    rows: dict[str, list] = {"epoch": [], "variant": [], **{n: [] for n in names}}
    for variant, history in histories.items():
        epochs = [int(e) for e in history["epoch"]]
        rows["epoch"] += epochs
        rows["variant"] += [variant] * len(epochs)
        for n in names:
            rows[n] += [float(v) for v in history[n]] if n in history else [float("nan")] * len(epochs)
    return rows


def log_axis(ax: Any, axis: str = "y") -> None:
    """A log scale (call it once the data is drawn) whose ticks read as plain numbers: 0.1, 1, 2, not 1e-01.

    Over less than a decade, ticks are evenly spaced values (0.7, 0.8, ... 1.3),
    since powers of ten and their multiples would leave it nearly unlabelled.
    """
    from matplotlib.ticker import FuncFormatter, LogFormatter, MaxNLocator, NullLocator

    class Plain(LogFormatter):  # matplotlib's choice of ticks to label, written as plain numbers
        def __call__(self, x: float, pos: int | None = None) -> str:
            return f"{x:g}" if super().__call__(x, pos) else ""

    getattr(ax, f"set_{axis}scale")("log")
    scale = getattr(ax, f"{axis}axis")
    low, high = sorted(getattr(ax, f"get_{axis}lim")())
    if low > 0 and high / low < 10:
        scale.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
        scale.set_major_formatter(FuncFormatter(lambda x, pos: f"{x:g}"))
        scale.set_minor_locator(NullLocator())
    else:
        scale.set_major_formatter(Plain(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
        scale.set_minor_formatter(Plain(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def draw_epochs(ax: Any, runs: Mapping[str, Mapping[str, Any]], metric: str, label: str, validation: str = "validation") -> None:
    """Each run's `metric` per epoch, training dashed and validation (val_`metric`) solid; a loss on a log axis.

    `runs` maps a run's name to its history columns; with one run the two
    curves differ in colour too, with several each run has its own colour and marker.
    """
    from matplotlib.ticker import MaxNLocator

    for index, (name, columns) in enumerate(runs.items()):
        for column, kind, style in ((metric, "training", "--"), (f"val_{metric}", validation, "-")):
            values = np.asarray(columns.get(column, []), dtype=np.float64)
            if not len(values) or np.isnan(values).all():
                continue
            one = len(runs) == 1
            ax.plot(
                columns["epoch"],
                values,
                style,
                color=("C0" if kind == "training" else "C1") if one else f"C{index}",
                marker=MARKERS[index % len(MARKERS)],
                markersize=5,
                markerfacecolor="none",
                label=kind if one else f"{name} {kind}",
            )
    ax.set(xlabel="epoch", ylabel=label, title=f"{metric.capitalize()} per epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if "loss" in metric:
        log_axis(ax)
    ax.legend(fontsize="small")


def epochs_png(
    path: str | os.PathLike,
    runs: Mapping[str, Mapping[str, Any]],
    panels: Mapping[str, str],
    title: str,
    dpi: int = 100,
    validation: str = "validation",
) -> None:
    """One panel per metric of `panels` ({metric: y label with its unit}) that a run logged, side by side, titled `title`."""
    present = [m for m in panels if any(m in columns or f"val_{m}" in columns for columns in runs.values())]
    with png(path, figsize=(5.5 * len(present), 4.3), dpi=dpi) as fig:
        axes = np.atleast_1d(fig.subplots(1, len(present)))
        for ax, metric in zip(axes, present, strict=True):
            draw_epochs(ax, runs, metric, panels[metric], validation)
        if len(axes) == 1:
            axes[0].set_title(title)
        else:
            fig.suptitle(title)
