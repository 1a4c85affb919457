"""Results shared through a DVC remote (README: Sharing results): push from one clone, pull into a fresh one."""

from __future__ import annotations

import filecmp
import json
import re

from conftest import git, run


def status(project) -> dict:
    out = run(["dvc", "status", "--json"], project, check=False)
    return json.loads(out.stdout or "{}")


def same_tree(a, b) -> bool:
    """Whether folders `a` and `b` hold the same files with the same bytes."""
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    if filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)[1:] != ([], []):
        return False
    return all(same_tree(a / d, b / d) for d in cmp.common_dirs)


def test_pushed_results_pull_into_a_fresh_clone_that_recomputes_nothing(built_copy, tmp_path):
    """A local folder as the remote, as the README shows; S3, GCS and SSH differ only in the URL."""
    git(built_copy, "add", "-A")
    git(built_copy, "commit", "-qm", "results")
    remote = tmp_path / "dvc-remote"
    run(["dvc", "remote", "add", "--default", "shared", str(remote)], built_copy)
    git(built_copy, "commit", "-qam", "the shared remote")
    run(["dvc", "push"], built_copy)
    assert any(remote.rglob("*")), "dvc push wrote nothing to the remote"
    unchanged = status(built_copy)  # what this machine cannot build (no data for it): the same in the clone

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(built_copy), str(clone))
    assert not (clone / "models").exists() and not (clone / ".dvc" / "cache").exists()
    # --allow-missing: stages that never ran here (no data for them) have no outputs to fetch; plain `dvc pull`
    # fetches the rest too, then exits 1 naming them
    run(["dvc", "pull", "--allow-missing"], clone)

    assert not {"train@stateful_lstm-lahead1", "compare@stateful_lstm", "train@lstm_text_generation-nietzsche"} & set(unchanged)
    assert (clone / "models" / "stateful_lstm-lahead1" / "model.weights.h5").is_file()
    for folder in ("data", "models"):
        assert same_tree(built_copy / folder, clone / folder), f"{folder}/ differs after dvc pull"
    assert status(clone) == unchanged  # every stage built there is up to date here
    out = run(["dvc", "repro", "--keep-going"], clone, check=False)
    ran = set(re.findall(r"Running stage '([^']+)'", out.stdout))
    assert ran <= set(unchanged), f"dvc repro recomputed what was pulled: {sorted(ran - set(unchanged))}"
