"""Atomic file and folder writes, and the small readers/writers every stage uses.

Every output is first written beside its final path under a temporary name and
then renamed into place, so a stage that dies half-way never leaves a file that
looks finished. DVC then either sees the whole output or none of it.

Temporary names are `.<name>.<random>.tmp` (plus the final suffix where a
writer insists on one); .gitignore and .dvcignore ignore that pattern, so what a
killed stage leaves behind is never committed to git nor hashed into an output.
Finished files and folders get the permissions the umask gives any new file
(tempfile alone would make them 0600 and 0700, unreadable to a shared cache).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np


def _umask() -> int:
    """The process umask, read without changing it where Linux allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _publish(tmp: Path, directory: bool) -> None:
    """Give a finished temporary file or folder the mode a plain create would have."""
    os.chmod(tmp, (0o777 if directory else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` on success.

    Args:
        path: final file path.
        suffix: suffix the temporary name must end with (Keras insists on
            ".weights.h5"); defaults to the final name's suffixes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _publish(tmp_path, directory=False)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces `path` whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _publish(tmp, directory=True)
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write `data` as indented, key-sorted UTF-8 JSON, atomically."""
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=_jsonable)
    write_text(path, text + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def save_arrays(folder: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Save each array as `<folder>/<name>.npy` (uncompressed, memory-mappable).

    `.npy` is used rather than `.npz` because its bytes depend only on the array,
    so the same inputs give the same DVC hash, and large arrays can be mmapped.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        with atomic_file(folder / f"{name}.npy") as tmp:
            np.save(tmp, np.ascontiguousarray(array), allow_pickle=False)


def load_array(folder: str | os.PathLike, name: str, mmap: bool = False) -> np.ndarray:
    """Load `<folder>/<name>.npy`; never unpickles."""
    return np.load(Path(folder) / f"{name}.npy", allow_pickle=False, mmap_mode="r" if mmap else None)


def write_csv(path: str | os.PathLike, columns: Mapping[str, Any]) -> None:
    """Write equal-length columns as a CSV for DVC's plot templates, atomically."""
    import pandas as pd

    with atomic_file(path) as tmp:
        pd.DataFrame(dict(columns)).to_csv(tmp, index=False, float_format="%.6g")
