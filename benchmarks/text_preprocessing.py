"""Preprocessing and training throughput of lstm_text_generation: compact vs the original's one-hot.

    python -m benchmarks.text_preprocessing [--corpus PATH] [--steps N]

Preprocessing: this project's approach (text as uint8 indices + window start
offsets, vectorised) against the original's (Python loops filling boolean
one-hot arrays x (N, 40, V) and y (N, V) of the whole corpus), timed and with
peak Python-allocated memory (tracemalloc) measured in the same process.

Training: samples/s of LSTM(128) -> Dense(V) fed (a) start offsets one-hot
encoded inside the tf.data graph and (b) slices of the original's boolean
one-hot arrays, same batch size, same number of steps, after a warm-up.
"""

from __future__ import annotations

import argparse
import gc
import os
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from stages import lstm_text_generation as ltg  # noqa: E402
from stages.core.sequences import char_table, encode, one_hot_fn, window_starts, windows  # noqa: E402

MAXLEN, STEP = 40, 3


def compact(text: str) -> dict[str, np.ndarray]:
    chars = char_table(text)
    idx = encode(text, chars)
    return {"text": idx, "starts": window_starts(0, len(text), MAXLEN, STEP)}


def original(text: str) -> dict[str, np.ndarray]:
    """Keras' lstm_text_generation.py, verbatim in substance."""
    chars = sorted(list(set(text)))
    char_indices = dict((c, i) for i, c in enumerate(chars))
    sentences, next_chars = [], []
    for i in range(0, len(text) - MAXLEN, STEP):
        sentences.append(text[i : i + MAXLEN])
        next_chars.append(text[i + MAXLEN])
    x = np.zeros((len(sentences), MAXLEN, len(chars)), dtype=bool)
    y = np.zeros((len(sentences), len(chars)), dtype=bool)
    for i, sentence in enumerate(sentences):
        for t, char in enumerate(sentence):
            x[i, t, char_indices[char]] = 1
        y[i, char_indices[next_chars[i]]] = 1
    return {"x": x, "y": y}


def measure(fn, text: str) -> tuple[float, int, int, dict]:
    gc.collect()
    tracemalloc.start()
    t0 = time.perf_counter()
    out = fn(text)
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, peak, sum(a.nbytes for a in out.values()), out


def throughput(make_dataset, vocab: int, steps: int, batch_size: int) -> float:
    import keras

    keras.utils.set_random_seed(0)
    model = ltg.build_model(MAXLEN, vocab, 128, 0.01)
    model.fit(make_dataset().take(10), verbose=0)  # warm-up: tracing, allocation
    ds = make_dataset().take(steps)
    t0 = time.perf_counter()
    model.fit(ds, verbose=0)
    return steps * batch_size / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="data/raw/nietzsche/nietzsche.txt")
    parser.add_argument("--steps", type=int, default=150, help="training steps timed per approach")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    text = Path(args.corpus).read_bytes().decode("utf-8").lower()

    t_new, peak_new, bytes_new, new = measure(compact, text)
    t_old, peak_old, bytes_old, old = measure(original, text)
    vocab = old["x"].shape[2]
    x, y = windows(new["text"], new["starts"], MAXLEN)
    assert np.array_equal(old["x"].argmax(-1), x) and np.array_equal(old["y"].argmax(-1), y), "approaches disagree"

    import tensorflow as tf

    from stages import training

    to_one_hot = one_hot_fn(new["text"], MAXLEN, vocab)
    n = args.batch_size * (args.steps + 10)
    starts = new["starts"][:n]
    x_old, y_old = old["x"][:n], old["y"][:n]

    def in_graph():
        return training.batches([starts], args.batch_size, seed=0, map_fn=to_one_hot)[0]

    def from_arrays():
        return training.batches(
            [x_old, y_old], args.batch_size, seed=0, map_fn=lambda a, b: (tf.cast(a, tf.float32), tf.cast(b, tf.float32))
        )[0]

    sps_new = throughput(in_graph, vocab, args.steps, args.batch_size)
    sps_old = throughput(from_arrays, vocab, args.steps, args.batch_size)

    print(
        f"\ncorpus {args.corpus}: {len(text):,} chars, V={vocab}, {len(new['starts']):,} windows, "
        f"batch {args.batch_size}, {args.steps} timed steps, {os.cpu_count()} CPUs\n"
    )
    print(f"| {'measure':<32} | {'original (bool one-hot)':>24} | {'this project (indices)':>24} | {'ratio':>8} |")
    print(f"|{'-' * 34}|{'-' * 26}|{'-' * 26}|{'-' * 10}|")
    rows = [
        ("preprocessing time (s)", f"{t_old:.2f}", f"{t_new:.3f}", f"{t_old / t_new:.0f}x faster"),
        ("peak memory, tracemalloc (MB)", f"{peak_old / 1e6:.1f}", f"{peak_new / 1e6:.1f}", f"{peak_old / peak_new:.0f}x less"),
        ("stored arrays (MB)", f"{bytes_old / 1e6:.1f}", f"{bytes_new / 1e6:.2f}", f"{bytes_old / bytes_new:.0f}x less"),
        ("training throughput (samples/s)", f"{sps_old:,.0f}", f"{sps_new:,.0f}", f"{sps_new / sps_old:.2f}x"),
    ]
    for row in rows:
        print(f"| {row[0]:<32} | {row[1]:>24} | {row[2]:>24} | {row[3]:>8} |")


if __name__ == "__main__":
    main()
