"""Shared fixtures: the repository, small real data, and a throwaway MLflow store."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mnist_lab.core.cnn import COMPILE_CACHE_ENV
from mnist_lab.core.data import Dataset, digits_dataset
from mnist_lab.datasets.folder import dvc_directory_md5, read_directory_files
from mnist_lab.system.warm import DIR_ENV, IDLE_ENV, stop_servers
from tests.helpers import REPO_ROOT, SMALL_PARAMS, copy_repository, run


@pytest.fixture(scope="session", autouse=True)
def warm_stage_servers() -> Iterator[Path]:
    """The stages the tests run start warm (system/warm.py) from this session's own servers, kept in a
    private directory and stopped at the end (never a developer's own servers), and keep the CNN's compiled
    programs in this session's own directory (not the user's cache)."""
    directory = Path(tempfile.mkdtemp(prefix="mlw-", dir="/tmp"))  # short: socket paths are limited
    compiled = Path(tempfile.mkdtemp(prefix="mnist-lab-tests-xla-"))
    values = {DIR_ENV: str(directory), IDLE_ENV: "300", COMPILE_CACHE_ENV: str(compiled)}
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield directory
    finally:
        stop_servers(directory)
        shutil.rmtree(directory, ignore_errors=True)
        shutil.rmtree(compiled, ignore_errors=True)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def digits() -> Dataset:
    """scikit-learn's bundled digits in MNIST layout (1,437 train / 360 test, 8x8)."""
    return digits_dataset()


@pytest.fixture
def small_digits(digits: Dataset) -> Dataset:
    """A 400/100 stratified-enough slice of the digits, for fast stage tests."""
    return Dataset(
        digits.train_images[:400],
        digits.train_labels[:400],
        digits.test_images[:100],
        digits.test_labels[:100],
    )


@pytest.fixture
def tracking_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point MLflow at a sqlite store in a temporary folder (never the repository's own mlflow.db)."""
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "tests")
    return uri


TRACKING_AND_REMOTE_VARIABLES = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "DAGSHUB_REPO",
    "DVC_REMOTE_URL",
    "DVC_REMOTE_USER",
    "DVC_REMOTE_PASSWORD",
    "DVC_REMOTE_ENDPOINT_URL",
    "DVC_ROOT",
)


@pytest.fixture(autouse=True)
def no_settings_leak_between_tests() -> Iterator[None]:
    """The tracking and remote variables as they were before each test: code under test loads a test
    repository's .env into this process (`load_env_file`, as the CLI does), and what it set stayed for the
    next tests of the worker (an export then read another store than its repository's)."""
    saved = {name: os.environ.get(name) for name in TRACKING_AND_REMOTE_VARIABLES}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def restored_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh git copy of the repository with its data restored, and no tracking or remote settings
    inherited from the environment: each test says where runs go (usually in the copy's `.env`)."""
    for name in TRACKING_AND_REMOTE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    root = copy_repository(tmp_path / "repo")
    run(["mnist-lab", "data", "restore"], root)
    return root


@pytest.fixture
def workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_digits: Dataset, tracking_store: str
) -> Path:
    """A repository folder with dvc.yaml, small params and small data; the cwd for the stages."""
    import shutil

    import yaml

    from mnist_lab.datasets.folder import encode_dataset, replace_directory

    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(REPO_ROOT / "dvc.yaml", root / "dvc.yaml")
    (root / "params.yaml").write_text(yaml.safe_dump(SMALL_PARAMS, sort_keys=False))
    replace_directory(encode_dataset(small_digits), root / "data")
    (root / "data.dvc").write_text(
        f"outs:\n- md5: {dvc_directory_md5(read_directory_files(root / 'data'))}\n  path: data\n"
    )
    monkeypatch.chdir(root)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    return root
