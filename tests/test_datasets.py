"""The dataset layer: fixture files in the real Keras formats, and real loopback servers that misbehave.

Every test runs with DATASETS_OFFLINE=1, so none depends on the network; the
servers listen on 127.0.0.1 only.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import http.server
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from stages.core.errors import DatasetError, DatasetUnavailable
from stages.datasets import fashion_mnist, fetch, imdb, mnist, nietzsche, reuters
from stages.datasets.fetch import CHUNK, RemoteFile, fetch_file
from stages.datasets.synthetic import synthetic_modules

import fixtures
from conftest import ROOT, SHARED_DATASETS, run, subprocess_env


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test may reach the network; limits come only from what a test sets."""
    monkeypatch.setenv("DATASETS_OFFLINE", "1")
    for name in ("DATASETS_MIRROR", "DATASETS_STALL_SECONDS", "DATASETS_DEADLINE_SECONDS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture()
def mirror(tmp_path) -> Path:
    """A mirror laid out like ../shared/datasets, holding fixtures of every format."""
    root = tmp_path / "mirror"
    fixtures.write_mnist_npz(root / "mnist")
    fixtures.write_fashion_mnist(root / "fashion_mnist")
    fixtures.write_imdb(root / "imdb")
    fixtures.write_reuters(root / "reuters")
    fixtures.write_text(root / "nietzsche")
    return root


def remote_for(mirror: Path, dataset: str, name: str, algorithm: str = "sha256") -> RemoteFile:
    """The FILES entry a fixture would have: unreachable canonical URL, the fixture's size and checksum."""
    path = mirror / dataset / name
    checksum = {"sha256": sha256, "md5": md5}[algorithm](path)
    return RemoteFile(name, f"https://unreachable.invalid/{name}", size=path.stat().st_size, **{algorithm: checksum})


# --- the package ---------------------------------------------------------------


def test_dataset_modules_are_found_by_file_name():
    assert fetch.known_datasets() == ["damped_cosine", "fashion_mnist", "imdb", "imdb_standin", "mnist", "nietzsche", "reuters"]
    downloaded = [d for d in fetch.known_datasets() if d not in synthetic_modules()]  # the others are made
    sizes = {f.name: f.size for d in downloaded for f in fetch.remote_files(d)}
    assert sizes["nietzsche.txt"] == 600901 and sizes["train-images-idx3-ubyte.gz"] == 26421880
    assert sizes["mnist.npz"] == 11490434 and sizes["reuters_word_index.json"] == 550378
    assert fetch.remote_files("imdb") == imdb.FILES


def test_package_init_holds_only_a_docstring():
    """Every dataset module imports stages/datasets/__init__.py, which is no pipeline dependency."""
    tree = ast.parse((ROOT / "stages" / "datasets" / "__init__.py").read_text(encoding="utf-8"))
    assert len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr) and isinstance(tree.body[0].value.value, str)


def test_unknown_dataset_is_an_error(tmp_path):
    with pytest.raises(
        DatasetError,
        match="unknown dataset 'mnsit'; known datasets: damped_cosine, fashion_mnist, imdb, imdb_standin, mnist, nietzsche, reuters",
    ):
        fetch.fetch("mnsit", tmp_path)


# --- good and corrupt copies -------------------------------------------------------


@pytest.mark.parametrize(
    "dataset, name, algorithm",
    [
        ("mnist", "mnist.npz", "sha256"),
        ("imdb", "imdb.npz", "sha256"),
        ("imdb", "imdb_word_index.json", "md5"),
        ("reuters", "reuters.npz", "sha256"),
        ("reuters", "reuters_word_index.json", "md5"),
        ("fashion_mnist", "train-images-idx3-ubyte.gz", "sha256"),
        ("nietzsche", "nietzsche.txt", "sha256"),
    ],
)
def test_good_file_from_folder_mirror_is_accepted(mirror, tmp_path, dataset, name, algorithm):
    remote = remote_for(mirror, dataset, name, algorithm)
    dest = tmp_path / "raw"
    dest.mkdir()
    source = fetch_file(dataset, remote, dest, mirror=str(mirror))
    assert source == str(mirror / dataset / name)
    assert (dest / name).read_bytes() == (mirror / dataset / name).read_bytes()
    assert sorted(p.name for p in dest.iterdir()) == [name]  # no temporary file left


def test_file_url_mirror_is_accepted(mirror, tmp_path):
    remote = remote_for(mirror, "mnist", "mnist.npz")
    fetch_file("mnist", remote, tmp_path, mirror=mirror.as_uri())
    assert sha256(tmp_path / "mnist.npz") == remote.sha256


@pytest.fixture()
def http_mirror(mirror):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(mirror))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_mirror_is_accepted(mirror, http_mirror, tmp_path):
    remote = remote_for(mirror, "reuters", "reuters.npz")
    source = fetch_file("reuters", remote, tmp_path, mirror=http_mirror)
    assert source == f"{http_mirror}/reuters/reuters.npz"
    assert sha256(tmp_path / "reuters.npz") == remote.sha256


def test_corrupt_file_is_rejected_and_deleted(mirror, tmp_path):
    remote = remote_for(mirror, "mnist", "mnist.npz")
    path = mirror / "mnist" / "mnist.npz"
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    dest = tmp_path / "raw"
    dest.mkdir()
    with pytest.raises(DatasetError) as err:
        fetch_file("mnist", remote, dest, mirror=str(mirror), retries=1)
    message = str(err.value)
    assert "checksum mismatch" in message and remote.sha256 in message and str(path) in message
    assert not isinstance(err.value, DatasetUnavailable)
    assert list(dest.iterdir()) == []


def test_short_copy_is_a_size_mismatch(mirror, tmp_path):
    remote = remote_for(mirror, "nietzsche", "nietzsche.txt")
    path = mirror / "nietzsche" / "nietzsche.txt"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DatasetError, match=f"size mismatch: 100 bytes, expected {remote.size}; the file was deleted"):
        fetch_file("nietzsche", remote, tmp_path / "raw", mirror=str(mirror), retries=1)
    assert list((tmp_path / "raw").iterdir()) == []


def test_missing_file_names_file_places_and_mirror_variable(tmp_path):
    remote = mnist.FILES[0]
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    with pytest.raises(DatasetUnavailable) as err:
        fetch_file("mnist", remote, tmp_path, mirror=str(empty), retries=1)
    message = str(err.value)
    assert "mnist/mnist.npz" in message
    assert str(empty / "mnist" / "mnist.npz") in message
    assert remote.url in message
    assert "DATASETS_MIRROR" in message


def test_directory_in_the_mirror_is_reported_as_a_directory(tmp_path):
    root = tmp_path / "mirror"
    (root / "mnist" / "mnist.npz").mkdir(parents=True)
    with pytest.raises(DatasetUnavailable, match="mnist.npz is a directory, expected the file mnist.npz"):
        fetch_file("mnist", mnist.FILES[0], tmp_path / "raw", mirror=str(root), retries=1)


def test_fetch_removes_a_partly_fetched_dataset(mirror, tmp_path):
    """imdb.npz is served but the word index is not: nothing of imdb is left behind."""
    (mirror / "imdb" / "imdb_word_index.json").unlink()
    dest = tmp_path / "raw" / "imdb"
    with pytest.raises(DatasetError):
        fetch.fetch("imdb", dest, mirror=str(mirror), retries=1)
    assert not dest.exists()


# --- misbehaving servers -------------------------------------------------------------


@contextlib.contextmanager
def serve(respond):
    """A loopback HTTP server that answers every GET with respond(handler, stop).

    Yields (base URL, the request paths it received, a stop event that the
    responders poll so no handler thread outlives the test).
    """
    requests: list[str] = []
    stop = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                respond(self, stop)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests, stop
    finally:
        stop.set()
        server.shutdown()
        server.server_close()


def headers(handler, length: int | None = None, status: int = 200) -> None:
    handler.send_response(status)
    if length is not None:
        handler.send_header("Content-Length", str(length))
    handler.end_headers()


def a_file(size: int) -> RemoteFile:
    return RemoteFile("data.bin", "https://unreachable.invalid/data.bin", size=size, sha256="0" * 64)


def test_trickling_server_is_stopped_as_stalled(tmp_path, monkeypatch):
    def trickle(handler, stop):
        headers(handler, 1000)
        while not stop.wait(0.3):
            handler.wfile.write(b"x")
            handler.wfile.flush()

    monkeypatch.setenv("DATASETS_STALL_SECONDS", "1")
    with serve(trickle) as (base, requests, _):
        started = time.monotonic()
        with pytest.raises(DatasetUnavailable) as err:
            fetch_file("slow", a_file(1000), tmp_path, mirror=base, stall_bytes=100, retries=1)
        elapsed = time.monotonic() - started
    message = str(err.value)
    assert re.search(
        r"stalled: [1-5] bytes in the last 1\.\d s, fewer than the minimum 100 bytes per 1 s "
        r"\(DATASETS_STALL_SECONDS\); [1-5] of 1000 bytes had arrived",
        message,
    ), message
    assert elapsed < 3, elapsed
    assert requests == ["/slow/data.bin"]
    assert list(tmp_path.iterdir()) == []


def test_silent_server_is_stopped_as_stalled(tmp_path):
    def silent(handler, stop):
        headers(handler, 1000)
        handler.wfile.write(b"x" * 10)
        handler.wfile.flush()
        stop.wait(10)

    with serve(silent) as (base, _, _):
        with pytest.raises(
            DatasetUnavailable, match=r"stalled: nothing arrived for 0\.\d s, fewer than the minimum 100 bytes per 0\.5 s"
        ):
            fetch_file("slow", a_file(1000), tmp_path, mirror=base, stall_seconds=0.5, stall_bytes=100, retries=1)


def test_body_larger_than_expected_is_cut_off(tmp_path):
    """No Content-Length, 20 MB sent for a 1000-byte file: reading stops just past 1000 bytes."""

    def flood(handler, stop):
        headers(handler)
        block = b"y" * 65536
        for _ in range(320):
            if stop.is_set():
                return
            handler.wfile.write(block)

    largest = 0
    done = threading.Event()

    def watch():
        nonlocal largest
        while not done.is_set():
            for p in tmp_path.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    largest = max(largest, p.stat().st_size)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with serve(flood) as (base, _, _):
            with pytest.raises(DatasetError) as err:
                fetch_file("big", a_file(1000), tmp_path, mirror=base, retries=1)
    finally:
        done.set()
        watcher.join()
    assert "too large: more than the expected 1000 bytes arrived; stopped after 1001" in str(err.value)
    assert not isinstance(err.value, DatasetUnavailable)
    assert largest <= 1000 + CHUNK, largest
    assert list(tmp_path.iterdir()) == []


def test_content_length_larger_than_expected_is_refused_before_reading(tmp_path):
    def announce(handler, stop):
        headers(handler, 5_000_000)
        stop.wait(10)  # the body never comes: reading it would stall

    with serve(announce) as (base, _, _):
        started = time.monotonic()
        with pytest.raises(
            DatasetError, match="too large: 5000000 bytes announced, more than the expected 1000; nothing was read"
        ):
            fetch_file("big", a_file(1000), tmp_path, mirror=base, stall_seconds=5, retries=1)
        assert time.monotonic() - started < 2


def test_steady_but_slow_download_hits_the_deadline(tmp_path, monkeypatch):
    def steady(handler, stop):
        headers(handler, 1_000_000)
        while not stop.wait(0.05):
            handler.wfile.write(b"z" * 100)
            handler.wfile.flush()

    monkeypatch.setenv("DATASETS_DEADLINE_SECONDS", "1")
    with serve(steady) as (base, _, _):
        started = time.monotonic()
        with pytest.raises(DatasetUnavailable) as err:
            fetch_file("slow", a_file(1_000_000), tmp_path, mirror=base, stall_seconds=0.5, stall_bytes=10, retries=1)
        elapsed = time.monotonic() - started
    assert re.search(
        r"deadline exceeded: \d+ of 1000000 bytes after 1\.\d s, over the limit of 1 s per file "
        r"\(DATASETS_DEADLINE_SECONDS\)",
        str(err.value),
    ), str(err.value)
    assert elapsed < 3, elapsed


def test_http_error_is_reported_with_its_status(mirror, http_mirror, tmp_path):
    (mirror / "mnist" / "mnist.npz").unlink()
    with pytest.raises(DatasetUnavailable, match=r"/mnist/mnist.npz \(HTTP 404 File not found\)"):
        fetch_file("mnist", mnist.FILES[0], tmp_path, mirror=http_mirror, retries=1)


def test_server_errors_are_retried_then_reported(tmp_path):
    def unavailable(handler, stop):
        headers(handler, 0, status=503)

    with serve(unavailable) as (base, requests, _):
        with pytest.raises(DatasetUnavailable, match=r"HTTP 503 Service Unavailable; gave up after 3 tries"):
            fetch_file("busy", a_file(1000), tmp_path, mirror=base, retries=3, backoff=0.01)
    assert requests == ["/busy/data.bin"] * 3


def test_offline_mode_never_contacts_the_canonical_url(tmp_path, monkeypatch):
    def not_found(handler, stop):
        headers(handler, 0, status=404)

    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    with serve(not_found) as (base, requests, _):
        remote = RemoteFile("mnist.npz", f"{base}/mnist.npz", size=1000, sha256="0" * 64)
        with pytest.raises(DatasetUnavailable) as err:
            fetch_file("mnist", remote, tmp_path / "raw", mirror=str(empty), retries=1)
        assert requests == []
        message = str(err.value)
        assert "offline mode is on" in message and f"{base}/mnist.npz (not tried" in message

        monkeypatch.setenv("DATASETS_OFFLINE", "0")  # the same call online does contact it
        with pytest.raises(DatasetUnavailable, match="HTTP 404"):
            fetch_file("mnist", remote, tmp_path / "raw", mirror=str(empty), retries=1)
        assert requests == ["/mnist.npz"]


def test_bad_limit_variable_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("DATASETS_STALL_SECONDS", "soon")
    with pytest.raises(DatasetError, match=r"DATASETS_STALL_SECONDS='soon' is not a number of seconds; expected a number > 0"):
        fetch_file("mnist", mnist.FILES[0], tmp_path, mirror=str(tmp_path))


# --- loaders -------------------------------------------------------------------------


def test_image_loaders_read_both_formats(mirror):
    (xa, ya), (xt, yt) = mnist.load(mirror / "mnist")
    assert xa.shape == (600, 28, 28) and xa.dtype == np.uint8 and ya.shape == (600,) and xt.shape == (200, 28, 28)
    (fa, fya), (ft, fyt) = fashion_mnist.load(mirror / "fashion_mnist")
    assert fa.shape == (600, 28, 28) and fa.dtype == np.uint8 and set(np.unique(fya)) == set(range(10))
    assert ft.shape == (200, 28, 28) and fyt.shape == (200,)
    expected, labels = fixtures.image_arrays(600, 10)
    assert np.array_equal(fa, expected) and np.array_equal(fya, labels)


def test_text_file_is_the_corpus(mirror):
    assert nietzsche.text_file(mirror / "nietzsche") == mirror / "nietzsche" / "nietzsche.txt"


def test_pickled_npz_is_read_without_allow_pickle(mirror):
    arrays, word_index = imdb.load_raw(mirror / "imdb")
    assert sorted(arrays) == ["x_test", "x_train", "y_test", "y_train"]
    assert arrays["x_train"].dtype == object and isinstance(arrays["x_train"][0], list)
    assert word_index["word1"] == 1
    reuters_arrays, reuters_index = reuters.load_raw(mirror / "reuters")
    assert len(reuters_arrays["x"]) == len(reuters_arrays["y"]) == 300 and len(reuters_index) == 1499


def test_keras_restricted_npz_reader_is_still_there(tmp_path):
    """stages/core/npz.py wraps a private Keras function; this fails if Keras moves or changes it."""
    from stages.core import npz

    assert npz.load_npz.__module__ == "keras.src.datasets.npz_utils"
    rows = np.empty(3, dtype=object)
    rows[:] = [[1, 2], [3], [4, 5, 6]]
    np.savez(tmp_path / "ragged.npz", x=rows, y=np.arange(3))
    arrays = npz.read_pickled_npz(tmp_path / "ragged.npz")
    assert sorted(arrays) == ["x", "y"] and [list(r) for r in arrays["x"]] == [[1, 2], [3], [4, 5, 6]]
    assert arrays["y"].tolist() == [0, 1, 2]


def test_pickled_npz_refuses_other_objects(tmp_path):
    from stages.core import npz

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = np.empty(1, dtype=object)
    bad[0] = Evil()
    np.savez(tmp_path / "evil.npz", x=bad)
    with pytest.raises(DatasetError, match=r"evil.npz: refused to unpickle it \(Refusing to deserialize `builtins.print`"):
        npz.read_pickled_npz(tmp_path / "evil.npz")


# --- against the shared mirror and real DVC --------------------------------------------


@pytest.mark.skipif(not (SHARED_DATASETS / "nietzsche" / "nietzsche.txt").is_file(), reason="needs ../shared/datasets")
def test_sizes_and_checksums_match_the_shared_mirror():
    for dataset in ("nietzsche", "fashion_mnist"):
        fetch.verify(dataset, SHARED_DATASETS / dataset)


def test_dvc_download_stage_verifies_and_rejects(project, tmp_path):
    """Real `dvc repro download@nietzsche`: a good mirror copy is cached, a corrupt one is not."""
    good = SHARED_DATASETS / "nietzsche" / "nietzsche.txt"
    if not good.is_file():
        pytest.skip("needs ../shared/datasets")
    corrupt = tmp_path / "corrupt-mirror"
    (corrupt / "nietzsche").mkdir(parents=True)
    (corrupt / "nietzsche" / "nietzsche.txt").write_bytes(good.read_bytes().replace(b"Nietzsche", b"Nietzsch3", 1))

    lock = project / "dvc.lock"
    lock_before = lock.read_text() if lock.exists() else ""
    bad = run(["dvc", "repro", "download@nietzsche"], project, check=False, DATASETS_MIRROR=str(corrupt), DATASETS_OFFLINE="1")
    assert bad.returncode != 0
    assert "checksum mismatch" in bad.stderr + bad.stdout
    assert not (project / "data" / "raw" / "nietzsche").exists()
    assert (lock.read_text() if lock.exists() else "") == lock_before  # nothing recorded
    corrupt_md5 = md5(corrupt / "nietzsche" / "nietzsche.txt")
    assert not (project / ".dvc" / "cache" / "files" / "md5" / corrupt_md5[:2] / corrupt_md5[2:]).exists()

    run(["dvc", "repro", "download@nietzsche"], project, DATASETS_MIRROR=str(good.parent.parent), DATASETS_OFFLINE="1")
    assert sha256(project / "data" / "raw" / "nietzsche" / "nietzsche.txt") == nietzsche.FILES[0].sha256
    assert "download@nietzsche" in (project / "dvc.lock").read_text()

    offline = run(["dvc", "repro", "download@mnist"], project, check=False, DATASETS_OFFLINE="1")
    assert offline.returncode != 0
    assert "mnist/mnist.npz could not be downloaded: offline mode is on" in offline.stderr


def test_an_interrupted_download_keeps_nothing_and_says_so(tmp_path):
    """Ctrl-C during `python -m stages download`: nothing half-written stays, and the message is about downloads."""

    def trickle(handler, stop):
        headers(handler, 600901)
        while not stop.wait(0.05):
            handler.wfile.write(b"x" * 64)
            handler.wfile.flush()

    project = tmp_path / "project"
    shutil.copytree(ROOT / "stages", project / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    with serve(trickle) as (base, requests, _):
        proc = subprocess.Popen(
            [sys.executable, "-m", "stages", "download", "nietzsche"],
            cwd=project,
            env=subprocess_env(DATASETS_MIRROR=base),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while not requests and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # under way: some bytes are on disk under a temporary name
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "download@nietzsche: interrupted. Nothing was kept" in err and "epoch" not in err
    assert not (project / "data" / "raw" / "nietzsche").exists()


def test_imdb_load_follows_the_keras_loader(mirror):
    """Shuffle with RandomState(113) (train, then test), start 1, ids + 3, ids >= num_words -> 2: as imdb.load_data."""
    arrays, _ = imdb.load_raw(mirror / "imdb")
    out = imdb.load(mirror / "imdb", num_words=100)
    rng = np.random.RandomState(113)
    for split in ("train", "test"):
        order = np.arange(len(arrays[f"x_{split}"]))
        rng.shuffle(order)
        expected = [[w if w < 100 else 2 for w in [1] + [v + 3 for v in review]] for review in arrays[f"x_{split}"][order]]
        ids, offsets, labels = out[split]
        assert ids.dtype == np.int32 and len(offsets) == len(expected) + 1
        assert [ids[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:], strict=True)] == expected
        assert labels.tolist() == arrays[f"y_{split}"][order].tolist()
