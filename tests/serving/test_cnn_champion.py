"""A CNN as the best model, end to end: registered as challenger, promoted to champion, batch-predicted by
`mnist-lab predict` (from the workspace and from the registry) and served over REST by `mnist-lab serve`,
each giving the evaluate stage's own predictions (slow: trains a CNN and starts a real server)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mnist_lab.core.data import Dataset, digits_dataset
from mnist_lab.datasets.folder import encode_dataset, replace_directory
from tests.helpers import (
    REPO_ROOT,
    free_port,
    post,
    run,
    run_all,
    run_dvc_stage,
    start,
    stop,
    wait_until_ready,
)

pytestmark = pytest.mark.slow
NAME = "digits-cnn"
PARAMS = {
    "seed": 1,
    "models": {
        # a deliberately weak forest, so that the CNN is the best model
        "forest": {"type": "random_forest", "n_estimators": 2, "max_depth": 2},
        "cnn": {"type": "cnn", "filters": [8, 16], "max_epochs": 15, "learning_rate": 0.01, "batch_size": 64},
    },
    "registry": {"model_name": NAME},
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("cnn-champion") / "repo"
    root.mkdir()
    shutil.copy(REPO_ROOT / "dvc.yaml", root / "dvc.yaml")
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS, sort_keys=False))
    digits = digits_dataset()
    small = Dataset(digits.train_images[:600], digits.train_labels[:600], digits.test_images[:120],
                    digits.test_labels[:120])  # fmt: skip
    replace_directory(encode_dataset(small), root / "data")
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{root.parent / 'mlflow.db'}"}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
        patch.delenv("DVC_ROOT", raising=False)
        run_all(["forest", "cnn"])
        assert run_dvc_stage("register") == 0
    expected = [int(r["predicted"]) for r in csv.DictReader((root / "reports/cnn/predictions.csv").open())]
    pixels = np.load(root / "outputs" / "prepared.npz")["test_pixels"]
    pd.DataFrame(pixels, columns=[f"pixel_{i}" for i in range(64)]).to_csv(root / "images.csv", index=False)
    return {"root": root, "env": env, "expected": expected, "pixels": pixels}


def test_the_cnn_is_registered_and_promoted(workspace: dict) -> None:
    root, env = workspace["root"], workspace["env"]
    assert json.loads((root / "best_model.json").read_text())["model"] == "cnn"
    registration = json.loads((root / "registry.json").read_text())
    assert registration["model_name"] == NAME and registration["version"] == "1"
    promoted = run(["mnist-lab", "promote"], root, env)
    assert "promoted v1 to champion" in promoted.stdout + promoted.stderr
    # both scored again on the workspace's test set, through the registry's CNN pyfunc: the stage's value
    f1 = json.loads((root / "reports/cnn/metrics.json").read_text())["f1_macro"]
    again = run(["mnist-lab", "promote"], root, env, check=False)
    assert again.returncode == 0 and "v1 is already the champion" in again.stdout  # done already
    assert f"challenger v1: {f1:.6f}, champion v1: {f1:.6f}" in again.stdout


@pytest.mark.parametrize("model", [None, f"models:/{NAME}/1"])
def test_batch_predictions_match_the_evaluate_stage(
    workspace: dict, model: str | None, tmp_path: Path
) -> None:
    out = tmp_path / "predictions.csv"
    command = ["mnist-lab", "predict", "images.csv", "-o", str(out), *(["--model", model] if model else [])]
    run(command, workspace["root"], workspace["env"])
    predictions = pd.read_csv(out)
    assert list(predictions.columns) == ["label", *(f"probability_{d}" for d in range(10))]
    assert predictions["label"].tolist() == workspace["expected"]
    assert np.allclose(predictions.filter(like="probability_").sum(axis=1), 1.0, atol=1e-5)


def test_the_cnn_champion_is_served_over_rest(workspace: dict) -> None:
    root, env = workspace["root"], workspace["env"]
    run(["mnist-lab", "promote"], root, env, check=False)  # champion already, or now
    port = free_port()
    server = start(["mnist-lab", "serve", "--port", str(port)], root, env)
    try:
        wait_until_ready(server, port)
        url = f"http://127.0.0.1:{port}"
        rows = workspace["pixels"][:10].astype(int).tolist()
        status, answer = post(url, json.dumps({"instances": rows}))
        assert status == 200, answer
        assert [p["label"] for p in answer["predictions"]] == workspace["expected"][:10]
        split = {"dataframe_split": {"columns": [f"pixel_{i}" for i in range(64)], "data": rows[:1]}}
        status, answer = post(url, json.dumps(split))
        assert status == 200 and answer["predictions"][0]["label"] == workspace["expected"][0]
        status, answer = post(url, json.dumps({"instances": [[0] * 63]}))  # a wrong image size: 400
        assert status == 400 and "64 pixels" in json.dumps(answer)
    finally:
        stop(server)
