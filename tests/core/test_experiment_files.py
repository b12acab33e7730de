"""The committed JSON files about runs and models: one schema each, read and written the same way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mnist_lab.core.errors import DataError
from mnist_lab.core.experiment_files import BestModelFile, RegistryFile, RunFile, parse_experiment_file
from mnist_lab.system.files import read_experiment_file
from tests.helpers import REPO_ROOT


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        *((f"reports/{m}/mlflow.json", RunFile) for m in ("sgd", "random_forest", "mlp", "cnn")),
        ("best_model.json", BestModelFile),
        ("registry.json", RegistryFile),
    ],
)
def test_the_committed_files_read_and_write_back_identically(path: str, kind: type) -> None:
    text = (REPO_ROOT / path).read_text()
    parsed = read_experiment_file(REPO_ROOT / path, kind)
    assert json.dumps(parsed.as_json(), indent=2) + "\n" == text  # same keys, same order, same values


def test_a_pending_run_keeps_its_null_run_id_and_state() -> None:
    pending = RunFile(record_id="ab" * 16, store="https://mlflow.example", state="pending")
    assert pending.as_json() == {
        "record_id": "ab" * 16,
        "store": "https://mlflow.example",
        "run_id": None,
        "state": "pending",
    }
    assert list(pending.as_json()) == ["record_id", "store", "run_id", "state"]


def test_a_bad_file_is_named_with_the_field_and_the_fix(tmp_path: Path) -> None:
    bad = tmp_path / "mlflow.json"
    bad.write_text(json.dumps({"store": "local", "run_id": "x"}))
    with pytest.raises(DataError, match=r"mlflow.json: record_id: Field required; .*git checkout -- "):
        read_experiment_file(bad, RunFile)
    bad.write_text("{not json")
    with pytest.raises(DataError, match=r"mlflow.json is not JSON .*git checkout"):
        read_experiment_file(bad, RunFile)
    with pytest.raises(DataError, match=r"missing: run `dvc repro`"):
        read_experiment_file(tmp_path / "absent.json", RunFile)
    with pytest.raises(DataError, match=r"best_model.json: value: Input should be a valid number"):
        parse_experiment_file(
            BestModelFile,
            {"model": "m", "metric": "f1", "value": "high", "model_type": "sgd"},
            "best_model.json",
        )


def test_keys_a_newer_version_adds_are_ignored() -> None:
    data = {"record_id": "r", "store": "local", "run_id": "x", "written_by": "mnist-lab 9"}
    assert parse_experiment_file(RunFile, data, "mlflow.json").as_json() == {
        "record_id": "r",
        "store": "local",
        "run_id": "x",
    }
