"""The shared training loop: determinism, and resume after a hard kill."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import h5py
import numpy as np

from conftest import run, set_param, subprocess_env
from stages.core.layout import Layout


def weights(path) -> list[np.ndarray]:
    out = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.append((name, obj[()])) if isinstance(obj, h5py.Dataset) else None)
    return [v for _, v in sorted(out, key=lambda t: t[0])]


def train_cmd(variant: str) -> list[str]:
    return ["python", "-m", "stages", "train", "stateful_lstm", "--variant", variant]


def test_same_inputs_give_identical_weights_and_metrics(project):
    run(["python", "-m", "stages", "preprocess", "stateful_lstm", "--variant", "lahead1"], project)
    paths = Layout("stateful_lstm-lahead1")
    run(train_cmd("lahead1"), project)
    first = (project / paths.model / "model.weights.h5").read_bytes()
    first_log = (project / paths.training / "plots" / "metrics" / "loss.tsv").read_text()
    run(train_cmd("lahead1"), project)
    assert (project / paths.model / "model.weights.h5").read_bytes() == first
    assert (project / paths.training / "plots" / "metrics" / "loss.tsv").read_text() == first_log


def test_killed_training_resumes_to_the_same_weights(project):
    """SIGKILL after an epoch's checkpoint; the re-run resumes there and ends bit-identical."""
    set_param(project, "stateful_lstm.train.epochs", 6)
    set_param(project, "stateful_lstm.preprocess.n_points", 5000)
    run(["python", "-m", "stages", "preprocess", "stateful_lstm", "--variant", "lahead1"], project)
    paths = Layout("stateful_lstm-lahead1")
    run(train_cmd("lahead1"), project)
    reference = weights(project / paths.model / "model.weights.h5")
    reference_log = (project / paths.training / "plots" / "metrics" / "loss.tsv").read_text()
    assert not (project / paths.checkpoints).exists()  # a finished run clears its checkpoint

    state = project / paths.checkpoints / "state.json"
    proc = subprocess.Popen(train_cmd("lahead1"), cwd=project, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and '"epoch": 2' in state.read_text():
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be interrupted"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert state.exists()

    resumed = run(train_cmd("lahead1"), project)
    assert "Resuming from epoch" in resumed.stdout
    for a, b in zip(weights(project / paths.model / "model.weights.h5"), reference, strict=True):
        np.testing.assert_array_equal(a, b)
    assert (project / paths.training / "plots" / "metrics" / "loss.tsv").read_text() == reference_log
