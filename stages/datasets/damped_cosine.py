"""A damped cosine (stateful_lstm's series), made from params.yaml's `synthetic.damped_cosine` rather than downloaded.

`python -m stages synthesize damped_cosine` (stage synthesize@damped_cosine)
writes data/raw/damped_cosine/series.npy; a run then reads it like a download.
"""

from __future__ import annotations

import os

import numpy as np
from pydantic import Field

from stages.core.files import load_array
from stages.core.params import Section


class Params(Section):
    n_points: int = Field(ge=2, description="length of the series")
    amplitude: float = Field(gt=0)
    period: float = Field(gt=0, description="points per cosine period")
    damping: float = Field(ge=0, description="k in exp(-k i)")


def synthesize(p: Params) -> dict[str, np.ndarray]:
    """{"series": (n_points, 1, 1) float32}: amplitude * cos(2 pi i / period) * exp(-damping i)."""
    i = np.arange(p.n_points, dtype=np.float64)
    values = p.amplitude * np.cos(2 * np.pi * i / p.period) * np.exp(-p.damping * i)
    return {"series": values.astype(np.float32).reshape(p.n_points, 1, 1)}


def load(folder: str | os.PathLike) -> np.ndarray:
    """The (n_points, 1, 1) float32 series."""
    return load_array(folder, "series")
