"""fastText-style sentiment classification of IMDB reviews, with and without n-grams (Keras' imdb_fasttext.py).

The original (after Joulin et al. 2016, "Bag of Tricks for Efficient Text
Classification") loads IMDB with `imdb.load_data(num_words=20000)`: 25,000
training and 25,000 test reviews as word ids (start 1, out-of-vocabulary 2,
ids shifted by 3). With ngram_range N > 1 it collects every 2..N-gram of the
training reviews, gives each a new id from max_features + 1 upward (Python set
order), sets max_features to the largest id + 1, and appends to every review
(train and test) the ids of its n-grams that have one: all its bigrams in order
of position, then its trigrams, and so on (an n-gram that occurs twice is
appended twice). Reviews are then padded and truncated to 400 ids at the front
(pad_sequences' defaults). Model: Embedding(max_features, 50) ->
GlobalAveragePooling1D -> Dense(1, sigmoid), adam, binary cross-entropy, batch
32, 5 epochs, validated on the test set after each epoch. Headline: test
accuracy 0.8813 with unigrams, 0.9056 with bigrams, after 5 epochs.

Differences from the original:
* ngram_range is a preprocess param; `uni` (1) and `bi` (2) are two variants,
  each cached on its own; a `tri` (3) is one variant plus one run line.
* N-gram ids are given in a stated, deterministic order instead of set order:
  bigrams before trigrams (and so on), and within one size in ascending order
  of the tuples of word ids (the original's ids depend on Python's set
  iteration). The id table, the appending and the padding are numpy over all
  reviews at once: an n-gram of size n is the int64 key
  sum(w_i * num_words ** (n - 1 - i)); one sort of every window of both sets
  numbers the distinct keys that occur in the training set
  (benchmarks/imdb_ngrams.py: the original's loops against this, same ids).
  The original scans trigrams over the review with its bigram ids already
  appended; no window that reaches an appended id is in the table (those ids
  exceed every word id), so the result is the same.
* Reviews are stored padded, (N, 400) int32, as Keras' pad_sequences leaves
  them: zeros in front, and the last 400 ids of a longer review.
* Training batches are reshuffled each epoch with a seeded stateless
  permutation (Keras' fit shuffled unseeded). As the original, the per-epoch
  validation data is the test set, so the validation curves are test curves.
* evaluate reports the test accuracy, binary cross-entropy (Keras' clipping),
  ROC AUC and the confusion matrix at 0.5; plot draws the per-epoch curves and
  the ROC curve; compare puts every variant's validation curves on one chart.
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

PANELS = {"loss": "binary cross-entropy (nats, log scale)", "accuracy": "accuracy"}  # per-epoch figures: y label per metric
ROC_FILE = "roc.csv"


class Preprocess(Section):
    num_words: int = Field(ge=4, description="the loader's max_features: rarer words become the out-of-vocabulary id 2")
    ngram_range: int = Field(ge=1, le=8, description="1: words only; N: append the ids of the 2..N-grams")
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


def windows(ids: np.ndarray, offsets: np.ndarray, n: int) -> tuple[list[np.ndarray], np.ndarray]:
    """The n-grams of ragged reviews (review i = ids[offsets[i]:offsets[i + 1]]) as n columns of words, and their reviews.

    Column j holds the j-th word of every window that lies inside one review,
    windows in review order, then in order of position.
    """
    count = max(len(ids) - n + 1, 0)
    valid = np.ones(count, bool)
    lengths = np.diff(offsets)
    for k in range(1, n):  # the last n - 1 starts of each review would cross its end
        last = np.asarray(offsets[1:]) - k
        last = last[(lengths >= k) & (last < count)]
        valid[last] = False
    review = np.repeat(np.arange(len(lengths), dtype=np.int32), lengths)[:count][valid]
    return [ids[j : j + count][valid] for j in range(n)], review


def sorted_keys(columns: list[np.ndarray], base: int) -> tuple[np.ndarray, np.ndarray]:
    """(keys in ascending order, the permutation that sorts them) of rows of word columns.

    A row's key is sum(w_j * base ** (n - 1 - j)), so keys sort as the rows'
    tuples do. When key and row number fit in 63 bits together (bigrams of
    20,000 words: 29 + 24 bits), one np.sort of (key << bits | row) gives
    both; otherwise a stable radix sort per column, least significant first.
    """
    rows = len(columns[0])
    keys = np.zeros(rows, np.int64)
    for column in columns:
        keys = keys * base + column
    row_bits = max(rows - 1, 1).bit_length()
    if (base ** len(columns) - 1).bit_length() + row_bits <= 63:
        packed = (keys << row_bits) | np.arange(rows)
        del keys
        packed.sort()
        return packed >> row_bits, packed & ((1 << row_bits) - 1)
    kind = np.uint16 if base <= 2**16 else np.int64
    order = np.arange(rows)
    for column in reversed(columns):
        order = order[np.argsort(column[order].astype(kind), kind="stable")]
    return keys[order], order


def ngram_ids(splits: list[tuple[np.ndarray, np.ndarray]], n: int, base: int, first_id: int) -> tuple[list, np.ndarray]:
    """Ids of every size-n window of every split, from the table of the FIRST split's (training set's) n-grams.

    The table is the training set's distinct n-grams in ascending tuple order,
    numbered from first_id. Returns ([per split: (window ids, -1 where the
    n-gram is not in the table; window reviews)], the table as int64 keys
    sum(w_j * base ** (n - 1 - j))). All splits' windows are sorted together once.
    """
    found = [windows(ids, offsets, n) for ids, offsets in splits]
    columns = [np.concatenate([cols[j] for cols, _ in found]).astype(np.int64) for j in range(n)]
    keys, order = sorted_keys(columns, base)
    del columns
    new = np.ones(len(keys), bool)
    new[1:] = keys[1:] != keys[:-1]
    group = np.cumsum(new, dtype=np.int32) - 1
    in_train = np.zeros(int(new.sum()), bool)
    in_train[group[order < len(found[0][1])]] = True
    group_id = np.where(in_train, np.cumsum(in_train) - 1 + first_id, -1)
    ids = np.empty(len(keys), np.int32)
    ids[order] = group_id[group]
    cuts = np.cumsum([len(review) for _, review in found])[:-1]
    return [(part, review) for part, (_, review) in zip(np.split(ids, cuts), found, strict=True)], keys[new][in_train]


def augment(
    splits: list[tuple[np.ndarray, np.ndarray]], ngram_range: int, num_words: int
) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[np.ndarray]]:
    """The original's n-gram augmentation: ([per split: new (ids int32, offsets int64)], the n-gram table).

    The table (one int64 key array per size 2..ngram_range, see ngram_ids)
    comes from the first split, the training set; the j-th n-gram of size n
    gets id num_words + 1 + (n-grams of smaller sizes) + j. Each review gets
    the ids of its known bigrams appended in order of position, then those of
    its trigrams, and so on.
    """
    table, per_size, first_id = [], [], num_words + 1
    for n in range(2, ngram_range + 1):
        found, keys = ngram_ids(splits, n, num_words, first_id)
        per_size.append(found)
        table.append(keys)
        first_id += len(keys)
    out = []
    for index, (ids, offsets) in enumerate(splits):
        lengths = np.diff(offsets).astype(np.int64)
        pieces = [(np.asarray(ids), np.repeat(np.arange(len(lengths)), lengths))]
        for window_ids, review in (found[index] for found in per_size):
            known = window_ids >= 0
            pieces.append((window_ids[known], review[known]))
        counts = [np.bincount(review, minlength=len(lengths)) for _, review in pieces]
        new_offsets = np.concatenate([[0], np.cumsum(np.sum(counts, axis=0))]).astype(np.int64)
        result = np.empty(new_offsets[-1], np.int32)
        before = new_offsets[:-1].copy()  # where each review's next piece starts
        for (values, review), count in zip(pieces, counts, strict=True):
            piece_start = np.cumsum(count) - count
            result[before[review] + np.arange(len(review)) - piece_start[review]] = values
            before += count
        out.append((result, new_offsets))
    return out, table


def max_features(table: list[np.ndarray], num_words: int) -> int:
    """The Embedding's input size: the largest n-gram id + 1 (num_words + 1 + count), or num_words without n-grams."""
    count = sum(len(keys) for keys in table)
    return num_words + 1 + count if count else num_words


def pad(ids: np.ndarray, offsets: np.ndarray, maxlen: int) -> np.ndarray:
    """(N, maxlen) int32 as Keras' pad_sequences(maxlen=maxlen) leaves them: zeros in front, the LAST maxlen ids kept."""
    lengths = np.diff(offsets)
    review = np.repeat(np.arange(len(lengths)), lengths)
    column = maxlen - lengths[review] + (np.arange(len(ids)) - offsets[:-1][review])
    keep = column >= 0
    out = np.zeros((len(lengths), maxlen), np.int32)
    out[review[keep], column[keep]] = ids[keep]
    return out


def binary_cross_entropy(probabilities: np.ndarray, labels: np.ndarray, epsilon: float = 1e-7) -> float:
    """Mean binary cross-entropy (nats) of P(label 1) against 0/1 labels: the shared cross_entropy on (1 - p, p)."""
    p = np.asarray(probabilities, np.float64).reshape(-1)
    return cross_entropy(np.stack([1 - p, p], axis=1), labels, epsilon)


def score(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Every number of metrics/<run>.json from P(positive) and the 0/1 test labels.

    test.accuracy (positive when p > 0.5, as Keras' binary accuracy), test.loss
    (binary cross-entropy), test.roc_auc, and the confusion matrix at 0.5
    (rows: actual negative, positive; columns: predicted).
    """
    from sklearn.metrics import roc_auc_score

    p = np.asarray(probabilities, np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(np.int64)
    predicted = (p > 0.5).astype(np.int64)
    return {
        "test": {
            "accuracy": float(np.mean(predicted == y)),
            "loss": binary_cross_entropy(p, y),
            "roc_auc": float(roc_auc_score(y, p)),
        },
        "confusion": confusion_matrix(y, predicted, 2).tolist(),
        "test_samples": int(len(y)),
    }


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

    model = keras.Sequential(
        [
            keras.Input((maxlen,), dtype="int32"),
            keras.layers.Embedding(max_features, embedding_dims),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
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
    augmented, table = augment([splits["train"][:2], splits["test"][:2]], p.ngram_range, p.num_words)
    features = max_features(table, p.num_words)
    arrays, lengths = {}, {}
    for split, (ids, offsets) in zip(("train", "test"), augmented, strict=True):
        labels = splits[split][2]
        arrays[f"x_{split}"], arrays[f"y_{split}"] = pad(ids, offsets, p.maxlen), labels
        lengths[split] = round(float(np.diff(offsets).mean()), 2)
    with atomic_dir(run.paths.processed) as out:
        save_arrays(out, arrays)
        write_json(
            out / META,
            {
                "max_features": features,
                "maxlen": p.maxlen,
                "ngram_range": p.ngram_range,
                "ngrams": {str(n): len(keys) for n, keys in enumerate(table, start=2)},
                "train": len(arrays["y_train"]),
                "test": len(arrays["y_test"]),
                "mean_length": lengths,
                "x": f"(N, {p.maxlen}) int32 ids, padded and truncated at the front",
                "y": "(N,) uint8: 1 = positive review",
            },
        )
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
