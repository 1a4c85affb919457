"""stages.core.sequences.pad against keras.utils.pad_sequences, on random ragged input, for every padding and truncation."""

from __future__ import annotations

import numpy as np
import pytest

from stages.core.sequences import pad


@pytest.mark.parametrize("truncating", ["pre", "post"])
@pytest.mark.parametrize("padding", ["pre", "post"])
def test_pad_equals_keras_pad_sequences(padding, truncating):
    """imdb_fasttext and lstm_benchmark pad with Keras' defaults ("pre", "pre"), as the originals; the others are tested too."""
    import keras

    rng = np.random.default_rng(7)
    reviews = [rng.integers(1, 1000, size=int(n)).tolist() for n in rng.integers(0, 25, size=200)]
    reviews[:3] = [[], [5], list(range(1, 13))]  # empty, shorter than maxlen, exactly maxlen
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in reviews])]).astype(np.int64)
    ids = np.concatenate([np.asarray(r, np.int32) for r in reviews])
    padded = pad(ids, offsets, 12, padding=padding, truncating=truncating)
    expected = keras.utils.pad_sequences(reviews, maxlen=12, padding=padding, truncating=truncating)
    assert padded.dtype == np.int32 and padded.shape == (200, 12)
    np.testing.assert_array_equal(padded, expected)


def test_pad_by_hand():
    ids, offsets = np.array([1, 2, 3, 4, 5, 7], np.int32), np.array([0, 5, 6, 6])
    assert pad(ids, offsets, 3).tolist() == [[3, 4, 5], [0, 0, 7], [0, 0, 0]]  # the last ids kept, zeros in front
    assert pad(ids, offsets, 3, padding="post", truncating="post").tolist() == [[1, 2, 3], [7, 0, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match="'pre' or 'post'"):
        pad(ids, offsets, 3, padding="front")
