"""fastText-style sentiment classification of IMDB reviews, with and without n-grams (Keras' imdb_fasttext.py).

The original (after Joulin et al. 2016, "Bag of Tricks for Efficient Text
Classification") loads IMDB with `imdb.load_data(num_words=20000)`: 25,000
training and 25,000 test reviews as word ids (start 1, out-of-vocabulary 2,
ids shifted by 3). With ngram_range N > 1 it gives every 2..N-gram of the
training reviews an id from max_features + 1 upward (Python set order), sets
max_features to the largest id + 1, and appends to every review (train and
test) the ids of its n-grams that have one: its bigrams in order of position,
then its trigrams, and so on; then pads and truncates to 400 ids at the front.
Model: Embedding(max_features, 50) -> GlobalAveragePooling1D -> Dense(1,
sigmoid), adam, binary cross-entropy, batch 32, 5 epochs, validated on the test
set after each epoch. Headline: test accuracy 0.8813 with unigrams, 0.9056 with
bigrams, after 5 epochs.

Differences from the original:
* `uni` (ngram_range 1) and `bi` (2) are two variants; a `tri` (3) is one
  variant plus one run line.
* `preprocess.train_samples` keeps the first N training reviews (n-grams come
  from these; every test review stays): adam updates the whole embedding each
  step, so a step costs in proportion to the bigrams (see params.yaml).
* N-gram ids follow a stated order: bigrams before trigrams, and within one
  size ascending tuples of word ids. An n-gram is the key sum(w_i * num_words
  ** (n - 1 - i)); for bigrams a bit per possible key marks the training set's
  and the count of marks below a key is its id; larger key spaces are sorted
  (benchmarks/imdb_ngrams.py: the original's loops against this, same ids).
  The original scans trigrams over a review with its bigram ids appended; no
  such window is in the table, so the result is the same.
* Training batches are reshuffled each epoch with a seeded stateless
  permutation (Keras' fit shuffled unseeded). As the original, the per-epoch
  validation data is the test set, so the validation curves are test curves.
* evaluate adds the binary cross-entropy, ROC AUC and confusion matrix; plot
  draws the per-epoch curves and the ROC curve; compare puts every variant's
  validation curves on one chart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import Field, ValidationInfo, model_validator

from stages.core.errors import DatasetError, ParamsError
from stages.core.files import atomic_dir, load_array, read_json, save_arrays, write_csv, write_json
from stages.core.layout import META
from stages.core.metrics import confusion_matrix, cross_entropy, write_metrics
from stages.core.params import ExampleParams, Section
from stages.core.run import Comparison, Run
from stages.core.sequences import pad

PANELS = {"loss": "binary cross-entropy (nats, log scale)", "accuracy": "accuracy"}  # per-epoch figures: y label per metric
ROC_FILE = "roc.csv"


class Preprocess(Section):
    num_words: int = Field(ge=4, description="the loader's max_features: rarer words become the out-of-vocabulary id 2")
    ngram_range: int = Field(ge=1, le=8, description="1: words only; N: append the ids of the 2..N-grams")
    train_samples: int = Field(ge=1, description="the first N training reviews (n-grams come from these); all test reviews")
    maxlen: int = Field(ge=1, description="ids kept per review after the n-grams are appended (the last ones)")


class Train(Section):
    embedding_dims: int = Field(ge=1)
    learning_rate: float = Field(gt=0, description="adam's (Keras' default 0.001, as the original)")
    batch_size: int = Field(ge=1)
    epochs: int = Field(ge=1)


class Evaluate(Section):
    batch_size: int = Field(ge=1, description="reviews per prediction batch (the numbers do not depend on it)")


class Plot(Section):
    dpi: int = Field(ge=20, le=600, description="resolution of the PNGs")
    max_points: int = Field(ge=2, le=1000, description="points kept in roc.csv and drawn (at most 1,000)")


class Params(ExampleParams):
    preprocess: Preprocess
    train: Train
    evaluate: Evaluate
    plot: Plot

    @model_validator(mode="after")
    def _check_across_keys(self, info: ValidationInfo) -> Params:
        """An n-gram must fit in an int64 key: num_words ** ngram_range < 2 ** 63."""
        p, key = self.preprocess, self.key_namer(info)
        if p.num_words**p.ngram_range >= 2**63:
            raise ParamsError(
                f"'{key('preprocess', 'ngram_range')}' = {p.ngram_range} with '{key('preprocess', 'num_words')}' = "
                f"{p.num_words}: an n-gram is stored as one int64 number, which needs num_words ** ngram_range below "
                f"2 ** 63; use a smaller ngram_range or fewer words."
            )
        return self


def dataset(params: Params) -> str:
    """The dataset preprocess reads (make_run finds its data/raw folder with this)."""
    return "imdb"


# --- pure functions ----------------------------------------------------------

BITMAP_BITS = 2**30  # key spaces below this are looked up in a bitmap (at most 384 MiB; 150 MiB for 20,000 words' bigrams)


def window_keys(ids: np.ndarray, offsets: np.ndarray, n: int, base: int, dtype: type) -> np.ndarray:
    """The key sum(w_j * base ** (n - 1 - j)) of the size-n window at each start of ragged reviews (review i =
    ids[offsets[i]:offsets[i + 1]], ids below base); a window that crosses a review's end gets base ** n."""
    count = max(len(ids) - n + 1, 0)
    words = ids.astype(dtype, copy=False)
    keys = words[:count].copy()
    for j in range(1, n):
        keys *= dtype(base)
        keys += words[j : j + count]
    for k in range(1, n):  # the window at start - k reaches into the review at start
        crossing = np.asarray(offsets)[1:-1] - k
        keys[crossing[(crossing >= 0) & (crossing < count)]] = base**n
    return keys


def bitmap_ids(keys: list[np.ndarray], space: int, first_id: int) -> tuple[list[np.ndarray], int]:
    """(per split: each window's n-gram id, -1 if the FIRST split has no such n-gram; how many n-grams it has).

    keys: uint32 window_keys (space: no n-gram). The first split's keys are numbered in ascending order from first_id:
    a bit per possible key marks them (32-bit words), each word stored beside the count of marks before it, so an id
    is first_id + that count + the marks below its bit.
    """
    marks = np.zeros(space // 32 + 1, np.uint32)
    np.bitwise_or.at(marks, keys[0] >> 5, np.left_shift(1, keys[0] & 31, dtype=np.uint32))
    marks[space >> 5] &= ~np.uint32(1 << (space & 31))  # the crossing windows' key
    ones = np.bitwise_count(marks)
    table = np.cumsum(ones, dtype=np.uint64)
    table -= ones
    table += first_id
    table <<= 32
    table |= marks
    found = [np.empty(len(split), np.int32) for split in keys]
    for split, out in zip(keys, found, strict=True):
        for start in range(0, len(split), 1 << 16):  # in chunks whose temporaries stay in the cache
            chunk = split[start : start + (1 << 16)]
            entry, bit = table.take(chunk >> 5), np.left_shift(1, chunk & 31, dtype=np.uint64)
            known = (entry & bit) != 0
            ids = np.bitwise_count(entry & (bit - 1)).astype(np.int32) + (entry >> 32).astype(np.int32)
            ids[~known] = -1
            out[start : start + len(chunk)] = ids
    return found, int(ones.sum(dtype=np.int64))


def table_ids(keys: list[np.ndarray], space: int, first_id: int) -> tuple[list[np.ndarray], int]:
    """bitmap_ids for key spaces too large for a bitmap (int64 keys): the first split's distinct keys sorted, then hashed."""
    import pandas as pd

    table = np.sort(keys[0][keys[0] < space])
    index = pd.Index(table[np.append(True, table[1:] != table[:-1])])
    found = [index.get_indexer(split) for split in keys]
    return [np.where(at >= 0, at + first_id, -1).astype(np.int32) for at in found], len(index)


def append(ids: np.ndarray, offsets: np.ndarray, pieces: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Each review's ids, then for each piece (window ids by start position) the ids >= 0 of the windows that start
    in it, in order of position, piece after piece: the new (ids int32, offsets int64)."""
    counts, values = [np.diff(offsets)], [np.asarray(ids, np.int32)]
    for found in pieces:
        known = found >= 0
        before = np.zeros(len(found) + 1, np.int64)  # known windows before each start
        np.cumsum(known, out=before[1:])
        counts.append(np.diff(before[np.minimum(offsets, len(found))]))
        values.append(found[known])
    per_review = np.stack(counts, axis=1)
    piece = np.repeat(np.tile(np.arange(len(values), dtype=np.uint8), len(per_review)), per_review.ravel())
    out = np.empty(len(piece), np.int32)
    for index, value in enumerate(values):
        out[piece == index] = value
    return out, np.append(0, np.cumsum(per_review.sum(axis=1)))


def augment(
    splits: list[tuple[np.ndarray, np.ndarray]], ngram_range: int, num_words: int
) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[int]]:
    """The original's n-gram augmentation: ([per split: new (ids int32, offsets int64)], [n-grams of size 2, 3, ...]).

    The n-grams come from the first split, the training set; the j-th of size n
    in ascending tuple order gets id num_words + 1 + (n-grams of smaller sizes)
    + j. Each review gets the ids of its known bigrams appended in order of
    position, then those of its trigrams, and so on.
    """
    pieces, counts = [], []
    for n in range(2, ngram_range + 1):
        space, first_id = num_words**n, num_words + 1 + sum(counts)
        small = space < BITMAP_BITS
        keys = [window_keys(ids, offsets, n, num_words, np.uint32 if small else np.int64) for ids, offsets in splits]
        found, count = (bitmap_ids if small else table_ids)(keys, space, first_id)
        pieces.append(found)
        counts.append(count)
    return [append(ids, offsets, [found[i] for found in pieces]) for i, (ids, offsets) in enumerate(splits)], counts


def max_features(counts: list[int], num_words: int) -> int:
    """The Embedding's input size: the largest n-gram id + 1 (num_words + 1 + n-grams), or num_words without n-grams."""
    return num_words + 1 + sum(counts) if sum(counts) else num_words


def score(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Every number of metrics/<run>.json from P(positive) and the 0/1 test labels.

    test.accuracy (positive when p > 0.5, as Keras' binary accuracy), test.loss
    (binary cross-entropy: the shared cross_entropy of (1 - p, p), Keras'
    clipping), test.roc_auc, and the confusion matrix at 0.5 (rows: actual
    negative, positive; columns: predicted).
    """
    from sklearn.metrics import roc_auc_score

    p = np.asarray(probabilities, np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(np.int64)
    predicted = (p > 0.5).astype(np.int64)
    loss = cross_entropy(np.stack([1 - p, p], axis=1), y)
    test = {"accuracy": float(np.mean(predicted == y)), "loss": loss, "roc_auc": float(roc_auc_score(y, p))}
    return {"test": test, "confusion": confusion_matrix(y, predicted, 2).tolist(), "test_samples": int(len(y))}


def roc_points(probabilities: np.ndarray, labels: np.ndarray, max_points: int) -> dict[str, np.ndarray]:
    """{fpr, tpr}: the ROC curve (scikit-learn's corners), thinned to at most max_points, ends kept."""
    from sklearn.metrics import roc_curve

    from stages.plotting import thin

    fpr, tpr, _ = roc_curve(np.asarray(labels).reshape(-1), np.asarray(probabilities, np.float64).reshape(-1))
    keep = thin(len(fpr), max_points)
    return {"fpr": fpr[keep], "tpr": tpr[keep]}


def summary_rows(metrics: Mapping[str, Mapping[str, Any]]) -> dict[str, list]:
    """One row per variant: {variant, test_accuracy, test_loss, test_roc_auc}, from each metrics/<run>.json."""
    names = ("accuracy", "loss", "roc_auc")
    return {"variant": list(metrics), **{f"test_{n}": [float(m["test"][n]) for m in metrics.values()] for n in names}}


def build_model(max_features: int, embedding_dims: int, maxlen: int, learning_rate: float) -> Any:
    """Embedding -> GlobalAveragePooling1D -> Dense(1, sigmoid), compiled with adam and binary cross-entropy."""
    import keras

    model = keras.Sequential([keras.Input((maxlen,), dtype="int32"), keras.layers.Embedding(max_features, embedding_dims)])
    model.add(keras.layers.GlobalAveragePooling1D())
    model.add(keras.layers.Dense(1, activation="sigmoid"))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss="binary_crossentropy", metrics=["accuracy"])
    return model


# --- steps -------------------------------------------------------------------


def preprocess(run: Run) -> None:
    """The loader's reviews, their n-gram ids appended (table from the training set), padded to maxlen."""
    from stages.datasets.imdb import load

    p = run.params
    splits = load(run.raw, p.num_words)
    if any(len(labels) == 0 or labels.max() > 1 for _, _, labels in splits.values()):
        raise DatasetError(
            f"{run.raw}/imdb.npz: expected a non-empty training and test set with 0/1 labels in y_train and y_test; "
            "delete the folder and download it again."
        )
    ids, offsets, labels = splits["train"]
    if p.train_samples > len(labels):
        raise ParamsError(f"'{run.param_key('train_samples')}' = {p.train_samples}: the training set has {len(labels)} reviews.")
    splits["train"] = (ids[: offsets[p.train_samples]], offsets[: p.train_samples + 1], labels[: p.train_samples])
    augmented, counts = augment([splits["train"][:2], splits["test"][:2]], p.ngram_range, p.num_words)
    features = max_features(counts, p.num_words)
    arrays, lengths = {}, {}
    for split, (ids, offsets) in zip(("train", "test"), augmented, strict=True):
        labels = splits[split][2]
        arrays[f"x_{split}"], arrays[f"y_{split}"] = pad(ids, offsets, p.maxlen), labels
        lengths[split] = round(float(np.diff(offsets).mean()), 2)
    with atomic_dir(run.paths.processed) as out:
        save_arrays(out, arrays)
        meta = {"max_features": features, "maxlen": p.maxlen, "ngram_range": p.ngram_range, "mean_length": lengths}
        meta |= {"ngrams": {str(n): count for n, count in enumerate(counts, start=2)}, "train": len(arrays["y_train"])}
        meta |= {"test": len(arrays["y_test"]), "x": f"(N, {p.maxlen}) int32 ids, padded and truncated at the front"}
        write_json(out / META, meta | {"y": "(N,) uint8: 1 = positive review"})
    print(f"{len(arrays['y_train'])} training and {len(arrays['y_test'])} test reviews; max_features {features}")
    print(f"mean length with n-grams: train {lengths['train']}, test {lengths['test']}")


def train(run: Run) -> None:
    """Fit the model on the training set, validating on the test set after each epoch (as the original)."""
    from stages import training

    with training.train_guard(run):
        p, folder = run.params, run.paths.processed
        meta = read_json(folder / META)
        x, y = load_array(folder, "x_train"), load_array(folder, "y_train")
        validation, steps = training.batches(
            [load_array(folder, "x_test"), load_array(folder, "y_test")], p.batch_size, seed=run.seed, shuffle=False
        )
        training.seed_everything(run.seed)
        build = {
            "max_features": meta["max_features"],
            "embedding_dims": p.embedding_dims,
            "maxlen": meta["maxlen"],
            "learning_rate": p.learning_rate,
        }
        model = build_model(**build)
        training.fit(
            model,
            lambda first: training.batches([x, y], p.batch_size, seed=run.seed, first_epoch=first, epochs=p.epochs),
            run=run,
            epochs=p.epochs,
            validation_data=validation,
        )
        training.save_trained(model, run, build, {"parameters": model.count_params()})


def evaluate(run: Run) -> None:
    """Test-set probabilities, and the test accuracy, loss, ROC AUC and confusion matrix."""
    from stages import training

    folder = run.paths.processed
    x, y = load_array(folder, "x_test"), load_array(folder, "y_test")
    training.seed_everything(run.seed)
    model, _ = training.load_trained(run, build_model)
    data, steps = training.batches([x], run.params.batch_size, seed=run.seed, shuffle=False)
    probabilities = model.predict(data, steps=steps, verbose=0).reshape(-1).astype(np.float32)
    metrics = score(probabilities, y)
    with atomic_dir(run.paths.predictions) as out:
        save_arrays(out, {"probabilities": probabilities})
    write_metrics(run.paths.metrics, metrics)
    test = metrics["test"]
    print(f"test accuracy {test['accuracy']:.4f}, loss {test['loss']:.4f}, ROC AUC {test['roc_auc']:.4f}")


def plot(run: Run) -> None:
    """Per-epoch curves (history.csv, training.png) and the test ROC curve (roc.csv, roc.png)."""
    from stages.plotting import HISTORY, epochs_png, history_columns, png, read_live_metrics

    columns = history_columns(read_live_metrics(run.paths.training))
    probabilities = load_array(run.paths.predictions, "probabilities")
    roc = roc_points(probabilities, load_array(run.paths.processed, "y_test"), run.params.max_points)
    with atomic_dir(run.paths.figures) as out:
        write_csv(out / HISTORY, columns)
        write_csv(out / ROC_FILE, roc)
        title = f"{run.paths.key}, per epoch (validation = the test set)"
        epochs_png(out / "training.png", {run.variant: columns}, PANELS, title, run.params.dpi)
        with png(out / "roc.png", figsize=(5, 5), dpi=run.params.dpi) as fig:
            ax = fig.subplots()
            ax.plot(roc["fpr"], roc["tpr"], label=f"model ({len(roc['fpr']):,} points)")
            ax.plot([0, 1], [0, 1], ":", color="grey", label="chance")
            ax.set(title=f"Test ROC curve ({run.paths.key})", xlabel="false positive rate", ylabel="true positive rate")
            ax.legend()


def compare(c: Comparison) -> None:
    """Every variant's validation accuracy and loss per epoch on one chart (validation.png), history.csv, roc.csv, table.csv."""
    import pandas as pd

    from stages.plotting import HISTORY, draw_epochs, png, read_history, stack_histories

    histories = {variant: read_history(c.runs[variant].figures / HISTORY) for variant in c.variants}
    rocs = [pd.read_csv(c.runs[variant].figures / ROC_FILE).assign(variant=variant) for variant in c.variants]
    table = summary_rows({variant: read_json(c.runs[variant].metrics) for variant in c.variants})
    with atomic_dir(c.out) as out:
        write_csv(out / HISTORY, stack_histories(histories))
        write_csv(out / ROC_FILE, pd.concat(rocs)[["variant", "fpr", "tpr"]])
        write_csv(out / "table.csv", table)
        with png(out / "validation.png", figsize=(11, 4.3), dpi=c.params.dpi) as fig:
            validation = {v: {k: h[k] for k in ("epoch", "val_accuracy", "val_loss")} for v, h in histories.items()}
            for ax, metric in zip(fig.subplots(1, 2), ("accuracy", "loss"), strict=True):
                draw_epochs(ax, validation, metric, PANELS[metric], validation="validation (test set)")
            fig.suptitle(f"{c.example}: validation (the test set) per epoch, every n-gram setting")
