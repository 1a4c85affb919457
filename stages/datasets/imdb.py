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


def load(
    folder: str | os.PathLike, num_words: int, seed: int = 113, start_char: int = 1, oov_char: int = 2, index_from: int = 3
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Reviews as keras.datasets.imdb.load_data(num_words=...) gives them, in a compact ragged form.

    The Keras loader's facts, reproduced: the train and the test set are each
    shuffled with one np.random.RandomState(seed), train first; every review
    becomes [start_char] + [w + index_from ...]; every id >= num_words becomes
    oov_char. Instead of lists of lists this returns, per split, (ids, offsets,
    labels): review i is ids[offsets[i]:offsets[i + 1]] (int32), so the work is
    a few numpy operations over all 25,000 reviews at once.
    """
    arrays, _ = load_raw(folder)
    rng = np.random.RandomState(seed)
    out = {}
    for split in ("train", "test"):
        order = np.arange(len(arrays[f"x_{split}"]))
        rng.shuffle(order)
        reviews = arrays[f"x_{split}"][order]
        lengths = np.fromiter((len(r) + 1 for r in reviews), dtype=np.int64, count=len(reviews))
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        ids = np.empty(offsets[-1], dtype=np.int64)
        ids[offsets[:-1]] = start_char
        body = np.ones(offsets[-1], dtype=bool)
        body[offsets[:-1]] = False
        words = [np.asarray(r, dtype=np.int64) for r in reviews] or [np.empty(0, dtype=np.int64)]
        ids[body] = np.concatenate(words) + index_from
        ids[(ids >= num_words)] = oov_char
        out[split] = (ids.astype(np.int32), offsets.astype(np.int64), np.asarray(arrays[f"y_{split}"])[order].astype(np.uint8))
    return out
