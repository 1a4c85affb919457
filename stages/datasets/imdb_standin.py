"""Random reviews of IMDB's padded shape, made from params.yaml's `synthetic.imdb_standin` (seeded).

For timings where imdb.npz cannot be had (lstm_benchmark's `preprocess.dataset:
standin`): `python -m stages synthesize imdb_standin` (stage
synthesize@imdb_standin) writes data/raw/imdb_standin/. Labels are random, so
no model can beat chance on it.
"""

from __future__ import annotations

import os

import numpy as np
from pydantic import Field

from stages.core.files import load_array
from stages.core.params import Section

SPLITS = ("train", "test")


class Params(Section):
    seed: int = Field(ge=0, lt=2**32, description="the generator's seed")
    reviews: int = Field(ge=1, description="reviews per split (IMDB has 25,000)")
    maxlen: int = Field(ge=1, description="ids per review")
    num_words: int = Field(ge=2, description="ids are drawn from [1, num_words)")


def synthesize(p: Params) -> dict[str, np.ndarray]:
    """x_<split> (reviews, maxlen) int32 ids in [1, num_words) and y_<split> (reviews,) uint8 labels, per split."""
    rng = np.random.default_rng(p.seed)
    arrays = {}
    for split in SPLITS:
        arrays[f"x_{split}"] = rng.integers(1, p.num_words, size=(p.reviews, p.maxlen), dtype=np.int32)
        arrays[f"y_{split}"] = rng.integers(0, 2, size=p.reviews, dtype=np.uint8)
    return arrays


def load(folder: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (x, y)}, as synthesize made them."""
    return {split: (load_array(folder, f"x_{split}"), load_array(folder, f"y_{split}")) for split in SPLITS}
