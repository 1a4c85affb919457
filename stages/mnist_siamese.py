"""Siamese MLP with a contrastive loss on MNIST pairs (Keras' mnist_siamese.py).

The original (after Hadsell, Chopra and LeCun 2006) builds pairs of MNIST
digits: with n = (size of the smallest class) - 1, for each digit d and each
i < n a positive pair (d's i-th image, d's (i+1)-th image) and then a negative
pair (d's i-th image, the i-th image of digit (d + random 1..9) mod 10), labels
alternating 1, 0 (1 = same digit): 108,400 train and 17,820 test pairs. A shared
base network Flatten -> Dense(128, relu) -> Dropout(0.1) -> Dense(128, relu) ->
Dropout(0.1) -> Dense(128, relu) embeds both images; the model outputs the
Euclidean distance of the two embeddings, sqrt(max(sum of squares, eps)), and
trains with the contrastive loss of margin 1,
mean(y d^2 + (1 - y) max(1 - d, 0)^2), RMSprop, batch 128, 20 epochs. A pair is
predicted "same" when d < 0.5. Headline: 97.2% test accuracy after 20 epochs
(an older 99.5% figure was a bug: it measured precision).

Differences from the original:
* `preprocess.dataset` picks mnist (default, as the original) or fashion_mnist
  (same shapes).
* Pairs are stored as int32 (P, 2) indices into the uint8 image array instead
  of (P, 2, 28, 28) float32 copies; images are gathered and scaled by 1/255
  inside the tf.data pipeline. Pair creation is vectorised with numpy.
* The random 1..9 increments come from numpy, not Python's `random`:
  `np.random.default_rng([seed, split]).integers(1, 10, size=(10, n))`
  (split 0 = train, 1 = test), where draws[d, i] is the increment of digit d's
  i-th negative pair. Row-major order is the original's draw order (digit outer,
  i inner), so a loop fed the same draws gives the same pairs
  (tests/test_mnist_siamese.py and benchmarks/siamese_pairs.py check this).
* Batches are reshuffled each epoch with a seeded stateless permutation
  (Keras' fit shuffled the in-memory arrays unseeded).
* evaluate adds ROC AUC over the distances and the best threshold (chosen on
  train pairs, reported on test pairs) beside the original's accuracy at
  `evaluate.threshold` (0.5 as the original's); it records both thresholds in
  data/predictions/<run>/meta.json.
* plot adds a histogram of the test distances, with the two thresholds
  evaluate used as vertical lines (from that meta.json), and a PCA view of the
  test embeddings (full SVD: deterministic without a seed).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import Field

from stages.core.files import atomic_dir, load_array, read_json, save_arrays, write_csv, write_json
from stages.core.layout import META
from stages.core.metrics import write_metrics
from stages.core.params import ExampleParams, Section
from stages.core.run import Run

N_CLASSES = 10
N_PARAMS = 133_504  # trainable parameters of the base network (784*128+128 + 2*(128*128+128))


class Preprocess(Section):
    dataset: Literal["mnist", "fashion_mnist"] = Field(
        description="a module of stages/datasets/ with 28x28 grey images of 10 classes"
    )


class Train(Section):
    batch_size: int = Field(ge=1)
    epochs: int = Field(ge=1)
    learning_rate: float = Field(gt=0, description="RMSprop")
    dropout: float = Field(ge=0, lt=1, description="after the first two Dense layers")
    margin: float = Field(gt=0, description="contrastive loss margin")


class Evaluate(Section):
    threshold: float = Field(gt=0, description="a pair is 'same' when its distance is below this")
    batch_size: int = Field(ge=1, description="pairs per prediction batch")


class Plot(Section):
    bins: int = Field(ge=2, description="histogram bins of the distances")
    max_points: int = Field(ge=10, le=1000, description="test embeddings kept in the PCA CSV and drawn (at most 1,000)")


class Params(ExampleParams):
    preprocess: Preprocess
    train: Train
    evaluate: Evaluate
    plot: Plot


def dataset(params: Params) -> str:
    """The dataset preprocess reads (make_run finds its data/raw folder with this)."""
    return params.preprocess.dataset


# --- pure functions ----------------------------------------------------------


def pair_count(labels: np.ndarray) -> int:
    """n = (size of the smallest class) - 1: the pairs per digit and kind."""
    counts = np.bincount(np.asarray(labels).reshape(-1), minlength=N_CLASSES)[:N_CLASSES]
    return int(counts.min()) - 1


def draw_increments(rng: np.random.Generator, n: int) -> np.ndarray:
    """(10, n) int64 in 1..9: draws[d, i] shifts digit d's i-th negative partner (row-major = original order)."""
    return rng.integers(1, N_CLASSES, size=(N_CLASSES, n))


def create_pairs(labels: np.ndarray, increments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The original's pairs, as indices into the image array.

    Args:
        labels: (N,) class labels 0..9.
        increments: (10, n) ints in 1..9 with n = pair_count(labels).

    Returns:
        pairs: (20 n, 2) int32 image indices, ordered digit by digit; for each
            i, the positive pair (d_i, d_{i+1}) then the negative pair
            (d_i, e_i) with e = (d + increments[d, i]) mod 10.
        same: (20 n,) uint8, alternating 1, 0.
    """
    labels = np.asarray(labels).reshape(-1)
    n = pair_count(labels)
    if n < 1:
        raise ValueError("every class needs at least two images to form pairs")
    if increments.shape != (N_CLASSES, n):
        raise ValueError(f"increments must have shape (10, {n}), got {increments.shape}")
    # first[d, j]: index of digit d's j-th image, j <= n (stable sort keeps dataset order).
    order = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[order], np.arange(N_CLASSES))
    first = order[starts[:, None] + np.arange(n + 1)[None, :]]
    i = np.arange(n)
    partner_digit = (np.arange(N_CLASSES)[:, None] + increments) % N_CLASSES
    pairs = np.empty((N_CLASSES, n, 2, 2), dtype=np.int32)  # digit, i, positive/negative, member
    pairs[:, :, 0, 0] = first[:, :n]
    pairs[:, :, 0, 1] = first[:, 1:]
    pairs[:, :, 1, 0] = first[:, :n]
    pairs[:, :, 1, 1] = first[partner_digit, i[None, :]]
    same = np.tile(np.array([1, 0], dtype=np.uint8), N_CLASSES * n)
    return pairs.reshape(-1, 2), same


def pair_accuracy(distances: np.ndarray, same: np.ndarray, threshold: float) -> float:
    """Fraction of pairs where (distance < threshold) equals the label (the original's accuracy)."""
    return float(np.mean((np.asarray(distances).reshape(-1) < threshold) == (np.asarray(same).reshape(-1) == 1)))


def best_threshold(distances: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """The threshold t maximising pair_accuracy(distances, same, t), and that accuracy.

    Every cut between two sorted distances is tried at once: below the cut is
    "same". t is the midpoint of the cut (or just beyond the extremes).
    """
    d = np.asarray(distances, np.float64).reshape(-1)
    y = np.asarray(same).reshape(-1) == 1
    order = np.argsort(d, kind="stable")
    d, y = d[order], y[order]
    # k pairs below the cut: correct = positives among them + negatives above.
    pos_below = np.concatenate([[0], np.cumsum(y)])
    neg_above = (~y).sum() - np.concatenate([[0], np.cumsum(~y)])
    correct = pos_below + neg_above
    # only cut between distinct values
    valid = np.concatenate([[True], d[1:] > d[:-1], [True]])
    k = int(np.argmax(np.where(valid, correct, -1)))
    if k == 0:
        t = d[0] - 1e-6
    elif k == len(d):
        t = d[-1] + 1e-6
    else:
        t = (d[k - 1] + d[k]) / 2
    return float(t), float(correct[k] / len(d))


def roc_auc(distances: np.ndarray, same: np.ndarray) -> float:
    """Area under the ROC curve of "same" scored by -distance (closer = more alike)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.asarray(same).reshape(-1), -np.asarray(distances, np.float64).reshape(-1)))


def score(distances: Mapping[str, np.ndarray], same: Mapping[str, np.ndarray], threshold: float) -> dict[str, Any]:
    """Every number of metrics/<run>.json, from the "train" and "test" distances and labels.

    Per split: accuracy at `threshold` (the original's metric), ROC AUC, pair
    count. best_threshold: the threshold best on train pairs, and its accuracy
    on train and on test pairs (test pairs never choose it).
    """
    metrics: dict[str, Any] = {
        split: {
            "accuracy": pair_accuracy(distances[split], same[split], threshold),
            "roc_auc": roc_auc(distances[split], same[split]),
            "pairs": len(distances[split]),
        }
        for split in ("train", "test")
    }
    best, train_accuracy = best_threshold(distances["train"], same["train"])
    metrics["best_threshold"] = {
        "threshold": best,
        "train_accuracy": train_accuracy,
        "test_accuracy": pair_accuracy(distances["test"], same["test"], best),
    }
    metrics["threshold"] = threshold
    return metrics


def histogram(distances: np.ndarray, same: np.ndarray, bins: int) -> dict[str, np.ndarray]:
    """Counts of same and different pairs per distance bin: {distance (bin centre), same, different}."""
    d = np.asarray(distances, np.float64).reshape(-1)
    y = np.asarray(same).reshape(-1) == 1
    edges = np.linspace(0.0, max(float(d.max()), 1e-6), bins + 1)
    return {
        "distance": (edges[:-1] + edges[1:]) / 2,
        "same": np.histogram(d[y], edges)[0],
        "different": np.histogram(d[~y], edges)[0],
    }


def build_model(learning_rate: float, dropout: float, margin: float) -> tuple[Any, Any]:
    """(siamese model: two (28, 28) inputs -> (batch, 1) distance, its base network), compiled."""
    import keras
    from keras import ops

    base = keras.Sequential(
        [
            keras.Input((28, 28)),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dropout(dropout),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dropout(dropout),
            keras.layers.Dense(128, activation="relu"),
        ],
        name="base",
    )
    a, b = keras.Input((28, 28), name="a"), keras.Input((28, 28), name="b")
    ea, eb = base(a), base(b)
    distance = keras.layers.Lambda(
        lambda e: ops.sqrt(ops.maximum(ops.sum(ops.square(e[0] - e[1]), axis=1, keepdims=True), keras.config.epsilon())),
        output_shape=(1,),
        name="distance",
    )([ea, eb])
    model = keras.Model([a, b], distance)

    def contrastive_loss(y_true, y_pred):
        d = ops.reshape(y_pred, (-1,))  # (B, 1) distances against (B,) labels: no broadcasting to (B, B)
        y = ops.cast(ops.reshape(y_true, (-1,)), d.dtype)
        return ops.mean(y * ops.square(d) + (1 - y) * ops.square(ops.maximum(margin - d, 0)))

    def accuracy(y_true, y_pred):
        same = ops.reshape(y_true, (-1,)) > 0.5
        return ops.mean(ops.cast(ops.equal(same, ops.reshape(y_pred, (-1,)) < 0.5), "float32"))

    model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=learning_rate), loss=contrastive_loss, metrics=[accuracy])
    return model, base


def _gather_fn(images: np.ndarray) -> Any:
    """map_fn for training.batches: (B, 2) index pairs, labels -> ((B, 28, 28) x2 in [0, 1], labels)."""
    import tensorflow as tf

    table = tf.constant(images)

    def fn(pairs, same):
        x = tf.cast(tf.gather(table, pairs), tf.float32) / 255.0
        return (x[:, 0], x[:, 1]), tf.cast(same, tf.float32)

    return fn


def _distances(model: Any, images: np.ndarray, pairs: np.ndarray, batch_size: int) -> np.ndarray:
    """(P,) float32 distances the model gives the pairs, in order."""
    from stages import training

    data, steps = training.batches(
        [pairs, np.zeros(len(pairs), np.uint8)], batch_size, seed=0, shuffle=False, map_fn=_gather_fn(images)
    )
    return model.predict(data.map(lambda xy, _: (xy,)), steps=steps, verbose=0).reshape(-1).astype(np.float32)


# --- steps -------------------------------------------------------------------


def preprocess(run: Run) -> None:
    """Images and labels as uint8, and each split's pairs as indices into its images."""
    dataset_name = run.params.dataset
    (x_train, y_train), (x_test, y_test) = importlib.import_module(f"stages.datasets.{dataset_name}").load(run.raw)
    arrays, meta = {}, {"dataset": dataset_name}
    for index, (name, x, y) in enumerate((("train", x_train, y_train), ("test", x_test, y_test))):
        rng = np.random.default_rng([run.seed, index])
        pairs, same = create_pairs(y, draw_increments(rng, pair_count(y)))
        arrays |= {f"x_{name}": x.astype(np.uint8), f"y_{name}": y.astype(np.uint8), f"pairs_{name}": pairs, f"same_{name}": same}
        meta[f"pairs_{name}"] = len(pairs)
        print(f"{name}: {len(x)} images, {len(pairs)} pairs")
    meta["layout"] = "x_*: (N, 28, 28) uint8; y_*: (N,) uint8; pairs_*: (P, 2) int32 indices into x_*; same_*: (P,) uint8"
    with atomic_dir(run.paths.processed) as out:
        save_arrays(out, arrays)
        write_json(out / META, meta)


def train(run: Run) -> None:
    """Fit the siamese model on the train pairs with the contrastive loss; save it with its build arguments."""
    from stages import training

    with training.train_guard(run):
        p, folder = run.params, run.paths.processed
        x, pairs, same = load_array(folder, "x_train"), load_array(folder, "pairs_train"), load_array(folder, "same_train")
        training.seed_everything(run.seed)
        build = {"learning_rate": p.learning_rate, "dropout": p.dropout, "margin": p.margin}
        model, base = build_model(**build)
        gather = _gather_fn(x)
        training.fit(
            model,
            lambda first: training.batches(
                [pairs, same], p.batch_size, seed=run.seed, first_epoch=first, epochs=p.epochs, map_fn=gather
            ),
            run=run,
            epochs=p.epochs,
        )
        training.save_trained(model, run, build, {"parameters": base.count_params()})


def evaluate(run: Run) -> None:
    """Distances of every train and test pair, test embeddings, the metrics, and the thresholds used."""
    from stages import training

    p, folder = run.params, run.paths.processed
    training.seed_everything(run.seed)
    (model, base), _ = training.load_trained(run, build_model)
    distances = {
        split: _distances(model, load_array(folder, f"x_{split}"), load_array(folder, f"pairs_{split}"), p.batch_size)
        for split in ("train", "test")
    }
    metrics = score(distances, {split: load_array(folder, f"same_{split}") for split in ("train", "test")}, p.threshold)
    x_test = load_array(folder, "x_test").astype(np.float32) / 255.0
    embeddings = base.predict(x_test, batch_size=p.batch_size, verbose=0).astype(np.float32)
    with atomic_dir(run.paths.predictions) as out:
        save_arrays(
            out, {"distances_train": distances["train"], "distances_test": distances["test"], "embeddings_test": embeddings}
        )
        write_json(out / META, {"threshold": p.threshold, "best_threshold": metrics["best_threshold"]["threshold"]})
    write_metrics(run.paths.metrics, metrics)
    best = metrics["best_threshold"]
    print(
        f"accuracy at d < {p.threshold}: train {metrics['train']['accuracy']:.4f}, test {metrics['test']['accuracy']:.4f}; "
        f"test ROC AUC {metrics['test']['roc_auc']:.4f}; best threshold {best['threshold']:.3f} -> test {best['test_accuracy']:.4f}"
    )


def plot(run: Run) -> None:
    """Histogram of test distances with evaluate's thresholds, the test embeddings' PCA, and the per-epoch curves."""
    from sklearn.decomposition import PCA

    from stages.plotting import HISTORY, epochs_png, history_columns, png, read_live_metrics, thin

    p = run.params
    d = load_array(run.paths.predictions, "distances_test")
    thresholds = read_json(run.paths.predictions / META)  # what evaluate used: {threshold, best_threshold}
    same = load_array(run.paths.processed, "same_test")
    labels = load_array(run.paths.processed, "y_test")
    emb = load_array(run.paths.predictions, "embeddings_test")
    hist = histogram(d, same, p.bins)
    xy = PCA(n_components=2, svd_solver="full").fit_transform(emb)  # full SVD: no randomness, so no seed
    keep = thin(len(xy), p.max_points)
    history = history_columns(read_live_metrics(run.paths.training))
    with atomic_dir(run.paths.figures) as out:
        write_csv(out / HISTORY, history)
        panels = {"loss": "contrastive loss (log scale)", "accuracy": "pair accuracy at distance < 0.5"}
        epochs_png(out / "training.png", {run.variant: history}, panels, f"{run.paths.key}, per epoch")
        write_csv(out / "distances.csv", hist)
        write_json(out / "thresholds.json", {key: thresholds[key] for key in ("threshold", "best_threshold")})
        write_csv(out / "embeddings.csv", {"pc1": xy[keep, 0], "pc2": xy[keep, 1], "label": labels[keep]})
        with png(out / "distances.png", figsize=(8, 5), dpi=100) as fig:
            ax = fig.subplots()
            width = hist["distance"][1] - hist["distance"][0]
            ax.bar(hist["distance"], hist["same"], width=width, alpha=0.6, label="same class")
            ax.bar(hist["distance"], hist["different"], width=width, alpha=0.6, label="different class")
            threshold, best = thresholds["threshold"], thresholds["best_threshold"]
            ax.axvline(threshold, color="k", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
            ax.axvline(best, color="k", linestyle=":", linewidth=1, label=f"best threshold on train {best:.3g}")
            ax.set_xlabel("distance between the pair's embeddings (Euclidean)")
            ax.set_ylabel(f"test pairs per bin of {width:.3g}")
            ax.set_title(f"Distances of test pairs ({run.paths.key})")
            ax.legend()
        with png(out / "embeddings.png", figsize=(7, 6), dpi=100) as fig:
            ax = fig.subplots()
            points = ax.scatter(xy[keep, 0], xy[keep, 1], c=labels[keep], cmap="tab10", s=4, vmin=-0.5, vmax=9.5)
            fig.colorbar(points, ax=ax, ticks=range(N_CLASSES), label="class")
            ax.set_xlabel("PC 1")
            ax.set_ylabel("PC 2")
            ax.set_title(f"Test embeddings, PCA to 2-D ({run.paths.key}, {len(keep):,} of {len(xy):,} images)")
