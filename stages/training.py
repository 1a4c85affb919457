"""The shared training loop: determinism, resumable checkpoints, DVCLive logs.

`fit` wraps `keras.Model.fit` with three things every example wants:

* Determinism: `seed_everything` seeds Python, numpy and TensorFlow from
  params and turns on TensorFlow's deterministic ops, so a stage re-run on the
  same inputs gives bit-identical weights. Batches are shuffled per epoch with a
  seed derived from (seed, epoch), so a resumed run sees the same batches as an
  uninterrupted one.
* Resume: after every epoch the model's weights *and optimizer state* go to
  `.checkpoints/<run>/`, together with the per-epoch logs so far, each written
  atomically (Keras' BackupAndRestore writes its weights and its epoch counter
  as two separate non-atomic files, so a kill between them can mismatch them).
  A train stage re-run after an interruption picks up after the last finished
  epoch; a finished run deletes its checkpoint. A checkpoint records what made
  it (`run_fingerprint`: train params, variant, seed, input data, code) and is
  used only when all of it still matches; otherwise it is discarded with one
  line saying why, and training starts from epoch 0 (stages/checkpoints.py).
* One trainer at a time: `train_guard` (stages/core/guard.py) wraps a whole
  train step: a lock per run, and a watchdog that stops a trainer whose dvc
  has exited. `fit` refuses to run outside it.
* scikit-learn: `keras_classifier` wraps a Keras model builder as a
  classifier GridSearchCV can search (see the section at the end).
* Logging: per-epoch metrics go to a DVCLive folder (`dvcyaml=False`; the plots
  are declared at the top level of dvc.yaml), replayed from the checkpoint on
  resume so the curves are whole.
"""

from __future__ import annotations

import copy
import functools
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stages.core import guard
from stages.core.files import atomic_dir, atomic_file, read_json, write_json
from stages.core.guard import train_guard  # noqa: F401  (the examples call training.train_guard)
from stages.core.layout import MODEL, WEIGHTS


def seed_everything(seed: int) -> None:
    """Seed every generator and make TensorFlow's ops deterministic."""
    import keras
    import tensorflow as tf

    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def batches(
    arrays: Sequence[np.ndarray],
    batch_size: int,
    *,
    seed: int,
    shuffle: bool = True,
    first_epoch: int = 0,
    epochs: int = 1,
    drop_remainder: bool = False,
    map_fn: Callable | None = None,
):
    """A tf.data pipeline of `epochs - first_epoch` epochs of batches.

    Arrays stay compact in memory (e.g. uint8 indices); `map_fn` turns a batch
    into model inputs inside the graph (scaling, one-hot). Shuffling uses a
    stateless per-epoch permutation, so epoch k's batches are the same whether
    or not training was resumed before it.

    Returns:
        (dataset, steps_per_epoch)
    """
    import tensorflow as tf

    n = len(arrays[0])
    steps = n // batch_size if drop_remainder else -(-n // batch_size)
    tensors = tuple(tf.constant(a) for a in arrays)

    def one_epoch(epoch):
        if shuffle:
            order = tf.random.experimental.stateless_shuffle(
                tf.range(n, dtype=tf.int64), seed=tf.stack([tf.cast(seed, tf.int64), epoch])
            )
        else:
            order = tf.range(n, dtype=tf.int64)
        ds = tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder=drop_remainder)
        return ds.map(lambda idx: tuple(tf.gather(t, idx) for t in tensors))

    ds = tf.data.Dataset.range(first_epoch, max(epochs, first_epoch + 1)).flat_map(one_epoch)
    # flat_map hides the length; stated, Keras knows where a validation pass ends instead of
    # warning "Your input ran out of data" after each one (every batch was used either way)
    ds = ds.apply(tf.data.experimental.assert_cardinality(steps * max(epochs - first_epoch, 1)))
    if map_fn is not None:
        ds = ds.map(lambda *b: map_fn(*b), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE), steps


# --- one trainer per run, and none outliving the dvc that started it ------------


def _callback_class():
    import keras

    class EpochEnd(keras.callbacks.Callback):
        """Logs each epoch to DVCLive, then saves it to the run's ResumableCheckpoint (and resets RNN states)."""

        def __init__(self, live, checkpoint, history: list, reset_states: bool):
            super().__init__()
            self.live, self.checkpoint, self.history = live, checkpoint, history
            self.reset_states = reset_states

        def on_epoch_begin(self, epoch, logs=None):
            if self.reset_states:
                reset_rnn_states(self.model)

        def on_epoch_end(self, epoch, logs=None):
            row = {k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0}
            self.history.append(row)
            for key, value in row.items():
                self.live.log_metric(key, value)
            self.live.next_step()
            self.checkpoint.save(self.model, epoch + 1, self.history)

    return EpochEnd


def _progress_class():
    import keras

    class Progress(keras.callbacks.Callback):
        """A line every `every` seconds inside an epoch, for logs (a terminal shows Keras' own bar)."""

        def __init__(self, epochs: int, steps: int, every: float):
            super().__init__()
            self.epochs, self.steps, self.every = epochs, steps, every

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch, self.start = epoch, time.monotonic()
            self.last = self.start

        def on_train_batch_end(self, batch, logs=None):
            now = time.monotonic()
            if now - self.last < self.every:
                return
            self.last = now
            loss = (logs or {}).get("loss")
            shown = f", loss {float(loss):.4f}" if loss is not None else ""
            print(
                f"epoch {self.epoch + 1}/{self.epochs}: step {batch + 1}/{self.steps} "
                f"({(batch + 1) / self.steps:.0%}) after {now - self.start:.0f} s{shown}",
                flush=True,
            )

    return Progress


def all_layers(model) -> list:
    """Every layer of `model`, nested models' layers included, through the public `layers` attribute."""
    out = []
    for layer in model.layers:
        out.append(layer)
        if hasattr(layer, "layers"):
            out += all_layers(layer)
    return out


def reset_rnn_states(model) -> None:
    """Reset the state of every stateful RNN layer (Keras 3 has no model-level call)."""
    for layer in all_layers(model):
        if getattr(layer, "stateful", False) and hasattr(layer, "reset_states"):
            layer.reset_states()


def fit(
    model,
    make_data: Callable[[int], tuple[Any, int]],
    *,
    run,
    epochs: int,
    validation_data: Any = None,
    reset_states_each_epoch: bool = False,
    callbacks: Sequence[Any] = (),
) -> list[dict[str, float]]:
    """Train `model` for `epochs`, resuming from the run's checkpoint if one was cut short.

    Call it inside `with train_guard(run):`. Per-epoch metrics go to the
    DVCLive folder run.paths.training, checkpoints to run.paths.checkpoints;
    a checkpoint is resumed only if `run_fingerprint(run)` still matches it.

    Args:
        model: a compiled, built Keras model.
        make_data: first_epoch -> (dataset, steps_per_epoch); the dataset yields
            the batches of epochs first_epoch .. epochs-1 in order.
        run: the stage's Run (params, paths).
        epochs: total number of epochs (as in the params).
        validation_data: passed to Keras' fit.
        reset_states_each_epoch: reset stateful RNN layers before every epoch.

    Progress: on a terminal, Keras' bar moves with every step; in a log (stdout
    not a terminal), one line per epoch plus a line every
    STAGES_PROGRESS_SECONDS (default 30) inside it.

    Returns:
        One dict of metrics per epoch (the whole run, resumed part included).
    """
    from dvclive import Live

    from stages.checkpoints import ResumableCheckpoint, run_fingerprint

    if not guard.holds(run.paths.key):
        raise RuntimeError(f"training.fit for {run.paths.key} must run inside `with training.train_guard(run):`")
    checkpoint = ResumableCheckpoint(run.paths.checkpoints, run_fingerprint(run))
    done, history = checkpoint.restore(model, epochs)
    if done:
        print(f"Resuming from epoch {done} of {epochs} (checkpoint in {checkpoint.folder}).", flush=True)
    with Live(str(run.paths.training), dvcyaml=False, save_dvc_exp=False, report=None) as live:
        for row in history:  # replay what the interrupted run had logged
            for key, value in row.items():
                live.log_metric(key, value)
            live.next_step()
        if done < epochs:
            data, steps = make_data(done)
            on_terminal = sys.stdout.isatty()
            every = float(os.environ.get("STAGES_PROGRESS_SECONDS", "30"))
            progress = [] if on_terminal else [_progress_class()(epochs, steps, every)]
            model.fit(
                data,
                epochs=epochs,
                initial_epoch=done,
                steps_per_epoch=steps,
                validation_data=validation_data,
                shuffle=False,  # the dataset is already shuffled per epoch, deterministically
                callbacks=[*callbacks, *progress, _callback_class()(live, checkpoint, history, reset_states_each_epoch)],
                verbose=1 if on_terminal else 2,
            )
    return history


def load_model_weights(model, path: str | os.PathLike) -> None:
    """Load weights saved by `save_model_weights` (optimizer state included)."""
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(path)


def save_model_weights(model, folder: str | os.PathLike, name: str = WEIGHTS) -> Path:
    """Save weights only: unlike a .keras file they carry no timestamp, so re-runs hash the same."""
    path = Path(folder) / name
    with atomic_file(path, suffix=".weights.h5") as tmp:
        model.save_weights(tmp)
    return path


def save_trained(model, run, build: dict[str, Any], info: dict[str, Any] | None = None) -> None:
    """Write models/<run>/ whole, then drop the run's resume checkpoint.

    The folder holds the weights (layout.WEIGHTS) and layout.MODEL: {"build":
    the keyword arguments of the example's build_model, "info": facts worth
    recording, such as the parameter count}. `load_trained` reads it back. The
    checkpoint goes only once the model is in place. `model` None is a run that
    trains nothing here (lstm_benchmark's cudnn without a GPU): model.json alone,
    and no resume state of another machine's run is left behind.
    """
    from stages.checkpoints import ResumableCheckpoint

    with atomic_dir(run.paths.model) as out:
        if model is not None:
            save_model_weights(model, out)
        write_json(out / MODEL, {"build": build, "info": info or {}})
    ResumableCheckpoint(run.paths.checkpoints).clear()


def load_trained(run, build_model: Callable[..., Any]) -> tuple[Any, dict[str, Any]]:
    """The model `save_trained` wrote for this run: (build_model(**build), info), weights loaded.

    When build_model returns several models (a siamese model and its base),
    the weights go into the first, which holds the others.
    """
    config = read_json(run.paths.model / MODEL)
    built = build_model(**config["build"])
    load_model_weights(built[0] if isinstance(built, tuple) else built, run.paths.model / WEIGHTS)
    return built, config["info"]


# --- a Keras model as a scikit-learn classifier ------------------------------
# Keras 3's keras.wrappers.SKLearnClassifier lacks three things a grid search
# needs: predict_proba (scikit-learn's log-loss scorer calls it), quiet
# predictions, and a clone that keeps fit_kwargs (Keras 3.15's
# __sklearn_clone__ drops them). The class is made on first use, so importing
# this module does not import Keras; the module __getattr__ hands it to pickle
# by name, which GridSearchCV's worker processes (n_jobs > 1) need.


@functools.cache
def _keras_classifier_class() -> type:
    from keras.wrappers import SKLearnClassifier

    class KerasClassifier(SKLearnClassifier):
        """SKLearnClassifier + predict_proba, quiet predictions, and a clone that keeps fit_kwargs."""

        def decision_function(self, X):
            """(n, classes) model outputs, without Keras' per-call progress bar."""
            from sklearn.utils.validation import check_is_fitted, validate_data

            check_is_fitted(self)
            return self.model_.predict(validate_data(self, X, reset=False), verbose=0)

        def predict_proba(self, X):
            """The model's outputs (softmax probabilities for a softmax model)."""
            return self.decision_function(X)

        def predict(self, X):
            """The most probable class of each row."""
            return self.classes_[np.argmax(self.decision_function(X), axis=1)]

        def __sklearn_clone__(self):
            # SKLearnClassifier's own clone passes model, warm_start and model_kwargs but drops fit_kwargs.
            return type(self)(
                model=self.model,
                warm_start=self.warm_start,
                model_kwargs=copy.deepcopy(self.model_kwargs),
                fit_kwargs=copy.deepcopy(self.fit_kwargs),
            )

    KerasClassifier.__module__ = __name__
    KerasClassifier.__qualname__ = "KerasClassifier"
    return KerasClassifier


def keras_classifier(model: Callable[..., Any], **kwargs: Any) -> Any:
    """An unfitted KerasClassifier; `model(X, y, **model_kwargs)` builds and compiles the Keras model."""
    return _keras_classifier_class()(model=model, **kwargs)


def __getattr__(name: str) -> Any:
    # Module attribute made on first use: pickle finds the class by name without this module importing Keras.
    if name == "KerasClassifier":
        return _keras_classifier_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
