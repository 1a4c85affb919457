"""stages.core.sequences: pad against keras.utils.pad_sequences (every padding and truncation), windows, the sampler.

How lstm_text_generation uses the text helpers (chars.json, seeded samples): tests/test_lstm_text_generation.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from stages.core.sequences import char_table, decode, encode, pad, sample_index, window_starts, windows

ENGLISH = "The will to power is the will to life; what does not kill us makes us stronger. " * 40
RNG = np.random.default_rng(0)
# > 256 distinct characters, so indices need uint16
CHINESE = "".join(chr(0x4E00 + int(i)) for i in RNG.integers(0, 300, size=3000)) + "。天下大势，分久必合，合久必分。"


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


@pytest.mark.parametrize("text", [ENGLISH, CHINESE], ids=["english", "chinese"])
@pytest.mark.parametrize("maxlen,step", [(40, 3), (5, 1), (7, 4)])
def test_windows_equal_the_definition(text, maxlen, step):
    chars = char_table(text)
    idx = encode(text, chars)
    starts = window_starts(0, len(text), maxlen, step)
    assert list(starts) == list(range(0, len(text) - maxlen, step))
    x, y = windows(idx, starts, maxlen)
    for k in list(range(5)) + [len(starts) - 1]:
        i = k * step
        assert decode(x[k], chars) == text[i : i + maxlen]
        assert chars[y[k]] == text[i + maxlen]
    assert x.dtype == idx.dtype and x.shape == (len(starts), maxlen)


def test_low_temperature_is_argmax():
    probs = np.random.default_rng(0).dirichlet(np.ones(30), size=50)
    rng = np.random.default_rng(1)
    assert all(sample_index(p, 1e-3, rng) == p.argmax() for p in probs)
