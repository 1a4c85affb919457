"""stages/core/parallel.py: where a grid search's fits run; the same result in-process and on a real Dask cluster."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from stages import mnist_sklearn_wrapper as m
from stages.core import parallel
from stages.core.errors import ParamsError
from tests.conftest import ROOT, subprocess_env


def settings(**overrides) -> parallel.Parallel:
    return parallel.Parallel(**{"backend": "in_process", "processes": 2, "scheduler": "", "threads": 0, **overrides})


def key(name: str) -> str:
    return f"ex.train.parallel.{name}"


def test_threads_per_fit_shares_each_machines_cores_among_its_fits():
    assert parallel.threads_per_fit({"a": (2, 2)}) == 1
    assert parallel.threads_per_fit({"a": (16, 4)}) == 4
    assert parallel.threads_per_fit({"a": (2, 4)}) == 1  # never 0
    assert parallel.threads_per_fit({"a": (16, 2), "b": (8, 4)}) == 2  # the machine with the least cores per fit
    assert parallel.threads_per_fit({}) == 1


def test_environment_differences_name_the_code_and_each_library():
    here = {"code": "abc", "versions": {"keras": "3.15.1", "numpy": "2.0"}, "cores": 2, "host": "a"}
    assert parallel.environment_differences(here, {**here, "host": "b", "cores": 64}) == []
    worker = {**here, "code": "xyz", "versions": {"keras": "3.15.1", "numpy": "1.26"}}
    found = parallel.environment_differences(here, worker)
    assert len(found) == 2 and "same commit" in found[0] and found[1] == "numpy 1.26 (here 2.0)"


def test_environment_is_this_checkouts_code_and_libraries():
    env = parallel.environment()
    assert len(env["code"]) == 64 and env["cores"] >= 1
    assert env["versions"]["keras"] and env["versions"]["scikit-learn"] and env["versions"]["distributed"]


def test_scheduler_address_comes_from_the_param_then_daskss_variable(monkeypatch):
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://127.0.0.1:8786")
    assert parallel.scheduler_address(settings(backend="dask", scheduler="tcp://127.0.0.1:1"), key) == "tcp://127.0.0.1:1"
    assert parallel.scheduler_address(settings(backend="dask"), key) == "tcp://127.0.0.1:8786"
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS")
    with pytest.raises(ParamsError, match=r"'ex\.train\.parallel\.scheduler'.*DASK_SCHEDULER_ADDRESS"):
        parallel.scheduler_address(settings(backend="dask"), key)


def test_an_unreachable_scheduler_is_one_paragraph_naming_it():
    import dask
    import distributed  # noqa: F401  (its config defaults must exist before dask.config.set, which restores them after)

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        with pytest.raises(parallel.ClusterError, match=rf"{address} \(from 'ex\.train\.parallel\.scheduler'\)"):
            with parallel.placement(settings(backend="dask", scheduler=address), key):
                pass


def test_a_cluster_that_cannot_import_the_project_is_refused_before_any_fit(tmp_path):
    # A scheduler started outside the checkout (as `dask scheduler` on another machine would be) cannot unpickle the
    # search's tasks; without the check the search would wait forever while the scheduler only logs the error.
    file = tmp_path / "scheduler.json"
    cmd = [Path(sys.executable).parent / "dask", "scheduler", "--host", "127.0.0.1", "--port", "0"]
    cmd += ["--dashboard-address", "127.0.0.1:0", "--scheduler-file", file]
    scheduler = subprocess.Popen(cmd, cwd=tmp_path, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not file.exists():
            assert scheduler.poll() is None and time.monotonic() < deadline, "the scheduler did not start"
            time.sleep(0.2)
        time.sleep(0.2)  # the file is written whole, but give its writer a moment
        address = json.loads(file.read_text())["address"]
        with pytest.raises(parallel.ClusterError, match=r"could not report its environment .*No module named 'stages'"):
            with parallel.placement(settings(backend="dask", scheduler=address), key):
                pass
    finally:
        scheduler.terminate()
        scheduler.wait(timeout=30)


def test_params_reject_an_unknown_backend_and_negative_threads():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        settings(backend="spark")
    with pytest.raises(ValidationError):
        settings(threads=-1)


def test_explicit_seeds_are_the_ones_keras_draws_itself():
    # build_model(seed=s) after seed_everything(s) must equal the unseeded build: the seeds only stop other threads mattering.
    from stages.training import seed_everything

    seed_everything(5)
    default = m.build_model([16, 8], 4, 3, 2, 1.0)
    seed_everything(5)
    seeded = m.build_model([16, 8], 4, 3, 2, 1.0, seed=5)
    for a, b in zip(default.weights, seeded.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    dropouts = [[int(s) for s in np.asarray(layer.seed_generator.state)] for layer in seeded.layers if hasattr(layer, "rate")]
    assert dropouts == [
        [int(s) for s in np.asarray(layer.seed_generator.state)] for layer in default.layers if hasattr(layer, "rate")
    ]
    assert len(dropouts) == 2 and parallel.keras_seeds(None)() is None


# One client process: the tiny search in-process, then on the cluster at $DASK_SCHEDULER_ADDRESS (params name no
# address), both with one TensorFlow thread per fit; then a search asking the cluster's warm workers for 2 threads.
SEARCH_BOTH_WAYS = """
import json, sys
import numpy as np
from stages import mnist_sklearn_wrapper as m
from stages.core.parallel import ClusterError, Parallel
from tests.fixtures import image_arrays

images, labels = image_arrays(120, seed=4)
x, y = m.scale(m.as_images(images)), labels.astype(np.int64)
grid = m.Grid(dense_layer_sizes=[[2], [16]], epochs=[1], filters=[2], kernel_size=[3], pool_size=[2])
def search(backend, threads):
    p = m.Train(grid=grid, batch_size=16, learning_rate=1.0, cv=2, scoring="neg_log_loss",
                parallel=Parallel(backend=backend, processes=2, scheduler="", threads=threads))
    s = m.grid_search(x, y, p, seed=1, verbose=1)
    return {"best": m.flatten_candidate(s.best_params_), "mean": s.cv_results_["mean_test_score"].tolist(),
            "splits": [s.cv_results_[f"split{k}_test_score"].tolist() for k in range(2)],
            "weights": [np.asarray(w).tolist() for w in s.best_estimator_.model_.weights]}
out = {"in_process": search("in_process", 1), "dask": search("dask", 0)}
try:
    search("dask", 2)
except ClusterError as err:
    out["refused"] = str(err)
print("RESULT " + json.dumps(out))
"""


def test_the_same_search_in_process_and_on_a_two_worker_local_cluster(tmp_path):
    from distributed import Client, LocalCluster

    started = time.monotonic()
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        local_directory=str(tmp_path),
    ) as cluster:
        with Client(cluster) as client:
            worker_pids = set(client.run(os.getpid).values())
            result = subprocess.run(
                [sys.executable, "-c", SEARCH_BOTH_WAYS],
                cwd=ROOT,
                env=subprocess_env(DASK_SCHEDULER_ADDRESS=cluster.scheduler_address),
                capture_output=True,
                text=True,
                timeout=240,
            )
    print(f"cluster, both searches and shutdown: {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"fits run on 2 Dask worker threads at {cluster.scheduler_address}; TensorFlow threads per fit: 1" in result.stdout
    out = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))[len("RESULT ") :])
    here, there = out["in_process"], out["dask"]
    assert (
        here["best"] == there["best"] == {"dense_layer_sizes": [16], "filters": 2, "kernel_size": 3, "pool_size": 2, "epochs": 1}
    )
    assert here["mean"][0] < here["mean"][1]  # the search had a real choice: a 2-unit bottleneck scores worse
    assert here["splits"] == there["splits"]  # bit-identical: same seeds, same thread settings
    assert here["weights"] == there["weights"]  # the refitted best model too
    assert "already runs" in out["refused"] and "restart" in out["refused"]  # a warm worker keeps its 1 thread
    assert len(worker_pids) == 2
    for pid in worker_pids:  # the cluster is shut down: its worker processes are gone
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
