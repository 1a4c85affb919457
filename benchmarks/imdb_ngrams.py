"""N-gram augmentation for imdb_fasttext: vectorised numpy vs the original's Python loops.

Run: `python -m benchmarks.imdb_ngrams` (from the project root);
`python -m benchmarks.imdb_ngrams --epoch` also times training steps of the
model on the stand-in, without and with bigrams, on params.yaml's training
subset and on all 25,000 reviews (minutes; not part of make bench).

imdb.npz cannot be had here, so the data is a stand-in of the real shape:
25,000 training and 25,000 test reviews, lengths log-normal around the real
mean (~240 ids, clipped to 10..2,500), ids drawn Zipf-like below 20,000 (the
loader's num_words; 2 stands for the rarer words). Both implementations build
the bigram table on the training reviews and append bigram ids to both sets;
the loop version is the original's create_ngram_set / add_ngram, with the ids
given in sorted tuple order (the module's order) instead of set order, so the
two can be asserted equal. Times are the best of 5 runs (numpy) and of one
(the loops, 40 s or more), without tracemalloc, as wall and as CPU seconds of
this process; peak memories come from a separate run of each under
tracemalloc.
"""

from __future__ import annotations

import sys
import time
import tracemalloc

import numpy as np

from stages.imdb_fasttext import augment, max_features

NUM_WORDS = 20_000


def stand_in(n: int, seed: int, mean_length: float = 240.0) -> tuple[np.ndarray, np.ndarray]:
    """n ragged reviews (ids int32, offsets int64) shaped like the loader's: start 1, Zipf-like ids < NUM_WORDS."""
    rng = np.random.default_rng(seed)
    sigma = 0.7
    lengths = np.clip(rng.lognormal(np.log(mean_length) - sigma**2 / 2, sigma, n), 10, 2500).astype(np.int64)
    ranks = np.arange(1, 2 * NUM_WORDS)
    weights = 1.0 / (ranks + 2.7)
    words = rng.choice(ranks, size=int(lengths.sum()), p=weights / weights.sum()) + 3
    words[words >= NUM_WORDS] = 2  # out of vocabulary
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    words[offsets[:-1]] = 1  # start of review
    return words.astype(np.int32), offsets


def as_lists(ids: np.ndarray, offsets: np.ndarray) -> list[list[int]]:
    return [ids[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


def loop_ngrams(train: list[list[int]], test: list[list[int]], ngram_range: int, num_words: int):
    """The original's algorithm with Python sets and loops; ids in sorted order. Returns (train, test, max_features)."""
    ngram_set = set()
    for review in train:
        for n in range(2, ngram_range + 1):
            ngram_set.update(zip(*[review[i:] for i in range(n)], strict=False))
    ordered = sorted(ngram_set, key=lambda gram: (len(gram), gram))
    token_indice = {gram: index + num_words + 1 for index, gram in enumerate(ordered)}
    indice_token = {token_indice[gram]: gram for gram in token_indice}  # as the original, which prints examples
    features = np.max(list(indice_token.keys())) + 1 if indice_token else num_words

    def add_ngram(sequences):
        out = []
        for review in sequences:
            new = review[:]
            for n in range(2, ngram_range + 1):
                for i in range(len(new) - n + 1):
                    gram = tuple(new[i : i + n])
                    if gram in token_indice:
                        new.append(token_indice[gram])
            out.append(new)
        return out

    return add_ngram(train), add_ngram(test), features


def numpy_ngrams(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], ngram_range: int, num_words: int):
    """stages.imdb_fasttext's functions: (train (ids, offsets), test (ids, offsets), max_features)."""
    (train, test), counts = augment([train, test], ngram_range, num_words)
    return train, test, max_features(counts, num_words)


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """(best wall seconds, best CPU seconds of this process, the result) over `repeats` runs."""
    wall, cpu, result = [], [], None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return min(wall), min(cpu), result


def peak_memory(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def epoch_cost(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], steps: int = 100) -> None:
    """Seconds per training step (batch 32; the best of 20-step runs over the first `steps`) and per epoch, per
    validation pass over the 25,000 test reviews, and the 5 epochs' total, without and with bigrams, on params.yaml's
    training subset and on all 25,000 (the original's). The model is built as the train stage builds it (seeded,
    deterministic ops)."""
    import keras
    import yaml

    from stages import training
    from stages.core.sequences import pad
    from stages.imdb_fasttext import build_model

    subset = yaml.safe_load(open("params.yaml", encoding="utf-8"))["imdb_fasttext"]["preprocess"]["train_samples"]
    labels = np.random.default_rng(2).integers(0, 2, len(train[1]) - 1)
    for samples, ngram_range in ((subset, 1), (subset, 2), (25_000, 1), (25_000, 2)):
        part = (train[0][: train[1][samples]], train[1][: samples + 1])
        (tr, te, features) = numpy_ngrams(part, test, ngram_range, NUM_WORDS)
        x, x_test = pad(*tr, 400), pad(*te, 400)
        training.seed_everything(0)
        model = build_model(features, 50, 400, 0.001)
        model.fit(x[:320], labels[:320], batch_size=32, epochs=1, verbose=0)  # compile first
        per_epoch, step_s = -(-samples // 32), float("inf")
        for first in range(0, min(steps, per_epoch), 20):  # the best of 20-step runs: busy cores slow some of them
            part = slice(32 * first, 32 * min(first + 20, per_epoch))
            start = time.perf_counter()
            model.fit(x[part], labels[part], batch_size=32, epochs=1, verbose=0)
            step_s = min(step_s, (time.perf_counter() - start) / -(-len(x[part]) // 32))
        start = time.perf_counter()
        model.evaluate(x_test, labels, batch_size=32, verbose=0)
        validation_s = time.perf_counter() - start
        keras.backend.clear_session()
        print(
            f"{samples:,} training reviews, ngram_range {ngram_range}: max_features {features:,}; {step_s:.3f} s/step, "
            f"epoch {step_s * per_epoch:.0f} s + validation {validation_s:.1f} s; 5 epochs about "
            f"{5 * (step_s * per_epoch + validation_s) / 60:.1f} min"
        )


def main() -> None:
    train, test = stand_in(25_000, seed=0), stand_in(25_000, seed=1)
    train_lists, test_lists = as_lists(*train), as_lists(*test)
    t_numpy, cpu_numpy, (tr, te, features) = timed(lambda: numpy_ngrams(train, test, 2, NUM_WORDS), 5)
    t_loop, cpu_loop, (ref_tr, ref_te, ref_features) = timed(lambda: loop_ngrams(train_lists, test_lists, 2, NUM_WORDS), 1)
    assert features == ref_features, f"max_features {features} != the loop's {ref_features}"
    for (ids, offsets), ref in ((tr, ref_tr), (te, ref_te)):
        assert np.array_equal(np.diff(offsets), [len(r) for r in ref]), "augmented lengths differ from the loop's"
        assert np.array_equal(ids, np.fromiter((w for r in ref for w in r), np.int64, count=len(ids))), "ids differ"
    del ref_tr, ref_te
    m_numpy = peak_memory(lambda: numpy_ngrams(train, test, 2, NUM_WORDS))
    m_loop = peak_memory(lambda: loop_ngrams(train_lists, test_lists, 2, NUM_WORDS))
    mean = np.diff(train[1]).mean()
    print(f"stand-in: 25,000 + 25,000 reviews, mean length {mean:.0f}; bigrams; max_features {features:,}; same ids: yes")
    ratio, cpu_ratio = t_loop / t_numpy, cpu_loop / cpu_numpy
    print(f"{'implementation':<32}{'seconds':>10}{'CPU s':>10}{'peak MB':>10}")
    print(f"{'loops (sets, dict, list appends)':<32}{t_loop:>10.2f}{cpu_loop:>10.2f}{m_loop / 1e6:>10.0f}")
    print(f"{'numpy (stages.imdb_fasttext)':<32}{t_numpy:>10.3f}{cpu_numpy:>10.3f}{m_numpy / 1e6:>10.0f}")
    print(f"numpy is {ratio:.0f}x faster ({cpu_ratio:.0f}x in CPU time) and needs {m_loop / m_numpy:.1f}x less peak memory")
    # the issue asks for 50x; cores busy with other work slow both, but not always alike (the CPU-time ratio is steadier)
    assert ratio >= 50, f"numpy is only {ratio:.1f}x faster than the loops ({cpu_ratio:.0f}x in CPU time); the issue asks 50x"
    if "--epoch" in sys.argv:
        epoch_cost(train, test)


if __name__ == "__main__":
    main()
