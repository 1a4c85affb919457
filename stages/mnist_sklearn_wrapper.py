"""Grid search over a Keras CNN with scikit-learn (Keras' mnist_sklearn_wrapper.py).

The original wraps a model-building function in Keras 2's KerasClassifier and
searches it with scikit-learn's GridSearchCV on MNIST (x / 255, (n, 28, 28, 1),
one-hot labels): Conv2D -> relu -> Conv2D -> relu -> MaxPool -> Dropout(0.25)
-> Flatten -> [Dense(size) -> relu] per size -> Dropout(0.5) -> Dense(10,
softmax), adadelta, categorical cross-entropy, batch 32, over
dense_layer_sizes [[32], [64], [32, 32], [64, 64]] x epochs [3, 6] with
filters 8, kernel_size 3, pool_size 2 and scoring neg_log_loss (8 candidates,
scikit-learn's default 3-fold CV of the time). It prints the best parameters,
then the best model's test loss and accuracy. Headline: the best is epochs 6,
dense_layer_sizes [64, 64].

Differences from the original:
* The wrapper is Keras 3's own `keras.wrappers.SKLearnClassifier` (no extra
  dependency such as scikeras). It has no `predict_proba`, which the
  neg_log_loss scorer needs, and its `__sklearn_clone__` drops `fit_kwargs`;
  `KerasCNNClassifier` adds the first (softmax outputs) and fixes the second.
  It checks its inputs the scikit-learn way (2-D X), so images go in flattened,
  (n, 784) float32 / 255, and the model opens with a Reshape to (28, 28, 1);
  the layers and parameter count are otherwise the original's.
* Keras 2's 'adadelta' had learning_rate 1.0; Keras 3's Adadelta defaults to
  0.001, so `train.learning_rate` is explicit and set to 1.0 as the original.
* `preprocess.dataset` picks mnist (the original) or fashion_mnist, and
  `preprocess.train_samples` / `test_samples` take the first n images of each
  split (0 = all). The default trains on a subset so the whole grid runs in
  minutes on two CPU cores (see params.yaml); the full grid on all 60,000
  images is the original's setting.
* `train.cv` and `train.n_jobs` are parameters (cv 3 as the original's
  scikit-learn default); every candidate is built after re-seeding, so its
  initial weights and batch order depend only on the seed, not on the order
  or process the search runs it in.
* evaluate adds what the original only printed: metrics JSON with the best
  parameters, best CV score, test loss and accuracy, and the test set's class
  probabilities; it also copies the search's per-candidate summary next to
  them so the plot stage draws every candidate's score and fit time.
* Weights are saved as .weights.h5 with the build settings in model.json.
"""

from __future__ import annotations

import copy
import functools
import importlib
import itertools
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationInfo, model_validator

from stages.core.errors import InputError, ParamsError
from stages.core.files import atomic_dir, load_array, read_json, save_arrays, write_csv, write_json
from stages.core.metrics import write_metrics
from stages.core.params import ExampleParams, Section

IMAGE_SHAPE = (28, 28, 1)
N_CLASSES = 10
BUILD_KEYS = ("dense_layer_sizes", "filters", "kernel_size", "pool_size")


class Preprocess(Section):
    dataset: Literal["mnist", "fashion_mnist"] = Field(
        description="a module of stages/datasets/ with 28x28 grey images of 10 classes"
    )
    train_samples: int = Field(ge=0, description="first n training images; 0 = all 60000")
    test_samples: int = Field(ge=0, description="first n test images; 0 = all 10000")


class Grid(Section):
    """The search space: every combination is one candidate."""

    dense_layer_sizes: list[list[int]] = Field(min_length=1, description="each a list of Dense widths, e.g. [64, 64]")
    epochs: list[int] = Field(min_length=1)
    filters: list[int] = Field(min_length=1, description="Conv2D filters")
    kernel_size: list[int] = Field(min_length=1, description="Conv2D kernel side")
    pool_size: list[int] = Field(min_length=1, description="MaxPooling2D side")


class Train(Section):
    grid: Grid
    batch_size: int = Field(ge=1)
    learning_rate: float = Field(gt=0, description="Adadelta; Keras 2's 'adadelta' used 1.0")
    cv: int = Field(ge=2, description="stratified folds")
    scoring: Literal["neg_log_loss", "accuracy"] = Field(description="scikit-learn scorer that ranks candidates")
    n_jobs: int = Field(ge=1, description="candidates fitted in parallel processes")


class Evaluate(Section):
    batch_size: int = Field(ge=1, description="prediction batch size")


class Plot(Section):
    dpi: int = Field(ge=50, le=600, description="PNG resolution")


class Params(ExampleParams):
    preprocess: Preprocess
    train: Train
    evaluate: Evaluate
    plot: Plot

    @model_validator(mode="after")
    def _check_grid(self, info: ValidationInfo) -> Params:
        """The grid must build a model for every candidate: checked at every step, before any work."""
        key = self.key_namer(info)
        check_grid(self.train.grid, key=lambda name: key("train", "grid", name))
        return self


def dataset(params) -> str:
    """The raw dataset preprocess reads (data/raw/<dataset>)."""
    return params.preprocess.dataset


# --- pure functions ----------------------------------------------------------


def take_first(x: np.ndarray, y: np.ndarray, n: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """The first n rows of (x, y); n = 0 keeps all. More rows than exist is a ParamsError."""
    if n > len(x):
        raise ParamsError(
            f"'mnist_sklearn_wrapper.preprocess.{what}' = {n} is more than the {len(x)} images there are; use at most {len(x)} (0 = all)."
        )
    return (x, y) if n == 0 else (x[:n], y[:n])


def as_images(x: np.ndarray) -> np.ndarray:
    """(n, 28, 28) or (n, 28, 28, 1) uint8 -> (n, 28, 28, 1) uint8, the stored layout."""
    return np.ascontiguousarray(x.reshape(len(x), *IMAGE_SHAPE).astype(np.uint8, copy=False))


def scale(images: np.ndarray) -> np.ndarray:
    """(n, 28, 28, 1) uint8 -> (n, 784) float32 in [0, 1]: 2-D, as scikit-learn estimators take X."""
    return (images.reshape(len(images), -1).astype(np.float32)) / np.float32(255.0)


def conv_output_side(side: int, kernel_size: int, pool_size: int) -> int:
    """Spatial side after two 'valid' convolutions and one pooling."""
    return (side - 2 * (kernel_size - 1)) // pool_size


def _grid_key(name: str) -> str:
    return f"mnist_sklearn_wrapper.train.grid.{name}"


def check_grid(grid: Grid, side: int = IMAGE_SHAPE[0], key: Callable[[str], str] = _grid_key) -> None:
    """Reject values no model can be built from, naming the key, before any training.

    Params runs it whenever params.yaml is validated, with `key` naming the
    variant's key where a variant sets the value.
    """
    for name in ("epochs", "filters", "kernel_size", "pool_size"):
        values = getattr(grid, name)
        if any(v < 1 for v in values):
            raise ParamsError(f"'{key(name)}' = {values} must hold positive integers.")
        if len(set(values)) != len(values):
            raise ParamsError(f"'{key(name)}' = {values} repeats a value; each candidate would be fitted twice.")
    for sizes in grid.dense_layer_sizes:
        if not sizes or any(s < 1 for s in sizes):
            raise ParamsError(
                f"'{key('dense_layer_sizes')}' holds {sizes}; each entry must be a non-empty list of positive widths, e.g. [64, 64]."
            )
    if len({tuple(s) for s in grid.dense_layer_sizes}) != len(grid.dense_layer_sizes):
        raise ParamsError(f"'{key('dense_layer_sizes')}' = {grid.dense_layer_sizes} repeats an entry.")
    for k, p in itertools.product(grid.kernel_size, grid.pool_size):
        if conv_output_side(side, k, p) < 1:
            raise ParamsError(
                f"'{key('kernel_size')}' {k} with '{key('pool_size')}' {p} leaves no pixels of a {side}x{side} "
                f"image (two {k}x{k} convolutions, then {p}x{p} pooling); use smaller values."
            )


def candidates(grid: Grid) -> list[dict[str, Any]]:
    """Every combination of the grid, as flat dicts (build keys + epochs), in a fixed order."""
    keys = ("dense_layer_sizes", "epochs", "filters", "kernel_size", "pool_size")
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(getattr(grid, k) for k in keys))]


def param_grid(grid: Grid, batch_size: int) -> list[dict[str, list[dict[str, Any]]]]:
    """GridSearchCV's grid for SKLearnClassifier, one entry per candidate.

    The wrapper takes builder arguments as `model_kwargs` and fit arguments as
    `fit_kwargs`, so each candidate sets both dicts; a list of one-point grids
    keeps the candidates in the order of `candidates`.
    """
    out = []
    for c in candidates(grid):
        build = {k: (list(c[k]) if k == "dense_layer_sizes" else c[k]) for k in BUILD_KEYS}
        out.append({"model_kwargs": [build], "fit_kwargs": [{"epochs": c["epochs"], "batch_size": batch_size, "verbose": 0}]})
    return out


def flatten_candidate(params: dict[str, Any]) -> dict[str, Any]:
    """GridSearchCV's {'model_kwargs': ..., 'fit_kwargs': ...} -> the original's flat names."""
    flat = {k: params["model_kwargs"][k] for k in BUILD_KEYS}
    flat["epochs"] = params["fit_kwargs"]["epochs"]
    return flat


def candidate_label(c: dict[str, Any], varying: set[str] | None = None) -> str:
    """A short bar label, e.g. 'dense [64, 64], epochs 6'; keys in `varying` only (all if None)."""
    names = {"dense_layer_sizes": "dense", "epochs": "epochs", "filters": "filters", "kernel_size": "kernel", "pool_size": "pool"}
    parts = [f"{short} {c[key]}" for key, short in names.items() if varying is None or key in varying]
    return ", ".join(parts) if parts else "the only candidate"


def varying_keys(cands: list[dict[str, Any]]) -> set[str]:
    """Grid keys that take more than one value."""
    return {k for k in cands[0] if len({str(c[k]) for c in cands}) > 1}


def build_model(
    dense_layer_sizes: list[int],
    filters: int,
    kernel_size: int,
    pool_size: int,
    learning_rate: float,
    n_classes: int = N_CLASSES,
    image_shape: tuple[int, int, int] = IMAGE_SHAPE,
):
    """The original's CNN, compiled; input (batch, prod(image_shape)) float32, reshaped inside."""
    import keras

    layers = keras.layers
    stack = [
        keras.Input(shape=(int(np.prod(image_shape)),)),
        layers.Reshape(image_shape),
        layers.Conv2D(filters, kernel_size, padding="valid"),
        layers.Activation("relu"),
        layers.Conv2D(filters, kernel_size),
        layers.Activation("relu"),
        layers.MaxPooling2D(pool_size=pool_size),
        layers.Dropout(0.25),
        layers.Flatten(),
    ]
    for size in dense_layer_sizes:
        stack += [layers.Dense(size), layers.Activation("relu")]
    stack += [layers.Dropout(0.5), layers.Dense(n_classes), layers.Activation("softmax")]
    model = keras.Sequential(stack)
    model.compile(
        loss="categorical_crossentropy",
        optimizer=keras.optimizers.Adadelta(learning_rate=learning_rate),
        metrics=["accuracy"],
    )
    return model


def make_model(X, y, *, seed: int, learning_rate: float, **build):
    """SKLearnClassifier's builder: re-seed, then build for X's width and y's (one-hot) classes.

    Re-seeding here makes each fit's initial weights and shuffling depend only
    on the seed, whatever order or process GridSearchCV runs candidates in.
    """
    from stages.training import seed_everything

    seed_everything(seed)
    return build_model(n_classes=y.shape[1], learning_rate=learning_rate, **build)


@functools.cache
def _classifier_class():
    from keras.wrappers import SKLearnClassifier

    class KerasCNNClassifier(SKLearnClassifier):
        """SKLearnClassifier + predict_proba (for neg_log_loss), quiet predictions, a clone that keeps fit_kwargs."""

        def decision_function(self, X):
            """(n, classes) softmax outputs, without Keras' per-call progress bar."""
            from sklearn.utils.validation import check_is_fitted, validate_data

            check_is_fitted(self)
            return self.model_.predict(validate_data(self, X, reset=False), verbose=0)

        def predict_proba(self, X):
            """The softmax outputs; Keras 3's wrapper only has decision_function."""
            return self.decision_function(X)

        def predict(self, X):
            return self.classes_[np.argmax(self.decision_function(X), axis=1)]

        def __sklearn_clone__(self):
            # Keras 3.15's clone passes model, warm_start and model_kwargs but drops fit_kwargs.
            return type(self)(
                model=self.model,
                warm_start=self.warm_start,
                model_kwargs=copy.deepcopy(self.model_kwargs),
                fit_kwargs=copy.deepcopy(self.fit_kwargs),
            )

    KerasCNNClassifier.__module__ = __name__
    KerasCNNClassifier.__qualname__ = "KerasCNNClassifier"
    return KerasCNNClassifier


def __getattr__(name: str):
    # The class is made on first use so that importing this module does not import
    # Keras; this lets pickle (GridSearchCV with n_jobs > 1) find it by name.
    if name == "KerasCNNClassifier":
        return _classifier_class()
    raise AttributeError(name)


def make_classifier(seed: int, learning_rate: float):
    """An unfitted KerasCNNClassifier whose builder carries the fixed settings."""
    return _classifier_class()(model=functools.partial(make_model, seed=seed, learning_rate=learning_rate))


def grid_search(
    x: np.ndarray,
    y: np.ndarray,
    grid: Grid,
    *,
    batch_size: int,
    learning_rate: float,
    cv: int,
    scoring: str,
    n_jobs: int,
    seed: int,
    verbose: int = 0,
):
    """Fit GridSearchCV over `grid` on x (n, 784) float32, y (n,) int labels; return the fitted search."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    check_grid(grid)
    search = GridSearchCV(
        make_classifier(seed, learning_rate),
        param_grid=param_grid(grid, batch_size),
        scoring=scoring,
        cv=StratifiedKFold(n_splits=cv),  # no shuffling: folds depend on the data only
        n_jobs=n_jobs,
        refit=True,
        verbose=verbose,
        error_score="raise",
    )
    search.fit(x, y)
    return search


def summarize(cv_results: dict[str, Any], n_splits: int) -> list[dict[str, Any]]:
    """One row per candidate: flat params, label, rank, mean/std score and fit time, per-fold scores."""
    cands = [flatten_candidate(p) for p in cv_results["params"]]
    varying = varying_keys(cands)
    rows = []
    for i, c in enumerate(cands):
        row = {
            "candidate": candidate_label(c, varying or None),
            **c,
            "rank": int(cv_results["rank_test_score"][i]),
            "mean_score": float(cv_results["mean_test_score"][i]),
            "std_score": float(cv_results["std_test_score"][i]),
            "mean_fit_time": float(cv_results["mean_fit_time"][i]),
            "std_fit_time": float(cv_results["std_fit_time"][i]),
        }
        for k in range(n_splits):
            row[f"split{k}_score"] = float(cv_results[f"split{k}_test_score"][i])
        rows.append(row)
    return rows


def columns(rows: list[dict[str, Any]], keys: list[str]) -> dict[str, list]:
    """Rows -> CSV columns; list values (dense sizes) become '64-64' strings."""
    return {k: ["-".join(map(str, r[k])) if isinstance(r[k], list) else r[k] for r in rows] for k in keys}


def test_metrics(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Categorical cross-entropy (clipped as Keras does) and accuracy of (n, 10) probabilities."""
    p = np.clip(probabilities.astype(np.float64), 1e-7, 1 - 1e-7)
    p = p / p.sum(axis=1, keepdims=True)
    loss = -np.mean(np.log(p[np.arange(len(labels)), labels]))
    return {"loss": float(loss), "accuracy": float(np.mean(np.argmax(probabilities, axis=1) == labels))}


# --- steps -------------------------------------------------------------------


def preprocess(run) -> None:
    p = run.params.preprocess
    (x_train, y_train), (x_test, y_test) = importlib.import_module(f"stages.datasets.{p.dataset}").load(run.raw)
    x_train, y_train = take_first(x_train, y_train, p.train_samples, "train_samples")
    x_test, y_test = take_first(x_test, y_test, p.test_samples, "test_samples")
    with atomic_dir(run.paths.processed) as out:
        save_arrays(
            out,
            {
                "x_train": as_images(x_train),
                "y_train": y_train.astype(np.uint8),
                "x_test": as_images(x_test),
                "y_test": y_test.astype(np.uint8),
            },
        )
        write_json(
            out / "meta.json",
            {
                "dataset": p.dataset,
                "train": len(x_train),
                "test": len(x_test),
                "x": "(n, 28, 28, 1) uint8",
                "y": "(n,) uint8 class 0..9",
            },
        )
    print(f"{p.dataset}: train {x_train.shape[0]}, test {x_test.shape[0]} images")


def train(run) -> None:
    from stages import training

    with training.train_guard(run):  # one search per run at a time, none outliving its dvc
        p = run.params.train
        x, y = scale(load_array(run.paths.processed, "x_train")), load_array(run.paths.processed, "y_train").astype(np.int64)
        counts = np.bincount(y, minlength=N_CLASSES)
        if counts.min() < p.cv:
            raise InputError(
                f"{run.paths.processed}: the rarest class has {counts.min()} training images, fewer than "
                f"'mnist_sklearn_wrapper.train.cv' = {p.cv} folds; raise preprocess.train_samples or lower cv."
            )
        n = len(candidates(p.grid))
        print(f"GridSearchCV: {n} candidates x {p.cv} folds on {len(x)} images, scoring {p.scoring}", flush=True)
        started = time.perf_counter()
        search = grid_search(
            x,
            y,
            p.grid,
            batch_size=p.batch_size,
            learning_rate=p.learning_rate,
            cv=p.cv,
            scoring=p.scoring,
            n_jobs=p.n_jobs,
            seed=run.seed,
            verbose=2,
        )
        seconds = time.perf_counter() - started
        rows = summarize(search.cv_results_, p.cv)
        best = flatten_candidate(search.best_params_)
        model = search.best_estimator_.model_
        with atomic_dir(run.paths.model) as out:
            training.save_model_weights(model, out)
            write_json(
                out / "model.json",
                {**{k: best[k] for k in BUILD_KEYS}, "learning_rate": p.learning_rate, "parameters": model.count_params()},
            )
            write_json(out / "best_params.json", {"params": best, "cv_score": float(search.best_score_), "scoring": p.scoring})
            write_json(
                out / "cv_results.json",
                {
                    "scoring": p.scoring,
                    "cv": p.cv,
                    "search_seconds": seconds,
                    "refit_seconds": float(search.refit_time_),
                    "candidates": rows,
                },
            )
        keys = [
            "candidate",
            "rank",
            "mean_score",
            "std_score",
            "mean_fit_time",
            "std_fit_time",
            *[f"split{k}_score" for k in range(p.cv)],
        ]
        with atomic_dir(run.paths.training) as out:
            write_csv(out / "candidates.csv", columns(rows, keys))
        print(f"best {best}: {p.scoring} {search.best_score_:.4f} (search {seconds:.0f} s, refit {search.refit_time_:.0f} s)")


def evaluate(run) -> None:
    from stages.training import load_model_weights, seed_everything

    x_test = scale(load_array(run.paths.processed, "x_test"))
    y_test = load_array(run.paths.processed, "y_test").astype(np.int64)
    config = read_json(run.paths.model / "model.json")
    best = read_json(run.paths.model / "best_params.json")
    results = read_json(run.paths.model / "cv_results.json")
    seed_everything(run.seed)
    model = build_model(
        config["dense_layer_sizes"], config["filters"], config["kernel_size"], config["pool_size"], config["learning_rate"]
    )
    load_model_weights(model, run.paths.model / "model.weights.h5")
    probabilities = model.predict(x_test, batch_size=run.params.evaluate.batch_size, verbose=0).astype(np.float32)
    scores = test_metrics(probabilities, y_test)
    meta = read_json(run.paths.processed / "meta.json")
    metrics = {
        "best_params": best["params"],
        "best_cv_score": best["cv_score"],
        "scoring": best["scoring"],
        "test_loss": scores["loss"],
        "test_accuracy": scores["accuracy"],
        "candidates": len(results["candidates"]),
        "cv": results["cv"],
        "dataset": meta["dataset"],
        "train_samples": meta["train"],
        "test_samples": meta["test"],
    }
    with atomic_dir(run.paths.predictions) as out:
        save_arrays(out, {"probabilities": probabilities, "predicted": np.argmax(probabilities, axis=1).astype(np.uint8)})
        write_json(out / "candidates.json", results)  # the search summary, for the plot stage
    write_metrics(run.paths.metrics, metrics)
    print(f"best {best['params']}: test loss {scores['loss']:.4f}, test accuracy {scores['accuracy']:.4f}")


def plot(run) -> None:
    from stages.plotting import png

    results = read_json(run.paths.predictions / "candidates.json")
    rows = sorted(results["candidates"], key=lambda r: r["rank"])
    with atomic_dir(run.paths.figures) as out:
        write_csv(
            out / "candidates.csv",
            columns(rows, ["candidate", "rank", "mean_score", "std_score", "mean_fit_time", "std_fit_time"]),
        )
        labels = [r["candidate"] for r in rows][::-1]  # best at the top
        height = 1.5 + 0.45 * len(rows)
        with png(out / "candidates.png", figsize=(11, height), dpi=run.params.plot.dpi) as fig:
            score_ax, time_ax = fig.subplots(1, 2, sharey=True)
            ys = np.arange(len(rows))
            score_ax.barh(
                ys, [r["mean_score"] for r in rows][::-1], xerr=[r["std_score"] for r in rows][::-1], color="tab:blue", capsize=3
            )
            score_ax.set_yticks(ys, labels)
            score_ax.set_xlabel(f"mean CV {results['scoring']} (± std over {results['cv']} folds)")
            score_ax.set_title(f"GridSearchCV candidates ({run.paths.key})")
            time_ax.barh(
                ys,
                [r["mean_fit_time"] for r in rows][::-1],
                xerr=[r["std_fit_time"] for r in rows][::-1],
                color="tab:orange",
                capsize=3,
            )
            time_ax.set_xlabel("mean fit time per fold (s)")
