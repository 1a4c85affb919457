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
  dependency such as scikeras), through the shared `KerasClassifier`, which
  adds the `predict_proba` the neg_log_loss scorer needs and a clone that keeps
  `fit_kwargs`. It checks its inputs the scikit-learn way (2-D X), so images
  go in flattened, (n, 784) float32 / 255, and the model opens with a Reshape
  to (28, 28, 1); the layers and parameter count are otherwise the original's.
* Keras 2's 'adadelta' had learning_rate 1.0; Keras 3's Adadelta defaults to
  0.001, so `train.learning_rate` is explicit and set to 1.0 as the original.
* `preprocess.dataset` picks mnist (the original) or fashion_mnist, and
  `preprocess.train_samples` / `test_samples` take the first n images of each
  split (0 = all). The default trains on a subset so the whole grid runs in
  minutes on two CPU cores (see params.yaml); the full grid on all 60,000
  images is the original's setting.
* `train.cv` is a parameter (3, the original's default); `train.parallel` says
  where the fits run (here, local processes, a Dask cluster: core/parallel.py).
  Each candidate is built after re-seeding: its fits depend only on the seed.
* train records every candidate (grid values, rank, per-fold scores, fit
  times) in plots/<run>/training/candidates.csv, which plot draws; the best
  parameters and CV score go with the model (models/<run>/model.json).
* evaluate adds what the original only printed: metrics JSON with the best
  parameters, best CV score, test loss (the shared clipped cross-entropy) and
  accuracy, and the test set's class probabilities.
"""

from __future__ import annotations

import functools
import importlib
import itertools
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationInfo, model_validator

from stages.core.errors import InputError, ParamsError
from stages.core.files import atomic_dir, load_array, read_json, save_arrays, write_csv, write_json
from stages.core.layout import META
from stages.core.metrics import accuracy, cross_entropy, write_metrics
from stages.core.parallel import Parallel, keras_seeds, placement, with_threads
from stages.core.params import ExampleParams, Section
from stages.core.run import Run

IMAGE_SHAPE = (28, 28, 1)
N_CLASSES = 10
BUILD_KEYS = ("dense_layer_sizes", "filters", "kernel_size", "pool_size")
GRID_KEYS = ("dense_layer_sizes", "epochs", "filters", "kernel_size", "pool_size")
CANDIDATES = "candidates.csv"  # plots/<run>/training/: the search's table, written by train, drawn by plot


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
    parallel: Parallel


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


def dataset(params: Params) -> str:
    """The raw dataset preprocess reads (data/raw/<dataset>)."""
    return params.preprocess.dataset


# --- pure functions ----------------------------------------------------------


def take_first(x: np.ndarray, y: np.ndarray, n: int, key: str) -> tuple[np.ndarray, np.ndarray]:
    """The first n rows of (x, y); n = 0 keeps all. More rows than exist is a ParamsError naming `key`."""
    if n > len(x):
        raise ParamsError(f"'{key}' = {n} is more than the {len(x)} images there are; use at most {len(x)} (0 = all).")
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


def check_grid(
    grid: Grid, side: int = IMAGE_SHAPE[0], key: Callable[[str], str] = "mnist_sklearn_wrapper.train.grid.{}".format
) -> None:
    """Reject values no model can be built from, naming the key (the variant's where it sets it), before any training."""
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
    return [dict(zip(GRID_KEYS, values, strict=True)) for values in itertools.product(*(getattr(grid, k) for k in GRID_KEYS))]


def param_grid(grid: Grid, batch_size: int) -> list[dict[str, list[dict[str, Any]]]]:
    """GridSearchCV's grid for SKLearnClassifier: a list of one-point grids, in the order of `candidates`.

    The wrapper takes builder arguments as `model_kwargs` and fit arguments as
    `fit_kwargs`, so each candidate sets both dicts.
    """
    out = []
    for c in candidates(grid):
        build = {k: (list(c[k]) if k == "dense_layer_sizes" else c[k]) for k in BUILD_KEYS}
        out.append({"model_kwargs": [build], "fit_kwargs": [{"epochs": c["epochs"], "batch_size": batch_size, "verbose": 0}]})
    return out


def flatten_candidate(params: Mapping[str, Any]) -> dict[str, Any]:
    """GridSearchCV's {'model_kwargs': ..., 'fit_kwargs': ...} -> the original's flat names."""
    flat = {k: params["model_kwargs"][k] for k in BUILD_KEYS}
    flat["epochs"] = params["fit_kwargs"]["epochs"]
    return flat


def candidate_label(c: Mapping[str, Any], varying: set[str] | None = None) -> str:
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
    seed: int | None = None,
) -> Any:
    """The original's CNN, compiled; input (batch, prod(image_shape)) float32, reshaped inside; seeds: keras_seeds."""
    import keras

    layers, seeds = keras.layers, keras_seeds(seed)
    glorot = keras.initializers.GlorotUniform  # Keras' default, seeded here
    stack = [
        keras.Input(shape=(int(np.prod(image_shape)),)),
        layers.Reshape(image_shape),
        layers.Conv2D(filters, kernel_size, padding="valid", kernel_initializer=glorot(seeds())),
        layers.Activation("relu"),
        layers.Conv2D(filters, kernel_size, kernel_initializer=glorot(seeds())),
        layers.Activation("relu"),
        layers.MaxPooling2D(pool_size=pool_size),
        layers.Dropout(0.25, seed=seeds()),
        layers.Flatten(),
    ]
    for size in dense_layer_sizes:
        stack += [layers.Dense(size, kernel_initializer=glorot(seeds())), layers.Activation("relu")]
    stack += [layers.Dropout(0.5, seed=seeds()), layers.Dense(n_classes, kernel_initializer=glorot(seeds()))]
    model = keras.Sequential([*stack, layers.Activation("softmax")])
    model.compile(
        loss="categorical_crossentropy",
        optimizer=keras.optimizers.Adadelta(learning_rate=learning_rate),
        metrics=["accuracy"],
    )
    return model


def make_model(X: np.ndarray, y: np.ndarray, *, seed: int, learning_rate: float, **build: Any) -> Any:
    """The wrapper's builder: re-seed, then build with explicit seeds (a fit depends only on the seed, not where it runs)."""
    from stages.training import seed_everything

    seed_everything(seed)
    return build_model(n_classes=y.shape[1], learning_rate=learning_rate, seed=seed, **build)


def grid_search(x: np.ndarray, y: np.ndarray, p: Train, *, seed: int, verbose: int = 0, key: Callable[[str], str] = str) -> Any:
    """GridSearchCV over the grid on x (n, 784) float32, y (n,) int labels, fitted where p.parallel says (key names its keys)."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    from stages.training import keras_classifier

    check_grid(p.grid)
    builder = functools.partial(make_model, seed=seed, learning_rate=p.learning_rate)
    with placement(p.parallel, key, verbose=bool(verbose)) as where:
        search = GridSearchCV(
            keras_classifier(with_threads(builder, where.threads)),
            param_grid=param_grid(p.grid, p.batch_size),
            scoring=p.scoring,
            cv=StratifiedKFold(n_splits=p.cv),  # no shuffling: folds depend on the data only
            n_jobs=None,  # joblib's, as placement set it; the refit (default) runs here, with the fits' threads
            verbose=verbose,
            error_score="raise",
        )
        search.fit(x, y)
    return search


def candidate_table(cv_results: Mapping[str, Any], n_splits: int, scoring: str) -> dict[str, list]:
    """GridSearchCV's cv_results_ -> CSV columns, best rank first: label, grid values, rank, scores, fit times.

    Dense sizes become '64-64' strings; the `scoring` column names what the scores are.
    """
    cands = [flatten_candidate(p) for p in cv_results["params"]]
    varying = varying_keys(cands)
    order = np.argsort(np.asarray(cv_results["rank_test_score"]), kind="stable")
    table: dict[str, list] = {"candidate": [candidate_label(cands[i], varying or None) for i in order]}
    for key in GRID_KEYS:
        table[key] = ["-".join(map(str, cands[i][key])) if key == "dense_layer_sizes" else cands[i][key] for i in order]
    table["rank"] = [int(cv_results["rank_test_score"][i]) for i in order]
    table["scoring"] = [scoring] * len(order)
    names = {"mean_score": "mean_test_score", "std_score": "std_test_score", "mean_fit_time": "mean_fit_time"}
    names |= {"std_fit_time": "std_fit_time", **{f"split{k}_score": f"split{k}_test_score" for k in range(n_splits)}}
    for column, source in names.items():
        table[column] = [float(cv_results[source][i]) for i in order]
    return table


def score(probabilities: np.ndarray, labels: np.ndarray, search: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """metrics/<run>.json: the search's result (model.json's info), test loss and accuracy, what data it saw."""
    return {
        "best_params": search["best_params"],
        "best_cv_score": search["best_cv_score"],
        "scoring": search["scoring"],
        "candidates": search["candidates"],
        "cv": search["cv"],
        "test_loss": cross_entropy(probabilities, labels),
        "test_accuracy": accuracy(probabilities, labels),
        "dataset": data["dataset"],
        "train_samples": data["train"],
        "test_samples": data["test"],
    }


# --- steps -------------------------------------------------------------------


def preprocess(run: Run) -> None:
    """Take the first n images of each split; store them as (n, 28, 28, 1) uint8 with uint8 labels."""
    p = run.params
    (x_train, y_train), (x_test, y_test) = importlib.import_module(f"stages.datasets.{p.dataset}").load(run.raw)
    x_train, y_train = take_first(x_train, y_train, p.train_samples, run.param_key("train_samples"))
    x_test, y_test = take_first(x_test, y_test, p.test_samples, run.param_key("test_samples"))
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
        meta = {"dataset": p.dataset, "train": len(x_train), "test": len(x_test)}
        write_json(out / META, {**meta, "x": "(n, 28, 28, 1) uint8", "y": "(n,) uint8 class 0..9"})
    print(f"{p.dataset}: train {x_train.shape[0]}, test {x_test.shape[0]} images")


def train(run: Run) -> None:
    """Run the grid search; save the refitted best model and the table of every candidate."""
    from stages import training

    with training.train_guard(run):  # one search per run at a time, none outliving its dvc
        p = run.params
        x, y = scale(load_array(run.paths.processed, "x_train")), load_array(run.paths.processed, "y_train").astype(np.int64)
        counts = np.bincount(y, minlength=N_CLASSES)
        if counts.min() < p.cv:
            raise InputError(
                f"{run.paths.processed}: the rarest class has {counts.min()} training images, fewer than "
                f"'{run.param_key('cv')}' = {p.cv} folds; raise preprocess.train_samples or lower cv."
            )
        print(f"GridSearchCV: {len(candidates(p.grid))} candidates x {p.cv} folds on {len(x)} images, scoring {p.scoring}")
        search = grid_search(x, y, p, seed=run.seed, verbose=2, key=lambda name: run.param_key("parallel", name))
        model = search.best_estimator_.model_
        best = flatten_candidate(search.best_params_)
        build = {**search.best_params_["model_kwargs"], "learning_rate": p.learning_rate, "n_classes": model.output_shape[-1]}
        info = {
            "parameters": model.count_params(),
            "best_params": best,
            "best_cv_score": float(search.best_score_),
            "scoring": p.scoring,
            "cv": p.cv,
            "candidates": len(search.cv_results_["params"]),
        }
        training.save_trained(model, run, build, info)
        with atomic_dir(run.paths.training) as out:
            write_csv(out / CANDIDATES, candidate_table(search.cv_results_, p.cv, p.scoring))
        print(f"best {best}: {p.scoring} {search.best_score_:.4f}")  # verbose=2 printed each fit's time


def evaluate(run: Run) -> None:
    """Score the refitted best model on the test set; save its class probabilities."""
    from stages import training

    training.seed_everything(run.seed)
    model, info = training.load_trained(run, build_model)
    x_test = scale(load_array(run.paths.processed, "x_test"))
    y_test = load_array(run.paths.processed, "y_test").astype(np.int64)
    probabilities = model.predict(x_test, batch_size=run.params.batch_size, verbose=0).astype(np.float32)
    metrics = score(probabilities, y_test, info, read_json(run.paths.processed / META))
    with atomic_dir(run.paths.predictions) as out:
        save_arrays(out, {"probabilities": probabilities, "predicted": np.argmax(probabilities, axis=1).astype(np.uint8)})
    write_metrics(run.paths.metrics, metrics)
    print(f"best {info['best_params']}: test loss {metrics['test_loss']:.4f}, test accuracy {metrics['test_accuracy']:.4f}")


def plot(run: Run) -> None:
    """Draw every candidate's mean CV score and mean fit time per fold, best at the top (candidates.png)."""
    import pandas as pd

    from stages.plotting import png

    table = pd.read_csv(run.paths.training / CANDIDATES, dtype={"candidate": str, "dense_layer_sizes": str})
    folds = sum(name.startswith("split") for name in table.columns)
    rows = table.iloc[::-1]  # train wrote them best first; barh draws from the bottom
    ys = np.arange(len(rows))
    with atomic_dir(run.paths.figures) as out:
        with png(out / "candidates.png", figsize=(11, 1.5 + 0.45 * len(rows)), dpi=run.params.dpi) as fig:
            score_ax, time_ax = fig.subplots(1, 2, sharey=True)
            score_ax.barh(ys, rows["mean_score"], xerr=rows["std_score"], color="tab:blue", capsize=3)
            score_ax.set_yticks(ys, list(rows["candidate"]))
            score_ax.set_xlabel(f"mean CV {rows['scoring'].iloc[0]} (± std over {folds} folds)")
            score_ax.set(title=f"GridSearchCV candidates ({run.paths.key})", ylabel="candidate")
            time_ax.barh(ys, rows["mean_fit_time"], xerr=rows["std_fit_time"], color="tab:orange", capsize=3)
            time_ax.set_xlabel("mean fit time per fold (s)")
