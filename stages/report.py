"""`python -m stages repro`: run every pipeline, keep going past failures, summarise.

One example whose data cannot be had must not stop the others, so the
pipeline runs with `dvc repro --keep-going`. Each failing step leaves a short
note in logs/failures/<stage>.txt (see cli.py); afterwards every stage is
reported as ran, up to date, failed (with the note) or skipped (with the
failed stage it waits on).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from stages.core.errors import DatasetUnavailable
from stages.core.files import write_text

FAILURES = Path("logs/failures")


def record_failure(stage: str, err: BaseException) -> None:
    """Leave a note for the summary: 'unavailable' (missing data only) or 'error'."""
    kind = "unavailable" if isinstance(err, DatasetUnavailable) else "error"
    write_text(FAILURES / f"{stage}.txt", f"{kind}\n{err}\n")


def clear_failure(stage: str) -> None:
    (FAILURES / f"{stage}.txt").unlink(missing_ok=True)


def _lock_entries(path: Path = Path("dvc.lock")) -> dict:
    if not path.is_file():
        return {}
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("stages", {})


def _failures() -> dict[str, tuple[str, str]]:
    notes = {}
    for path in sorted(FAILURES.glob("*.txt")) if FAILURES.is_dir() else []:
        kind, _, message = path.read_text(encoding="utf-8").partition("\n")
        notes[path.stem] = (kind, " ".join(message.split()))
    return notes


def summarise(before: dict | None = None) -> tuple[list[tuple[str, str, str]], bool]:
    """Rows of (stage, state, detail) for every stage, and whether any real error occurred.

    A failure for want of data (no network, no mirror) is reported but is not
    an error: the rest of the project is still whole.
    """
    import networkx as nx
    from dvc.repo import Repo

    after = _lock_entries()
    failures = _failures()
    with Repo(".") as repo:
        graph = repo.index.graph
        changed = set(repo.status())
        rows, error = [], False
        for stage in nx.topological_sort(graph.reverse(copy=True)):
            name = stage.name
            if name in failures:
                kind, message = failures[name]
                rows.append((name, "failed", message))
                error |= kind != "unavailable"
            elif name in changed:
                upstream = [s.name for s in nx.descendants(graph, stage) if s.name in failures]
                if upstream:
                    rows.append((name, "skipped", f"waits on {', '.join(sorted(upstream))}"))
                else:
                    rows.append((name, "not done", "dvc repro did not complete it; see its output above"))
                    error = True
            elif before is not None and before.get(name) != after.get(name):
                rows.append((name, "ran", ""))
            else:
                rows.append((name, "up to date", ""))
    return rows, error


def print_summary(before: dict | None = None) -> int:
    from dvc.lock import LockError

    try:
        rows, error = summarise(before)
    except LockError:
        print(
            "The summary needs DVC's lock, which another DVC command in this project holds now (a `dvc repro` "
            "still running?). Run `python -m stages summary` again when it has finished.",
            file=sys.stderr,
        )
        return 1
    width = max((len(r[0]) for r in rows), default=10)
    print("\nSummary")
    for name, state, detail in rows:
        line = f"  {name:<{width}}  {state:<10}"
        print(f"{line}  {detail}" if detail else line.rstrip())
    counts = {s: sum(r[1] == s for r in rows) for s in ("ran", "up to date", "failed", "skipped", "not done")}
    print("  " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    if any(r[1] == "failed" for r in rows) and not error:
        print("  Only missing data stopped some pipelines; set DATASETS_MIRROR to a copy of the datasets to run them.")
    return 1 if error else 0


def repro(targets: list[str]) -> int:
    shutil.rmtree(FAILURES, ignore_errors=True)
    before = _lock_entries()
    subprocess.run(["dvc", "repro", "--keep-going", *targets], check=False)
    return print_summary(before)


if __name__ == "__main__":
    sys.exit(print_summary())
