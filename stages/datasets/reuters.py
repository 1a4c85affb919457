"""Reuters newswires as Keras ships them: reuters.npz (word-id lists, 46 topics) and the word index."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from stages.core.files import read_json
from stages.core.remote import KERAS_DATASETS, RemoteFile

FILES = (
    RemoteFile(
        "reuters.npz",
        KERAS_DATASETS + "reuters.npz",
        size=2110848,
        sha256="d6586e694ee56d7a4e65172e12b3e987c03096cb01eab99753921ef915959916",
    ),
    RemoteFile(
        "reuters_word_index.json", KERAS_DATASETS + "reuters_word_index.json", size=550378, md5="4d44cc38712099c9e383dc6e5f11a921"
    ),
)


def load_raw(folder: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """reuters.npz's arrays (x as an object array of raw word-id lists, y) and the word index
    {word: id}, read without unpickling anything but numpy arrays."""
    from stages.core.npz import read_pickled_npz  # imports Keras: only when a loader runs

    folder = Path(folder)
    return read_pickled_npz(folder / "reuters.npz"), read_json(folder / "reuters_word_index.json")
