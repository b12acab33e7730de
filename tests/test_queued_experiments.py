"""`dvc exp run --queue` + `dvc queue start -j 2`: experiments run in parallel in DVC's temporary copies,
and every run lands in the repository's store, local or remote (slow)."""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
import pytest

from tests.helpers import MlflowServer, commit_all, run

pytestmark = pytest.mark.slow
ALPHAS = ("0.001", "0.01")


@pytest.mark.parametrize("store", ["local", "remote"])
def test_queued_experiments_all_land(store: str, tmp_path: Path, restored_repo: Path) -> None:
    root = restored_repo
    server = MlflowServer(tmp_path / "server").start() if store == "remote" else None
    try:
        if server:
            (root / ".env").write_text(
                f"MLFLOW_TRACKING_URI={server.url}\n"
            )  # git-ignored: not in the copies
        run(["dvc", "repro"], root)  # the baseline, so the queued runs retrain only what their params change
        commit_all(root, "baseline")
        for alpha in ALPHAS:
            run(
                ["dvc", "exp", "run", "--queue", "-n", f"alpha-{alpha}", "-S", f"models.sgd.alpha={alpha}"],
                root,
            )
        run(["dvc", "queue", "start", "-j", "2"], root)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            status = run(["dvc", "queue", "status"], root).stdout
            if "Queued" not in status and "Running" not in status:
                break
            time.sleep(2)
        assert "Success" in status and "Failed" not in status, (
            status + run(["dvc", "queue", "logs", f"alpha-{ALPHAS[0]}"], root, check=False).stdout
        )
        uri = server.url if server else f"sqlite:///{root / 'mlflow.db'}"
        client = mlflow.MlflowClient(uri)
        experiment = client.get_experiment_by_name("mnist-lab")
        runs = client.search_runs([experiment.experiment_id], "tags.`mnist_lab.dvc_exp_name` LIKE 'alpha-%'")
        by_experiment = {r.data.tags["mnist_lab.dvc_exp_name"]: r for r in runs}
        assert set(by_experiment) == {f"alpha-{a}" for a in ALPHAS}, [r.data.tags for r in runs]
        for alpha in ALPHAS:
            logged = by_experiment[f"alpha-{alpha}"]
            assert logged.info.status == "FINISHED" and logged.data.params["model.alpha"] == alpha
        assert not (root / ".mnist-lab" / "outbox").exists()
        assert not list((root / ".dvc" / "tmp").rglob("mlflow.db"))  # nothing logged into a throwaway copy
    finally:
        if server:
            server.stop()
