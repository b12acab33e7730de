import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mnist_lab.data import Dataset
from mnist_lab.datafiles import (
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    encode_dataset,
    read_dataset,
    read_directory_files,
)
from mnist_lab.errors import DataError
from mnist_lab.idx import encode_idx
from mnist_lab.ingest import ingest, recorded_md5, write_digits
from tests.helpers import random_images


@pytest.fixture
def mnist_shaped(tmp_path: Path) -> tuple[Path, Dataset]:
    """A folder with MNIST-shaped (28x28) IDX files, uncompressed, as some mirrors ship them."""
    train, train_labels = random_images(200, 28, 28, seed=1)
    test, test_labels = random_images(40, 28, 28, seed=2)
    folder = tmp_path / "source"
    folder.mkdir()
    for name, array in (
        (TRAIN_IMAGES, train),
        (TRAIN_LABELS, train_labels),
        (TEST_IMAGES, test),
        (TEST_LABELS, test_labels),
    ):
        (folder / name.removesuffix(".gz")).write_bytes(encode_idx(array))
    return folder, Dataset(train, train_labels, test, test_labels)


@pytest.fixture
def http_server(mnist_shaped: tuple[Path, Dataset]) -> Iterator[str]:
    folder, _ = mnist_shaped
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_bundled_digits_regenerate_exactly_what_data_dvc_records(repo_root: Path, tmp_path: Path) -> None:
    md5 = write_digits(tmp_path / "data", repo_root / "data.dvc")
    assert md5 == recorded_md5(repo_root / "data.dvc")


def test_digits_are_not_written_when_data_dvc_records_other_data(tmp_path: Path) -> None:
    (tmp_path / "data.dvc").write_text("outs:\n- md5: 0123456789abcdef0123456789abcdef.dir\n  path: data\n")
    with pytest.raises(DataError, match="records data version 0123.*is not the bundled default.*dvc pull"):
        write_digits(tmp_path / "data", tmp_path / "data.dvc")
    assert not (tmp_path / "data").exists()


def test_a_broken_dvc_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "data.dvc").write_text("just text\n")
    with pytest.raises(DataError, match="data.dvc: not a valid .dvc file"):
        recorded_md5(tmp_path / "data.dvc")


def test_ingest_from_a_folder_normalises_to_gzip(mnist_shaped: tuple[Path, Dataset], tmp_path: Path) -> None:
    folder, dataset = mnist_shaped
    ingest(str(folder), tmp_path / "data")
    assert sorted(read_directory_files(tmp_path / "data")) == sorted(encode_dataset(dataset))
    loaded = read_dataset(tmp_path / "data")
    assert loaded.image_shape == (28, 28) and np.array_equal(loaded.test_images, dataset.test_images)


def test_ingest_from_a_url(http_server: str, mnist_shaped: tuple[Path, Dataset], tmp_path: Path) -> None:
    _, dataset = mnist_shaped
    md5 = ingest(http_server, tmp_path / "data")
    assert read_directory_files(tmp_path / "data") == encode_dataset(dataset)
    assert md5.endswith(".dir")


def test_ingest_of_a_corrupt_source_leaves_data_untouched(
    mnist_shaped: tuple[Path, Dataset], tmp_path: Path, small_digits: Dataset
) -> None:
    folder, _ = mnist_shaped
    ingest(str(folder), tmp_path / "data")
    before = read_directory_files(tmp_path / "data")
    (folder / TRAIN_LABELS.removesuffix(".gz")).write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05\x01")
    with pytest.raises(DataError, match=r"ingest .*train-labels-idx1-ubyte: truncated"):
        ingest(str(folder), tmp_path / "data")
    assert read_directory_files(tmp_path / "data") == before


def test_ingest_errors_for_missing_sources(tmp_path: Path, http_server: str) -> None:
    with pytest.raises(DataError, match="neither a folder nor a URL"):
        ingest(str(tmp_path / "nowhere"), tmp_path / "data")
    with pytest.raises(DataError, match="no train-images-idx3-ubyte.gz"):
        ingest(f"{http_server}/missing", tmp_path / "data")
    with pytest.raises(DataError, match="cannot download"):
        ingest("http://127.0.0.1:9/", tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_openml_mnist_is_split_60000_10000(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenML cannot be reached here: stand in for scikit-learn's fetcher with MNIST's shape and types."""
    import sklearn.datasets
    from sklearn.utils import Bunch

    pixels = np.zeros((70000, 784), dtype=np.float64)
    pixels[:, 0] = np.arange(70000) % 256
    target = np.array([str(i % 10) for i in range(70000)], dtype=object)  # OpenML's labels are strings
    monkeypatch.setattr(sklearn.datasets, "fetch_openml", lambda *a, **k: Bunch(data=pixels, target=target))
    ingest("openml", tmp_path / "data")
    loaded = read_dataset(tmp_path / "data")
    assert loaded.train_images.shape == (60000, 28, 28) and loaded.test_images.shape == (10000, 28, 28)
    assert loaded.test_labels[:3].tolist() == [0, 1, 2] and loaded.test_images[0, 0, 0] == 60000 % 256


def test_openml_offline_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sklearn.datasets

    def offline(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(sklearn.datasets, "fetch_openml", offline)
    with pytest.raises(
        DataError, match="cannot fetch mnist_784 from OpenML .*name resolution.*are you online"
    ):
        ingest("openml", tmp_path / "data")
    assert not (tmp_path / "data").exists()
