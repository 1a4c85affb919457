"""Shared test fixtures: a real copy of the project in a temporary git repo, and a dvc runner.

Pipeline tests never mock DVC, Keras or the file system: they copy the project
(every file git tracks or would track) into a temporary folder, `git init` it,
shrink params.yaml with tests/tiny_params.yaml, and run the real `dvc` there.

Every process the tests start runs as on a user's machine and on no network:
* PYTHONDONTWRITEBYTECODE is removed, so Python writes __pycache__ beside the
  code as it does by default (the machines here set it, which would hide
  bytecode changing DVC's hashes);
* DATASETS_OFFLINE=1 (never try the canonical URLs), so a dataset missing
  from the test's mirror is missing, whatever network the machine has;
* tests/hermetic/sitecustomize.py refuses any host but the loopback address,
  in those processes and (installed below) in this one.
TESTS_SIMULATE_NETWORK=1 runs the suite with offline mode off and a loopback
server standing in for the canonical dataset URLs (serving what
../shared/datasets holds), as a connected machine would see them; every test
must pass both ways.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"
HERMETIC = Path(__file__).resolve().parent / "hermetic"
sys.path.insert(0, str(ROOT))


def _install_guard() -> None:
    spec = importlib.util.spec_from_file_location("hermetic_guard", HERMETIC / "sitecustomize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


_install_guard()

from stages.core.params import deep_merge  # noqa: E402


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment stage commands run in: this venv's python and dvc first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERMETIC), env.get("PYTHONPATH")]))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if os.environ.get("TESTS_SIMULATE_NETWORK") != "1":
        env["DATASETS_OFFLINE"] = "1"
    env["DVC_NO_ANALYTICS"] = "1"
    env.pop("DATASETS_MIRROR", None)
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


def serve(folder: Path):
    """A loopback HTTP server for `folder`, in a thread; returns (base URL, server)."""
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def canonical_standin(root: Path) -> Path:
    """A folder laid out as <host>/<path> of the canonical URLs, holding ../shared/datasets' files."""
    keras = root / "storage.googleapis.com" / "tensorflow" / "tf-keras-datasets"
    text = root / "s3.amazonaws.com" / "text-datasets"
    keras.mkdir(parents=True, exist_ok=True)
    text.mkdir(parents=True, exist_ok=True)
    for name in (
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ):
        (keras / name).symlink_to(SHARED_DATASETS / "fashion_mnist" / name)
    (text / "nietzsche.txt").symlink_to(SHARED_DATASETS / "nietzsche" / "nietzsche.txt")
    return root


@pytest.fixture(scope="session", autouse=True)
def simulated_network(tmp_path_factory):
    """With TESTS_SIMULATE_NETWORK=1: canonical URLs answered by a loopback stand-in, offline mode off."""
    if os.environ.get("TESTS_SIMULATE_NETWORK") != "1":
        yield None
        return
    base, server = serve(canonical_standin(tmp_path_factory.mktemp("canonical")))
    os.environ["HERMETIC_CANONICAL"] = base
    yield base
    server.shutdown()
    del os.environ["HERMETIC_CANONICAL"]


def run(cmd: list[str], cwd: Path, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    """Run a command (e.g. dvc) in `cwd`; on failure show its output."""
    if Path(cwd).resolve() != ROOT:
        env.setdefault("STAGES_RECORD_IMPORTS", str(imports_log(Path(cwd))))
    result = subprocess.run(cmd, cwd=cwd, env=subprocess_env(**env), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def stages_cmd(*args: str) -> list[str]:
    """`python -m stages <args>` with this interpreter."""
    return [sys.executable, "-m", "stages", *args]


def add_run(project: Path, example: str, variant: str, source: str, loader: str) -> str:
    """Add a run to params.yaml's `runs` (dvc.yaml iterates over it); returns its key."""
    key = f"{example}-{variant}"
    params = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
    params["runs"][key] = {"example": example, "variant": variant, "source": source, "loader": loader}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return key


def imports_log(project: Path) -> Path:
    """Where `python -m stages` records the project modules each command imported (beside the project)."""
    return Path(project).resolve().parent / f"{Path(project).name}.imports.jsonl"


# Imported by every command and listed by no stage: the dispatcher, the repro
# summary and three docstring-only package files (tests/test_pipeline.py checks that they hold no code).
NOT_DEPENDENCIES = {
    "stages/__init__.py",
    "stages/__main__.py",
    "stages/cli.py",
    "stages/report.py",
    "stages/core/__init__.py",
    "stages/datasets/__init__.py",
}


def _within(path: str, dep: str) -> bool:
    """Whether `path` is the dependency `dep` or lies inside it (a folder)."""
    return path == dep or path.startswith(dep.rstrip("/") + "/")


def assert_code_deps_match_imports(project: Path) -> set[str]:
    """Every stage that ran imported exactly the project code its dvc.yaml entry lists.

    A folder dependency covers the modules under it; each declared code file or
    folder must have been imported too, so a dependency cannot be stale either.
    Returns the names of the stages checked.
    """
    import json

    from dvc.repo import Repo

    ran: dict[str, set[str]] = {}
    for line in imports_log(project).read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["stage"]:
            ran.setdefault(record["stage"], set()).update(set(record["modules"]) - NOT_DEPENDENCIES)
    with Repo(str(project)) as repo:
        stages = {s.name: s for s in repo.index.stages}
    for name, modules in ran.items():
        code = {d.def_path for d in stages[name].deps if d.def_path.startswith("stages/")}
        undeclared = sorted(m for m in modules if not any(_within(m, dep) for dep in code))
        assert not undeclared, f"{name} ran {undeclared}, which its dvc.yaml deps do not list"
        unused = sorted(dep for dep in code if not any(_within(m, dep) for m in modules))
        assert not unused, f"{name} lists {unused} as deps but never imported them"
    return set(ran)


def git(cwd: Path, *args: str) -> str:
    return run(["git", *args], cwd).stdout


@functools.cache
def plots_template() -> str:
    """The page template `make setup` writes (stages/plots_page.py): the one it wrote, else built here."""
    from stages.plots_page import TEMPLATE, build

    written = ROOT / TEMPLATE
    return written.read_text(encoding="utf-8") if written.is_file() else build()


def copy_project(dest: Path) -> Path:
    """Copy the project's files (tracked or untracked-but-not-ignored) into a fresh git repo.

    The copy gets what `make setup` adds to a clone: the plots page template
    `.dvc/config` points at (git-ignored, so not among the files).
    """
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
    from stages.plots_page import TEMPLATE

    (dest / TEMPLATE).write_text(plots_template(), encoding="utf-8")
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
    """One tiny project on which `dvc repro --keep-going` has run (shared, read-only).

    Built once per test run: under pytest-xdist (`make test` runs `-n auto`)
    the workers share it through the run's common temporary folder, the first
    to ask building it under a lock while the others wait.
    """
    import fcntl

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the folder every worker's basetemp lies in
    dest, done = root / "built" / "project", root / "built" / "done"
    with open(root / "built.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(dest.parent, ignore_errors=True)
            copy_project(dest)
            shrink_params(dest)
            git(dest, "add", "-A")
            git(dest, "commit", "-qm", "tiny copy")
            run(["dvc", "repro", "--keep-going"], dest, check=False, DATASETS_MIRROR=str(SHARED_DATASETS))
            done.touch()
    return dest


@pytest.fixture()
def built_copy(built_project, tmp_path):
    """A private copy of the built project (outputs, cache and lock included) to change."""
    dest = tmp_path / "copy"
    shutil.copytree(built_project, dest, symlinks=True)
    shutil.copy(imports_log(built_project), imports_log(dest))  # what the build's stages imported, for the deps check
    return dest
