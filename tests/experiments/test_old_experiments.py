"""`git checkout <rev> && dvc checkout` brings back an old experiment's data, models and metrics exactly,
over three experiment commits with different params and different data versions (slow)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mnist_lab.core.data import Dataset, digits_dataset
from mnist_lab.datasets.folder import encode_dataset, replace_directory
from tests.helpers import commit_all, run

pytestmark = pytest.mark.slow
RESTORED = (
    "data",
    "models",
    "outputs",
    "reports",
    "metrics.json",
    "metrics.csv",
    "params.yml",
    "dvc.lock",
    "params.yaml",
)


def snapshot(root: Path) -> dict[str, str]:
    files = {}
    for name in RESTORED:
        target = root / name
        for path in [target] if target.is_file() else sorted(target.rglob("*")):
            if path.is_file() and path.name != ".gitignore":
                files[str(path.relative_to(root))] = hashlib.md5(path.read_bytes()).hexdigest()
    return files


def test_three_experiments_come_back_exactly(restored_repo: Path) -> None:
    root = restored_repo
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{root.parent / 'store.db'}"}
    params = root / "params.yaml"
    params.write_text(params.read_text().replace("n_estimators: 100", "n_estimators: 30", 1))
    experiments = {}
    run(["dvc", "repro"], root, env)
    experiments[commit_all(root, "forest of 30")] = snapshot(root)

    params.write_text(params.read_text().replace("pca: false", "pca: true", 1))
    run(["dvc", "repro"], root, env)
    experiments[commit_all(root, "with PCA")] = snapshot(root)

    digits = digits_dataset()  # a second data version: two thirds of the training images
    smaller = Dataset(
        digits.train_images[:958], digits.train_labels[:958], digits.test_images, digits.test_labels
    )
    replace_directory(encode_dataset(smaller), root / "data")
    run(["dvc", "add", "data"], root)
    run(["dvc", "repro"], root, env)
    experiments[commit_all(root, "less training data")] = snapshot(root)

    versions = {snap["data/train-images-idx3-ubyte.gz"] for snap in experiments.values()}
    assert len(versions) == 2 and len({snap["metrics.json"] for snap in experiments.values()}) == 3
    for commit, expected in [*experiments.items(), *reversed(experiments.items())]:
        run(["git", "checkout", "-q", commit], root)
        run(["dvc", "checkout"], root)
        assert snapshot(root) == expected, commit
        assert "Data and pipelines are up to date." in run(["dvc", "status"], root).stdout
