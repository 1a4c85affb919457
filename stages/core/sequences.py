"""Helpers for token sequences: padding, character tables, fixed-length windows, one-hot gathering, and sampling.

Ragged id sequences (sequence i = ids[offsets[i]:offsets[i + 1]]) are made rectangular as Keras' pad_sequences
does. A text is a token sequence too: its sorted distinct characters index it (char_table, encode, decode), and
it is cut into windows by their start offsets, gathered and one-hot encoded inside the tf.data graph. A
next-token model then writes new tokens, one temperature-scaled draw at a time (generate). TensorFlow is imported
inside the functions that need it, so that preprocess steps import this module without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

from stages.core.errors import InputError

Predict = Callable[[np.ndarray], np.ndarray]  # (B, maxlen, V) float32 one-hot -> (B, V) probabilities


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


def char_table(text: str) -> list[str]:
    """The sorted distinct characters of `text`; index i stands for chars[i]."""
    return sorted(set(text))


def index_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds indices 0..vocab_size-1."""
    if vocab_size <= 256:
        return np.dtype(np.uint8)
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.int32)


def encode(text: str, chars: list[str]) -> np.ndarray:
    """(len(text),) char indices in the smallest dtype; every char must be in `chars`."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    table = np.array([ord(c) for c in chars], dtype=np.uint32)  # sorted, since chars is
    idx = np.searchsorted(table, codes)
    if len(codes) and (idx.max() >= len(table) or not np.array_equal(table[idx], codes)):
        missing = sorted({c for c in text if c not in set(chars)})
        raise InputError(f"characters {''.join(missing)!r} are not in the character table.")
    return idx.astype(index_dtype(len(chars)))


def decode(indices: np.ndarray, chars: list[str]) -> str:
    """The text that char `indices` stand for: encode's inverse."""
    return "".join(chars[int(i)] for i in indices)


def window_starts(begin: int, end: int, maxlen: int, step: int) -> np.ndarray:
    """(N,) int32 starts begin, begin+step, ... with i + maxlen < end: every token a window reads is in [begin, end)."""
    return np.arange(begin, max(begin, end - maxlen), step, dtype=np.int32)


def windows(text_idx: np.ndarray, starts: np.ndarray, maxlen: int) -> tuple[np.ndarray, np.ndarray]:
    """x (N, maxlen) and y (N,) token indices: x[k] = text[s:s+maxlen], y[k] = text[s+maxlen]."""
    starts = np.asarray(starts, dtype=np.int64)
    return text_idx[starts[:, None] + np.arange(maxlen)], text_idx[starts + maxlen]


def one_hot_fn(text_idx: np.ndarray, maxlen: int, vocab_size: int) -> Callable:
    """A tf function: a batch of (B,) starts -> (x (B, maxlen, V), y (B, V)) float32 one-hot, gathered in the graph."""
    import tensorflow as tf

    text = tf.constant(text_idx.astype(np.int32))
    offsets = tf.range(maxlen, dtype=tf.int32)

    def fn(starts):
        starts = tf.cast(starts, tf.int32)
        x = tf.gather(text, starts[:, None] + offsets[None, :])
        return tf.one_hot(x, vocab_size), tf.one_hot(tf.gather(text, starts + maxlen), vocab_size)

    return fn


def sample_index(preds: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    """Keras' lstm_text_generation sampler: log(p) / T -> softmax -> one multinomial draw."""
    preds = np.asarray(preds, dtype=np.float64)
    with np.errstate(divide="ignore"):
        logits = np.log(preds) / temperature
    probs = np.exp(logits - logits.max())
    return int(np.argmax(rng.multinomial(1, probs / probs.sum())))


def generate(
    predict: Predict, seed_idx: np.ndarray, length: int, temperatures: list[float], vocab_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """`length` indices per temperature from one (maxlen,) seed window, all temperatures in one batch per step."""
    maxlen = len(seed_idx)
    window = np.tile(np.asarray(seed_idx, dtype=np.int64), (len(temperatures), 1))
    out = np.zeros((len(temperatures), length), dtype=np.int64)
    eye = np.eye(vocab_size, dtype=np.float32)
    for t in range(length):
        probs = np.asarray(predict(eye[window[:, -maxlen:]]))
        for k, temperature in enumerate(temperatures):
            out[k, t] = sample_index(probs[k], temperature, rng)
        window = np.concatenate([window[:, 1:], out[:, t : t + 1]], axis=1)
    return list(out)


def predictor(model) -> Predict:
    """A compiled (B, maxlen, V) -> (B, V) call of a Keras model, much faster than model.predict per step."""
    import tensorflow as tf

    fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    return lambda x: fn(tf.constant(x)).numpy()
