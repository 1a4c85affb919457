"""Reading imdb.npz and reuters.npz, whose ragged word-id lists are pickled object arrays.

numpy stores ragged lists only as object arrays, and np.load reads those only
with allow_pickle=True, which runs whatever code the pickle names: a tampered
download could execute anything. No public numpy or Keras API reads object
arrays with a restricted unpickler. Keras' own loaders use the private
`keras.src.datasets.npz_utils.load_npz`, which admits only the globals that
rebuild numpy arrays, so this module wraps exactly that one function and
nothing else uses it (imdb.py and reuters.py call it). If Keras moves or changes it, the import below fails and
tests/test_datasets.py::test_keras_restricted_npz_reader_is_still_there says so.
"""

from __future__ import annotations

import os
import pickle

import numpy as np
from keras.src.datasets.npz_utils import load_npz  # private Keras API: see the docstring

from stages.core.errors import DatasetError


def read_pickled_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of the npz at `path`; an object that is not a numpy array is refused."""
    try:
        return dict(load_npz(str(path)))
    except pickle.UnpicklingError as err:
        raise DatasetError(
            f"{path}: refused to unpickle it ({err}); expected only numpy arrays. Delete it and download it again."
        ) from err
