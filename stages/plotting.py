"""Plot helpers: matplotlib's Agg backend only (never a window), atomic PNG writes.

Plots are written twice: as data (CSV/JSON) that `dvc plots show` draws with its
templates, and as a PNG where a picture says more than a template can.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

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


def thin(n: int, max_points: int) -> np.ndarray:
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
