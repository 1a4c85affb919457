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
  epoch; a finished run deletes its checkpoint.
* Logging: per-epoch metrics go to a DVCLive folder (`dvcyaml=False`; the plots
  are declared at the top level of dvc.yaml), replayed from the checkpoint on
  resume so the curves are whole.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stages.core.files import atomic_dir, atomic_file, read_json, write_json


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
    if map_fn is not None:
        ds = ds.map(lambda *b: map_fn(*b), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE), steps


class ResumableCheckpoint:
    """Per-epoch weights + optimizer state + logs in one folder, written atomically.

    The folder holds `epoch-<k>.weights.h5` and `state.json` ({"epoch": k,
    "weights": file, "history": [...]}). state.json is replaced only after its
    weights file is complete, so whatever a kill interrupts, state.json points
    at a whole checkpoint.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.state_path = self.folder / "state.json"

    def load(self) -> dict[str, Any] | None:
        if not self.state_path.is_file():
            return None
        state = read_json(self.state_path)
        if not (self.folder / state["weights"]).is_file():
            return None
        return state

    def restore(self, model) -> tuple[int, list[dict[str, float]]]:
        """Load the last checkpoint into `model`; return (epochs done, history)."""
        state = self.load()
        if state is None:
            return 0, []
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(self.folder / state["weights"])
        return int(state["epoch"]), list(state["history"])

    def save(self, model, epoch: int, history: list[dict[str, float]]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch:05d}.weights.h5"
        with atomic_file(self.folder / name, suffix=".weights.h5") as tmp:
            model.save_weights(tmp)
        write_json(self.state_path, {"epoch": epoch, "weights": name, "history": history})
        for old in self.folder.glob("epoch-*.weights.h5"):
            if old.name != name:
                old.unlink()

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _callback_class():
    import keras

    class EpochEnd(keras.callbacks.Callback):
        """Logs each epoch to DVCLive, then checkpoints it (and resets RNN states)."""

        def __init__(self, live, checkpoint: ResumableCheckpoint, history: list, reset_states: bool):
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


def reset_rnn_states(model) -> None:
    """Reset the state of every stateful RNN layer (Keras 3 has no model-level call)."""
    for layer in model._flatten_layers(include_self=False):
        if getattr(layer, "stateful", False) and hasattr(layer, "reset_states"):
            layer.reset_states()


def fit(
    model,
    make_data: Callable[[int], tuple[Any, int]],
    *,
    epochs: int,
    live_dir: str | os.PathLike,
    checkpoint_dir: str | os.PathLike,
    validation_data: Any = None,
    reset_states_each_epoch: bool = False,
    callbacks: Sequence[Any] = (),
    verbose: int | str = "auto",
) -> list[dict[str, float]]:
    """Train `model` for `epochs`, resuming from `checkpoint_dir` if a run was cut short.

    Args:
        model: a compiled, built Keras model.
        make_data: first_epoch -> (dataset, steps_per_epoch); the dataset yields
            the batches of epochs first_epoch .. epochs-1 in order.
        epochs: total number of epochs (as in the params).
        live_dir: DVCLive folder for the per-epoch metrics.
        checkpoint_dir: where per-epoch checkpoints live while training runs.
        validation_data: passed to Keras' fit.
        reset_states_each_epoch: reset stateful RNN layers before every epoch.

    Returns:
        One dict of metrics per epoch (the whole run, resumed part included).
    """
    from dvclive import Live

    checkpoint = ResumableCheckpoint(checkpoint_dir)
    done, history = checkpoint.restore(model)
    if done:
        print(f"Resuming from epoch {done} of {epochs} (checkpoint in {checkpoint_dir}).", flush=True)
    with Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None) as live:
        for row in history:  # replay what the interrupted run had logged
            for key, value in row.items():
                live.log_metric(key, value)
            live.next_step()
        if done < epochs:
            data, steps = make_data(done)
            model.fit(
                data,
                epochs=epochs,
                initial_epoch=done,
                steps_per_epoch=steps,
                validation_data=validation_data,
                shuffle=False,  # the dataset is already shuffled per epoch, deterministically
                callbacks=[*callbacks, _callback_class()(live, checkpoint, history, reset_states_each_epoch)],
                verbose=verbose,
            )
    return history


def load_model_weights(model, path: str | os.PathLike) -> None:
    """Load weights saved by `save_model_weights` (optimizer state included)."""
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(path)


def save_model_weights(model, folder: str | os.PathLike, name: str = "model.weights.h5") -> Path:
    """Save weights only: unlike a .keras file they carry no timestamp, so re-runs hash the same."""
    path = Path(folder) / name
    with atomic_file(path, suffix=".weights.h5") as tmp:
        model.save_weights(tmp)
    return path


def save_trained(model, run, build: dict[str, Any], extra_files: dict[str, Any] | None = None) -> None:
    """Write models/<run>/ whole, then drop the run's resume checkpoint.

    The folder holds model.weights.h5, model.json (`build`: what the example's
    build_model needs, plus anything worth recording) and any `extra_files`
    ({name: JSON data}). The checkpoint goes only once the model is in place.
    """
    with atomic_dir(run.paths.model) as out:
        save_model_weights(model, out)
        write_json(out / "model.json", build)
        for name, data in (extra_files or {}).items():
            write_json(out / name, data)
    ResumableCheckpoint(run.paths.checkpoints).clear()
