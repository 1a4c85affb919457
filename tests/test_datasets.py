"""The dataset layer against local mirrors of fixture files in the real Keras formats."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

import fixtures
from conftest import SHARED_DATASETS, run
from stages import datasets
from stages.core.errors import DatasetError, DatasetUnavailable
from stages.datasets import RemoteFile, fetch_file


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


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
    """The registry entry a fixture would have: unreachable canonical URL, the fixture's checksum."""
    path = mirror / dataset / name
    checksum = {"sha256": sha256, "md5": md5}[algorithm](path)
    return RemoteFile(name, f"https://unreachable.invalid/{name}", **{algorithm: checksum})


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


def test_missing_file_names_file_places_and_mirror_variable(tmp_path):
    remote = datasets.REGISTRY["mnist"][0]
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    with pytest.raises(DatasetUnavailable) as err:
        fetch_file("mnist", remote, tmp_path, mirror=str(empty), retries=1)
    message = str(err.value)
    assert "mnist/mnist.npz" in message
    assert str(empty / "mnist" / "mnist.npz") in message
    assert remote.url in message
    assert "DATASETS_MIRROR" in message


def test_fetch_removes_a_partly_fetched_dataset(mirror, tmp_path):
    """imdb.npz is served but the word index is not: nothing of imdb is left behind."""
    (mirror / "imdb" / "imdb_word_index.json").unlink()
    dest = tmp_path / "raw" / "imdb"
    with pytest.raises(DatasetError):
        datasets.fetch("imdb", dest, mirror=str(mirror), retries=1)
    assert not dest.exists()


def test_unknown_dataset_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset 'mnsit'; known datasets: nietzsche, mnist"):
        datasets.fetch("mnsit", tmp_path)


def test_image_loaders_read_both_formats(mirror):
    (xa, ya), (xt, yt) = datasets.load_images("mnist", mirror / "mnist")
    assert xa.shape == (600, 28, 28) and xa.dtype == np.uint8 and ya.shape == (600,) and xt.shape == (200, 28, 28)
    (fa, fya), (ft, fyt) = datasets.load_images("fashion_mnist", mirror / "fashion_mnist")
    assert fa.shape == (600, 28, 28) and fa.dtype == np.uint8 and set(np.unique(fya)) == set(range(10))
    assert ft.shape == (200, 28, 28) and fyt.shape == (200,)
    expected, labels = fixtures.image_arrays(600, 10)
    assert np.array_equal(fa, expected) and np.array_equal(fya, labels)


def test_pickled_npz_is_read_without_allow_pickle(mirror):
    arrays = datasets.read_pickled_npz(mirror / "imdb" / "imdb.npz")
    assert sorted(arrays) == ["x_test", "x_train", "y_test", "y_train"]
    assert arrays["x_train"].dtype == object and isinstance(arrays["x_train"][0], list)
    reuters = datasets.read_pickled_npz(mirror / "reuters" / "reuters.npz")
    assert len(reuters["x"]) == len(reuters["y"]) == 300


def test_pickled_npz_refuses_other_objects(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = np.empty(1, dtype=object)
    bad[0] = Evil()
    np.savez(tmp_path / "evil.npz", x=bad)
    with pytest.raises(Exception):
        datasets.read_pickled_npz(tmp_path / "evil.npz")


@pytest.mark.skipif(not (SHARED_DATASETS / "nietzsche" / "nietzsche.txt").is_file(), reason="needs ../shared/datasets")
def test_registry_checksums_match_the_shared_mirror():
    for dataset in ("nietzsche", "fashion_mnist"):
        datasets.verify(dataset, SHARED_DATASETS / dataset)


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
    bad = run(["dvc", "repro", "download@nietzsche"], project, check=False, DATASETS_MIRROR=str(corrupt))
    assert bad.returncode != 0
    assert "checksum mismatch" in bad.stderr + bad.stdout
    assert not (project / "data" / "raw" / "nietzsche").exists()
    assert (lock.read_text() if lock.exists() else "") == lock_before  # nothing recorded
    corrupt_md5 = md5(corrupt / "nietzsche" / "nietzsche.txt")
    assert not (project / ".dvc" / "cache" / "files" / "md5" / corrupt_md5[:2] / corrupt_md5[2:]).exists()

    run(["dvc", "repro", "download@nietzsche"], project, DATASETS_MIRROR=str(good.parent.parent))
    assert sha256(project / "data" / "raw" / "nietzsche" / "nietzsche.txt") == datasets.REGISTRY["nietzsche"][0].sha256
    assert "download@nietzsche" in (project / "dvc.lock").read_text()

    offline = run(["dvc", "repro", "download@mnist"], project, check=False)
    assert offline.returncode != 0
    assert "mnist/mnist.npz could not be downloaded" in offline.stderr
