"""mnist_sklearn_wrapper's grid search in-process, in 2 local processes, and on a 2-worker Dask LocalCluster.

Run: `python -m benchmarks.gridsearch [--train-samples N]` (from the project
root; `make bench` runs it with the default N = 2,400); `--train-samples 12000`
is the pipeline's default search (minutes per mode on two cores).

The search is params.yaml's (mnist_sklearn_wrapper.train: the original's 8
candidates x 3 folds, then the refit of the best) on the first N training
images of Fashion-MNIST from DATASETS_MIRROR (default ../shared/datasets), or
of a random stand-in of the same shape when that is not there (the times are
the same; the scores are not). Each mode runs in a fresh process, one after
the other, so each starts TensorFlow with its own thread settings:

  in_process   backend in_process: the fits one after another, TensorFlow's default threads
  processes    backend processes, 2 loky processes, 1 TensorFlow thread per fit (threads 0: cores / 2)
  dask         a LocalCluster of 2 worker processes x 1 thread on 127.0.0.1, started by the
               mode's process (its start-up counted in `total`), backend dask

Reported per mode: `search` (GridSearchCV.fit, refit included, as the train
stage runs it), `total` (the mode's whole process: Python, TensorFlow and
cluster start-up, data loading), the peak of the memory all its processes
hold together (sum of RSS over the process tree, sampled every 0.2 s), the
CPU time of that tree (user + system), the machine's 1-minute load average
(mean of its values at the mode's start and end: above the core count, other
work shared the cores and the wall times are inflated), the largest
difference of a mean CV score from in_process's, and the best candidate. The best candidate and every score must
be the same in all modes (asserted); the scores are bit-identical where the
thread settings match (processes and dask: printed), and differ where they do
not (in_process uses TensorFlow's default threads: training amplifies the
last-digit differences of sums done in another order).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODES = ("in_process", "processes", "dask")


def load_data(n: int) -> tuple[str, np.ndarray, np.ndarray]:
    """(source, x (n, 784) float32, y (n,) int64): Fashion-MNIST's first n training images, or a stand-in."""
    from stages import mnist_sklearn_wrapper as m

    folder = Path(os.environ.get("DATASETS_MIRROR", ROOT.parent / "shared" / "datasets")) / "fashion_mnist"
    if (folder / "train-images-idx3-ubyte.gz").is_file():
        from stages.datasets import fashion_mnist

        (images, labels), _ = fashion_mnist.load(folder)
        source = "Fashion-MNIST"
    else:
        rng = np.random.default_rng(0)
        images, labels = rng.integers(0, 256, (60_000, 28, 28), dtype=np.uint8), np.arange(60_000) % 10
        source = "random stand-in"
    images, labels = m.take_first(images, labels, n, "--train-samples")
    return source, m.scale(m.as_images(images)), labels.astype(np.int64)


def run_mode(mode: str, n: int) -> dict:
    """One mode, in this process: the search as the train stage runs it; returns its timings and result."""
    import contextlib

    from stages import mnist_sklearn_wrapper as m
    from stages.core.params import read_params

    started = time.perf_counter()
    source, x, y = load_data(n)
    train = read_params(ROOT / "params.yaml")["mnist_sklearn_wrapper"]["train"]
    parallel = {**train["parallel"], "backend": mode, "processes": 2, "threads": 0}
    cluster = contextlib.nullcontext()
    if mode == "dask":
        from distributed import LocalCluster

        cluster = LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None, silence_logs=40
        )
        parallel["scheduler"] = cluster.scheduler_address
    with cluster:
        p = m.Train(**{**train, "parallel": parallel})
        search_start = time.perf_counter()
        search = m.grid_search(x, y, p, seed=1337, verbose=1)
        search_s = time.perf_counter() - search_start
    return {
        "mode": mode,
        "source": source,
        "images": len(x),
        "fits": len(search.cv_results_["params"]) * p.cv,
        "search_s": search_s,
        "total_s": time.perf_counter() - started,
        "best": m.candidate_label(m.flatten_candidate(search.best_params_)),
        "best_score": float(search.best_score_),
        "scores": search.cv_results_["mean_test_score"].tolist(),
    }


def measure(mode: str, n: int) -> dict:
    """Run one mode in a fresh process; sample the summed RSS of its process tree; return its report."""
    import psutil

    out = Path(tempfile.mkdtemp()) / f"{mode}.json"
    cmd = [sys.executable, "-m", "benchmarks.gridsearch", "--mode", mode, "--train-samples", str(n), "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    peak, root, cpu, load = 0, psutil.Process(proc.pid), {}, os.getloadavg()[0]
    while proc.poll() is None:
        total = 0
        with_children = [root]
        try:
            with_children += root.children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        for p in with_children:
            try:
                total += p.memory_info().rss
                times = p.cpu_times()
                cpu[p.pid] = times.user + times.system  # the last value seen before it exits (at most 0.2 s short)
            except psutil.NoSuchProcess:
                pass
        peak = max(peak, total)
        time.sleep(0.2)
    if proc.returncode != 0:
        raise SystemExit(f"mode {mode} failed ({proc.returncode})")
    report = json.loads(out.read_text())
    shutil.rmtree(out.parent)
    return {**report, "peak_mb": peak / 2**20, "cpu_s": sum(cpu.values()), "load": (load + os.getloadavg()[0]) / 2}


def main(n: int = 2400) -> None:
    reports = [measure(mode, n) for mode in MODES]
    base = reports[0]
    print(f"grid search, {base['fits']} fits + refit on {base['images']:,} images ({base['source']}), {os.cpu_count()} cores")
    header = f"{'mode':<12}{'search s':>10}{'speed vs in_process':>21}{'total s':>10}{'CPU s':>8}{'peak MB':>10}"
    print(header + f"{'load':>6}{'max score diff':>16}  best (mean CV score)")
    for r in reports:
        ratio = base["search_s"] / r["search_s"]
        diff = max(abs(a - b) for a, b in zip(r["scores"], base["scores"], strict=True))
        print(
            f"{r['mode']:<12}{r['search_s']:>10.1f}{ratio:>20.2f}x{r['total_s']:>10.1f}{r['cpu_s']:>8.0f}{r['peak_mb']:>10.0f}"
            f"{r['load']:>6.1f}{diff:>16.1e}  {r['best']} ({r['best_score']:.4f})"
        )
    same = reports[1]["scores"] == reports[2]["scores"]
    print(f"processes and dask (1 TensorFlow thread per fit each): every score bit-identical: {'yes' if same else 'NO'}")
    assert len({r["best"] for r in reports}) == 1, "the modes picked different candidates"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-samples", type=int, default=2400)
    parser.add_argument("--mode", choices=MODES, help="run one mode in this process (what main() starts per mode)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.mode:
        args.out.write_text(json.dumps(run_mode(args.mode, args.train_samples)))
    else:
        main(args.train_samples)
