"""Where scikit-learn's parallel fits run, and how many TensorFlow threads each may use.

A grid search is candidates x folds independent fits. `placement(p)` is a
context in which joblib (which GridSearchCV uses) sends them:

* `in_process`: one after another in the stage's own process (the default);
* `processes`: `p.processes` local worker processes (joblib's loky backend);
* `dask`: the workers of a running Dask cluster, through joblib's Dask backend.
  The scheduler's address is `p.scheduler`, or, when that is "", the
  environment variable DASK_SCHEDULER_ADDRESS (Dask's own), so params.yaml
  stays the same on every machine. The workers must run the same project code
  and library versions as the stage: checked (`environment`) before any fit,
  and a difference stops the stage naming the worker and what differs.

Threads: TensorFlow sizes its thread pools to every core of a machine, so two
fits on one machine would each try to use all of it. `placement` works out the
threads each fit gets (`p.threads`, or with 0 the cores of the machine divided
by the fits that run on it at once: `threads_per_fit`) and the estimator's
builder, wrapped by `with_threads`, sets them in whatever process it runs
before TensorFlow starts there. The refit of the best candidate, in the stage's
process, uses the same number, so every fit of a search runs with the same
threads, whichever backend ran it. TensorFlow fixes its pools when it starts: a
worker whose TensorFlow already runs with other settings (a Dask worker kept
from a search with other settings) is refused with what to do; the stage's own
process (a fresh one under dvc) only reports it.

Seeds: a model built without explicit seeds gets them from Python's global
`random` (Keras draws one per initializer and dropout layer), which a Dask
worker's own threads also draw from while a task runs (measured: a task that
seeds `random`, sleeps a second and draws gets another number). So a fit on
Dask would differ from run to run. `keras_seeds(seed)` gives those seeds from a
private generator instead, the very numbers Keras would draw after
`random.seed(seed)`, so results are those of a quiet process.

Results: fits are seeded per candidate, so each fit computes the same thing
wherever it runs; with the same thread settings the scores are bit-identical
(tested on a two-worker LocalCluster against in-process), with other thread
counts they differ in the last digits (floating-point sums in another order).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import random
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from stages.core.errors import ParamsError, StageError
from stages.core.params import Section

SCHEDULER_VARIABLE = "DASK_SCHEDULER_ADDRESS"  # read by Dask itself too
LIBRARIES = ("tensorflow-cpu", "tensorflow", "keras", "scikit-learn", "numpy", "joblib", "dask", "distributed")


class Parallel(Section):
    """Where GridSearchCV's fits run (stages/core/parallel.py)."""

    backend: Literal["in_process", "processes", "dask"] = Field(
        description="in_process: one after another in the stage; processes: local processes; dask: a Dask cluster"
    )
    processes: int = Field(ge=1, description="backend processes: how many local worker processes")
    scheduler: str = Field(
        description="backend dask: the scheduler's address, e.g. tcp://10.0.0.5:8786; '' = $" + SCHEDULER_VARIABLE
    )
    threads: int = Field(ge=0, description="TensorFlow threads per fit; 0 = the machine's cores / its fits at once")


class ClusterError(StageError):
    """The Dask cluster cannot be reached, or its workers cannot run this project's fits."""


# --- threads -----------------------------------------------------------------


def threads_per_fit(machines: dict[str, tuple[int, int]]) -> int:
    """{machine: (cores, fits at once on it)} -> the threads every fit gets: the least cores per fit, at least 1."""
    return min(max(1, cores // max(1, fits)) for cores, fits in machines.values()) if machines else 1


def set_tensorflow_threads(threads: int, strict: bool = True) -> None:
    """Size TensorFlow's intra- and inter-op pools in this process (0: leave TensorFlow's default).

    Must run before TensorFlow starts in the process; setting the same value
    again is a no-op. Another value once it runs is a ClusterError, or with
    strict=False one line on stderr (TensorFlow keeps its pools).
    """
    if threads == 0:
        return
    import tensorflow as tf

    config = tf.config.threading
    if config.get_intra_op_parallelism_threads() == threads and config.get_inter_op_parallelism_threads() == threads:
        return
    try:
        config.set_intra_op_parallelism_threads(threads)
        config.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        message = (
            f"TensorFlow already runs in process {os.getpid()} on {socket.gethostname()} with "
            f"{config.get_intra_op_parallelism_threads() or 'its default'} threads, and a fit asks for {threads}: "
            "TensorFlow fixes its thread pools when it starts."
        )
        if not strict:
            print(f"{message} This process keeps its threads.", file=sys.stderr, flush=True)
            return
        raise ClusterError(
            f"{message} Restart that process (for a Dask cluster: Client(address).restart()), or set the search's "
            "threads to what it already uses."
        ) from None


def _build_with_threads(builder: Callable[..., Any], threads: int, home: int, *args: Any, **kwargs: Any) -> Any:
    set_tensorflow_threads(threads, strict=os.getpid() != home)
    return builder(*args, **kwargs)


def with_threads(builder: Callable[..., Any], threads: int) -> Callable[..., Any]:
    """`builder`, setting TensorFlow's threads first in whichever process calls it (picklable if builder is).

    Strict in every other process (a worker running with other threads is an
    error); in the calling process, where the refit runs and TensorFlow may
    already run (a notebook, a test), a mismatch is only reported.
    """
    return functools.partial(_build_with_threads, builder, threads, os.getpid())


def keras_seeds(seed: int | None) -> Callable[[], int | None]:
    """Call it once per Keras initializer or dropout layer, in building order, for its seed.

    The numbers are those Keras' own default (`random.randint(1, 10**9)` per
    layer) would draw after `random.seed(seed)`, from a generator no other
    thread touches; None when seed is None (Keras then draws as usual).
    """
    if seed is None:
        return lambda: None
    return functools.partial(random.Random(seed).randint, 1, int(1e9))


# --- the environment a fit needs -------------------------------------------------


def code_digest() -> str:
    """sha256 of every .py file of the `stages` package this process imports (paths and bytes)."""
    spec = importlib.util.find_spec("stages")
    if spec is None or not spec.submodule_search_locations:
        return "no 'stages' package"
    root = Path(next(iter(spec.submodule_search_locations)))
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def environment() -> dict[str, Any]:
    """What a fit's result depends on besides its arguments, and the machine's cores (runs on each Dask worker)."""
    import joblib

    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {"code": code_digest(), "versions": versions, "cores": joblib.cpu_count(), "host": socket.gethostname()}


def environment_differences(local: dict[str, Any], remote: dict[str, Any]) -> list[str]:
    """What differs between the stage's environment and a worker's, in words (empty: none)."""
    out = []
    if remote["code"] != local["code"]:
        out.append("the project code (stages/*.py) differs: run the worker in a checkout of the same commit")
    for name, version in local["versions"].items():
        if remote["versions"].get(name) != version:
            out.append(f"{name} {remote['versions'].get(name)} (here {version})")
    return out


# --- placement -----------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Where a search's fits run: `threads` for `with_threads`, and a description for the log."""

    backend: str
    threads: int  # TensorFlow threads per fit (0: TensorFlow's default)
    where: str


def scheduler_address(p: Parallel, key: Callable[[str], str]) -> str:
    """The scheduler's address: the parameter, else $DASK_SCHEDULER_ADDRESS; neither is a ParamsError."""
    address = p.scheduler or os.environ.get(SCHEDULER_VARIABLE, "")
    if not address:
        raise ParamsError(
            f"'{key('backend')}' is dask but no scheduler is named: set '{key('scheduler')}' to its address "
            f"(e.g. tcp://10.0.0.5:8786) or the environment variable {SCHEDULER_VARIABLE}, or use backend "
            "in_process or processes."
        )
    return address


def _dask_workers(client: Any, address: str, source: str) -> dict[str, tuple[int, int]]:
    """Check the scheduler's and every worker's environment against this one; return {host: (cores, fits at once)}.

    The scheduler unpickles the tasks too: one that cannot import `stages`
    would only log it, and the search would wait forever.
    """
    local = environment()
    try:
        scheduler, workers = client.run_on_scheduler(environment), client.run(environment)
    except Exception as err:  # a process that cannot import stages fails here, with its own traceback
        raise ClusterError(
            f"The Dask cluster at {address} ({source}) could not report its environment ({err!r}): "
            "start its scheduler and workers in a checkout of this project's commit, with its requirements.txt "
            "installed and the checkout on PYTHONPATH (`PYTHONPATH=$PWD .venv/bin/dask worker <address>`)."
        ) from None
    if not workers:
        raise ClusterError(f"The Dask cluster at {address} ({source}) has no workers; start some (`dask worker {address}`).")
    checked = {"the scheduler": scheduler, **workers}
    problems = [f"{name}: {'; '.join(d)}" for name, env in checked.items() if (d := environment_differences(local, env))]
    if problems:
        raise ClusterError(
            f"The Dask cluster at {address} ({source}) would not fit what this stage fits: " + " | ".join(problems[:3]) + "."
        )
    nthreads = client.nthreads()
    machines: dict[str, tuple[int, int]] = {}
    for worker, env in workers.items():
        cores, fits = machines.get(env["host"], (env["cores"], 0))
        machines[env["host"]] = (max(cores, env["cores"]), fits + nthreads[worker])
    return machines


@contextlib.contextmanager
def placement(p: Parallel, key: Callable[[str], str], verbose: bool = False) -> Iterator[Placement]:
    """Within it, joblib (GridSearchCV with n_jobs=None) runs its tasks where `p` says; yields the Placement.

    `key(name)` is the params.yaml key of field `name`, for error messages;
    `verbose` prints where the fits run and their threads.
    """
    with _placement(p, key) as where:
        if verbose:
            print(f"fits run {where.where}; TensorFlow threads per fit: {where.threads or 'its default'}", flush=True)
        yield where


@contextlib.contextmanager
def _placement(p: Parallel, key: Callable[[str], str]) -> Iterator[Placement]:
    import joblib

    if p.backend == "in_process":
        with joblib.parallel_config(backend="sequential"):
            yield Placement("in_process", p.threads, "in this process")
    elif p.backend == "processes":
        threads = p.threads or threads_per_fit({"here": (joblib.cpu_count(), p.processes)})
        with joblib.parallel_config(backend="loky", n_jobs=p.processes, inner_max_num_threads=threads):
            yield Placement("processes", threads, f"in {p.processes} local processes")
    else:
        import dask
        from distributed import Client

        address = scheduler_address(p, key)
        source = f"'{key('scheduler')}'" if p.scheduler else f"${SCHEDULER_VARIABLE}"
        try:
            client = Client(address, set_as_default=False)  # waits distributed.comm.timeouts.connect (Dask's config)
        except (OSError, ValueError, TypeError) as err:
            raise ClusterError(
                f"Could not reach the Dask scheduler at {address} (from {source}): {err}. Check the address, and that "
                "the scheduler runs and this machine may connect to it (the wait is Dask's "
                f"distributed.comm.timeouts.connect, now {dask.config.get('distributed.comm.timeouts.connect')})."
            ) from None
        with client:
            machines = _dask_workers(client, address, source)
            threads = p.threads or threads_per_fit(machines)
            workers = sum(fits for _, fits in machines.values())
            with joblib.parallel_config(backend="dask", client=client, n_jobs=-1):
                yield Placement("dask", threads, f"on {workers} Dask worker threads at {address}")
