"""The command line a user meets: quiet stages, helpful help, and a summary that waits its turn."""

from __future__ import annotations

import sys

from stages.cli import _TF_NOISE

from conftest import ROOT, run

IMPORT_TF = "import sys, tensorflow; print('after import', file=sys.stderr)"


def _stderr_lines(code: str, **env: str) -> list[str]:
    return run([sys.executable, "-c", code], ROOT, **env).stderr.splitlines()


def test_tensorflow_start_up_notices_are_held_back_unless_asked_for():
    plain = _stderr_lines(IMPORT_TF)
    assert any(_TF_NOISE.match(line) for line in plain), plain  # what TensorFlow prints on this machine
    quiet_code = f"from stages.cli import quiet_tensorflow_import; quiet_tensorflow_import(); {IMPORT_TF}"
    quiet = _stderr_lines(quiet_code)
    assert quiet == [line for line in plain if not _TF_NOISE.match(line)] and quiet[-1] == "after import"
    shown = _stderr_lines(quiet_code, STAGES_TF_LOGS="1")
    assert [_TF_NOISE.match(line) is not None for line in shown] == [_TF_NOISE.match(line) is not None for line in plain]


def test_summary_while_dvc_holds_the_lock_is_a_message(project):
    from dvc.repo import Repo

    with Repo(str(project)) as repo, repo.lock:
        result = run([sys.executable, "-m", "stages", "summary"], project, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "another DVC command in this project holds now" in result.stderr


def test_generate_help_says_what_it_does():
    out = run([sys.executable, "-m", "stages", "generate", "--help"], ROOT).stdout
    assert "Continue --seed-text with the run's trained model" in " ".join(out.split())
