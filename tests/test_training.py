"""The shared training loop: determinism, resume after a hard kill, and what may not be resumed.

A module fixture trains stateful_lstm once uninterrupted and once SIGKILLed
after its epoch-2 checkpoint (real processes); each test works on a copy of
that project. Re-runs happen in this process through the real CLI entry
point (`stages.cli.main`), which keeps TensorFlow's start-up to one
import for the whole file; the lock and watchdog tests use real processes,
real signals and real dvc.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest

from stages import cli
from stages.core.layout import Layout
from stages.core.run import make_run

from conftest import SHARED_DATASETS, copy_project, git, run, set_param, shrink_params, stages_cmd, subprocess_env

RUN = "stateful_lstm-lahead1"
PATHS = Layout(RUN)
EPOCHS = 12
TRAIN = ["train", "stateful_lstm", "--variant", "lahead1"]
PREPROCESS = ["preprocess", "stateful_lstm", "--variant", "lahead1"]


def weights(path) -> list[np.ndarray]:
    out = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.append((name, obj[()])) if isinstance(obj, h5py.Dataset) else None)
    return [v for _, v in sorted(out, key=lambda t: t[0])]


def assert_same_weights(a, b) -> None:
    for x, y in zip(weights(a), weights(b), strict=True):
        np.testing.assert_array_equal(x, y)


def loss_log(project: Path) -> str:
    return (project / PATHS.training / "plots" / "metrics" / "loss.tsv").read_text()


def tiny(project: Path, n_points: int = 1000, epochs: int = EPOCHS) -> None:
    """An epoch of 40 batches of 25: well under a second."""
    set_param(project, "synthetic.damped_cosine.n_points", n_points)
    set_param(project, "stateful_lstm.variants.lahead5000", {"preprocess": {"lahead": n_points // 2}})  # lahead < n_points
    set_param(project, "stateful_lstm.train.batch_size", 25)
    set_param(project, "stateful_lstm.train.epochs", epochs)


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended ({proc.returncode}) before {what}")
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def checkpoint_epoch(project: Path) -> int:
    try:
        return json.loads((project / PATHS.checkpoints / "state.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def lock_owner(project: Path) -> int | None:
    try:
        return int((project / f"{PATHS.checkpoints}.lock").read_text())
    except (OSError, ValueError):
        return None


def gone(pid: int) -> bool:
    """No such process, or only its zombie (it has exited and awaits its parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


def kill_if_alive(pid: int | None) -> None:
    """Leave no trainer behind when a test fails."""
    if pid is not None and not gone(pid):
        os.kill(pid, signal.SIGKILL)


def start_trainer(project: Path, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(stages_cmd(*TRAIN), cwd=project, env=subprocess_env(), stdout=out, stderr=subprocess.STDOUT)


@dataclass(frozen=True)
class Interrupted:
    project: Path  # preprocessed; .checkpoints/<run> holds the killed run's checkpoint
    reference: Path  # models/<run> of an uninterrupted run of the same params, in its own process
    reference_log: str
    killed_at: int


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Interrupted:
    root = tmp_path_factory.mktemp("interrupted")
    project = copy_project(root / "project")
    shrink_params(project)
    tiny(project)
    git(project, "add", "-A")
    git(project, "commit", "-qm", "tiny copy")
    run(stages_cmd("synthesize", "damped_cosine"), project)
    run(stages_cmd(*PREPROCESS), project)
    run(stages_cmd(*TRAIN), project)
    reference = shutil.copytree(project / PATHS.model, root / "reference")
    reference_log = loss_log(project)
    shutil.rmtree(project / PATHS.model)
    shutil.rmtree(project / PATHS.training)

    proc = start_trainer(project, root / "killed.log")
    wait_for(lambda: checkpoint_epoch(project) >= 2, 120, "the epoch-2 checkpoint", proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = checkpoint_epoch(project)
    assert 2 <= killed_at < EPOCHS, f"killed at epoch {killed_at}"
    return Interrupted(project, reference, reference_log, killed_at)


@pytest.fixture()
def killed(interrupted, tmp_path, monkeypatch) -> Path:
    """A private copy of the interrupted project, made the current directory."""
    dest = shutil.copytree(interrupted.project, tmp_path / "project", symlinks=True)
    monkeypatch.chdir(dest)
    return dest


def in_process(capsys, *args: str) -> tuple[int, str, str]:
    """Run `python -m stages <args>` in this process (cwd: the project); return (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def discard_line(reason: str) -> str:
    return f"Discarding checkpoint {PATHS.checkpoints}: {reason}; training from epoch 0."


def retrain_uninterrupted(project: Path, capsys) -> Path:
    """Train again from nothing (a finished run leaves no checkpoint); return a copy of its model."""
    assert not (project / PATHS.checkpoints).exists()
    code, out, err = in_process(capsys, *TRAIN)
    assert code == 0, err
    assert "Resuming" not in out and "Discarding" not in out
    return shutil.copytree(project / PATHS.model, project.parent / "uninterrupted")


# --- resume when nothing changed ----------------------------------------------


def test_same_inputs_give_identical_weights_and_metrics(killed, interrupted, capsys):
    """A fresh run in another process matches the fixture's uninterrupted run bit for bit."""
    shutil.rmtree(killed / PATHS.checkpoints)
    model = retrain_uninterrupted(killed, capsys)
    assert_same_weights(model / "model.weights.h5", interrupted.reference / "model.weights.h5")
    assert loss_log(killed) == interrupted.reference_log


def test_killed_training_resumes_to_the_same_weights(killed, interrupted, capsys):
    """SIGKILL after an epoch's checkpoint; the unchanged re-run resumes there and ends bit-identical."""
    code, out, err = in_process(capsys, *TRAIN)
    assert code == 0, err
    assert f"Resuming from epoch {interrupted.killed_at} of {EPOCHS}" in out
    assert_same_weights(killed / PATHS.model / "model.weights.h5", interrupted.reference / "model.weights.h5")
    assert loss_log(killed) == interrupted.reference_log
    assert not (killed / PATHS.checkpoints).exists()  # a finished run clears its checkpoint


# --- discard when what made the checkpoint changed -----------------------------


def test_changed_learning_rate_discards_the_checkpoint(killed, capsys):
    set_param(killed, "stateful_lstm.train.learning_rate", 0.002)
    code, out, err = in_process(capsys, *TRAIN)
    assert code == 0, err
    assert discard_line("train params changed (learning_rate)") in out.splitlines()
    assert "Resuming" not in out
    model = killed.parent / "after_discard"
    shutil.copytree(killed / PATHS.model, model)
    after_discard_log = loss_log(killed)
    assert len(after_discard_log.splitlines()) == EPOCHS + 1
    reference = retrain_uninterrupted(killed, capsys)
    assert_same_weights(model / "model.weights.h5", reference / "model.weights.h5")
    assert loss_log(killed) == after_discard_log


def test_fewer_epochs_than_the_checkpoint_discards_it(killed, interrupted, capsys):
    fewer = interrupted.killed_at - 1
    set_param(killed, "stateful_lstm.train.epochs", fewer)
    code, out, err = in_process(capsys, *TRAIN)
    assert code == 0, err
    assert discard_line("train params changed (epochs)") in out.splitlines()
    assert "Resuming" not in out
    model = shutil.copytree(killed / PATHS.model, killed.parent / "after_discard")
    assert len(loss_log(killed).splitlines()) == fewer + 1
    reference = retrain_uninterrupted(killed, capsys)
    assert_same_weights(model / "model.weights.h5", reference / "model.weights.h5")


def test_changed_input_data_discards_the_checkpoint(killed, capsys):
    set_param(killed, "synthetic.damped_cosine.amplitude", 50.0)
    assert in_process(capsys, "synthesize", "damped_cosine")[0] == 0
    assert in_process(capsys, *PREPROCESS)[0] == 0
    code, out, err = in_process(capsys, *TRAIN)
    assert code == 0, err
    assert discard_line("input data changed (x.npy, y.npy)") in out.splitlines()
    assert "Resuming" not in out


def test_new_seed_discards_the_checkpoint(killed, capsys):
    set_param(killed, "seed", 7)
    code, out, err = in_process(capsys, *TRAIN)
    assert code == 0, err
    assert discard_line("seed changed (1337 -> 7)") in out.splitlines()
    assert "Resuming" not in out


def test_changed_model_shape_trains_from_zero_without_a_traceback(killed, capsys):
    """A stateful LSTM's batch size is part of its input shape: the old checkpoint must not be loaded."""
    set_param(killed, "stateful_lstm.train.batch_size", 50)
    code, out, err = in_process(capsys, *TRAIN)
    assert code == 0, err
    assert discard_line("train params changed (batch_size)") in out.splitlines()
    assert "Traceback" not in out + err and "Resuming" not in out
    assert len(loss_log(killed).splitlines()) == EPOCHS + 1


def test_unusable_checkpoints_are_discarded_with_one_line(tmp_path, capsys):
    """Weights of another shape, an epoch past the run's end, no fingerprint: discarded, model untouched."""
    import keras

    from stages.checkpoints import ResumableCheckpoint

    def dense(units: int):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(units)])
        model.compile(optimizer="rmsprop", loss="mse")
        return model

    folder = tmp_path / "checkpoint"
    fingerprint = {"variant": "v", "train": {"epochs": 4}, "seed": 1, "data": {}, "code": {}}
    history = [{"loss": 1.0}] * 3
    ResumableCheckpoint(folder, fingerprint).save(dense(4), 3, history)
    other = dense(5)
    before = [v.numpy() for v in other.weights]
    assert ResumableCheckpoint(folder, fingerprint).restore(other, 4) == (0, [])
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"Discarding checkpoint {folder}: its weights do not fit this model (ValueError: ")
    assert line.endswith("; training from epoch 0.") and "\n" not in line
    assert not folder.exists()
    for a, b in zip(before, other.weights, strict=True):
        np.testing.assert_array_equal(a, b.numpy())

    ResumableCheckpoint(folder, fingerprint).save(dense(4), 3, history)
    assert ResumableCheckpoint(folder, fingerprint).restore(dense(4), 2) == (0, [])
    assert (
        capsys.readouterr().out
        == f"Discarding checkpoint {folder}: it is at epoch 3, past the 2 epochs this run trains; training from epoch 0.\n"
    )

    ResumableCheckpoint(folder, fingerprint).save(dense(4), 3, history)
    assert ResumableCheckpoint(folder, fingerprint).restore(dense(4), 4) == (3, history)
    assert capsys.readouterr().out == ""
    assert ResumableCheckpoint(folder, None).save(dense(4), 3, history) is None
    assert ResumableCheckpoint(folder, fingerprint).restore(dense(4), 4) == (0, [])
    assert "it records no fingerprint of what made it" in capsys.readouterr().out


def test_lstm_samples_go_with_a_discarded_checkpoint(project, monkeypatch, capsys):
    """lstm_text_generation keeps samples.json beside its checkpoint: a discarded checkpoint takes them along."""
    from stages import lstm_text_generation as ltg
    from stages.checkpoints import ResumableCheckpoint, run_fingerprint
    from stages.core.files import write_json

    monkeypatch.chdir(project)
    raw = project / "data" / "raw" / "nietzsche"
    raw.mkdir(parents=True)
    shutil.copy(SHARED_DATASETS / "nietzsche" / "nietzsche.txt", raw)  # tiny_params keeps its first 4,000 characters
    set_param(project, "lstm_text_generation.train.epochs", 1)
    args = ["lstm_text_generation", "--variant", "nietzsche"]
    assert in_process(capsys, "preprocess", *args)[0] == 0
    _, run_ = make_run("lstm_text_generation", "nietzsche", "train")
    meta = ltg.load_processed(run_.paths.processed)[2]
    p = run_.params
    # What a run killed after epoch 1 under another learning rate leaves behind:
    stale = run_fingerprint(run_)
    stale["train"]["learning_rate"] = p.learning_rate / 2
    model = ltg.build_model(meta["maxlen"], meta["vocab_size"], p.units, p.learning_rate / 2)
    ResumableCheckpoint(run_.paths.checkpoints, stale).save(model, 1, [{"loss": 3.0, "val_loss": 3.0}])
    entry = {"epoch": 1, "seed_offset": 0, "seed_text": "STALE SEED", "samples": [{"temperature": 0.2, "text": "STALE"}]}
    write_json(run_.paths.checkpoints / "samples.json", {"entries": [entry]})

    code, out, err = in_process(capsys, "train", *args)
    assert code == 0, err
    key = run_.paths.key
    assert (
        f"Discarding checkpoint .checkpoints/{key}: train params changed (learning_rate); training from epoch 0."
        in out.splitlines()
    )
    samples = (project / run_.paths.training / "samples.md").read_text(encoding="utf-8")
    assert "STALE" not in samples and "## epoch 1" in samples


# --- one trainer per run, none outliving the dvc that started it ---------------


def test_a_second_trainer_of_the_run_is_refused(killed, tmp_path):
    set_param(killed, "stateful_lstm.train.epochs", 10_000)
    first = start_trainer(killed, tmp_path / "first.log")
    try:
        wait_for(lambda: lock_owner(killed) == first.pid, 60, "the first trainer's lock", first)
        started = time.time()
        second = subprocess.run(
            stages_cmd(*TRAIN), cwd=killed, env=subprocess_env(), capture_output=True, text=True, timeout=30, check=False
        )
        assert time.time() - started < 10  # refused before TensorFlow is even imported
        assert second.returncode == 2
        assert f"train@{RUN} is already running in process {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr
        assert first.poll() is None
    finally:
        first.kill()
        first.wait()


def test_trainer_stops_when_the_dvc_that_started_it_is_killed(project, tmp_path):
    tiny(project, epochs=10_000)
    log = tmp_path / "dvc.log"
    with open(log, "w") as out:
        dvc = subprocess.Popen(
            ["dvc", "repro", f"train@{RUN}"], cwd=project, env=subprocess_env(), stdout=out, stderr=subprocess.STDOUT
        )
    trainer = None
    try:
        wait_for(lambda: checkpoint_epoch(project) >= 1, 120, "training to be under way", dvc)
        trainer = lock_owner(project)
        assert trainer is not None and not gone(trainer)
        dvc.send_signal(signal.SIGTERM)
        wait_for(lambda: gone(trainer), 5, f"trainer {trainer} to stop")
    finally:
        dvc.kill()
        dvc.wait()
        kill_if_alive(trainer)
    assert not (project / PATHS.model).exists()
    assert f"train@{RUN}: stopping because " in log.read_text()


def test_trainer_stops_when_its_grandparent_dies_and_the_shell_lives(killed, tmp_path):
    """`/bin/sh -c` may outlive dvc: the watchdog sees the grandparent go (a zombie here: nobody reaped it)."""
    set_param(killed, "stateful_lstm.train.epochs", 10_000)
    shutil.rmtree(killed / PATHS.checkpoints)
    shell = f"{sys.executable} -m stages {' '.join(TRAIN)}; exit $?"  # `; exit` keeps sh from exec'ing python
    launcher = [sys.executable, "-c", f"import subprocess; subprocess.run(['/bin/sh', '-c', {shell!r}])"]
    log = tmp_path / "launcher.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(launcher, cwd=killed, env=subprocess_env(), stdout=out, stderr=subprocess.STDOUT)
    trainer = None
    try:
        wait_for(lambda: checkpoint_epoch(killed) > 0 and lock_owner(killed) is not None, 120, "training to be under way", proc)
        trainer = lock_owner(killed)
        os.kill(proc.pid, signal.SIGKILL)
        stopped = time.time()
        wait_for(lambda: gone(trainer), 5, f"trainer {trainer} to stop")
        assert time.time() - stopped < 3
    finally:
        proc.kill()
        proc.wait()
        kill_if_alive(trainer)
    text = log.read_text()
    assert f"train@{RUN}: stopping because the process that started it, python" in text
    assert f"(PID {proc.pid}), has exited" in text
    assert not (killed / PATHS.model).exists()


def test_trainer_outlives_the_terminal_that_started_its_pipeline(killed, tmp_path):
    """`nohup make repro &`, then the terminal closes: the shell that started the pipeline exits while the program
    that runs the step (dvc; here a Python launcher) lives on, and so must training (it was stopped: a bug)."""
    set_param(killed, "stateful_lstm.train.epochs", 10_000)
    shutil.rmtree(killed / PATHS.checkpoints)
    shell = f"{sys.executable} -m stages {' '.join(TRAIN)}; exit $?"
    launcher = f"import subprocess; subprocess.run(['/bin/sh', '-c', {shell!r}])"  # dvc's place: runs the step in sh
    go = tmp_path / "close-the-terminal"
    terminal = f"{shlex.quote(sys.executable)} -c {shlex.quote(launcher)} & while [ ! -e {go} ]; do sleep 0.1; done; exit 0"
    log = tmp_path / "terminal.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            ["/bin/bash", "-c", terminal], cwd=killed, env=subprocess_env(), stdout=out, stderr=subprocess.STDOUT
        )
    trainer = None
    try:
        wait_for(lambda: checkpoint_epoch(killed) > 0 and lock_owner(killed) is not None, 120, "training to be under way", proc)
        trainer = lock_owner(killed)
        go.touch()
        assert proc.wait(timeout=10) == 0  # the terminal's shell is gone
        time.sleep(2)  # the watchdog looks every 0.25 s: it would have stopped the trainer by now
        assert not gone(trainer)
        epoch = checkpoint_epoch(killed)
        wait_for(lambda: checkpoint_epoch(killed) > epoch, 60, "training to go on after the terminal closed")
    finally:
        proc.kill()
        proc.wait()
        kill_if_alive(trainer)
    assert "stopping because" not in log.read_text()


def test_validation_batches_have_a_known_length_so_keras_does_not_run_out_of_data():
    """Keras warned "Your input ran out of data" after each validation pass when the length was unknown."""
    import warnings

    import keras

    from stages import training

    x, y = np.arange(50, dtype=np.float32).reshape(25, 2), (np.arange(25) % 2).astype(np.float32)
    validation, steps = training.batches([x, y], 10, seed=1, shuffle=False)
    assert steps == 3 and int(validation.cardinality()) == 3
    assert [len(b[0]) for b in validation] == [10, 10, 5]  # every row, once
    fitting, _ = training.batches([x, y], 10, seed=1, first_epoch=1, epochs=4)
    assert int(fitting.cardinality()) == 3 * 3
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile("sgd", "binary_crossentropy")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(fitting, epochs=3, steps_per_epoch=3, validation_data=validation, verbose=0)
    assert not [w for w in caught if "ran out of data" in str(w.message)]


def test_progress_inside_an_epoch_prints_a_line_per_interval(capsys):
    """In a log (not a terminal), a long epoch still reports where it is: one line per interval, here every step."""
    import keras

    from stages import training

    x, y = np.ones((20, 2), np.float32), np.ones(20, np.float32)
    data, steps = training.batches([x, y], 5, seed=1, epochs=2)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    model.fit(data, epochs=2, steps_per_epoch=steps, verbose=0, callbacks=[training._progress_class()(2, steps, 0.0)])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert [line.split(" after ")[0] for line in lines[:5]] == [
        "epoch 1/2: step 1/4 (25%)",
        "epoch 1/2: step 2/4 (50%)",
        "epoch 1/2: step 3/4 (75%)",
        "epoch 1/2: step 4/4 (100%)",
        "epoch 2/2: step 1/4 (25%)",
    ]
    assert len(lines) == 8 and ", loss " in lines[0]
