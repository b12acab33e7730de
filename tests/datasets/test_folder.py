import gzip
from pathlib import Path

import numpy as np
import pytest

from mnist_lab.core.data import Dataset
from mnist_lab.core.errors import DataError
from mnist_lab.core.idx import encode_idx
from mnist_lab.datasets.folder import (
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    dvc_directory_md5,
    encode_dataset,
    read_dataset,
    read_directory_files,
    replace_directory,
)
from tests.helpers import random_images, run


def write(dataset: Dataset, folder: Path) -> None:
    replace_directory(encode_dataset(dataset), folder)


def test_mnist_shaped_files_round_trip(tmp_path: Path) -> None:
    train, train_labels = random_images(300, 28, 28, seed=1)
    test, test_labels = random_images(50, 28, 28, seed=2)
    write(Dataset(train, train_labels, test, test_labels), tmp_path / "data")
    loaded = read_dataset(tmp_path / "data")
    assert loaded.image_shape == (28, 28)
    assert np.array_equal(loaded.train_images, train) and np.array_equal(loaded.test_labels, test_labels)


def test_uncompressed_files_are_read_too(tmp_path: Path) -> None:
    images, labels = random_images(20, 28, 28)
    (tmp_path / TRAIN_IMAGES.removesuffix(".gz")).write_bytes(encode_idx(images))
    (tmp_path / TRAIN_LABELS.removesuffix(".gz")).write_bytes(encode_idx(labels))
    loaded = read_dataset(tmp_path)
    assert not loaded.has_test_set and np.array_equal(loaded.train_images, images)


def test_missing_data_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(
        DataError,
        match=r"data directory '.*nowhere' is missing: get the version data.dvc records with "
        r"`mnist-lab data restore`",
    ):
        read_dataset(tmp_path / "nowhere")
    with pytest.raises(
        DataError,
        match="no train-images-idx3-ubyte.gz; get the version data.dvc records with `mnist-lab data restore`",
    ):
        read_dataset(tmp_path)


def test_half_a_pair_is_an_error(tmp_path: Path, small_digits: Dataset) -> None:
    write(small_digits, tmp_path)
    (tmp_path / TEST_LABELS).unlink()
    with pytest.raises(DataError, match=f"has {TEST_IMAGES} but not {TEST_LABELS}"):
        read_dataset(tmp_path)


def test_errors_name_the_bad_file(tmp_path: Path, small_digits: Dataset) -> None:
    write(small_digits, tmp_path)
    labels = small_digits.test_labels.copy()
    labels[7] = 11
    (tmp_path / TEST_LABELS).write_bytes(gzip.compress(encode_idx(labels)))
    with pytest.raises(DataError, match=f"{TEST_LABELS}: label 11 at index 7 is outside 0-9"):
        read_dataset(tmp_path)
    write(small_digits, tmp_path)
    (tmp_path / TRAIN_LABELS).write_bytes(gzip.compress(encode_idx(small_digits.train_labels[:-1])))
    with pytest.raises(DataError, match="has 400 images but .*train-labels-idx1-ubyte.gz has 399 labels"):
        read_dataset(tmp_path)
    write(small_digits, tmp_path)
    (tmp_path / TEST_IMAGES).write_bytes(gzip.compress(encode_idx(np.zeros((100, 28, 28), np.uint8))))
    with pytest.raises(DataError, match="images are 28x28 but the training images are 8x8"):
        read_dataset(tmp_path)
    (tmp_path / TRAIN_IMAGES).write_bytes(b"not an idx file at all")
    with pytest.raises(DataError, match=f"{TRAIN_IMAGES}: bad magic number"):
        read_dataset(tmp_path)


def test_replace_directory_is_all_or_nothing(tmp_path: Path, small_digits: Dataset) -> None:
    folder = tmp_path / "data"
    write(small_digits, folder)
    before = read_directory_files(folder)

    class Boom(dict):
        def items(self):
            yield TRAIN_IMAGES, b"partial"
            raise OSError("disk full")

    with pytest.raises(DataError, match=r"cannot write .*data/ \(disk full\): it is left as it was; mend"):
        replace_directory(Boom(), folder)  # (no advice about permissions for a full disk)
    assert read_directory_files(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no staging folder left behind


def _renames_failing(monkeypatch, fails) -> list:
    """replace_directory's renames (os.replace), the n-th failing (PermissionError) where `fails(n)`; the
    sources of every rename asked for, in order."""
    import os

    real_replace, calls = os.replace, []

    def replace(source, target):
        calls.append(source)
        if fails(len(calls)):
            raise PermissionError(1, "Operation not permitted")
        real_replace(source, target)

    monkeypatch.setattr("mnist_lab.datasets.folder.os.replace", replace)
    return calls


@pytest.mark.parametrize("failing", [1, 2])
def test_a_folder_that_cannot_be_swapped_is_kept_and_named(
    tmp_path: Path, small_digits: Dataset, monkeypatch, failing: int
) -> None:
    """data/ read-only (or busy): the old folder could not be moved aside (1), or the new one not moved in
    after it was (2). It was a traceback that left an empty `.data.old-*` folder beside (1), and could
    have left no data/ at all (2): now the old folder stays in place, nothing is left beside, and the
    error names the folder and the fix."""
    folder = tmp_path / "data"
    write(small_digits, folder)
    before = read_directory_files(folder)
    _renames_failing(monkeypatch, lambda call: call == failing)
    fewer = Dataset(small_digits.train_images[:50], small_digits.train_labels[:50], None, None)
    with pytest.raises(DataError) as refused:
        write(fewer, folder)
    assert str(refused.value).startswith(f"cannot write {folder}/ (Operation not permitted): it is left as")
    assert "writable by you" in str(refused.value)
    assert read_directory_files(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_directory_md5_is_what_dvc_records(tmp_path: Path, small_digits: Dataset) -> None:
    files = encode_dataset(small_digits)
    replace_directory(files, tmp_path / "data")
    run(["git", "init", "-q"], tmp_path)
    run(["dvc", "init", "-q"], tmp_path)
    run(["dvc", "add", "-q", "data"], tmp_path)
    assert f"md5: {dvc_directory_md5(files)}" in (tmp_path / "data.dvc").read_text()


def test_an_old_folder_that_cannot_be_put_back_is_named(
    tmp_path: Path, small_digits: Dataset, monkeypatch
) -> None:
    """The new folder could not move in, nor the old one back: the old one is kept where it was moved, and
    the error says where (it said "it is left as it was" of a data/ that was gone)."""
    folder = tmp_path / "data"
    write(small_digits, folder)
    before = read_directory_files(folder)
    calls = _renames_failing(monkeypatch, lambda call: call >= 2)
    with pytest.raises(DataError) as refused:
        write(small_digits, folder)
    kept = Path(calls[2])
    assert kept.name == "data" and read_directory_files(kept) == before
    assert f"the old one could not be put back (Operation not permitted): it is {kept}; move it back" in str(
        refused.value
    )
