"""How long DVC takes to decide that nothing needs to run.

Runs `dvc repro` on the project as it stands (built or not, it only reports
what would run with --dry), several times, and reports the median wall time
beside the median of `dvc --version` measured in the same run: the latter is
DVC's own start-up cost, so the ratio shows what checking the pipeline adds.
The target is a no-op `dvc repro` of the built pipeline under 3 s.

    python -m benchmarks.noop_repro [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, capture_output=True, check=False)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    stages = subprocess.run(["dvc", "stage", "list", "--name-only"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    baseline = statistics.median(timed(["dvc", "--version"]) for _ in range(args.repeats))
    status = statistics.median(timed(["dvc", "status"]) for _ in range(args.repeats))
    noop = statistics.median(timed(["dvc", "repro", "--dry"]) for _ in range(args.repeats))
    print(f"{len(stages)} stages, median of {args.repeats} runs")
    print(f"{'command':<22}{'seconds':>10}{'x dvc --version':>18}")
    for name, value in (("dvc --version", baseline), ("dvc status", status), ("dvc repro --dry", noop)):
        print(f"{name:<22}{value:>10.2f}{value / baseline:>18.1f}")


if __name__ == "__main__":
    main()
