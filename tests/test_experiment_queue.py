"""A sweep in DVC's own experiment queue: three queued stateful_lstm experiments, run by two celery workers."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil

from tests.conftest import run

SWEEP = "stateful_lstm.variants.lahead1.preprocess.lahead"
METRICS = "metrics/stateful_lstm/lahead1.json"


def processes_in(folder: Path) -> list[psutil.Process]:
    """Live processes whose working directory is `folder` or below it (the queue's workers and what they run)."""
    found = []
    for proc in psutil.process_iter(["cwd", "status"]):
        cwd = proc.info["cwd"]
        if cwd and proc.info["status"] != psutil.STATUS_ZOMBIE and Path(cwd).is_relative_to(folder):
            found.append(proc)
    return found


def experiments(project: Path) -> dict[int, dict]:
    """`dvc exp show --json`: {swept lahead: that experiment's metrics} for the experiments of the baseline commit."""
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    baseline = next(row for row in shown if row["rev"] != "workspace")
    out = {}
    for exp in baseline["experiments"] or []:
        data = exp["revs"][0]["data"]
        lahead = data["params"]["params.yaml"]["data"]["stateful_lstm"]["variants"]["lahead1"]["preprocess"]["lahead"]
        out[lahead] = data["metrics"][METRICS]["data"]
    return out


def test_a_queued_sweep_runs_on_two_workers_with_each_runs_own_metrics(project, built_project):
    # The sweep sets lahead1's lahead to the three values of the project's own variants, so each experiment
    # must reproduce, bit for bit, the metrics `dvc repro` gave that variant in the built project.
    queued = run(["dvc", "exp", "run", "--queue", "-S", f"{SWEEP}=1,20,5000", "evaluate@stateful_lstm-lahead1"], project)
    assert queued.stdout.count("Queued experiment") == 3
    try:
        assert "Started '2' new experiments task queue workers" in run(["dvc", "queue", "start", "-j", "2"], project).stdout
        deadline = time.monotonic() + 900
        while True:
            status = run(["dvc", "queue", "status"], project).stdout
            if "Queued" not in status and "Running" not in status:
                break
            assert time.monotonic() < deadline, status
            time.sleep(3)
        assert status.count("Success") == 3, status + "".join(
            run(["dvc", "queue", "logs", line.split()[0]], project, check=False).stdout
            for line in status.splitlines()
            if "Failed" in line
        )
    finally:
        run(["dvc", "queue", "stop", "--kill"], project, check=False)
        deadline = time.monotonic() + 30
        while processes_in(project) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = processes_in(project)
        for proc in left:  # never leave a worker behind, even when the assertion below fails
            proc.kill()
        assert not left, f"queue processes still running after dvc queue stop: {[p.cmdline() for p in left]}"

    metrics = experiments(project)
    assert sorted(metrics) == [1, 20, 5000]
    for lahead, got in metrics.items():
        expected = json.loads((built_project / f"metrics/stateful_lstm/lahead{lahead}.json").read_text())
        assert got == expected, f"lahead {lahead}: queued {got} != repro {expected}"
    assert len({m["model"]["mse"] for m in metrics.values()}) == 3  # three distinct results, not one thrice
