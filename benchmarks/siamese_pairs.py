"""Pair creation for mnist_siamese: vectorised numpy vs the original's Python loops.

Run: `python -m benchmarks.siamese_pairs` (from the project root).

Uses the real Fashion-MNIST training labels (and images) from DATASETS_MIRROR
(default ../shared/datasets) when they are there, otherwise a label array with
MNIST's training class counts. Both implementations get the same increments
(`np.random.default_rng(seed).integers(1, 10, size=(10, n))`, read in digit
order where the original called random.randrange(1, 10)), and the benchmark
asserts that they produce the same pairs.

Rows:
  loop, index pairs     the original's create_pairs loop, appending [z1, z2] indices
  loop, image copies    the original as written: appending [x[z1], x[z2]] and
                        stacking the copies with np.array (uint8 here; the
                        original's float32 copies are 4x the memory)
  numpy, index pairs    stages.mnist_siamese.create_pairs
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from stages.mnist_siamese import create_pairs, draw_increments, pair_count

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def loop_pairs(labels: np.ndarray, increments: np.ndarray, images: np.ndarray | None = None):
    """The original's create_pairs, with the random increments taken from `increments`."""
    digit_indices = [np.where(labels == d)[0] for d in range(10)]
    n = min(len(digit_indices[d]) for d in range(10)) - 1
    pairs, same = [], []
    for d in range(10):
        for i in range(n):
            z1, z2 = digit_indices[d][i], digit_indices[d][i + 1]
            pairs += [[z1, z2]] if images is None else [[images[z1], images[z2]]]
            inc = increments[d, i]
            dn = (d + inc) % 10
            z1, z2 = digit_indices[d][i], digit_indices[dn][i]
            pairs += [[z1, z2]] if images is None else [[images[z1], images[z2]]]
            same += [1, 0]
    return np.array(pairs), np.array(same)


def load_data() -> tuple[str, np.ndarray, np.ndarray | None]:
    mirror = Path(os.environ.get("DATASETS_MIRROR", Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    folder = mirror / "fashion_mnist"
    if (folder / "train-labels-idx1-ubyte.gz").is_file():
        from stages.datasets import fashion_mnist

        (x, y), _ = fashion_mnist.load(folder)
        return "Fashion-MNIST train labels", y, x
    labels = np.repeat(np.arange(10, dtype=np.uint8), MNIST_TRAIN_COUNTS)
    np.random.default_rng(0).shuffle(labels)
    return "MNIST train class counts (synthetic order)", labels, None


def best_of(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    source, labels, images = load_data()
    n = pair_count(labels)
    increments = draw_increments(np.random.default_rng(1337), n)
    t_numpy, (pairs, same) = best_of(lambda: create_pairs(labels, increments), 5)
    t_loop, (ref_pairs, ref_same) = best_of(lambda: loop_pairs(labels, increments), 2)
    assert np.array_equal(pairs, ref_pairs) and np.array_equal(same, ref_same), "numpy pairs differ from the loop's"
    rows = [("loop, index pairs", t_loop), ("numpy, index pairs", t_numpy)]
    if images is not None:
        t_copy, (ref_images, _) = best_of(lambda: loop_pairs(labels, increments, images), 1)
        assert np.array_equal(ref_images, images[pairs]), "the original's image pairs differ from images[pairs]"
        rows.insert(1, ("loop, image copies", t_copy))
        del ref_images
    print(f"{len(labels):,} labels ({source}); n = {n:,}; {len(pairs):,} pairs; same pairs for the same draws: yes")
    print(f"{'implementation':<22}{'seconds':>10}{'speed-up vs numpy':>20}")
    for name, seconds in rows:
        print(f"{name:<22}{seconds:>10.4f}{seconds / t_numpy:>19.0f}x")
    assert t_loop / t_numpy >= 20, f"numpy is only {t_loop / t_numpy:.1f}x faster than the loop"


if __name__ == "__main__":
    main()
