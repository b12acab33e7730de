"""The register stage, `mnist-lab promote` and `mnist-lab predict` against a real (sqlite) Model Registry."""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml

from mnist_lab import cli
from tests.helpers import SMALL_PARAMS, run_all, run_dvc_stage

NAME = "digits"


def experiment(root: Path, models: dict, task: dict | None = None) -> dict:
    """Run the pipeline with `models` and register its best model; the registry.json it wrote."""
    params = {**SMALL_PARAMS, "models": models, "registry": {"model_name": NAME}}
    if task:
        params["task"] = task
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_all(list(models))
    assert run_dvc_stage("register") == 0
    return json.loads((root / "registry.json").read_text())


def promote(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(["promote", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_the_best_model_becomes_challenger_and_champion_only_when_it_wins(
    workspace: Path,
    tracking_store: str,
    capsys: pytest.CaptureFixture,
) -> None:
    client = mlflow.MlflowClient(tracking_store, registry_uri=tracking_store)
    good = experiment(workspace, {"forest": {"type": "random_forest", "n_estimators": 30}})
    assert good["registered"] and good["version"] == "1" and good["alias"] == "challenger"
    version = client.get_model_version(NAME, "1")
    best = json.loads((workspace / "best_model.json").read_text())
    assert version.run_id == best["mlflow_run_id"]
    metrics = json.loads((workspace / "reports" / "forest" / "metrics.json").read_text())
    assert float(version.tags["metric.accuracy"]) == metrics["accuracy"]
    assert version.tags["mnist_lab.model"] == "forest" and version.tags["mnist_lab.data_version"]
    assert version.tags["mnist_lab.task"] == "multiclass"
    # the same run registered again is the same version
    assert run_dvc_stage("register") == 0
    assert json.loads((workspace / "registry.json").read_text())["version"] == "1"

    code, out = promote(capsys, "--dry-run")  # the decision, and nothing moved or tagged
    assert (
        code == 0 and "dry run, nothing changed: would promote v1 to champion: there was no champion" in out
    )
    with pytest.raises(mlflow.exceptions.MlflowException, match="champion"):
        client.get_model_version_by_alias(NAME, "champion")
    assert "mnist_lab.promotion" not in client.get_model_version(NAME, "1").tags
    code, out = promote(capsys)
    assert code == 0 and "promoted v1 to champion: there was no champion" in out
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"

    # a worse model: registered as challenger, not promoted; the comparison is shown
    worse = experiment(workspace, {"weak": {"type": "random_forest", "n_estimators": 1, "max_depth": 2}})
    assert worse["version"] == "2"
    code, out = promote(capsys, "--dry-run")  # refused as a real run is, and said to be a dry run
    assert code == 1 and "dry run, nothing changed: not promoted: v2 does not beat v1" in out
    code, out = promote(capsys)
    assert code == 1 and "not promoted: v2 does not beat v1, which stays champion" in out
    assert "f1_macro on the workspace's test set: challenger v2:" in out and "champion v1:" in out
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"

    code, out = promote(capsys, "--force", "--dry-run")
    assert code == 0 and "dry run, nothing changed: would promote v2 to champion (--force)" in out
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    code, out = promote(capsys, "--force")
    assert code == 0 and "(--force)" in out
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "2"
    assert client.get_model_version(NAME, "2").tags["mnist_lab.previous_champion"] == "1"
    code, out = promote(capsys, "--rollback")
    assert code == 0 and "moved back from v2 to v1" in out
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    # the audit trail: v2 no longer says only that it was promoted
    assert (
        client.get_model_version(NAME, "2")
        .tags["mnist_lab.promotion"]
        .endswith(" rolled back: v1 is champion again")
    )
    assert (
        client.get_model_version(NAME, "1")
        .tags["mnist_lab.promotion"]
        .endswith(" champion again: --rollback from v2")
    )
    code, out = promote(capsys, "--rollback")
    assert code == 2 and "replaced no earlier champion" in out
    # the champion it replaced was deleted since: said, nothing moved (a traceback from MLflow before)
    promote(capsys, "--force")  # v2 champion again, replacing v1
    client.delete_model_version(NAME, "1")
    code, out = promote(capsys, "--rollback")
    assert code == 2 and "v1, the champion before v2, no longer exists in 'digits' (deleted)" in out, out
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "2"


def test_models_of_another_task_are_not_compared(
    workspace: Path,
    tracking_store: str,
    capsys: pytest.CaptureFixture,
) -> None:
    experiment(workspace, {"sgd": {"type": "sgd"}})
    assert promote(capsys)[0] == 0
    experiment(workspace, {"sgd": {"type": "sgd"}}, task={"kind": "binary", "positive_class": 5})
    code, out = promote(capsys)
    assert code == 2 and "v1 was trained for task 'multiclass', not this workspace's 'binary'" in out
    # --force promotes as the refusal says, without a comparison (the multiclass v1 cannot be scored on
    # binary labels: a ValueError traceback before)
    code, out = promote(capsys, "--force")
    assert code == 0, out
    assert "challenger v2: " in out and "champion v1: not scored on it" in out
    assert (
        "promoted v2 to champion (--force), not compared with v1 (v1 was trained for task 'multiclass', not "
        "this workspace's 'binary': not scored on this test set)"
    ) in out
    client = mlflow.MlflowClient(tracking_store, registry_uri=tracking_store)
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "2"
    # and the other way round: the challenger alias on a version of another task than the workspace's.
    # --force promoted whatever the alias named: the binary v2 became a multiclass workspace's champion.
    # It promotes the workspace's version, as a promotion without it does
    experiment(workspace, {"sgd": {"type": "sgd"}})  # multiclass again: v3, the challenger
    assert promote(capsys, "--rollback")[0] == 0  # v1 (multiclass) is the champion again
    client.set_registered_model_alias(NAME, "challenger", "2")
    code, out = promote(capsys, "--force")
    assert code == 0 and "the challenger alias is back on v3, the workspace's experiment" in out, out
    assert "promoted v3 to champion (--force)" in out and "v2" not in out.split("). ", 1)[1]
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "3"


def test_no_challenger_and_no_test_data_are_clear_errors(
    workspace: Path,
    tracking_store: str,
    capsys: pytest.CaptureFixture,
) -> None:
    (workspace / "params.yaml").write_text(
        yaml.safe_dump({**SMALL_PARAMS, "registry": {"model_name": NAME}}, sort_keys=False)
    )
    code, out = promote(capsys)
    assert code == 2 and "outputs/prepared.npz is missing" in out
    assert run_dvc_stage("prepare") == 0
    code, out = promote(capsys)
    assert code == 2 and "registry.json is missing: `dvc repro` registers the workspace's best model" in out
    code, out = promote(capsys, "--force")  # --force never promotes another model than the workspace's
    assert code == 2 and "registry.json is missing: `dvc repro` registers the workspace's best model" in out


def test_a_run_or_version_from_another_store_is_named_not_a_traceback(
    workspace: Path,
    tracking_store: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """The committed files of a fresh clone name the author's runs and versions, which its own (empty)
    store does not hold: `register` and `promote` say so and how to log them here, and registry.json is
    written (DVC removed it before the stage ran)."""
    registered = experiment(workspace, {"forest": {"type": "random_forest", "n_estimators": 5}})
    assert registered["version"] == "1"
    (tmp_path / "clone-store").mkdir()
    empty = f"sqlite:///{tmp_path / 'clone-store' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", empty)
    code, out = promote(capsys)
    assert code == 2
    assert (
        f"registry.json names v1 of '{NAME}' (run {registered['run_id']}), which this tracking store" in out
    )
    assert "does not hold" in out and "`dvc repro -f`" in out
    assert run_dvc_stage("register") == 0
    note = json.loads((workspace / "registry.json").read_text())
    assert not note["registered"] and note["run_id"] == registered["run_id"]
    assert f"the run of 'forest' ({registered['run_id']}) is not in this tracking store" in note["note"]
    assert "`dvc repro -f`" in note["note"]
    code, out = promote(capsys)
    assert code == 2 and "the workspace's best model is not registered (not registered: the run" in out
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_store)  # back in the store that has it
    assert run_dvc_stage("register") == 0
    assert json.loads((workspace / "registry.json").read_text())["version"] == "1"


def test_predict_writes_what_evaluate_predicted(
    workspace: Path,
    tracking_store: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    import pandas as pd

    experiment(workspace, {"forest": {"type": "random_forest", "n_estimators": 20}, "sgd": {"type": "sgd"}})
    best = json.loads((workspace / "best_model.json").read_text())["model"]
    evaluated = pd.read_csv(workspace / "reports" / best / "predictions.csv")
    test_images = next((workspace / "data").glob("t10k-images*"))
    assert cli.main(["predict", str(test_images), "-o", "out/predictions.csv"]) == 0
    said = capsys.readouterr().err
    assert "the workspace's best model" in said and "warning" not in said
    # the same images on scikit-learn's 0-16 scale: predicted (the model cannot know), and warned about
    scaled = pd.DataFrame(np.load(workspace / "outputs" / "prepared.npz")["test_pixels"] // 16)
    scaled.to_csv(workspace / "digits-0-16.csv", index=False)
    assert cli.main(["predict", "digits-0-16.csv", "-o", "out/scaled.csv"]) == 0
    assert "warning: digits-0-16.csv: every pixel value is 16 or less" in capsys.readouterr().err
    from_dvc = pd.read_csv(workspace / "out" / "predictions.csv")
    assert from_dvc["label"].tolist() == evaluated["predicted"].tolist()
    # a table with an id and the true label: copied beside the predictions with --keep, else named
    pixels = np.load(workspace / "outputs" / "prepared.npz")["test_pixels"]
    table = pd.DataFrame(pixels, columns=[f"pixel_{i}" for i in range(pixels.shape[1])])
    table.insert(0, "id", [f"img-{i:04d}" for i in range(len(table))])
    table["label"] = evaluated["actual"]
    table.to_csv(workspace / "labelled.csv", index=False)
    assert cli.main(["predict", "labelled.csv", "-o", "out/plain.csv"]) == 0
    said = capsys.readouterr().err
    assert "note: not in the predictions: column(s) id, label of labelled.csv (--keep id copies" in said
    assert cli.main(["predict", "labelled.csv", "-o", "out/kept.csv", "--keep", "id", "--keep", "label"]) == 0
    assert (
        "note: kept label as input_label (the predictions have a column of that name)"
        in capsys.readouterr().err
    )
    kept = pd.read_csv(workspace / "out" / "kept.csv")
    assert kept["id"].tolist() == table["id"].tolist()
    assert kept["input_label"].tolist() == evaluated["actual"].tolist()
    assert kept["label"].tolist() == evaluated["predicted"].tolist()
    assert cli.main(["predict", str(test_images), "-o", "out/x.csv", "--keep", "id"]) == 2
    assert "--keep id: " in capsys.readouterr().err and not (workspace / "out" / "x.csv").exists()
    if best == "forest":
        assert {f"probability_{d}" for d in range(10)} <= set(from_dvc.columns)
    assert (
        cli.main(
            ["predict", str(test_images), "-o", "out/p.parquet", "--model", f"models:/{NAME}@challenger"]
        )
        == 0
    )
    parquet = pd.read_parquet(workspace / "out" / "p.parquet")  # float32 scores; CSV holds them as text
    pd.testing.assert_frame_equal(parquet, from_dvc, check_dtype=False)
    # on a batch machine: the package, the store's address, no checkout
    elsewhere = tmp_path / "batch-machine"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    model = ["--model", f"models:/{NAME}@challenger"]
    assert cli.main(["predict", str(test_images), "-o", "p.parquet", *model]) == 0, capsys.readouterr().err
    pd.testing.assert_frame_equal(pd.read_parquet(elsewhere / "p.parquet"), parquet)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert cli.main(["predict", str(test_images), "-o", "q.parquet", *model]) == 2
    assert "outside a repository the store holding it must be named: set MLFLOW_TRACKING_URI" in (
        capsys.readouterr().err
    )
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_store)
    code = cli.main(["predict", str(test_images), "-o", "out/x.csv", "--model", f"models:/{NAME}@nobody"])
    assert code == 2 and "cannot load model 'models:/digits@nobody'" in capsys.readouterr().err
    code = cli.main(["predict", str(test_images), "-o", "out/x.csv", "--model", f"models:/{NAME}@champion"])
    assert code == 2 and "; promote one first (`mnist-lab promote`)" in capsys.readouterr().err  # none yet
    assert not (workspace / "out" / "x.csv").exists()


def test_only_the_workspaces_model_is_promoted_and_only_by_more_than_min_delta(
    workspace: Path,
    tracking_store: str,
    capsys: pytest.CaptureFixture,
) -> None:
    client = mlflow.MlflowClient(tracking_store, registry_uri=tracking_store)
    weak = experiment(workspace, {"weak": {"type": "random_forest", "n_estimators": 1, "max_depth": 2}})
    assert promote(capsys)[0] == 0
    strong = experiment(workspace, {"forest": {"type": "random_forest", "n_estimators": 30}})
    assert strong["version"] == "2"
    gain = float(client.get_model_version(NAME, "2").tags["metric.f1_macro"]) - float(
        client.get_model_version(NAME, "1").tags["metric.f1_macro"]
    )
    assert gain > 0.05  # on the same test set: the registered metrics are the workspace's test metrics

    # the weak experiment is back in the workspace (applied again) but the alias stayed on v2 (each `dvc exp
    # run` registers its best as the challenger): the workspace's experiment is the one compared
    (workspace / "registry.json").write_text(json.dumps(weak))
    code, out = promote(capsys)
    assert code == 0 and "the challenger alias is back on v1, the workspace's experiment" in out, out
    assert (
        "it was on v2, put there by another experiment's register or a promote in another checkout: " in out
    )
    assert "to promote that one, `dvc exp apply` its experiment first). v1 is already the champion" in out
    assert str(client.get_model_version_by_alias(NAME, "challenger").version) == "1"
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"

    (workspace / "registry.json").write_text(json.dumps(strong))
    client.set_registered_model_alias(
        NAME, "challenger", "2"
    )  # as the strong experiment's register stage did
    code, out = promote(capsys, "--min-delta", "0.9")
    assert code == 1 and "not promoted: v2 does not beat v1 by more than 0.9, which stays champion" in out
    decided = re.search(
        r"decided by (\d+) of 100 test images: (\d+) only the challenger gets right, (\d+)", out
    )
    assert (
        decided and int(decided[1]) == int(decided[2]) + int(decided[3]) and int(decided[2]) > int(decided[3])
    )
    for bad, why in (("-1", "must be 0 or more"), ("lots", "is not a number"), ("nan", "must be 0 or more")):
        capsys.readouterr()
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args(["promote", "--min-delta", bad])
        assert f"argument --min-delta: '{bad}' {why}" in capsys.readouterr().err
    code, out = promote(capsys, "--min-delta", "0.01")
    assert code == 0 and "promoted v2 to champion: it beats v1 by more than 0.01 (+" in out

    # --force overrides the comparison, not which model: the workspace's (weak) experiment, though the
    # alias names v2 (it promoted whatever the alias named, there "v2 is already the champion"; across
    # tasks, another task's model over the workspace's)
    (workspace / "registry.json").write_text(json.dumps(weak))
    code, out = promote(capsys, "--force")
    assert code == 0 and "the challenger alias is back on v1, the workspace's experiment" in out, out
    assert "promoted v1 to champion (--force), though it does not beat v2" in out
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    # the alias deleted by hand: put back on the workspace's version (it said `dvc repro` registers one,
    # which then had nothing to do)
    client.delete_registered_model_alias(NAME, "challenger")
    code, out = promote(capsys)
    assert (
        code == 0
        and (
            "the challenger alias is back on v1, the workspace's experiment (registry.json; it was on no "
            "version). v1 is already the champion"
        )
        in out
    ), out
    assert str(client.get_model_version_by_alias(NAME, "challenger").version) == "1"


def test_models_of_another_data_version_or_image_size_are_not_compared(
    workspace: Path,
    tracking_store: str,
    capsys: pytest.CaptureFixture,
) -> None:
    from mnist_lab.datasets.folder import encode_dataset, replace_directory
    from tests.helpers import random_images

    data_file = "outs:\n- md5: {}.dir\n  path: data\n"
    (workspace / "data.dvc").write_text(data_file.format("a" * 32))
    experiment(workspace, {"sgd": {"type": "sgd"}})
    assert promote(capsys)[0] == 0
    (workspace / "data.dvc").write_text(data_file.format("b" * 32))
    experiment(workspace, {"sgd": {"type": "sgd"}})
    code, out = promote(capsys)
    assert (
        code == 2 and "v1 was trained on data version aaaaaaaaaaaa, not the workspace's bbbbbbbbbbbb" in out
    )
    # the alias moved by another experiment's register stage: a promotion refused as above changes nothing
    client = mlflow.MlflowClient(tracking_store, registry_uri=tracking_store)
    client.set_registered_model_alias(NAME, "challenger", "1")
    code, out = promote(capsys)
    assert code == 2 and "data version aaaaaaaaaaaa" in out
    assert str(client.get_model_version_by_alias(NAME, "challenger").version) == "1"

    # 4x4 images: a model for 8x8 ones cannot even be scored on them; said, not a scikit-learn traceback
    images, labels = random_images(200, 4, 4)
    from mnist_lab.core.data import Dataset

    replace_directory(encode_dataset(Dataset(images[:150], labels[:150], images[150:], labels[150:])),
                      workspace / "data")  # fmt: skip
    (workspace / "data.dvc").unlink()
    experiment(workspace, {"sgd": {"type": "sgd"}})
    code, out = promote(capsys)
    assert code == 2 and "v1 takes images of 64 pixels, the workspace's test set has 16" in out
    code, out = promote(capsys, "--force")  # as the refusal offers: uncompared
    uncompared = "v1 takes images of 64 pixels, the workspace's test set has 16: not scored on this test set"
    assert code == 0 and f"not compared with v1 ({uncompared})" in out, out
    # but a challenger that cannot even be loaded is never made champion, --force or not
    champion = str(client.get_model_version_by_alias(NAME, "champion").version)
    broken = client.create_model_version(NAME, source=str(workspace / "no-such-model"))
    registration = json.loads((workspace / "registry.json").read_text())
    (workspace / "registry.json").write_text(
        json.dumps({**registration, "version": str(broken.version), "run_id": None})
    )
    code, out = promote(capsys, "--force")
    assert code == 2 and f"cannot load model 'models:/{NAME}/{broken.version}'" in out, out
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == champion


def test_the_board_promotes_with_the_same_rules(workspace: Path, tracking_store: str) -> None:
    from fastapi.testclient import TestClient

    from mnist_lab.board.app import create_app

    http = TestClient(create_app(workspace), headers={"X-Mnist-Lab": "board"})
    missing = http.get("/api/model", params={"experiment": "champion"})  # nothing registered yet
    assert missing.status_code == 400 and "promote one" in missing.json()["error"]
    experiment(workspace, {"forest": {"type": "random_forest", "n_estimators": 30}})
    http = TestClient(create_app(workspace), headers={"X-Mnist-Lab": "board"})
    first = http.post("/api/promote", json={}).json()
    assert first["model"] == NAME and first["promoted"] is True
    assert "promoted v1 to champion: there was no champion" in first["decision"]
    again = http.post("/api/promote", json={}).json()
    assert again["promoted"] is False and "v1 is already the champion" in again["decision"]
    # the digit pad asks the registry's champion, through the served pyfunc
    described = http.get("/api/model", params={"experiment": "champion"}).json()
    assert described["model"] == f"the registry's champion ({NAME} v1)" and described["n_pixels"] == 64
    answer = http.post("/api/predict", json={"pixels": [[0.0] * 64], "experiment": "champion"})
    assert answer.status_code == 200 and answer.json()["model"] == described["model"]
    assert "label" in answer.json()["predictions"][0]
    bad = http.post("/api/promote", json={"min_delta": -1})
    assert bad.status_code == 422  # refused before anything is compared
    assert bad.json()["error"] == "malformed request: min_delta: Input should be greater than or equal to 0"
