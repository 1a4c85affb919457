"""One LSTM on IMDB, run the different ways Keras 3 can run it (Keras' lstm_benchmark.py).

The original trained Embedding(20000, 256) -> Dropout(0.2) -> LSTM(256,
dropout 0.2, recurrent_dropout 0.2) -> Dense(1, sigmoid) with adam, batch 128,
10 epochs, on IMDB (num_words 20,000, reviews padded to 80 words, validated on
the test set), once per LSTM `implementation` mode (0, 1, 2: how the gates'
matrix products are grouped), and drew a 2x2 figure: validation accuracy and
loss per epoch, and the seconds per epoch of each mode. No headline number.

Differences from the original:
* Keras 3 has no implementation modes. The variants are the ways of running the
  same LSTM that exist today (`train.implementation`), one cached run each:
  `standard` (keras.layers.LSTM, jit_compile=False), `unrolled` (unroll=True),
  `cell_loop` (keras.layers.RNN(LSTMCell)), `jit` (the standard layer with
  jit_compile=True: XLA; Keras' "auto" is False on a CPU-only machine) and
  `cudnn` (use_cudnn=True, which needs `recurrent_dropout: 0`; without a GPU it
  is reported as not applicable: train writes a model-less marker and
  evaluate, plot and compare say so). All compute the same function (tested).
* Keras drops jit_compile=True when TensorFlow's op determinism is already on
  (model_supports_jit, checked only when the model is compiled: not every op
  has a deterministic XLA kernel), so every model is compiled first and
  determinism switched on after, before fit traces the train function (under
  it TensorFlow raises for an op with no deterministic kernel). Training
  and evaluating `jit` twice on the same data gave byte-identical metrics,
  curves and weights (2 CPU cores).
* `preprocess.dataset: standin` replaces IMDB by random reviews of the same
  shape (25,000 x 80 ids below 20,000, labels random, seeded), for the
  timings where imdb.npz cannot be had; metrics, table and figure say so.
  They are a dataset of their own: synthesize@imdb_standin makes them from
  params.yaml's `synthetic.imdb_standin` (stages/datasets/imdb_standin.py).
* Sized for two CPU cores: `preprocess.train_samples` and `test_samples` keep
  the first N reviews of each (shuffled) split; validation after each epoch
  and evaluate use the same test subset. See params.yaml for the full cost.
* Seconds per epoch (the first, which compiles, apart; validation included) and
  the train process's peak memory go to plots/<example>/<variant>/training/
  timings.json, never into metrics/, so `dvc metrics diff` shows no noise.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationInfo, model_validator

from stages.core.errors import ParamsError
from stages.core.files import atomic_dir, load_array, read_json, save_arrays, write_csv, write_json
from stages.core.layout import META, MODEL
from stages.core.metrics import accuracy, cross_entropy, write_metrics
from stages.core.params import ExampleParams, Section
from stages.core.run import Comparison, Run
from stages.core.sequences import pad

PANELS = {"loss": "binary cross-entropy (nats, log scale)", "accuracy": "accuracy"}  # training.png: y label per metric
TIMINGS = "timings.json"  # in the run's training folder: wall-clock facts, not metrics
IMPLEMENTATIONS = ("standard", "unrolled", "cell_loop", "jit", "cudnn")


class Preprocess(Section):
    dataset: Literal["imdb", "standin"] = Field(description="IMDB reviews, or random reviews of the same shape")
    num_words: int = Field(ge=4, description="vocabulary: rarer words become the out-of-vocabulary id 2")
    maxlen: int = Field(ge=1, description="reviews padded (front) and truncated (keeping the last words) to this")
    train_samples: int = Field(ge=1, description="the first N training reviews")
    test_samples: int = Field(ge=1, description="the first N test reviews (validation and evaluate)")


class Train(Section):
    implementation: Literal["standard", "unrolled", "cell_loop", "jit", "cudnn"]
    embedding_dim: int = Field(ge=1)
    units: int = Field(ge=1)
    dropout: float = Field(ge=0, lt=1)
    recurrent_dropout: float = Field(ge=0, lt=1)
    learning_rate: float = Field(gt=0, description="adam's (Keras' default 0.001)")
    batch_size: int = Field(ge=1)
    epochs: int = Field(ge=1)


class Evaluate(Section):
    batch_size: int = Field(ge=1, description="reviews per prediction batch")


class Plot(Section):
    dpi: int = Field(ge=20, le=600)


class Params(ExampleParams):
    preprocess: Preprocess
    train: Train
    evaluate: Evaluate
    plot: Plot

    @model_validator(mode="after")
    def _check_across_keys(self, info: ValidationInfo) -> Params:
        """cuDNN has no recurrent dropout: Keras refuses use_cudnn=True with it."""
        key = self.key_namer(info)
        if self.train.implementation == "cudnn" and self.train.recurrent_dropout:
            raise ParamsError(
                f"'{key('train', 'implementation')}' = 'cudnn' needs '{key('train', 'recurrent_dropout')}' = 0 "
                f"(got {self.train.recurrent_dropout}): cuDNN's LSTM has no recurrent dropout."
            )
        return self


def dataset(params: Params) -> str:
    """data/raw/imdb for the real reviews; data/raw/imdb_standin (synthesize@imdb_standin) for the stand-in."""
    return "imdb" if params.preprocess.dataset == "imdb" else "imdb_standin"


# --- pure functions ----------------------------------------------------------


def fit_reviews(x: np.ndarray, num_words: int, maxlen: int) -> np.ndarray:
    """Rectangular (N, L) ids as IMDB's are made: ids from num_words on become 2 (out of vocabulary), then pad() to maxlen."""
    x = np.where(x >= num_words, 2, x).astype(np.int32)
    return pad(x.reshape(-1), np.arange(len(x) + 1, dtype=np.int64) * x.shape[1], maxlen)


def score(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """test.loss (binary cross-entropy, Keras' clipping) and test.accuracy (p > 0.5 is positive) of (N,) P(positive)."""
    p = np.asarray(probabilities, np.float64).reshape(-1)
    two = np.stack([1 - p, p], axis=1)
    return {"test": {"loss": cross_entropy(two, labels), "accuracy": accuracy(two, labels)}, "test_samples": int(len(p))}


def epoch_timings(seconds: list[float]) -> dict[str, Any]:
    """The first epoch (it compiles) apart from the mean of the others."""
    later = seconds[1:]
    return {
        "epoch_seconds": [round(s, 3) for s in seconds],
        "first_epoch_seconds": round(seconds[0], 3) if seconds else None,
        "seconds_per_epoch": round(float(np.mean(later)), 3) if later else None,
    }


def table_rows(metrics: Mapping[str, Mapping[str, Any]], timings: Mapping[str, Mapping[str, Any]]) -> dict[str, list]:
    """One row per variant: what ran, on which data, its timings (labelled) and test numbers; blanks where not applicable."""
    rows: dict[str, list] = {k: [] for k in ("variant", "implementation", "applicable", "dataset")}
    numbers = ("first_epoch_seconds", "seconds_per_epoch", "peak_memory_mb")
    rows.update({f"timing_{k}": [] for k in numbers})
    rows.update({"test_accuracy": [], "test_loss": []})
    for variant, m in metrics.items():
        t = timings.get(variant, {})
        rows["variant"].append(variant)
        rows["implementation"].append(m["implementation"])
        rows["applicable"].append(bool(m["applicable"]))
        rows["dataset"].append(m["dataset"])
        for k in numbers:
            rows[f"timing_{k}"].append(t.get(k))
        rows["test_accuracy"].append(m["test"]["accuracy"] if m["applicable"] else None)
        rows["test_loss"].append(m["test"]["loss"] if m["applicable"] else None)
    return rows


def build_args(p: Train, num_words: int, maxlen: int) -> dict[str, Any]:
    return {"num_words": num_words, "maxlen": maxlen, **p.model_dump(exclude={"batch_size", "epochs"})}


def build_model(
    num_words: int,
    maxlen: int,
    implementation: str,
    embedding_dim: int,
    units: int,
    dropout: float,
    recurrent_dropout: float,
    learning_rate: float,
) -> Any:
    """Embedding -> Dropout -> the LSTM, run as `implementation` -> Dense(1, sigmoid), compiled with adam."""
    import keras

    rnn = {"dropout": dropout, "recurrent_dropout": recurrent_dropout}
    if implementation == "cell_loop":
        lstm = keras.layers.RNN(keras.layers.LSTMCell(units, **rnn))
    else:
        cudnn = {"cudnn": True, "jit": "auto"}.get(implementation, False)  # jit: XLA compiles the graph, not cuDNN
        lstm = keras.layers.LSTM(units, unroll=implementation == "unrolled", use_cudnn=cudnn, **rnn)
    model = keras.Sequential(
        [
            keras.Input((maxlen,), dtype="int32"),
            keras.layers.Embedding(num_words, embedding_dim),
            keras.layers.Dropout(dropout),
            lstm,
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    adam = keras.optimizers.Adam(learning_rate=learning_rate)
    model.compile(optimizer=adam, loss="binary_crossentropy", metrics=["accuracy"], jit_compile=implementation == "jit")
    return model


def gpu_present() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def _epoch_clock():
    """A Keras callback that records each epoch's wall time (validation included)."""
    import keras

    class EpochClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.started)

    return EpochClock()


# --- steps -------------------------------------------------------------------


def preprocess(run: Run) -> None:
    """IMDB (or its stand-in) padded to maxlen, the first train_samples / test_samples of each split."""
    p = run.params
    if p.dataset == "imdb":
        from stages.datasets.imdb import load

        splits = {
            name: (pad(ids, offsets, p.maxlen), labels) for name, (ids, offsets, labels) in load(run.raw, p.num_words).items()
        }
    else:
        from stages.datasets.imdb_standin import load

        splits = {name: (fit_reviews(x, p.num_words, p.maxlen), y) for name, (x, y) in load(run.raw).items()}
    arrays, sizes = {}, {}
    for name, wanted in (("train", p.train_samples), ("test", p.test_samples)):
        x, y = splits[name]
        if wanted > len(x):
            raise ParamsError(f"'{run.param_key(f'{name}_samples')}' = {wanted}, but the {name} set has {len(x)} reviews.")
        arrays[f"x_{name}"], arrays[f"y_{name}"], sizes[name] = x[:wanted], y[:wanted], wanted
    with atomic_dir(run.paths.processed) as out:
        save_arrays(out, arrays)
        write_json(out / META, {"dataset": p.dataset, "num_words": p.num_words, "maxlen": p.maxlen, **sizes})
    print(f"{p.dataset}: {sizes['train']} training and {sizes['test']} test reviews of {p.maxlen} ids")


def train(run: Run) -> None:
    """Fit the LSTM the variant's way, timing each epoch; without a GPU the cudnn variant writes a not-applicable marker."""
    from stages import training

    p, folder = run.params, run.paths.processed
    meta = read_json(folder / META)
    build = build_args(p, meta["num_words"], meta["maxlen"])
    if p.implementation == "cudnn" and not gpu_present():
        info = {"applicable": False, "reason": "use_cudnn=True needs a GPU; this machine has none"}
        training.save_trained(None, run, build, info)  # model.json alone: evaluate, plot and compare say why
        with atomic_dir(run.paths.training) as out:
            write_json(out / TIMINGS, info)
        print(f"{run.paths.key}: not applicable ({info['reason']})")
        return
    import keras

    with training.train_guard(run):
        x, y = load_array(folder, "x_train"), load_array(folder, "y_train")
        keras.utils.set_random_seed(run.seed)
        model = build_model(**build)  # before determinism: Keras refuses jit_compile=True after it
        training.seed_everything(run.seed)

        import tensorflow as tf

        def as_float(x, y):  # binary cross-entropy takes float labels
            return x, tf.cast(y, tf.float32)

        test = [load_array(folder, "x_test"), load_array(folder, "y_test")]
        validation, _ = training.batches(test, p.batch_size, seed=run.seed, shuffle=False, map_fn=as_float)
        clock = _epoch_clock()
        training.fit(
            model,
            lambda first: training.batches(
                [x, y], p.batch_size, seed=run.seed, first_epoch=first, epochs=p.epochs, map_fn=as_float
            ),
            run=run,
            epochs=p.epochs,
            validation_data=validation,
            callbacks=[clock],
        )
        info = {"applicable": True, "parameters": model.count_params(), "jit_compile": bool(model.jit_compile)}
        training.save_trained(model, run, build, info)
    timings = {
        "note": "wall-clock timings of this machine at this time: they vary run to run, so they are not metrics",
        **epoch_timings(clock.seconds),
        "epochs_timed": len(clock.seconds),  # fewer than epochs after a resumed run
        "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    write_json(run.paths.training / TIMINGS, timings)
    print(
        f"seconds per epoch {timings['seconds_per_epoch']} (first {timings['first_epoch_seconds']}), peak {timings['peak_memory_mb']} MB"
    )


def evaluate(run: Run) -> None:
    """Test probabilities and the test loss and accuracy; a not-applicable variant says so."""
    from stages import training

    folder = run.paths.processed
    meta, model_info = read_json(folder / META), read_json(run.paths.model / MODEL)
    facts = {
        "dataset": meta["dataset"],
        "standin": meta["dataset"] == "standin",
        "implementation": model_info["build"]["implementation"],
    }
    with atomic_dir(run.paths.predictions) as out:
        if not model_info["info"]["applicable"]:
            write_json(out / META, model_info["info"])
            write_metrics(run.paths.metrics, {**facts, **model_info["info"]})
            print(f"{run.paths.key}: not applicable")
            return
        model, _ = training.load_trained(run, build_model)
        x, y = load_array(folder, "x_test"), load_array(folder, "y_test")
        probabilities = model.predict(x, batch_size=run.params.batch_size, verbose=0).reshape(-1).astype(np.float32)
        save_arrays(out, {"probabilities": probabilities})
    metrics = {**facts, "applicable": True, **score(probabilities, y)}
    write_metrics(run.paths.metrics, metrics)
    print(f"test loss {metrics['test']['loss']:.4f}, accuracy {metrics['test']['accuracy']:.4f}")


def plot(run: Run) -> None:
    """Loss and accuracy per epoch (history.csv, training.png); a not-applicable variant gets a note."""
    from stages.plotting import HISTORY, epochs_png, history_columns, read_live_metrics

    curves = read_live_metrics(run.paths.training) if (run.paths.training / "plots").is_dir() else {}
    data = read_json(run.paths.processed / META)["dataset"]
    with atomic_dir(run.paths.figures) as out:
        if "val_loss" not in curves:
            write_json(out / "not_applicable.json", read_json(run.paths.predictions / META))
            return
        columns = history_columns(curves)
        write_csv(out / HISTORY, columns)
        title = f"{run.paths.key} on {'the stand-in (random reviews)' if data == 'standin' else data}"
        epochs_png(out / "training.png", {run.variant: columns}, PANELS, title, run.params.dpi)


def compare(c: Comparison) -> None:
    """The original's 2x2 figure (validation accuracy and loss, seconds per epoch) plus peak memory, and table.csv."""
    from stages.plotting import HISTORY, draw_epochs, png, read_history, stack_histories

    metrics = {v: read_json(c.runs[v].metrics) for v in c.variants}
    timings = {v: read_json(c.runs[v].training / TIMINGS) for v in c.variants}
    ran = [v for v in c.variants if metrics[v]["applicable"]]
    histories = {v: read_history(c.runs[v].figures / HISTORY) for v in ran}
    table = table_rows(metrics, timings)
    data = sorted({m["dataset"] for m in metrics.values()})
    label = " + ".join("stand-in (random reviews)" if d == "standin" else d for d in data)
    with atomic_dir(c.out) as out:
        write_csv(out / HISTORY, stack_histories(histories))
        write_csv(out / "table.csv", table)
        with png(out / "benchmark.png", figsize=(11, 8), dpi=c.params.dpi) as fig:
            acc, loss, speed, memory = fig.subplots(2, 2).ravel()
            validation = {v: {k: h[k] for k in ("epoch", "val_accuracy", "val_loss")} for v, h in histories.items()}
            draw_epochs(acc, validation, "accuracy", "accuracy")
            draw_epochs(loss, validation, "loss", "binary cross-entropy (nats, log scale)")
            colors = [f"C{i}" for i in range(len(ran))]  # as draw_epochs colours them
            for ax, key, title, unit in (
                (speed, "timing_seconds_per_epoch", "Seconds per epoch after the first (timing)", "seconds"),
                (memory, "timing_peak_memory_mb", "Peak memory of train (timing)", "MB"),
            ):
                values = [table[key][table["variant"].index(v)] or 0.0 for v in ran]
                ax.bar_label(ax.bar(ran, values, color=colors), fmt="%.1f")
                ax.set(title=title, xlabel="variant", ylabel=unit)
            missing = [v for v in c.variants if v not in ran]
            note = f"; not applicable here: {', '.join(missing)}" if missing else ""
            fig.suptitle(f"{c.example} on {label}{note}")
