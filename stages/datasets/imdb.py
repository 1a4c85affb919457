"""IMDB movie reviews as Keras ships them: imdb.npz (word-id lists, labels) and the word index."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from stages.core.files import read_json
from stages.core.remote import KERAS_DATASETS, RemoteFile

FILES = (
    RemoteFile(
        "imdb.npz",
        KERAS_DATASETS + "imdb.npz",
        size=17464789,
        sha256="69664113be75683a8fe16e3ed0ab59fda8886cb3cd7ada244f7d9544e4676b9f",
    ),
    RemoteFile(
        "imdb_word_index.json", KERAS_DATASETS + "imdb_word_index.json", size=1641221, md5="bfafd718b763782e994055a2d397834f"
    ),
)


def load_raw(folder: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """imdb.npz's arrays (x_train, y_train, x_test, y_test; x as object arrays of raw word-id lists)
    and the word index {word: id}, read without unpickling anything but numpy arrays."""
    from stages.core.npz import read_pickled_npz  # imports Keras: only when a loader runs

    folder = Path(folder)
    return read_pickled_npz(folder / "imdb.npz"), read_json(folder / "imdb_word_index.json")
