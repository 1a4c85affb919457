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
  line saying why, and training starts from epoch 0.
* One trainer at a time: `train_guard` wraps a whole train step. It holds an
  exclusive lock on `.checkpoints/<run>.lock` (a second trainer of the run
  stops at once, naming the first's PID), and on Linux a watchdog stops the
  trainer when any process that started it (dvc, its shell) has exited, so no
  orphan keeps writing outputs beside a newer run.
* Logging: per-epoch metrics go to a DVCLive folder (`dvcyaml=False`; the plots
  are declared at the top level of dvc.yaml), replayed from the checkpoint on
  resume so the curves are whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Self

import numpy as np

from stages.core.errors import StageError
from stages.core.files import atomic_dir, atomic_file, read_json, write_json

STAGES_DIR = Path(__file__).resolve().parent
STOPPED_EXIT_CODE = 143  # 128 + SIGTERM, what a shell reports for a process ended by SIGTERM


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


# --- what made a checkpoint --------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_fingerprint(run) -> dict[str, Any]:
    """What a run's training depends on, as JSON: resume only when all of it is unchanged.

    train: the run's merged train section; variant; seed; data: the hash of
    every file under data/processed/<run>; code: the hashes of the example's
    module, this file and stages/core/*.py (the code that trains).
    """
    processed = Path(run.paths.processed)
    data = {f.relative_to(processed).as_posix(): _sha256(f) for f in sorted(processed.rglob("*")) if f.is_file()}
    sources = [STAGES_DIR / f"{run.params.example}.py", STAGES_DIR / "training.py", *sorted((STAGES_DIR / "core").glob("*.py"))]
    code = {f.relative_to(STAGES_DIR.parent).as_posix(): _sha256(f) for f in sources}
    fingerprint = {
        "variant": run.params.variant,
        "train": run.params.train.model_dump(mode="json"),
        "seed": run.seed,
        "data": data,
        "code": code,
    }
    return json.loads(json.dumps(fingerprint))  # the form it has once read back from state.json


def _changed_keys(old: Any, new: dict[str, Any], limit: int = 4) -> str:
    old = old if isinstance(old, dict) else {}
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    more = f", and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def fingerprint_differences(old: Any, new: dict[str, Any]) -> list[str]:
    """Why a checkpoint made under `old` does not belong to a run with `new` (empty: it does)."""
    if not isinstance(old, dict):
        return ["it records no fingerprint of what made it (written by an older version)"]
    reasons = []
    if old.get("variant") != new["variant"]:
        reasons.append(f"variant changed ({old.get('variant')} -> {new['variant']})")
    if old.get("train") != new["train"]:
        reasons.append(f"train params changed ({_changed_keys(old.get('train'), new['train'])})")
    if old.get("seed") != new["seed"]:
        reasons.append(f"seed changed ({old.get('seed')} -> {new['seed']})")
    if old.get("data") != new["data"]:
        reasons.append(f"input data changed ({_changed_keys(old.get('data'), new['data'])})")
    if old.get("code") != new["code"]:
        reasons.append(f"code changed ({_changed_keys(old.get('code'), new['code'])})")
    return reasons


# --- the checkpoint ----------------------------------------------------------


class ResumableCheckpoint:
    """Per-epoch weights + optimizer state + logs in one folder, written atomically.

    The folder holds `epoch-<k>.weights.h5` and `state.json` ({"epoch": k,
    "weights": file, "history": [...], "fingerprint": {...}}). state.json is
    replaced only after its weights file is complete, so whatever a kill
    interrupts, state.json points at a whole checkpoint. An example may keep
    files of its own in the folder (lstm_text_generation's samples.json): they
    go whenever the checkpoint is discarded.
    """

    def __init__(self, folder: str | os.PathLike, fingerprint: dict[str, Any] | None = None):
        self.folder = Path(folder)
        self.state_path = self.folder / "state.json"
        self.fingerprint = fingerprint

    def load(self) -> dict[str, Any] | None:
        """The state of a whole checkpoint, or None when state.json or its weights file is missing or unreadable."""
        try:
            state = read_json(self.state_path)
            state["epoch"], state["history"] = int(state["epoch"]), list(state["history"])
            whole = (self.folder / state["weights"]).is_file()
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return state if whole else None

    def restore(self, model, epochs: int) -> tuple[int, list[dict[str, float]]]:
        """Load the last checkpoint into `model`; return (epochs done, history).

        A checkpoint made by other params, data or code, one past `epochs`, or
        one whose weights do not fit `model` is discarded with one printed line,
        and (0, []) comes back with `model` as it was.
        """
        if not self.state_path.is_file():
            self.clear()  # leftovers of a run killed before its first checkpoint
            return 0, []
        state = self.load()
        if state is None:
            reasons = ["its state.json or weights file is unreadable"]
        elif self.fingerprint is not None:
            reasons = fingerprint_differences(state.get("fingerprint"), self.fingerprint)
        else:
            reasons = []
        if not reasons and state["epoch"] > epochs:
            reasons = [f"it is at epoch {state['epoch']}, past the {epochs} epochs this run trains"]
        if not reasons:
            try:
                _load_weights_or_keep(model, self.folder / state["weights"])
            except Exception as err:  # noqa: BLE001 -- Keras raises several kinds for a weights file of another shape
                detail = " ".join(str(err).split())[:240]
                reasons = [f"its weights do not fit this model ({type(err).__name__}: {detail})"]
        if reasons:
            print(f"Discarding checkpoint {self.folder}: {', '.join(reasons)}; training from epoch 0.", flush=True)
            self.clear()
            return 0, []
        return state["epoch"], state["history"]

    def save(self, model, epoch: int, history: list[dict[str, float]]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch:05d}.weights.h5"
        with atomic_file(self.folder / name, suffix=".weights.h5") as tmp:
            model.save_weights(tmp)
        write_json(self.state_path, {"epoch": epoch, "weights": name, "history": history, "fingerprint": self.fingerprint})
        for old in self.folder.glob("epoch-*.weights.h5"):
            if old.name != name:
                old.unlink()

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _load_weights_or_keep(model, path: Path) -> None:
    """Load weights (optimizer state included); if that fails, put `model` back as it was, then raise."""
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    variables = list(model.weights) + (list(model.optimizer.variables) if model.optimizer is not None else [])
    before = [v.numpy() for v in variables]
    try:
        model.load_weights(path)
    except Exception:
        for variable, value in zip(variables, before, strict=True):
            variable.assign(value)
        raise


# --- one trainer per run, and none outliving the dvc that started it ------------


class TrainingLocked(StageError):
    """Another trainer of the same run holds its lock."""


class TrainerStopped(BaseException):
    """Raised in the main thread to stop a trainer (BaseException: nothing on the way catches it)."""


class _Proc(NamedTuple):
    pid: int
    name: str
    state: str
    ppid: int
    start: int  # clock ticks after boot: tells a process from a later one that reuses its PID


def _proc(pid: int) -> _Proc | None:
    """One process's /proc/<pid>/stat, or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name_end = text.rindex(")")  # the name may itself hold spaces and parentheses
    fields = text[name_end + 2 :].split()
    return _Proc(pid, text[text.index("(") + 1 : name_end], fields[0], int(fields[1]), int(fields[19]))


def _ancestors() -> list[_Proc]:
    """Parent, grandparent ... up to but excluding PID 1 (init or a container's reaper)."""
    chain, pid = [], os.getppid()
    while pid > 1 and (proc := _proc(pid)) is not None:
        chain.append(proc)
        pid = proc.ppid
    return chain


def _exited(proc: _Proc) -> bool:
    now = _proc(proc.pid)
    return now is None or now.start != proc.start or now.state in ("Z", "X")  # gone, reused, or a zombie


class _Watchdog:
    """Stops the trainer once any process that started it has exited (Linux; elsewhere it does nothing).

    A daemon thread polls the ancestors recorded at start; on the first one
    gone it sends SIGTERM to the main thread, whose handler raises
    TrainerStopped there. prctl(PR_SET_PDEATHSIG) makes the kernel send the
    same SIGTERM the moment the parent dies. Should the main thread not reach
    Python code within `grace` seconds (stuck in a long native call), the
    thread ends the process itself.
    """

    def __init__(self, stage: str, interval: float = 0.25, grace: float = 5.0):
        self.stage, self.interval, self.grace = stage, interval, grace
        self.enabled = sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread()
        self.ancestors: list[_Proc] = []
        self.reason: str | None = None
        self._done = threading.Event()
        self._previous_handler: Any = None

    def __enter__(self) -> Self:
        if not self.enabled:
            return self
        self.ancestors = _ancestors()
        self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
        _set_parent_death_signal(signal.SIGTERM)
        threading.Thread(target=self._poll, name=f"{self.stage} watchdog", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.enabled:
            return
        self._done.set()
        _set_parent_death_signal(0)
        signal.signal(signal.SIGTERM, self._previous_handler)

    def why_stop(self) -> str:
        if self.reason is None:
            gone = next((p for p in self.ancestors if _exited(p)), None)
            self.reason = (
                f"the process that started it, {gone.name} (PID {gone.pid}), has exited" if gone else "it received SIGTERM"
            )
        return self.reason

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        if self._done.is_set():  # the step is over; leave as SIGTERM would have
            stop_now(self.stage, self.why_stop())
        raise TrainerStopped(self.why_stop())

    def _poll(self) -> None:
        while not self._done.wait(self.interval):
            if any(_exited(p) for p in self.ancestors):
                self.why_stop()
                signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
                if not self._done.wait(self.grace):
                    stop_now(self.stage, self.why_stop())
                return


def _set_parent_death_signal(signum: int) -> None:
    """prctl(PR_SET_PDEATHSIG): the kernel sends `signum` when the parent exits (0 turns it off)."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signum, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # the watchdog's polling still covers it


def stop_now(stage: str, why: str) -> None:
    """Say why in one line and end the process at once, without writing anything more."""
    print(
        f"{stage}: stopping because {why}; models/ was not written. Re-run it to train again (it resumes "
        "from the last checkpoint if one is left and nothing it depends on changed).",
        file=sys.stderr,
        flush=True,
    )
    sys.stdout.flush()
    os._exit(STOPPED_EXIT_CODE)


@contextlib.contextmanager
def _run_lock(run) -> Iterator[None]:
    """Hold `.checkpoints/<run>.lock` exclusively, or raise TrainingLocked naming the holder's PID."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    path = Path(f"{run.paths.checkpoints}.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by exec'd children
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _lock_owner(fd)
            raise TrainingLocked(
                f"train@{run.paths.key} is already running in process {owner} (it holds {path}); two trainers "
                f"of one run would write the same checkpoint and outputs. Wait for it to finish, or stop it "
                f"(kill {owner}), then run this again."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held_locks.add(run.paths.key)
        try:
            yield
        finally:
            _held_locks.discard(run.paths.key)
    finally:
        os.close(fd)  # releases the lock; the file stays (deleting it would race a newcomer)


_held_locks: set[str] = set()


def _lock_owner(fd: int) -> str:
    for _ in range(20):  # the holder writes its PID just after taking the lock
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text:
            return text
        time.sleep(0.05)
    return "(unknown PID)"


@contextlib.contextmanager
def train_guard(run) -> Iterator[None]:
    """Wrap a whole train step: the run's exclusive lock, and the watchdog against orphaned trainers.

    A trainer stopped by the watchdog or SIGTERM prints one line and exits with
    STOPPED_EXIT_CODE; atomic writes clean up on the way out, so models/<run>
    is never left half-written. Its last checkpoint stays for a re-run.
    """
    stage = f"train@{run.paths.key}"
    with _run_lock(run), _Watchdog(stage) as watchdog:
        try:
            yield
        except TrainerStopped:
            stop_now(stage, watchdog.why_stop())


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
    run,
    epochs: int,
    validation_data: Any = None,
    reset_states_each_epoch: bool = False,
    callbacks: Sequence[Any] = (),
    verbose: int | str = "auto",
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

    Returns:
        One dict of metrics per epoch (the whole run, resumed part included).
    """
    from dvclive import Live

    if run.paths.key not in _held_locks:
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
