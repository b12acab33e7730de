"""The data directory: MNIST's four IDX files, read with validation and written atomically."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mnist_lab.core.data import Dataset
from mnist_lab.core.errors import DataError
from mnist_lab.core.idx import (
    check_images,
    check_labels,
    check_pair,
    decode_idx,
    encode_idx,
    gzip_deterministic,
)

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
DATA_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)
HOW_TO_GET_DATA = (
    "get the version data.dvc records with `mnist-lab data restore` (`make data`: from the DVC cache, the "
    "DVC remote, or by regenerating the bundled digits); for real MNIST, `mnist-lab data ingest mnist` "
    "(`make data-mnist`)"
)


def _find(directory: Path, name: str) -> Path | None:
    """The file `name` in `directory`, accepting it uncompressed too (MNIST is often shipped both ways)."""
    for candidate in (directory / name, directory / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _read_idx_file(path: Path, expected_ndim: int) -> np.ndarray:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None
    return decode_idx(data, str(path), expected_ndim)


def read_dataset(directory: Path | str) -> Dataset:
    """Read and validate the IDX files in `directory`; the test files are optional."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"data directory '{directory}' is missing: {HOW_TO_GET_DATA}")
    found = {name: _find(directory, name) for name in DATA_FILES}
    for images_name, labels_name in ((TRAIN_IMAGES, TRAIN_LABELS), (TEST_IMAGES, TEST_LABELS)):
        if (found[images_name] is None) != (found[labels_name] is None):
            present, absent = (
                (images_name, labels_name) if found[labels_name] is None else (labels_name, images_name)
            )
            raise DataError(f"{directory}: has {present} but not {absent}; {HOW_TO_GET_DATA}")
    if found[TRAIN_IMAGES] is None:
        raise DataError(f"{directory}: no {TRAIN_IMAGES}; {HOW_TO_GET_DATA}")

    def pair(images_name: str, labels_name: str) -> tuple[np.ndarray, np.ndarray]:
        images_path, labels_path = found[images_name], found[labels_name]
        assert images_path is not None and labels_path is not None  # checked above
        images = check_images(_read_idx_file(images_path, 3), str(images_path))
        labels = check_labels(_read_idx_file(labels_path, 1), str(labels_path))
        check_pair(images, labels, str(images_path), str(labels_path))
        return images, labels

    train_images, train_labels = pair(TRAIN_IMAGES, TRAIN_LABELS)
    if found[TEST_IMAGES] is None:
        return Dataset(train_images, train_labels)
    test_images, test_labels = pair(TEST_IMAGES, TEST_LABELS)
    if test_images.shape[1:] != train_images.shape[1:]:
        raise DataError(
            f"{found[TEST_IMAGES]}: images are {test_images.shape[1]}x{test_images.shape[2]} but the "
            f"training images are {train_images.shape[1]}x{train_images.shape[2]}: the two sets must be of "
            "one size (are they from the same data set?); resize one, or take both from one source"
        )
    return Dataset(train_images, train_labels, test_images, test_labels)


def read_training_labels(directory: Path | str) -> np.ndarray | None:
    """The training labels of a data folder that also holds a test set (then they are the training set's,
    exactly); None without a test set (`prepare` splits one off, so the training set is not known yet)."""
    directory = Path(directory)
    train, test = _find(directory, TRAIN_LABELS), _find(directory, TEST_LABELS)
    if train is None or test is None:
        return None
    return check_labels(_read_idx_file(train, 1), str(train))


def encode_dataset(dataset: Dataset) -> dict[str, bytes]:
    """File name -> deterministic gzip'd IDX bytes."""
    files = {
        TRAIN_IMAGES: dataset.train_images,
        TRAIN_LABELS: dataset.train_labels,
    }
    if dataset.test_images is not None and dataset.test_labels is not None:  # has_test_set
        files[TEST_IMAGES] = dataset.test_images
        files[TEST_LABELS] = dataset.test_labels
    return {name: gzip_deterministic(encode_idx(array)) for name, array in files.items()}


def replace_directory(files: dict[str, bytes], directory: Path | str) -> None:
    """Make `directory` hold exactly `files`, all or nothing: written beside it, then swapped in. A folder
    that cannot be written or replaced is a DataError naming it (the old one kept, nothing left beside)."""
    directory = Path(directory)
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.new-", dir=directory.parent))
    except OSError as error:
        raise _unwritable(directory, error) from None
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; the data folder should look like any other
    retired: Path | None = None
    try:
        for name, content in files.items():
            (staging / name).write_bytes(content)
        if directory.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old-", dir=directory.parent))
            os.replace(directory, retired / directory.name)
            try:
                os.replace(staging, directory)
            except BaseException:
                try:
                    os.replace(retired / directory.name, directory)  # the old folder back where it was
                except OSError as error:  # (then it is kept where it is, and said)
                    raise DataError(
                        f"cannot write {directory}/, and the old one could not be put back "
                        f"({error.strerror or error}): it is {retired / directory.name}; move it back "
                        f"(`mv {retired / directory.name} {directory}`)"
                    ) from None
                raise
        else:
            os.replace(staging, directory)
    except OSError as error:
        raise _unwritable(directory, error) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if retired is not None and directory.exists():  # (never the only copy of the old data)
            shutil.rmtree(retired, ignore_errors=True)


def _unwritable(directory: Path, error: OSError) -> DataError:
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = (
            f"make it and its folder {directory.parent.resolve()} writable by you (or give another folder), "
            "then run it again"
        )
    else:  # a full disk, say: no permission would help
        fix = "mend that, then run it again"
    return DataError(f"cannot write {directory}/ ({error.strerror or error}): it is left as it was; {fix}")


def dvc_directory_md5(files: dict[str, bytes]) -> str:
    """The md5 DVC 3 records for a directory holding `files` (flat): `<md5 of its listing>.dir`."""
    listing = [
        {"md5": hashlib.md5(content).hexdigest(), "relpath": name} for name, content in sorted(files.items())
    ]
    return hashlib.md5(json.dumps(listing, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def parse_data_version(dvc_file_text: str | None) -> str | None:
    """The md5 a `.dvc` file's text records for its output (`<hash>.dir` for a folder): the data version.
    None for no text, or text that is not a `.dvc` file."""
    value = parse_recorded(dvc_file_text, "md5")
    return None if value is None else str(value)


def parse_recorded(dvc_file_text: str | None, key: str) -> Any:
    """What a `.dvc` file's text records under `key` for its output (`md5`, `nfiles`, `size`); None where
    it says not, or for text that is not a `.dvc` file."""
    import yaml

    try:
        return yaml.safe_load(dvc_file_text or "")["outs"][0][key]
    except (yaml.YAMLError, KeyError, IndexError, TypeError):
        return None


def recorded_data_version(dvc_file: Path | str) -> str | None:
    """The data version `dvc_file` records; None if there is no such file; a DataError saying how to
    restore it if it is not a valid `.dvc` file."""
    dvc_file = Path(dvc_file)
    if not dvc_file.is_file():
        return None
    version = parse_data_version(dvc_file.read_text(encoding="utf-8"))
    if version is None:
        raise DataError(f"{dvc_file}: not a valid .dvc file; restore it with `git checkout -- {dvc_file}`")
    return version


def read_directory_files(directory: Path | str) -> dict[str, bytes]:
    """The regular files directly inside `directory`."""
    directory = Path(directory)
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}
