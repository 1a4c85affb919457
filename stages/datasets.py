"""The dataset layer: one registry of the downloads, a verified fetch, and loaders.

`fetch(dataset, dest)` puts every file of a dataset into `data/raw/<dataset>/`.
For each file it tries, in order, the mirror named by the environment variable
DATASETS_MIRROR (a folder, or a file:// or http(s):// prefix, laid out as
`<mirror>/<dataset>/<file name>`) and then the canonical URL. Each candidate is
streamed to a temporary file while its checksum is computed; only a file whose
checksum matches is renamed into place, so the bytes DVC hashes are the same
whichever source served them. Transient network failures are retried.

The loaders read what `fetch` wrote, without ever unpickling arbitrary objects:
imdb.npz and reuters.npz hold pickled object arrays, which are read with Keras'
restricted unpickler (it rebuilds numpy arrays and nothing else).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.core.errors import DatasetError, DatasetUnavailable
from stages.core.files import atomic_file

KERAS_DATASETS = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
MIRROR_ENV = "DATASETS_MIRROR"


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file and the checksum it must have.

    Where Keras pins only an md5, the md5 is what is verified.
    """

    name: str
    url: str
    sha256: str | None = None
    md5: str | None = None

    @property
    def algorithm(self) -> str:
        return "sha256" if self.sha256 else "md5"

    @property
    def checksum(self) -> str:
        return self.sha256 or self.md5 or ""


REGISTRY: dict[str, tuple[RemoteFile, ...]] = {
    "nietzsche": (
        RemoteFile(
            "nietzsche.txt",
            "https://s3.amazonaws.com/text-datasets/nietzsche.txt",
            sha256="23cf69874ab69d3d256099ab530ea4be24d47d9675b673bcc67cbcd6298ec647",
        ),
    ),
    "mnist": (
        RemoteFile(
            "mnist.npz",
            KERAS_DATASETS + "mnist.npz",
            sha256="731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
        ),
    ),
    "fashion_mnist": (
        RemoteFile(
            "train-labels-idx1-ubyte.gz",
            KERAS_DATASETS + "train-labels-idx1-ubyte.gz",
            sha256="a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        ),
        RemoteFile(
            "train-images-idx3-ubyte.gz",
            KERAS_DATASETS + "train-images-idx3-ubyte.gz",
            sha256="3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        ),
        RemoteFile(
            "t10k-labels-idx1-ubyte.gz",
            KERAS_DATASETS + "t10k-labels-idx1-ubyte.gz",
            sha256="67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        ),
        RemoteFile(
            "t10k-images-idx3-ubyte.gz",
            KERAS_DATASETS + "t10k-images-idx3-ubyte.gz",
            sha256="346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        ),
    ),
    "imdb": (
        RemoteFile(
            "imdb.npz",
            KERAS_DATASETS + "imdb.npz",
            sha256="69664113be75683a8fe16e3ed0ab59fda8886cb3cd7ada244f7d9544e4676b9f",
        ),
        RemoteFile("imdb_word_index.json", KERAS_DATASETS + "imdb_word_index.json", md5="bfafd718b763782e994055a2d397834f"),
    ),
    "reuters": (
        RemoteFile(
            "reuters.npz",
            KERAS_DATASETS + "reuters.npz",
            sha256="d6586e694ee56d7a4e65172e12b3e987c03096cb01eab99753921ef915959916",
        ),
        RemoteFile("reuters_word_index.json", KERAS_DATASETS + "reuters_word_index.json", md5="4d44cc38712099c9e383dc6e5f11a921"),
    ),
}

CHUNK = 1 << 20
PROGRESS_MIN_BYTES = 4 << 20


class TransientError(Exception):
    """A failure worth retrying (timeout, connection reset, HTTP 5xx/429)."""


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def candidate_sources(dataset: str, remote: RemoteFile, mirror: str | None) -> list[str]:
    """The places to try for one file, mirror first; folders as plain paths."""
    sources = []
    if mirror:
        if mirror.startswith(("http://", "https://", "file://")):
            sources.append(f"{mirror.rstrip('/')}/{dataset}/{remote.name}")
        else:
            sources.append(str(Path(mirror) / dataset / remote.name))
    sources.append(remote.url)
    return sources


def _open(source: str, timeout: float):
    """Open a source for streaming; returns (stream, size or None)."""
    parsed = urllib.parse.urlparse(source)
    if parsed.scheme in ("", "file"):
        path = Path(urllib.request.url2pathname(parsed.path)) if parsed.scheme == "file" else Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"no such file {path}")
        return open(path, "rb"), path.stat().st_size
    request = urllib.request.Request(source, headers={"User-Agent": "keras-dvc-examples"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code >= 500 or err.code == 429:
            raise TransientError(f"HTTP {err.code}") from err
        raise
    except urllib.error.URLError as err:
        # DNS failure or refused connection: the network is not there; retrying won't help.
        if isinstance(err.reason, (TimeoutError, ConnectionResetError)):
            raise TransientError(str(err.reason)) from err
        raise
    except (TimeoutError, ConnectionResetError) as err:
        raise TransientError(str(err)) from err
    size = response.headers.get("Content-Length")
    return response, int(size) if size else None


def _stream_to(source: str, target: Path, algorithm: str, label: str, timeout: float) -> str:
    """Copy `source` into `target`, returning its hex digest; shows progress for big files."""
    stream, size = _open(source, timeout)
    h = hashlib.new(algorithm)
    bar = None
    if size is None or size >= PROGRESS_MIN_BYTES:
        from tqdm import tqdm

        bar = tqdm(total=size, unit="B", unit_scale=True, desc=label, leave=False, mininterval=1.0)
    try:
        with stream, open(target, "wb") as out:
            while True:
                try:
                    chunk = stream.read(CHUNK)
                except (TimeoutError, ConnectionResetError) as err:
                    raise TransientError(str(err)) from err
                if not chunk:
                    break
                h.update(chunk)
                out.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return h.hexdigest()


def fetch_file(
    dataset: str,
    remote: RemoteFile,
    dest: Path,
    mirror: str | None = None,
    retries: int = 3,
    timeout: float = 30.0,
    backoff: float = 2.0,
) -> str:
    """Fetch one file into `dest/<name>` and verify it; returns the source used.

    A candidate whose checksum is wrong is deleted and reported, and the next
    candidate is tried. Raises DatasetUnavailable when no source serves the
    file, DatasetError when only corrupt copies were found.
    """
    target = dest / remote.name
    tried: list[str] = []
    corrupt = False
    for source in candidate_sources(dataset, remote, mirror):
        for attempt in range(1, retries + 1):
            try:
                with atomic_file(target) as tmp:
                    digest = _stream_to(source, tmp, remote.algorithm, remote.name, timeout)
                    if digest != remote.checksum:
                        corrupt = True
                        raise DatasetError(f"{remote.algorithm} {digest}, expected {remote.checksum}")
                return source
            except TransientError as err:
                if attempt == retries:
                    tried.append(f"{source} ({err}; gave up after {retries} tries)")
                else:
                    time.sleep(backoff * attempt)
                    continue
            except DatasetError as err:
                tried.append(f"{source} (checksum mismatch: {err}; the file was deleted)")
            except FileNotFoundError as err:
                tried.append(f"{source} ({err})")
            except (urllib.error.URLError, OSError) as err:
                reason = getattr(err, "reason", err)
                tried.append(f"{source} ({reason})")
            break
    places = "; ".join(tried)
    hint = (
        f"Set {MIRROR_ENV} to a folder (or a file:// or http(s):// prefix) laid out as "
        f"<mirror>/{dataset}/{remote.name}, e.g. `{MIRROR_ENV}=../shared/datasets dvc repro`."
    )
    if corrupt:
        raise DatasetError(f"{dataset}/{remote.name}: no copy with the expected {remote.algorithm} {remote.checksum} was found. Tried: {places}. {hint}")
    raise DatasetUnavailable(
        f"{dataset}/{remote.name} could not be downloaded: no network and no mirror copy. "
        f"Tried: {places}. {hint}"
    )


def fetch(dataset: str, dest: str | os.PathLike, mirror: str | None = None, **kwargs) -> dict[str, str]:
    """Fetch and verify every file of `dataset` into `dest`; returns {file: source}.

    On failure nothing is left in `dest`: files already fetched for this dataset
    are removed too, so DVC never caches a partial dataset.
    """
    if dataset not in REGISTRY:
        raise DatasetError(f"unknown dataset '{dataset}'; known datasets: {', '.join(REGISTRY)}.")
    if mirror is None:
        mirror = os.environ.get(MIRROR_ENV) or None
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    sources = {}
    try:
        for remote in REGISTRY[dataset]:
            sources[remote.name] = fetch_file(dataset, remote, dest, mirror=mirror, **kwargs)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return sources


def verify(dataset: str, folder: str | os.PathLike) -> None:
    """Check that `folder` holds every file of `dataset` with its checksum."""
    for remote in REGISTRY[dataset]:
        path = Path(folder) / remote.name
        if not path.is_file():
            raise DatasetError(f"{path} is missing; run `dvc repro download@{dataset}` first.")
        digest = file_digest(path, remote.algorithm)
        if digest != remote.checksum:
            raise DatasetError(f"{path}: {remote.algorithm} {digest} does not match the expected {remote.checksum}.")


# --- loaders -----------------------------------------------------------------

ImageSplits = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped), the format of the MNIST/Fashion-MNIST downloads."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08:
        raise DatasetError(f"{path}: not an unsigned-byte IDX file (magic {magic:#x}).")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise DatasetError(f"{path}: header says {shape} but holds {array.size} bytes.")
    return array.reshape(shape)


def load_images(dataset: str, folder: str | os.PathLike) -> ImageSplits:
    """(x_train, y_train), (x_test, y_test) as uint8 arrays, like keras.datasets.

    mnist comes from mnist.npz (plain arrays, no pickle); fashion_mnist from
    its four IDX gz files.
    """
    folder = Path(folder)
    if dataset == "mnist":
        with np.load(folder / "mnist.npz", allow_pickle=False) as f:
            return (f["x_train"], f["y_train"]), (f["x_test"], f["y_test"])
    if dataset == "fashion_mnist":
        parts = [_read_idx(folder / name) for name in (
            "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")]
        return (parts[0], parts[1]), (parts[2], parts[3])
    raise DatasetError(f"'{dataset}' is not an image dataset; expected mnist or fashion_mnist.")


def read_pickled_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an npz holding object arrays (imdb.npz, reuters.npz) safely.

    Uses Keras' restricted unpickler, which rebuilds numpy arrays only, instead
    of np.load(allow_pickle=True), which would run any pickled code.
    """
    from keras.src.datasets.npz_utils import load_npz

    return dict(load_npz(str(path)))
