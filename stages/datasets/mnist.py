"""MNIST handwritten digits as Keras ships them: one mnist.npz of plain uint8 arrays."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from stages.core.remote import KERAS_DATASETS, RemoteFile

FILES = (
    RemoteFile(
        "mnist.npz",
        KERAS_DATASETS + "mnist.npz",
        size=11490434,
        sha256="731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
    ),
)

ImageSplits = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def load(folder: str | os.PathLike) -> ImageSplits:
    """(x_train, y_train), (x_test, y_test): (N, 28, 28) and (N,) uint8, like keras.datasets.mnist.

    The npz holds no object arrays, so it is read with pickling disabled.
    """
    with np.load(Path(folder) / FILES[0].name, allow_pickle=False) as f:
        return (f["x_train"], f["y_train"]), (f["x_test"], f["y_test"])
