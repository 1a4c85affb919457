"""Ragged id sequences (sequence i = ids[offsets[i]:offsets[i + 1]]) made rectangular, as Keras' pad_sequences does."""

from __future__ import annotations

from typing import Literal

import numpy as np


def pad(
    ids: np.ndarray,
    offsets: np.ndarray,
    maxlen: int,
    padding: Literal["pre", "post"] = "pre",
    truncating: Literal["pre", "post"] = "pre",
) -> np.ndarray:
    """(N, maxlen) int32, as keras.utils.pad_sequences(sequences, maxlen, padding=..., truncating=...) leaves them.

    truncating "pre" keeps the last maxlen ids of a longer sequence, "post" the
    first; padding "pre" puts the zeros in front, "post" behind. Keras'
    defaults are "pre" and "pre". One numpy scatter for all sequences.
    """
    if padding not in ("pre", "post") or truncating not in ("pre", "post"):
        raise ValueError(f"padding and truncating are 'pre' or 'post', not {padding!r} and {truncating!r}")
    offsets = np.asarray(offsets, np.int64)
    keep = np.minimum(np.diff(offsets), maxlen)
    row = np.repeat(np.arange(len(keep)), keep)
    within = np.arange(len(row)) - np.repeat(np.cumsum(keep) - keep, keep)  # position among the kept ids
    source = (offsets[1:] - keep if truncating == "pre" else offsets[:-1])[row] + within
    column = (maxlen - keep[row] if padding == "pre" else 0) + within
    out = np.zeros((len(keep), maxlen), np.int32)
    out[row, column] = np.asarray(ids)[source]
    return out
