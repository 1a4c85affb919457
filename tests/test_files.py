"""Atomic writes: finished outputs get the permissions the umask gives, temporary names are ignorable."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from stages.core.files import atomic_dir, save_arrays, write_json


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775), (0o077, 0o600, 0o700)])
def test_outputs_respect_the_umask(tmp_path, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        write_json(tmp_path / "metrics.json", {"a": 1})
        with atomic_dir(tmp_path / "processed") as out:
            save_arrays(out, {"x": np.arange(3)})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == file_mode
    assert stat.S_IMODE((tmp_path / "processed").stat().st_mode) == dir_mode
    assert stat.S_IMODE((tmp_path / "processed" / "x.npy").stat().st_mode) == file_mode


def test_a_failed_write_leaves_the_old_output(tmp_path):
    write_json(tmp_path / "m.json", {"v": 1})
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_dir(tmp_path / "out") as out:
            write_json(out / "a.json", {})
            raise RuntimeError("boom")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
