"""Without a Model Registry (DagsHub's hosted MLflow has been reported so): the pipeline still logs and goes
on, and `promote` / `serve` work from DVC-tracked models with the champion as a git tag (slow: a real MLflow
server behind a proxy that hides its registry, two pipeline runs, a model server)."""

from __future__ import annotations

import io
import json
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from mnist_lab.datasets.folder import read_dataset
from tests.helpers import MlflowServer, free_port, post, run, start, stop, wait_until_ready
from tests.servers import mlflow_without_registry

pytestmark = pytest.mark.slow


def tag(root: Path, name: str) -> str:
    return run(["git", "rev-parse", f"refs/tags/{name}^{{commit}}"], root).stdout.strip()


def test_promote_and_serve_from_dvc_when_the_server_has_no_registry(
    restored_repo: Path, tmp_path: Path
) -> None:
    root = restored_repo
    server = MlflowServer(tmp_path / "server").start()
    try:
        with mlflow_without_registry(server.url) as url:
            (root / ".env").write_text(f"MLFLOW_TRACKING_URI={url}\n")
            repro = run(["dvc", "repro"], root)
            assert "not registered: this tracking server has no Model Registry" in repro.stderr + repro.stdout
            registration = json.loads((root / "registry.json").read_text())
            assert registration["registered"] is False and registration["run_id"]
            first = run(["mnist-lab", "commit", "-m", "first"], root).stdout
            assert "committed the experiment" in first
            head = run(["git", "rev-parse", "HEAD"], root).stdout.strip()

            dry = run(["mnist-lab", "promote", "--dry-run"], root)
            assert f"dry run, nothing changed: would promote {head[:12]}" in dry.stdout
            assert run(["git", "tag", "-l", "mnist-lab/champion"], root).stdout == ""  # nothing tagged
            promoted = run(["mnist-lab", "promote"], root)
            assert "no Model Registry: the champion is the experiment commit git tag" in promoted.stderr
            assert f"promoted {head[:12]} to champion: there was no champion" in promoted.stdout
            assert tag(root, "mnist-lab/champion") == head

            params = root / "params.yaml"  # a worse experiment: every model starved
            text = params.read_text().replace("max_epochs: 100", "max_epochs: 1").replace(
                "n_estimators: 100", "n_estimators: 1").replace("max_iter: 1000", "max_iter: 1")  # fmt: skip
            params.write_text(text)
            run(["dvc", "repro"], root)
            run(["mnist-lab", "commit", "-m", "starved"], root)
            worse = run(["git", "rev-parse", "HEAD"], root).stdout.strip()
            refused = run(["mnist-lab", "promote"], root, check=False)
            assert refused.returncode == 1
            assert f"not promoted: {worse[:12]} does not beat {head[:12]}" in refused.stdout
            assert tag(root, "mnist-lab/champion") == head
            forced = run(["mnist-lab", "promote", "--force"], root)
            assert "(--force)" in forced.stdout and tag(root, "mnist-lab/champion") == worse
            back = run(["mnist-lab", "promote", "--rollback"], root)
            assert f"moved back from {worse[:12]} to {head[:12]}" in back.stdout
            assert tag(root, "mnist-lab/champion") == head

            # serving the champion commit's model (from DVC), though the workspace holds the starved one
            port = free_port()
            served = start(["mnist-lab", "serve", "--port", str(port)], root, {})
            try:
                wait_until_ready(served, port)
                test = read_dataset(root / "data")
                rows = test.test_images.reshape(len(test.test_images), -1).astype(int).tolist()
                status, answer = post(f"http://127.0.0.1:{port}", json.dumps({"instances": rows}))
                assert status == 200
                served_labels = [p["label"] for p in answer["predictions"]]
            finally:
                stop(served)
            # the champion commit's model, not the workspace's: what evaluate predicted at that commit
            best = json.loads(run(["git", "show", f"{head}:best_model.json"], root).stdout)["model"]
            predicted = run(["git", "show", f"{head}:reports/{best}/predictions.csv"], root).stdout
            champion_labels = pd.read_csv(io.StringIO(predicted))["predicted"].tolist()
            starved = json.loads((root / "best_model.json").read_text())["model"]
            starved_labels = pd.read_csv(root / "reports" / starved / "predictions.csv")["predicted"].tolist()
            assert served_labels == champion_labels and starved_labels != champion_labels
            with urllib.request.urlopen(f"{url}/health", timeout=10) as health:  # the proxy still works
                assert health.status == 200

            # an experiment of another task: refused as with a registry, --force promotes it uncompared
            # (the multiclass champion scored on binary labels was a ValueError traceback)
            params.write_text(params.read_text().replace("kind: multiclass", "kind: binary", 1))
            run(["dvc", "repro"], root)
            run(["mnist-lab", "commit", "-m", "5-detector"], root)
            detector = run(["git", "rev-parse", "HEAD"], root).stdout.strip()
            other = run(["mnist-lab", "promote"], root, check=False)
            assert other.returncode == 2, other.stdout + other.stderr
            assert (
                f"champion {head[:12]} was trained for task 'multiclass', not this experiment's 'binary' "
                "(positive class 5): the two cannot be compared"
            ) in other.stderr
            forced = run(["mnist-lab", "promote", "--force"], root)
            assert f"promoted {detector[:12]} to champion (--force), not compared with {head[:12]}" in (
                forced.stdout
            )
            assert tag(root, "mnist-lab/champion") == detector
    finally:
        server.stop()
