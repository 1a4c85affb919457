"""Reuters newswire topics with a deep MLP, ReLU against SELU (Keras' reuters_mlp_relu_vs_selu.py).

The original (after Klambauer et al. 2017, "Self-Normalizing Neural Networks")
loads Reuters with `reuters.load_data(num_words=1000, test_split=0.2)`: the
11,228 newswires are shuffled with seed 113, each becomes [1] + [w + 3 ...]
(start word 1, word ids shifted by 3) with every id >= 1000 replaced by the
out-of-vocabulary id 2, and the first int(11,228 * 0.8) = 8,982 are the
training set, the other 2,246 the test set. Each newswire becomes a binary
bag-of-words of length 1000 (Tokenizer.sequences_to_matrix, mode "binary").
Two networks, 6 x [Dense(16) -> activation -> dropout] -> Dense(46, softmax),
categorical cross-entropy, SGD (learning rate 0.01), batch 16, 40 epochs,
validation_split 0.1 (the last 10% of the training set):
  network 1: relu, Dropout(0.5), glorot_uniform;
  network 2: selu, AlphaDropout(0.1), lecun_normal.
It prints each network's test loss and accuracy and draws one figure with the
training and validation loss of both. No headline number; its author reported
that SELU did worse than ReLU on this task.

Differences from the original:
* The two networks are two variants (`relu`, `selu`) of one pipeline, each
  cached on its own. Depth, width, activation, dropout kind and rate,
  initializer, optimizer and learning rate are train params, so a third
  network is a variant in params.yaml plus its run under params.yaml's runs.
* The bag-of-words is built with numpy in one pass over all words and stored
  as bits (np.packbits, 125 bytes a newswire); the tf.data pipeline unpacks a
  batch to floats (and labels to one-hot) inside the graph.
* Training batches are reshuffled each epoch with a seeded stateless
  permutation (Keras' fit shuffled unseeded). The validation rows are the last
  10% of the training set, as Keras' validation_split takes them.
* evaluate adds the test macro F1 (scikit-learn, over the topics that occur in
  the labels or the predictions) to the test loss and accuracy.
* plot draws each network's training and validation loss and accuracy per
  epoch; the original's figure (every network's losses on one chart) is the
  example's compare step, with a table of every network's test numbers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field

from stages.core.errors import DatasetError, ParamsError
from stages.core.files import atomic_dir, load_array, read_json, save_arrays, write_csv, write_json
from stages.core.layout import META
from stages.core.metrics import accuracy, cross_entropy, write_metrics
from stages.core.params import ExampleParams, Section
from stages.core.run import Comparison, Run

# The Keras loader's word-id conventions (reuters.load_data's defaults, as the original used them).
START_CHAR = 1  # first word of every newswire
OOV_CHAR = 2  # stands for every word ranked num_words or beyond
INDEX_FROM = 3  # raw word ids are shifted by this (0, 1, 2 are reserved)
SKIP_TOP = 0  # no frequent word is dropped

NETWORK_KEYS = ("layers", "units", "activation", "dropout", "dropout_rate", "initializer", "optimizer", "learning_rate")
OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "rmsprop": "RMSprop", "adagrad": "Adagrad", "adamax": "Adamax", "nadam": "Nadam"}
PANELS = {"loss": "cross-entropy (nats, log scale)", "accuracy": "accuracy"}  # per-epoch figures: y label per metric


class Preprocess(Section):
    num_words: int = Field(ge=INDEX_FROM + 1, description="length of the bag-of-words; rarer words count as one")
    test_split: float = Field(gt=0, lt=1, description="fraction of the shuffled newswires held out for the test set")
    shuffle_seed: int = Field(ge=0, lt=2**32, description="seed of the loader's shuffle (Keras' is 113)")


class Train(Section):
    layers: int = Field(ge=1, description="Dense -> activation -> dropout blocks before the softmax layer")
    units: int = Field(ge=1, description="width of every hidden Dense layer")
    activation: Literal["relu", "selu", "elu", "gelu", "swish", "tanh", "sigmoid", "linear"]
    dropout: Literal["dropout", "alpha_dropout"] = Field(description="Keras' Dropout or AlphaDropout (for selu)")
    dropout_rate: float = Field(ge=0, lt=1)
    initializer: Literal["glorot_uniform", "glorot_normal", "lecun_normal", "lecun_uniform", "he_normal", "he_uniform"] = Field(
        description="kernel initializer of the hidden Dense layers"
    )
    optimizer: Literal["sgd", "adam", "rmsprop", "adagrad", "adamax", "nadam"] = Field(description="a Keras optimizer")
    learning_rate: float = Field(gt=0, description="the optimizer's (Keras' 'sgd' default: 0.01)")
    batch_size: int = Field(ge=1)
    epochs: int = Field(ge=1)
    validation_split: float = Field(ge=0, lt=1, description="last fraction of the training set, scored after each epoch")


class Evaluate(Section):
    batch_size: int = Field(ge=1, description="newswires per prediction batch")


class Plot(Section):
    dpi: int = Field(ge=20, le=600, description="resolution of the PNGs")


class Params(ExampleParams):
    preprocess: Preprocess
    train: Train
    evaluate: Evaluate
    plot: Plot


def dataset(params: Params) -> str:
    """The dataset preprocess reads (make_run finds its data/raw folder with this)."""
    return "reuters"


# --- pure functions ----------------------------------------------------------


def keras_order(n: int, seed: int) -> np.ndarray:
    """The permutation reuters.load_data applies to newswires and labels alike: RandomState(seed) shuffling arange(n)."""
    order = np.arange(n)
    np.random.RandomState(seed).shuffle(order)
    return order


def split_index(n: int, test_split: float) -> int:
    """How many of the shuffled newswires are training data: int(n * (1 - test_split)), as the loader cuts."""
    return int(n * (1 - test_split))


def validation_index(n: int, validation_split: float) -> int:
    """Training rows kept for fitting: floor(n * (1 - validation_split)); Keras validates on the rest, the last ones."""
    return int(math.floor(n * (1.0 - validation_split)))


def bag_of_words(sequences: Sequence[Sequence[int]], num_words: int) -> np.ndarray:
    """(N, num_words) bool: row i marks every word id of newswire i as the loader encodes it.

    A raw id w becomes w + INDEX_FROM, or OOV_CHAR when that is num_words or
    more; START_CHAR opens every newswire (Tokenizer's "binary" matrix of
    reuters.load_data(num_words=...)'s sequences). All words are handled at
    once: no Python loop runs per word.
    """
    lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
    raw = np.fromiter(itertools.chain.from_iterable(sequences), dtype=np.int64, count=int(lengths.sum()))
    words = raw + INDEX_FROM
    words = np.where((words >= SKIP_TOP) & (words < num_words), words, OOV_CHAR)
    bits = np.zeros((len(lengths), num_words), dtype=bool)
    bits[np.repeat(np.arange(len(lengths)), lengths), words] = True
    bits[:, START_CHAR] = True
    return bits


def score(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Every number of metrics/<run>.json from the (N, classes) test probabilities and (N,) topics.

    test.loss: categorical cross-entropy (Keras' clipping); test.accuracy;
    test.macro_f1: the unweighted mean F1 over the topics present in the
    labels or the predictions (a topic never predicted scores 0).
    """
    from sklearn.metrics import f1_score

    labels = np.asarray(labels).reshape(-1)
    predicted = np.asarray(probabilities).argmax(axis=1)
    return {
        "test": {
            "loss": cross_entropy(probabilities, labels),
            "accuracy": accuracy(probabilities, labels),
            "macro_f1": float(f1_score(labels, predicted, average="macro", zero_division=0)),
        },
        "test_samples": int(len(labels)),
    }


def summary_rows(metrics: Mapping[str, Mapping[str, Any]]) -> dict[str, list]:
    """One row per variant: {variant, test_loss, test_accuracy, test_macro_f1}, from each metrics/<run>.json."""
    return {
        "variant": list(metrics),
        **{f"test_{name}": [float(m["test"][name]) for m in metrics.values()] for name in ("loss", "accuracy", "macro_f1")},
    }


def build_args(p: Train, inputs: int, classes: int) -> dict[str, Any]:
    """The keyword arguments of build_model for one network: its train params and the data's shape."""
    return {"inputs": inputs, "classes": classes, **p.model_dump(include=set(NETWORK_KEYS))}


def build_model(
    inputs: int,
    classes: int,
    layers: int,
    units: int,
    activation: str,
    dropout: str,
    dropout_rate: float,
    initializer: str,
    optimizer: str,
    learning_rate: float,
) -> Any:
    """layers x [Dense(units) -> activation -> dropout] -> Dense(classes, softmax), compiled (the original's create_network)."""
    import keras

    drop = {"dropout": keras.layers.Dropout, "alpha_dropout": keras.layers.AlphaDropout}[dropout]
    hidden = []
    for _ in range(layers):
        hidden += [
            keras.layers.Dense(units, kernel_initializer=initializer),
            keras.layers.Activation(activation),
            drop(dropout_rate),
        ]
    model = keras.Sequential(
        [keras.Input((inputs,)), *hidden, keras.layers.Dense(classes), keras.layers.Activation("softmax")]
    )  # the output layer keeps Dense's default initializer (glorot_uniform), as the original's
    model.compile(
        optimizer=getattr(keras.optimizers, OPTIMIZERS[optimizer])(learning_rate=learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def _unpack_fn(num_words: int, classes: int | None = None) -> Any:
    """map_fn for training.batches: packed bits -> (B, num_words) float32 0/1 (and topics -> one-hot float32)."""
    import tensorflow as tf

    shifts = tf.constant([7, 6, 5, 4, 3, 2, 1, 0], tf.uint8)  # np.packbits' order: the first word is the high bit

    def unpack(packed):
        bits = tf.bitwise.bitwise_and(tf.bitwise.right_shift(packed[:, :, None], shifts), 1)
        return tf.cast(tf.reshape(bits, (tf.shape(packed)[0], -1))[:, :num_words], tf.float32)

    if classes is None:
        return unpack
    return lambda packed, topics: (unpack(packed), tf.one_hot(tf.cast(topics, tf.int32), classes))


# --- steps -------------------------------------------------------------------


def preprocess(run: Run) -> None:
    """The loader's shuffle and split, then each newswire's bag-of-words as packed bits, topics as uint8."""
    from stages.datasets.reuters import load_raw

    p = run.params
    arrays, _ = load_raw(run.raw)
    x, y = arrays["x"], np.asarray(arrays["y"]).reshape(-1)
    if x.ndim != 1 or len(x) != len(y) or len(y) == 0 or not 0 <= y.min() <= y.max() <= 255:
        raise DatasetError(
            f"{run.raw}/reuters.npz: expected 'x', a 1-D array of word-id lists, and 'y', as many topic numbers "
            f"in 0..255; got x of shape {x.shape} and y of shape {y.shape}. Delete the folder and download it again."
        )
    order = keras_order(len(x), p.shuffle_seed)
    x, y = x[order], y[order]
    cut = split_index(len(x), p.test_split)
    if not 0 < cut < len(x):
        raise ParamsError(
            f"'{run.param_key('test_split')}' = {p.test_split} leaves {cut} training and {len(x) - cut} test newswires "
            f"out of {len(x)}; both must be at least one."
        )
    bits = np.packbits(bag_of_words(x, p.num_words), axis=1)
    classes = int(y.max()) + 1  # the original: np.max(y_train) + 1 (46 on the real data either way)
    with atomic_dir(run.paths.processed) as out:
        save_arrays(
            out,
            {
                "x_train": bits[:cut],
                "y_train": y[:cut].astype(np.uint8),
                "x_test": bits[cut:],
                "y_test": y[cut:].astype(np.uint8),
            },
        )
        write_json(
            out / META,
            {
                "num_words": p.num_words,
                "classes": classes,
                "train": cut,
                "test": len(x) - cut,
                "x": "(N, ceil(num_words / 8)) uint8: np.packbits(bag-of-words, axis=1), first word in the high bit",
                "y": "(N,) uint8 topics",
            },
        )
    print(f"{cut} training and {len(x) - cut} test newswires, {classes} topics, {p.num_words} words")


def train(run: Run) -> None:
    """Fit one network on the first (1 - validation_split) of the training set, validating on the rest."""
    from stages import training

    with training.train_guard(run):
        p, folder = run.params, run.paths.processed
        meta = read_json(folder / META)
        x, y = load_array(folder, "x_train"), load_array(folder, "y_train")
        fit_rows = validation_index(len(x), p.validation_split)
        if fit_rows < 1:
            raise ParamsError(
                f"'{run.param_key('validation_split')}' = {p.validation_split} leaves no training row of {len(x)}; use less."
            )
        unpack = _unpack_fn(meta["num_words"], meta["classes"])
        validation = None
        if fit_rows < len(x):
            validation, steps = training.batches(
                [x[fit_rows:], y[fit_rows:]], p.batch_size, seed=run.seed, shuffle=False, map_fn=unpack
            )
        training.seed_everything(run.seed)
        build = build_args(p, meta["num_words"], meta["classes"])
        model = build_model(**build)
        training.fit(
            model,
            lambda first: training.batches(
                [x[:fit_rows], y[:fit_rows]], p.batch_size, seed=run.seed, first_epoch=first, epochs=p.epochs, map_fn=unpack
            ),
            run=run,
            epochs=p.epochs,
            validation_data=validation,
        )
        training.save_trained(model, run, build, {"parameters": model.count_params(), "fit_rows": fit_rows})


def evaluate(run: Run) -> None:
    """Test-set probabilities of the trained network, and its test loss, accuracy and macro F1."""
    from stages import training

    folder = run.paths.processed
    x, y = load_array(folder, "x_test"), load_array(folder, "y_test")
    num_words = read_json(folder / META)["num_words"]
    training.seed_everything(run.seed)
    model, _ = training.load_trained(run, build_model)
    data, steps = training.batches([x], run.params.batch_size, seed=run.seed, shuffle=False, map_fn=_unpack_fn(num_words))
    probabilities = model.predict(data, steps=steps, verbose=0).astype(np.float32)
    metrics = score(probabilities, y)
    with atomic_dir(run.paths.predictions) as out:
        save_arrays(out, {"probabilities": probabilities})
    write_metrics(run.paths.metrics, metrics)
    test = metrics["test"]
    print(f"test loss {test['loss']:.4f}, accuracy {test['accuracy']:.4f}, macro F1 {test['macro_f1']:.4f}")


def plot(run: Run) -> None:
    """Training and validation loss and accuracy per epoch (history.csv, training.png)."""
    from stages.plotting import HISTORY, epochs_png, history_columns, read_live_metrics

    columns = history_columns(read_live_metrics(run.paths.training))
    with atomic_dir(run.paths.figures) as out:
        write_csv(out / HISTORY, columns)
        epochs_png(out / "training.png", {run.variant: columns}, PANELS, f"{run.paths.key}, per epoch", run.params.dpi)


def compare(c: Comparison) -> None:
    """The original's figure (every network's training and validation loss), every history.csv, test accuracies, table.csv."""
    from stages.plotting import HISTORY, draw_epochs, png, read_history, stack_histories

    histories = {variant: read_history(c.runs[variant].figures / HISTORY) for variant in c.variants}
    table = summary_rows({variant: read_json(c.runs[variant].metrics) for variant in c.variants})
    with atomic_dir(c.out) as out:
        write_csv(out / HISTORY, stack_histories(histories))
        write_csv(out / "table.csv", table)
        with png(out / "losses.png", figsize=(8, 5), dpi=c.params.dpi) as fig:
            ax = fig.subplots()
            draw_epochs(ax, histories, "loss", PANELS["loss"])
            ax.set_title(f"Training and validation loss per epoch ({c.example})")
        with png(out / "accuracy.png", figsize=(6, 4), dpi=c.params.dpi) as fig:
            ax = fig.subplots()
            bars = ax.bar(table["variant"], table["test_accuracy"], color=[f"C{i}" for i in range(len(c.variants))])
            ax.bar_label(bars, fmt="%.3f")
            ax.set(title=f"Test accuracy ({c.example})", xlabel="network", ylabel="accuracy", ylim=(0, 1))
