"""Downloading a dataset: where each file may come from, and a bounded, verified copy.

`fetch(dataset, dest)` puts every file of `stages/datasets/<dataset>.py`'s FILES
into `dest` (data/raw/<dataset>/). For each file it tries, in order, the mirror
named by DATASETS_MIRROR (a folder, or a file:// or http(s):// prefix, laid out
as `<mirror>/<dataset>/<file name>`) and then the canonical URL, unless
DATASETS_OFFLINE=1, which leaves the canonical URLs untried.

Each candidate is streamed to a temporary file while its checksum is computed,
and is stopped as soon as it goes wrong, so a bad server costs seconds, not
minutes or disk space:
* stalled: fewer than `stall_bytes` arrived within `stall_seconds`
  (DATASETS_STALL_SECONDS, default 30 s);
* deadline exceeded: one attempt took longer than `deadline_seconds`
  (DATASETS_DEADLINE_SECONDS, default 900 s);
* too large: the server announces, or sends, more than the file's exact size.
Only a file of the exact size and checksum is renamed into place, so the bytes
DVC hashes are the same whichever source served them. HTTP 5xx/429 and dropped
connections are retried; everything else moves on to the next source.

Datasets are found by file name (`known_datasets`), so adding one is adding a
module with FILES and a loader; nothing here changes.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from stages.core.errors import DatasetError, DatasetUnavailable
from stages.core.files import atomic_file
from stages.core.remote import RemoteFile

MIRROR_ENV = "DATASETS_MIRROR"
OFFLINE_ENV = "DATASETS_OFFLINE"
STALL_ENV = "DATASETS_STALL_SECONDS"
DEADLINE_ENV = "DATASETS_DEADLINE_SECONDS"

STALL_SECONDS = 30.0  # the stall window
STALL_BYTES = 32 * 1024  # fewer bytes than this within one window is a stall (about 1 KiB/s)
DEADLINE_SECONDS = 900.0  # one attempt at one file (26 MB at 30 KB/s still fits)

CHUNK = 1 << 20
PROGRESS_MIN_BYTES = 4 << 20

PACKAGE = Path(__file__).parent
NOT_DATASETS = frozenset({"__init__", "fetch", "synthetic", "text_file"})  # not datasets (text_file reads a project file)


# --- the datasets -------------------------------------------------------------


def known_datasets() -> list[str]:
    """Every module of stages/datasets/ except the machinery is a dataset."""
    return sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in NOT_DATASETS)


def remote_files(dataset: str) -> tuple[RemoteFile, ...]:
    """The FILES of stages/datasets/<dataset>.py."""
    known = known_datasets()
    if dataset not in known:
        raise DatasetError(f"unknown dataset '{dataset}'; known datasets: {', '.join(known)}.")
    module = importlib.import_module(f"stages.datasets.{dataset}")
    if hasattr(module, "synthesize"):
        raise DatasetError(
            f"'{dataset}' is made from params.yaml's synthetic.{dataset}, not downloaded: "
            f"`dvc repro synthesize@{dataset}` (or `python -m stages synthesize {dataset}`)."
        )
    files = getattr(module, "FILES", None)
    if not files or not all(isinstance(f, RemoteFile) for f in files):
        raise DatasetError(f"stages/datasets/{dataset}.py must declare FILES, a non-empty tuple of RemoteFile.")
    return tuple(files)


# --- settings from the environment ----------------------------------------------


@dataclass(frozen=True)
class Limits:
    """When one download attempt is given up."""

    stall_seconds: float
    stall_bytes: int
    deadline_seconds: float


def _env_seconds(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise DatasetError(f"{name}={text!r} is not a number of seconds; expected a number > 0 (default {default:g}).")
    return value


def limits(stall_seconds: float | None = None, stall_bytes: int | None = None, deadline_seconds: float | None = None) -> Limits:
    """The limits to use: an argument if given, else its environment variable, else the default."""
    return Limits(
        stall_seconds=stall_seconds if stall_seconds is not None else _env_seconds(STALL_ENV, STALL_SECONDS),
        stall_bytes=stall_bytes if stall_bytes is not None else STALL_BYTES,
        deadline_seconds=deadline_seconds if deadline_seconds is not None else _env_seconds(DEADLINE_ENV, DEADLINE_SECONDS),
    )


def offline_mode() -> bool:
    """DATASETS_OFFLINE=1: never contact the canonical URLs, only the mirror."""
    text = os.environ.get(OFFLINE_ENV, "").strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise DatasetError(f"{OFFLINE_ENV}={text!r} is not understood; expected 1 (only the mirror) or 0 (mirror, then the network).")


# --- one attempt at one file -----------------------------------------------------


class TransientError(Exception):
    """Worth retrying from the same source: HTTP 5xx/429, a dropped connection."""


class Rejected(Exception):
    """The source served a wrong copy (size or checksum); it was deleted."""


class Unserved(Exception):
    """The source did not serve the file (missing, HTTP error, stalled, too slow)."""


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def candidate_sources(dataset: str, remote: RemoteFile, mirror: str | None, offline: bool = False) -> list[str]:
    """The places to try for one file, mirror first; folders as plain paths."""
    sources = []
    if mirror:
        if mirror.startswith(("http://", "https://", "file://")):
            sources.append(f"{mirror.rstrip('/')}/{dataset}/{remote.name}")
        else:
            sources.append(str(Path(mirror) / dataset / remote.name))
    if not offline:
        sources.append(remote.url)
    return sources


def _too_large(announced: int, remote: RemoteFile) -> Rejected:
    return Rejected(f"too large: {announced} bytes announced, more than the expected {remote.size}; nothing was read")


def _open(source: str, remote: RemoteFile, timeout: float) -> tuple[BinaryIO, int | None]:
    """Open a source for streaming; returns (stream, announced size or None)."""
    parsed = urllib.parse.urlparse(source)
    if parsed.scheme in ("", "file"):
        path = Path(urllib.request.url2pathname(parsed.path)) if parsed.scheme == "file" else Path(source)
        if path.is_dir():
            raise Unserved(f"{path} is a directory, expected the file {remote.name}")
        if not path.is_file():
            raise Unserved(f"no such file {path}")
        if path.stat().st_size > remote.size:
            raise _too_large(path.stat().st_size, remote)
        return open(path, "rb"), path.stat().st_size
    request = urllib.request.Request(source, headers={"User-Agent": "keras-dvc-examples"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code >= 500 or err.code == 429:
            raise TransientError(f"HTTP {err.code} {err.reason}") from err
        raise Unserved(f"HTTP {err.code} {err.reason}") from err
    except urllib.error.URLError as err:
        # A refused connection or failed DNS lookup: retrying won't bring the network back.
        if isinstance(err.reason, TimeoutError):
            raise Unserved(f"stalled: no response within {timeout:g} s") from err
        if isinstance(err.reason, ConnectionResetError):
            raise TransientError(str(err.reason)) from err
        raise Unserved(str(err.reason)) from err
    except TimeoutError as err:
        raise Unserved(f"stalled: no response within {timeout:g} s") from err
    except ConnectionResetError as err:
        raise TransientError(str(err)) from err
    length = response.headers.get("Content-Length")
    announced = int(length) if length and length.isdigit() else None
    if announced is not None and announced > remote.size:
        response.close()
        raise _too_large(announced, remote)
    return response, announced


def _stream_to(source: str, target: Path, remote: RemoteFile, bounds: Limits) -> str:
    """Copy `source` into `target` within `bounds`; returns its hex digest.

    Reads return whatever has arrived (read1), so a trickle is seen as one; the
    socket timeout is the stall window, so a silent server is one too. Never
    more than remote.size + 1 bytes are read.
    """
    started = time.monotonic()
    stream, announced = _open(source, remote, min(bounds.stall_seconds, bounds.deadline_seconds))
    read = getattr(stream, "read1", stream.read)
    h = hashlib.new(remote.algorithm)
    received = window_bytes = 0
    window_start = last_arrival = started
    bar = None
    if remote.size >= PROGRESS_MIN_BYTES:
        from tqdm import tqdm

        bar = tqdm(total=remote.size, unit="B", unit_scale=True, desc=remote.name, leave=False, mininterval=1.0)

    def deadline_passed(now: float) -> Unserved | None:
        if now - started <= bounds.deadline_seconds:
            return None
        return Unserved(
            f"deadline exceeded: {received} of {remote.size} bytes after {now - started:.1f} s, "
            f"over the limit of {bounds.deadline_seconds:g} s per file ({DEADLINE_ENV})"
        )

    def stalled(what: str) -> Unserved:
        return Unserved(
            f"stalled: {what}, fewer than the minimum {bounds.stall_bytes} bytes per {bounds.stall_seconds:g} s "
            f"({STALL_ENV}); {received} of {remote.size} bytes had arrived"
        )

    try:
        with stream, open(target, "wb") as out:
            while True:
                try:
                    chunk = read(min(CHUNK, remote.size + 1 - received))
                except TimeoutError:
                    now = time.monotonic()
                    raise deadline_passed(now) or stalled(f"nothing arrived for {now - last_arrival:.1f} s") from None
                except (ConnectionResetError, http.client.IncompleteRead) as err:
                    raise TransientError(f"connection dropped after {received} bytes: {err}") from err
                if not chunk:
                    break
                received += len(chunk)
                window_bytes += len(chunk)
                if received > remote.size:
                    raise Rejected(f"too large: more than the expected {remote.size} bytes arrived; stopped after {received}")
                h.update(chunk)
                out.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
                now = last_arrival = time.monotonic()
                error = deadline_passed(now)
                if error:
                    raise error
                if now - window_start >= bounds.stall_seconds:
                    if window_bytes < bounds.stall_bytes:
                        raise stalled(f"{window_bytes} bytes in the last {now - window_start:.1f} s")
                    window_start, window_bytes = now, 0
    finally:
        if bar is not None:
            bar.close()
    if announced is not None and received < announced:
        raise TransientError(f"connection closed after {received} of the announced {announced} bytes")
    if received != remote.size:
        raise Rejected(f"size mismatch: {received} bytes, expected {remote.size}")
    return h.hexdigest()


# --- a file, a dataset ------------------------------------------------------------


def fetch_file(
    dataset: str,
    remote: RemoteFile,
    dest: Path,
    mirror: str | None = None,
    *,
    retries: int = 3,
    backoff: float = 2.0,
    stall_seconds: float | None = None,
    stall_bytes: int | None = None,
    deadline_seconds: float | None = None,
    offline: bool | None = None,
) -> str:
    """Fetch one file into `dest/<name>` and verify it; returns the source used.

    A wrong copy is deleted and reported, and the next candidate is tried.
    Limits left None come from DATASETS_STALL_SECONDS / DATASETS_DEADLINE_SECONDS
    or the module defaults; `offline` None reads DATASETS_OFFLINE. Raises
    DatasetError when only wrong copies were found, DatasetUnavailable when no
    source served the file at all.
    """
    bounds = limits(stall_seconds, stall_bytes, deadline_seconds)
    offline = offline_mode() if offline is None else offline
    target = Path(dest) / remote.name
    tried: list[str] = []
    corrupt = False
    for source in candidate_sources(dataset, remote, mirror, offline):
        for attempt in range(1, retries + 1):
            try:
                with atomic_file(target) as tmp:
                    digest = _stream_to(source, tmp, remote, bounds)
                    if digest != remote.checksum:
                        raise Rejected(f"checksum mismatch: {remote.algorithm} {digest}, expected {remote.checksum}")
                return source
            except TransientError as err:
                if attempt < retries:
                    time.sleep(backoff * attempt)
                    continue
                tried.append(f"{source} ({err}; gave up after {retries} tries)")
            except Rejected as err:
                corrupt = True
                tried.append(f"{source} ({err}; the file was deleted)")
            except Unserved as err:
                tried.append(f"{source} ({err})")
            except OSError as err:
                tried.append(f"{source} ({err})")
            break
    if offline:
        tried.append(f"{remote.url} (not tried: offline mode is on, {OFFLINE_ENV}=1)")
    places = "; ".join(tried)
    hint = (
        f"Set {MIRROR_ENV} to a folder (or a file:// or http(s):// prefix) laid out as "
        f"<mirror>/{dataset}/{remote.name}, e.g. `{MIRROR_ENV}=../shared/datasets dvc repro`."
    )
    if corrupt:
        raise DatasetError(
            f"{dataset}/{remote.name}: no copy of the expected {remote.size} bytes and {remote.algorithm} "
            f"{remote.checksum} was found. Tried: {places}. {hint}"
        )
    why = "offline mode is on and no mirror copy served it" if offline else "no source served it"
    raise DatasetUnavailable(f"{dataset}/{remote.name} could not be downloaded: {why}. Tried: {places}. {hint}")


def fetch(dataset: str, dest: str | os.PathLike, mirror: str | None = None, **kwargs) -> dict[str, str]:
    """Fetch and verify every file of `dataset` into `dest`; returns {file: source}.

    `kwargs` go to fetch_file. On failure nothing is left in `dest`: files
    already fetched for this dataset are removed too, so DVC never caches a
    partial dataset.
    """
    files = remote_files(dataset)
    if mirror is None:
        mirror = os.environ.get(MIRROR_ENV) or None
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    sources = {}
    try:
        for remote in files:
            sources[remote.name] = fetch_file(dataset, remote, dest, mirror=mirror, **kwargs)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return sources


def verify(dataset: str, folder: str | os.PathLike) -> None:
    """Check that `folder` holds every file of `dataset` with its size and checksum."""
    for remote in remote_files(dataset):
        path = Path(folder) / remote.name
        if not path.is_file():
            raise DatasetError(f"{path} is missing; run `dvc repro download@{dataset}` first.")
        if path.stat().st_size != remote.size:
            raise DatasetError(f"{path} has {path.stat().st_size} bytes; expected {remote.size}.")
        digest = file_digest(path, remote.algorithm)
        if digest != remote.checksum:
            raise DatasetError(f"{path}: {remote.algorithm} {digest} does not match the expected {remote.checksum}.")
