"""Nietzsche's collected writings as one UTF-8 text file: the corpus of lstm_text_generation."""

from __future__ import annotations

import os
from pathlib import Path

from stages.core.remote import RemoteFile

FILES = (
    RemoteFile(
        "nietzsche.txt",
        "https://s3.amazonaws.com/text-datasets/nietzsche.txt",
        size=600901,
        sha256="23cf69874ab69d3d256099ab530ea4be24d47d9675b673bcc67cbcd6298ec647",
    ),
)


def text_file(folder: str | os.PathLike) -> Path:
    """The corpus inside data/raw/nietzsche/ (the caller reads and checks it)."""
    return Path(folder) / FILES[0].name
