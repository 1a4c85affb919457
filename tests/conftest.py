"""Shared test fixtures: a real copy of the project in a temporary git repo, and a dvc runner.

Pipeline tests never mock DVC, Keras or the file system: they copy the project
(every file git tracks or would track) into a temporary folder, `git init` it,
shrink params.yaml with tests/tiny_params.yaml, and run the real `dvc` there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"
sys.path.insert(0, str(ROOT))

from stages.core.params import deep_merge  # noqa: E402


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment stage commands run in: this venv's python and dvc first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.pop("DATASETS_MIRROR", None)
    env.update(extra)
    return env


def run(cmd: list[str], cwd: Path, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    """Run a command (e.g. dvc) in `cwd`; on failure show its output."""
    result = subprocess.run(cmd, cwd=cwd, env=subprocess_env(**env), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def git(cwd: Path, *args: str) -> str:
    return run(["git", *args], cwd).stdout


def copy_project(dest: Path) -> Path:
    """Copy the project's files (tracked or untracked-but-not-ignored) into a fresh git repo."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if not src.is_file() or name.startswith(("data/", "models/", "metrics/", "plots/")):
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    git(dest, "init", "-q", "-b", "main")
    git(dest, "config", "user.email", "tests@example.invalid")
    git(dest, "config", "user.name", "tests")
    return dest


def shrink_params(project: Path) -> None:
    """Overlay tests/tiny_params.yaml on params.yaml: same keys, tiny sizes."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    tiny = yaml.safe_load((ROOT / "tests" / "tiny_params.yaml").read_text())
    (project / "params.yaml").write_text(yaml.safe_dump(deep_merge(params, tiny), sort_keys=False))


def set_param(project: Path, dotted: str, value) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    *parents, last = dotted.split(".")
    node = params
    for key in parents:
        node = node[key]
    node[last] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """A fresh copy of the project with tiny params, committed on branch main."""
    dest = copy_project(tmp_path / "project")
    shrink_params(dest)
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "tiny copy")
    return dest


@pytest.fixture(scope="session")
def built_project(tmp_path_factory) -> Path:
    """One tiny project on which `dvc repro` of every stateful_lstm stage has run (shared, read-only)."""
    dest = copy_project(tmp_path_factory.mktemp("built") / "project")
    shrink_params(dest)
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "tiny copy")
    run(["dvc", "repro", "--keep-going"], dest, check=False, DATASETS_MIRROR=str(SHARED_DATASETS))
    return dest
