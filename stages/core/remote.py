"""What a dataset module declares about each of its downloads.

It lives in core, which every preprocess stage already depends on, so that a
dataset module (FILES and its loader) imports nothing from the download
machinery: a preprocess stage then runs, and depends on, its loader alone.
"""

from __future__ import annotations

from dataclasses import dataclass

KERAS_DATASETS = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file: its exact size and the checksum it must have.

    Where Keras pins only an md5, the md5 is what is verified.
    """

    name: str
    url: str
    size: int
    sha256: str | None = None
    md5: str | None = None

    @property
    def algorithm(self) -> str:
        return "sha256" if self.sha256 else "md5"

    @property
    def checksum(self) -> str:
        return self.sha256 or self.md5 or ""
