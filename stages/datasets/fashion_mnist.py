"""Fashion-MNIST (Zalando): 28x28 grey images of 10 clothing classes, as four gzipped IDX files."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from stages.core.errors import DatasetError
from stages.core.remote import KERAS_DATASETS, RemoteFile


def _file(name: str, size: int, sha256: str) -> RemoteFile:
    return RemoteFile(name, KERAS_DATASETS + name, size=size, sha256=sha256)


FILES = (
    _file("train-labels-idx1-ubyte.gz", 29515, "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
    _file("train-images-idx3-ubyte.gz", 26421880, "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
    _file("t10k-labels-idx1-ubyte.gz", 5148, "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
    _file("t10k-images-idx3-ubyte.gz", 4422102, "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
)

ImageSplits = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read a gzipped IDX file of unsigned bytes (the MNIST family's format) into an array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08:
        raise DatasetError(f"{path}: not an unsigned-byte IDX file (magic {magic:#x}).")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise DatasetError(f"{path}: header says {shape} but holds {array.size} bytes.")
    return array.reshape(shape)


def load(folder: str | os.PathLike) -> ImageSplits:
    """(x_train, y_train), (x_test, y_test): (N, 28, 28) and (N,) uint8, like keras.datasets.fashion_mnist."""
    folder = Path(folder)
    x_train, y_train, x_test, y_test = (
        read_idx(folder / name)
        for name in (
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        )
    )
    return (x_train, y_train), (x_test, y_test)
