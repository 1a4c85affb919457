"""A UTF-8 text file inside the project, declared as its run's source: a corpus of the user's own.

Not a download: the file is the user's, so it is checked before it is read.
It must lie inside the project (no symlink leading out of it) and be a
dependency of the run's preprocess stage in dvc.yaml (the run's `source`), so
that dvc.lock records what the model learned from and nothing kept in git
(generated samples) can quote an arbitrary file of the machine. A run reading
such a file names this module as its `loader` in dvc.yaml.
"""

from __future__ import annotations

import os
from pathlib import Path

from stages.core.errors import InputError, ParamsError


class Refused(ParamsError):
    """The file may not be read; `problem` says why, for the caller to name the params key that chose it."""

    def __init__(self, path: str | os.PathLike, problem: str):
        super().__init__(f"{path} {problem}.")
        self.problem = problem


def declared_deps(stage: str, root: Path) -> list[Path]:
    """The dependencies DVC resolves for `stage` (e.g. preprocess@lstm_text_generation-mine), relative to root.

    Asks DVC itself, so foreach entries and ${...} interpolation read as `dvc repro` reads them.
    """
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(os.fspath(root)) as repo:
            stages = repo.stage.collect(f"{os.path.join(repo.root_dir, 'dvc.yaml')}:{stage}")
            return [Path(os.path.relpath(dep.fs_path, repo.root_dir)) for s in stages for dep in s.deps]
    except DvcException as err:  # no such stage (a variant without its run in dvc.yaml), no dvc.yaml, ...
        raise LookupError(f"cannot be checked: DVC gives no stage {stage} here ({err})") from None


def checked_path(path: str | os.PathLike, stage: str, root: str | os.PathLike | None = None) -> Path:
    """`path` (relative to the project root), once it is known to lie inside the project and be a dep of `stage`."""
    root = Path.cwd() if root is None else Path(root)
    relative = Path(os.path.normpath(path))
    target = (root / relative).resolve()
    if not target.is_relative_to(root.resolve()):
        named_outside = relative.is_absolute() or relative.parts[:1] == ("..",)
        raise Refused(path, "lies outside the project" if named_outside else f"is a symlink to {target}, outside the project")
    try:
        deps = declared_deps(stage, root)
    except LookupError as err:
        raise Refused(path, str(err)) from None
    if not any(relative == dep or relative.is_relative_to(dep) for dep in deps):
        raise Refused(
            path,
            f"is not a dependency of {stage} in dvc.yaml (it has {', '.join(map(str, deps))}), so DVC would not "
            f"track it; the run `{stage.partition('@')[2]}` under preprocess's foreach needs `source: {relative}`",
        )
    return relative


def decode(data: bytes, path: str | os.PathLike) -> str:
    """The UTF-8 text of a file's bytes; anything else, or nothing, is an InputError naming the file."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(
            f"text file {path} is not valid UTF-8 (byte {err.start}: {err.reason}); "
            "expected a UTF-8 text file: re-save it as UTF-8 (e.g. `iconv -t UTF-8`)."
        ) from None
    if not text:
        raise InputError(f"text file {path} is empty; expected a UTF-8 text file with some text in it.")
    return text


def load(path: str | os.PathLike, stage: str, root: str | os.PathLike | None = None) -> str:
    """The text of `path`, read only once it is a project file that `stage` declares (Refused otherwise)."""
    relative = checked_path(path, stage, root)
    full = (Path.cwd() if root is None else Path(root)) / relative
    if not full.is_file():
        raise InputError(f"text file {relative} does not exist; expected a UTF-8 text file inside the project.")
    return decode(full.read_bytes(), relative)
