import json
from pathlib import Path

import pytest

from mnist_lab.serving.promotion import _decide
from mnist_lab.serving.registry import register_challenger
from tests.helpers import free_port


def test_the_champion_changes_only_for_a_strictly_better_challenger() -> None:
    assert _decide("v2", 0.9, None, None, force=False) == (
        True,
        "promoted v2 to champion: there was no champion",
    )
    assert _decide("v2", 0.91, "v1", 0.9, force=False)[0] is True
    assert _decide("v2", 0.9, "v1", 0.9, force=False) == (
        False,
        "not promoted: v2 does not beat v1, which stays champion (--force to promote anyway)",
    )
    assert _decide("v2", 0.5, "v1", 0.9, force=True)[1].endswith("(--force), though it does not beat v1")


def test_a_server_that_does_not_answer_delays_registering_without_failing_the_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    best = {"model": "m", "metric": "f1_macro", "value": 0.9, "model_type": "sgd"}
    (tmp_path / "best_model.json").write_text(json.dumps(best))
    (tmp_path / "reports" / "m").mkdir(parents=True)
    link = {"run_id": "a" * 32, "model_uri": "models:/m-123", "record_id": "b" * 32, "store": "local"}
    (tmp_path / "reports" / "m" / "mlflow.json").write_text(json.dumps(link))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "user")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    registration = register_challenger(tmp_path, "digits", tmp_path / "best_model.json", tmp_path / "reports")
    assert registration.version is None and registration.run_id == "a" * 32
    assert registration.note.startswith("not registered: the tracking server failed (")
    assert "`dvc repro -f -s register`" in registration.note and "s3cret" not in registration.note


def test_a_model_on_a_server_that_does_not_answer_is_said_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`predict --model models:/m@champion` with the server away printed requests' whole retry error and
    then "promote one first": the alias endpoint's URL has "alias" in it."""
    from mnist_lab.serving.registry import RegistryError, load_sklearn_model

    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "user")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(RegistryError) as raised:
        load_sklearn_model(tmp_path, "models:/digits@champion")
    said = str(raised.value)
    assert said.startswith(
        "cannot load model 'models:/digits@champion': the tracking server http://127.0.0.1:"
    )
    assert "did not answer (Connection refused): try again when it does" in said
    assert "promote one first" not in said and "Max retries" not in said and "s3cret" not in said


def test_a_commits_model_not_in_the_cache_names_a_fix_that_works_without_a_remote(tmp_path: Path) -> None:
    """It always said "`dvc pull` it first", which only fails again where no DVC remote is set."""
    import shutil

    from mnist_lab.serving.registry import RegistryError, committed_model
    from tests.helpers import commit_all, run

    root = tmp_path / "repo"
    root.mkdir()
    run(["git", "init", "-q"], root)
    run(["dvc", "init", "-q"], root)
    best = {"model": "forest", "metric": "accuracy", "value": 0.9, "model_type": "random_forest"}
    (root / "best_model.json").write_text(json.dumps(best))
    (root / "outputs").mkdir()
    (root / "outputs" / "featurizer.joblib").write_bytes(b"made on another machine")
    run(["dvc", "add", "-q", "outputs/featurizer.joblib"], root)  # tracked, then gone from this cache
    commit = commit_all(root, "an experiment whose outputs were never pushed")
    shutil.rmtree(root / ".dvc" / "cache")
    (root / "outputs" / "featurizer.joblib").unlink()
    with pytest.raises(RegistryError) as raised:
        committed_model(root, commit)
    said = str(raised.value)
    assert f"cannot read outputs/featurizer.joblib of commit {commit[:12]} from DVC" in said
    assert "no DVC remote is set and this repository's DVC cache lacks it" in said
    assert "dvc pull` it first" not in said and "`dvc checkout`, `dvc repro`" in said
    assert "neither as a DVC output" not in said  # DVC's words, which the commit's dvc.yaml contradicts
    # a remote in the repository's config (or in the commit's): pull it
    run(["dvc", "remote", "add", "-d", "storage", str(tmp_path / "storage")], root)
    with pytest.raises(RegistryError, match="`dvc pull` it first"):
        committed_model(root, commit)
    run(["dvc", "remote", "remove", "storage"], root)
    run(["dvc", "remote", "add", "-d", "storage", str(tmp_path / "storage")], root)
    older = commit_all(root, "the remote set up, committed")
    run(["dvc", "remote", "remove", "storage"], root)  # gone from today's config, still in the commit's
    with pytest.raises(RegistryError, match="`dvc pull` it first"):
        committed_model(root, older)
