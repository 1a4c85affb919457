"""How much of a difference is noise: an example's metrics over several seeds, and a diff that uses them.

`python -m stages spread <example> [--seeds 3] [--jobs 1] [--set KEY=VALUE ...]` queues one DVC
experiment per seed (params.yaml's `seed`, then seed + 1, ...), each running
the example's runs through plot (and compare), starts DVC's queue with `--jobs`
workers, waits for them, and writes metrics/spread/<example>.json: for every
number of every metrics file of the example, the mean, the sample standard
deviation, min and max over the seeds, and what it was computed on. The
experiments stay in `dvc exp show` (named spread-<example>-seed<N>); the run
at params.yaml's own seed is the committed one, which DVC finds cached. Run
again, it reuses what this commit's experiments already hold and re-queues
only the missing or failed seeds. `--set` passes `-S KEY=VALUE` to every
seed's experiment (e.g. Fashion-MNIST where mnist.npz cannot be had); the
spread file records the overrides, and `diff` says when a spread it uses was
measured with some.

`python -m stages diff [<rev>]` is `dvc metrics diff <rev>` with one more
column: each change in units of the seed standard deviation measured for it,
and whether it exceeds two of them (noise, most likely, when it does not).
Neither command is a stage: no stage depends on this module.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from stages.core.errors import InputError
from stages.core.files import write_json
from stages.core.layout import run_key

SPREAD_DIR = Path("metrics/spread")
NOT_RESULTS = ("computed_on",)  # metrics keys that describe the machine, not the result


def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Every number of a metrics dict by dotted key (booleans and strings, the machine description, left out)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if not prefix and key in NOT_RESULTS:
            continue
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def summarise(per_seed: Mapping[int, Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, dict[str, float]]]:
    """{seed: {metrics file: metrics}} -> {metrics file: {key: {mean, std, min, max, n}}} over the seeds that have it."""
    values: dict[str, dict[str, list[float]]] = {}
    for files in per_seed.values():
        for path, metrics in files.items():
            for key, value in flatten(metrics).items():
                values.setdefault(path, {}).setdefault(key, []).append(value)
    return {
        path: {
            key: {
                "mean": statistics.fmean(v),
                "std": statistics.stdev(v) if len(v) > 1 else 0.0,
                "min": min(v),
                "max": max(v),
                "n": len(v),
            }
            for key, v in sorted(keys.items())
        }
        for path, keys in sorted(values.items())
    }


def judge(change: float, std: float | None) -> tuple[str, str]:
    """(change in seed standard deviations, verdict) for one metric's change."""
    if std is None:
        return "", "no spread measured"
    if std == 0:
        return ("0" if change == 0 else "inf"), ("same" if change == 0 else "beyond the spread (std 0)")
    sigmas = abs(change) / std
    return f"{sigmas:.1f}", "beyond 2 std: likely real" if sigmas > 2 else "within 2 std: could be noise"


# --- the commands ---------------------------------------------------------------


def _dvc(*args: str, capture: bool = False) -> str:
    beside = Path(sys.executable).parent / "dvc"  # this environment's dvc, activated or not
    result = subprocess.run([str(beside) if beside.exists() else "dvc", *args], text=True, capture_output=capture, check=False)
    if result.returncode != 0:
        detail = (result.stderr or "").strip()[-600:] if capture else "see its output above"
        raise InputError(f"`dvc {' '.join(args)}` failed ({result.returncode}): {detail}")
    return result.stdout if capture else ""


def _targets(example: str, variants: Iterable[str]) -> list[str]:
    """Every run of the example through plot, and its compare stage if dvc.yaml has one."""
    stages = set(_dvc("stage", "list", "--name-only", capture=True).split())
    return [f"plot@{run_key(example, v)}" for v in variants] + [s for s in (f"compare@{example}",) if s in stages]


def _queue_status() -> dict[str, str]:
    """{experiment name: Queued, Running, Success or Failed} from `dvc queue status`."""
    rows = {}
    for line in _dvc("queue", "status", capture=True).splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 4 and fields[-1] in ("Queued", "Running", "Success", "Failed"):
            rows[fields[1]] = fields[-1]
    return rows


def _experiment_metrics(show: Any, names: set[str]) -> dict[str, dict[str, Any]]:
    """{experiment name: {metrics file: metrics}} found anywhere in `dvc exp show --json`."""
    found: dict[str, dict[str, Any]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("name") in names and isinstance(node.get("data"), dict):
                metrics = node["data"].get("metrics") or {}
                found[node["name"]] = {path: entry.get("data", {}) for path, entry in metrics.items()}
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(show)
    return found


def experiment_names(example: str, first_seed: int, seeds: int, overrides: Iterable[str] = ()) -> dict[int, str]:
    """{seed: experiment name}; overrides give the names a tag of their own, so other settings' experiments are not reused."""
    overrides = sorted(overrides)
    tag = "-" + hashlib.sha256("\n".join(overrides).encode()).hexdigest()[:8] if overrides else ""
    return {first_seed + i: f"spread-{example}{tag}-seed{first_seed + i}" for i in range(seeds)}


def check_overrides(overrides: Iterable[str]) -> list[str]:
    """KEY=VALUE strings, as `dvc exp run -S` takes them; `seed` is the one key the spread sets itself."""
    overrides = list(overrides)
    for item in overrides:
        key, eq, _ = item.partition("=")
        if not eq or not key.strip():
            raise InputError(f"--set {item!r}: expected KEY=VALUE, as `dvc exp run -S` takes it (e.g. seed-free params).")
        if key.strip() == "seed":
            raise InputError("--set seed=...: the spread sets `seed` itself (params.yaml's seed, then seed + 1, ...).")
    return overrides


def spread(example: str, seeds: int, jobs: int, overrides: Iterable[str] = ()) -> Path:
    """Queue, run and summarise `seeds` experiments of `example`; return the spread file."""
    from stages.core.params import read_params
    from stages.core.run import check_all_params

    overrides = check_overrides(overrides)
    check_all_params()
    params = read_params()
    variants = list(params[example]["variants"])
    names = experiment_names(example, int(params["seed"]), seeds, overrides)
    settings = [arg for item in overrides for arg in ("-S", item)]
    done = set(_dvc("exp", "list", "--name-only", capture=True).split())  # experiments of this commit
    status = _queue_status()
    for seed, name in names.items():
        if name in done or status.get(name) in ("Queued", "Running"):
            continue  # finished from this commit, or on its way: a second call picks up where the first left
        if name in status:
            _dvc("queue", "remove", name)  # failed before: queue it again
        _dvc("exp", "run", "--queue", "--name", name, "-S", f"seed={seed}", *settings, *_targets(example, variants))
    _dvc("queue", "start", "--jobs", str(jobs))
    seen: dict[str, str] = {}
    idle = 0
    while True:  # until none of them is queued or running
        status = {n: s for n, s in _queue_status().items() if n in names.values()}
        for name, state in status.items():
            if seen.get(name) != state:
                print(f"{name}: {state}", flush=True)
        seen = status
        states = set(status.values())
        if not states & {"Queued", "Running"}:
            break
        idle = idle + 1 if "Running" not in states else 0
        if idle >= 3:  # DVC's worker can stop with experiments still queued (treeverse/dvc#10562): start it again
            print("the queue's workers stopped with experiments queued: starting them again", flush=True)
            _dvc("queue", "start", "--jobs", str(jobs))
            idle = 0
        time.sleep(10)
    found = _experiment_metrics(json.loads(_dvc("exp", "show", "--json", capture=True) or "[]"), set(names.values()))
    missing = [n for n in names.values() if n not in found]
    if missing:
        raise InputError(f"experiments {', '.join(missing)} left no metrics; see `dvc queue status` and `dvc queue logs <name>`.")
    prefix = f"metrics/{example}/"
    per_seed = {seed: {p: m for p, m in found[name].items() if p.startswith(prefix)} for seed, name in names.items()}
    from stages.core.metrics import computed_on

    out = SPREAD_DIR / f"{example}.json"
    record = {"seeds": list(names), "computed_on": computed_on(), "metrics": summarise(per_seed)}
    write_json(out, {**record, "overrides": overrides} if overrides else record)
    return out


def load_spreads(folder: Path = SPREAD_DIR) -> dict[tuple[str, str], float]:
    """{(metrics file, dotted key): seed standard deviation} from every spread file."""
    spreads = {}
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("overrides"):
            print(f"note: {path} was measured with {' '.join(data['overrides'])}: a proxy for the defaults.", file=sys.stderr)
        for file, keys in data.get("metrics", {}).items():
            for key, stats in keys.items():
                spreads[(file, key)] = float(stats["std"])
    return spreads


def noise_diff(rev: str) -> int:
    """Print `dvc metrics diff <rev>` with each change measured against the seed spread."""
    diff = json.loads(_dvc("metrics", "diff", "--json", rev, capture=True) or "{}")
    spreads = load_spreads()
    rows = []
    for file, keys in sorted(diff.get("diff", diff).items()):
        if file.startswith(f"{SPREAD_DIR}/"):
            continue
        for key, change in sorted(keys.items()):
            delta = change.get("diff")
            if key.startswith(NOT_RESULTS) or not isinstance(delta, int | float) or isinstance(delta, bool):
                continue
            sigmas, verdict = judge(float(delta), spreads.get((file, key)))
            rows.append((file, key, change.get("old"), change.get("new"), delta, sigmas, verdict))
    if not rows:
        print(f"No metric differs from {rev}.")
        return 0
    header = ("Path", "Metric", rev, "workspace", "Change", "x std", "Verdict")
    table = [header, *[tuple("" if v is None else (f"{v:.5g}" if isinstance(v, float) else str(v)) for v in r) for r in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    if not spreads:
        print("No spread measured yet: `python -m stages spread <example>` measures one.", file=sys.stderr)
    return 0


def main(args: Any) -> int:
    if args.step == "spread":
        if args.seeds < 2 or args.jobs < 1:
            raise InputError(f"--seeds must be at least 2 and --jobs at least 1; got {args.seeds} and {args.jobs}.")
        out = spread(args.example, args.seeds, args.jobs, args.overrides)
        stats = json.loads(out.read_text(encoding="utf-8"))["metrics"]
        for file, keys in stats.items():
            for key, s in keys.items():
                if math.isfinite(s["std"]):
                    print(f"{file} {key}: {s['mean']:.5g} ± {s['std']:.2g} (min {s['min']:.5g}, max {s['max']:.5g}, n {s['n']})")
        print(f"wrote {out}")
        return 0
    return noise_diff(args.rev)
