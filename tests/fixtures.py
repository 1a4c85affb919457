"""Small dataset files in exactly the formats the real downloads have.

mnist.npz, imdb.npz and reuters.npz cannot be had on this machine, so tests use
these: same file names, same array names, dtypes and layouts as the Keras
downloads, with class-dependent patterns so that a model can learn them.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np


def image_arrays(n: int, seed: int, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """(n, size, size) uint8 images and (n,) uint8 labels 0..9.

    Class c lights a 6x6 block whose position depends on c, over faint noise,
    so classes are easy to tell apart but not identical.
    """
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 10).astype(np.uint8)
    rng.shuffle(labels)
    images = rng.integers(0, 40, size=(n, size, size), dtype=np.uint8)
    for c in range(10):
        r, col = 2 + 5 * (c // 5) * 2, 2 + 5 * (c % 5)
        images[labels == c, r : r + 6, col : col + 6] = 255
    return images, labels


def write_mnist_npz(folder: Path, n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    """data/raw/mnist/mnist.npz: x_train (n, 28, 28) uint8, y_train (n,) uint8, x_test, y_test."""
    folder.mkdir(parents=True, exist_ok=True)
    x_train, y_train = image_arrays(n_train, seed)
    x_test, y_test = image_arrays(n_test, seed + 1)
    path = folder / "mnist.npz"
    np.savez_compressed(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def _idx_gz(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_fashion_mnist(folder: Path, n_train: int = 600, n_test: int = 200, seed: int = 10) -> list[Path]:
    """The four Fashion-MNIST IDX gz files (same layout as the real ones)."""
    folder.mkdir(parents=True, exist_ok=True)
    x_train, y_train = image_arrays(n_train, seed)
    x_test, y_test = image_arrays(n_test, seed + 1)
    files = {
        "train-images-idx3-ubyte.gz": x_train,
        "train-labels-idx1-ubyte.gz": y_train,
        "t10k-images-idx3-ubyte.gz": x_test,
        "t10k-labels-idx1-ubyte.gz": y_test,
    }
    for name, array in files.items():
        _idx_gz(folder / name, array)
    return [folder / name for name in files]


def _object_array(rows: list[list[int]]) -> np.ndarray:
    out = np.empty(len(rows), dtype=object)
    out[:] = rows
    return out


def write_imdb(folder: Path, n: int = 200, vocab: int = 300, seed: int = 0) -> list[Path]:
    """imdb.npz (x_train/x_test object arrays of int lists, y_train/y_test) + imdb_word_index.json.

    Word ids are raw (before the loader's start/oov/index_from shift); positive
    reviews use words 1..vocab/2 more often, negative ones the other half.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def split(count):
        y = (np.arange(count) % 2).astype(np.int64)
        rows = []
        for label in y:
            length = int(rng.integers(20, 60))
            half = vocab // 2
            lo, hi = (1, half) if label else (half, vocab)
            common = rng.integers(lo, hi, size=length)
            noise = rng.integers(1, vocab, size=length // 4)
            rows.append([int(w) for w in np.concatenate([common, noise])])
        return _object_array(rows), y

    return _save_imdb(folder, split, n, {f"word{i}": i for i in range(1, vocab)})


def write_imdb_word_order(
    folder: Path, n: int = 500, filler: int = 50, pairs: int = 3, length: tuple[int, int] = (15, 25), seed: int = 0
) -> list[Path]:
    """imdb.npz + imdb_word_index.json in which only word order tells the sentiment.

    Every review is `filler` words drawn uniformly (raw ids 3 .. filler + 2,
    the same for both classes) with `pairs` two-word phrases inserted: a
    positive review holds "not bad" (raw ids 1, 2), a negative one "bad not"
    (2, 1). Both classes contain the same
    words equally often, so a bag of words (unigrams) learns nothing, while
    the bigrams (1, 2) and (2, 1) give the label away. Classes alternate.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def split(count: int) -> tuple[np.ndarray, np.ndarray]:
        y = (np.arange(count) % 2).astype(np.int64)
        rows = []
        for label in y:
            words = [int(w) for w in rng.integers(3, filler + 3, size=int(rng.integers(length[0], length[1] + 1)))]
            phrase = [1, 2] if label else [2, 1]
            for at in sorted(rng.choice(len(words) + 1, size=pairs, replace=False), reverse=True):
                words[at:at] = phrase
            rows.append(words)
        return _object_array(rows), y

    return _save_imdb(folder, split, n, {"not": 1, "bad": 2, **{f"word{i}": i for i in range(3, filler + 3)}})


def _save_imdb(folder: Path, split, n: int, words: dict[str, int]) -> list[Path]:
    """imdb.npz (n training reviews from split(n), n // 2 test reviews) and its word index, as Keras ships them."""
    x_train, y_train = split(n)
    x_test, y_test = split(n // 2)
    npz = folder / "imdb.npz"
    np.savez(npz, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    index = folder / "imdb_word_index.json"
    index.write_text(json.dumps(words))
    return [npz, index]


def write_reuters(
    folder: Path,
    n: int = 300,
    vocab: int = 1500,
    topics: int = 46,
    signature: int = 3,
    noise: tuple[int, int] = (10, 30),
    seed: int = 0,
) -> list[Path]:
    """reuters.npz (one set: x object array of raw int lists, y int64 topics) + reuters_word_index.json.

    Topic t has about 1/(t+1) the newswires of topic 0 (at least two each),
    skewed like the real data. Each newswire holds its topic's `signature`
    words (raw ids signature*t+1 ..) among `noise` words drawn from the whole
    vocabulary, so the topic is learnable from a bag-of-words; vocab > 997
    makes the rarest words out-of-vocabulary at num_words 1000, as in the real
    data. Rows are in topic order: the loader shuffles them.
    """
    if n < 2 * topics:
        raise ValueError(f"n = {n} must be at least 2 * topics = {2 * topics}")
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    share = 1.0 / np.arange(1, topics + 1)
    counts = 2 + np.floor((n - 2 * topics) * share / share.sum()).astype(np.int64)
    counts[0] += n - counts.sum()
    y = np.repeat(np.arange(topics, dtype=np.int64), counts)
    rows = []
    for label in y:
        own = signature * int(label) + np.arange(1, signature + 1)
        words = np.concatenate([own, rng.integers(1, vocab, size=int(rng.integers(noise[0], noise[1] + 1)))])
        rng.shuffle(words)
        rows.append([int(w) for w in words])
    npz = folder / "reuters.npz"
    np.savez(npz, x=_object_array(rows), y=y)
    index = folder / "reuters_word_index.json"
    index.write_text(json.dumps({f"word{i}": i for i in range(1, vocab)}))
    return [npz, index]


def write_text(folder: Path, name: str = "nietzsche.txt", repeats: int = 40) -> Path:
    """A few KB of English-like UTF-8 text."""
    folder.mkdir(parents=True, exist_ok=True)
    sentence = "The will to power is the will to life; what does not kill us makes us stronger. "
    path = folder / name
    path.write_text(sentence * repeats, encoding="utf-8")
    return path
