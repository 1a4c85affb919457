"""stages/datasets/text_file.py: a project file is read only once DVC says its stage declares it, and only as UTF-8."""

from __future__ import annotations

import re

import pytest

from stages.core.errors import InputError, ParamsError
from stages.datasets import text_file

from conftest import run

TEXT = "天下大势，分久必合，合久必分。The will to power.\n"


@pytest.fixture()
def repo(tmp_path):
    """A real DVC project whose stage `prep` declares texts/mine.txt."""
    root = tmp_path / "repo"
    (root / "texts").mkdir(parents=True)
    (root / "texts" / "mine.txt").write_text(TEXT, encoding="utf-8")
    (root / "other.txt").write_text(TEXT, encoding="utf-8")
    (root / "dvc.yaml").write_text("stages:\n  prep:\n    cmd: cat texts/mine.txt\n    deps:\n      - texts/mine.txt\n")
    run(["dvc", "init", "--no-scm", "-q"], root)
    return root


def test_a_declared_file_is_read_as_utf8(repo):
    assert text_file.load("texts/mine.txt", "prep", root=repo) == TEXT
    assert text_file.load("texts/./mine.txt", "prep", root=repo) == TEXT


def test_an_undeclared_or_unknown_stage_is_refused(repo):
    with pytest.raises(
        text_file.Refused, match=re.escape("other.txt is not a dependency of prep in dvc.yaml (it has texts/mine.txt)")
    ):
        text_file.load("other.txt", "prep", root=repo)
    with pytest.raises(
        text_file.Refused, match=re.escape("texts/mine.txt cannot be checked: DVC gives no stage preprocess@x-y here")
    ):
        text_file.load("texts/mine.txt", "preprocess@x-y", root=repo)


def test_a_path_leading_outside_is_refused_before_dvc_is_asked(tmp_path):
    root = tmp_path / "project"  # no dvc.yaml: refused before DVC would be asked
    (root / "texts").mkdir(parents=True)
    (root / "texts" / "link.txt").symlink_to(tmp_path / "secret.txt")  # need not exist: it is never read
    with pytest.raises(text_file.Refused, match=re.escape(f"is a symlink to {tmp_path / 'secret.txt'}, outside the project")):
        text_file.load("texts/link.txt", "prep", root=root)
    with pytest.raises(text_file.Refused, match="'?../secret.txt lies outside the project"):
        text_file.load("../secret.txt", "prep", root=root)
    assert issubclass(text_file.Refused, ParamsError)


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"", "text file t.txt is empty"),
        (b"caf\xe9 au lait", "text file t.txt is not valid UTF-8 (byte 3: invalid continuation byte)"),
    ],
    ids=["empty", "latin-1"],
)
def test_decode_errors_name_the_file(data, expected):
    with pytest.raises(InputError, match=re.escape(expected)):
        text_file.decode(data, "t.txt")


def test_a_declared_file_that_is_missing_is_named(repo):
    (repo / "texts" / "mine.txt").unlink()
    with pytest.raises(InputError, match=re.escape("text file texts/mine.txt does not exist")):
        text_file.load("texts/mine.txt", "prep", root=repo)
