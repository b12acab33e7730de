"""Where runs go: the tracking settings from the environment and `.env`, MLflow client defaults, and
the one place MLflow clients are made (`mlflow_client`)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mnist_lab.core.errors import MnistLabError
from mnist_lab.system.workspace import load_env_file

if TYPE_CHECKING:
    from mlflow import MlflowClient


class TrackingConfigError(MnistLabError):
    """The tracking configuration (environment or .env) is wrong: nothing can be logged until it is fixed."""


DEFAULT_EXPERIMENT = "mnist-lab"
LOCAL_STORE = "mlflow.db"
LOCAL_ARTIFACTS = "mlartifacts"
TAG_PREFIX = "mnist_lab."
PARENT_RUN_TAG = "mlflow.parentRunId"
CLIENT_DEFAULTS = {
    # bounded retries for remote servers: MLflow's defaults block for minutes on a dead server
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    # MLflow prints a run's link by reading the run back (a request) and shows the tracking URI as it is
    # (with any user:password in it): log_model_run prints it itself, credentials masked
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
# What the logged model needs at load time; passing it explicitly spares MLflow's requirement inference,
# seconds per model (README, Performance).
MODEL_REQUIREMENTS = ("mlflow", "scikit-learn", "numpy", "scipy", "pandas", "cloudpickle")
# Requests sent at once to a remote server when they do not depend on each other (uploads, metrics batches).
REMOTE_REQUESTS_AT_ONCE = 4


@dataclass(frozen=True)
class TrackingSettings:
    """Where MLflow runs go."""

    tracking_uri: str
    experiment_name: str
    artifact_location: str | None  # set for the local store; a server decides its own
    experiment_id: str | None = None  # known once `preflight` has found the experiment: no lookup to log
    server_away: bool = False  # `preflight` found the server unreachable: runs go to the outbox at once

    @property
    def is_local(self) -> bool:
        return self.tracking_uri.startswith(("sqlite:", "file:")) or "://" not in self.tracking_uri

    @property
    def is_remote(self) -> bool:
        return self.tracking_uri.startswith(("http://", "https://"))

    @classmethod
    def from_environment(cls, root: Path, environ: Mapping[str, str] | None = None) -> TrackingSettings:
        """From the environment or `.env`: `MLFLOW_TRACKING_URI`, else `DAGSHUB_REPO=<owner>/<repo>`
        (DagsHub's hosted MLflow), else an embedded store at `<root>/mlflow.db` with artifacts in
        `<root>/mlartifacts` (never cwd-relative); `MLFLOW_EXPERIMENT_NAME` names the experiment."""
        if environ is None:
            load_env_file(root)
            environ = os.environ
        uri = environ.get("MLFLOW_TRACKING_URI", "").strip()
        dagshub_repo = environ.get("DAGSHUB_REPO", "").strip()
        if not uri and dagshub_repo:
            if not re.fullmatch(r"[\w.-]+/[\w.-]+", dagshub_repo):
                raise TrackingConfigError(
                    f"DAGSHUB_REPO={dagshub_repo!r} is not <owner>/<repo>: fix it in .env "
                    "(for example DAGSHUB_REPO=jane/mnist)"
                )
            uri = f"https://dagshub.com/{dagshub_repo}.mlflow"
        uri = uri or f"sqlite:///{root / LOCAL_STORE}"
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):  # relative: to the root
            uri = f"sqlite:///{root / uri.removeprefix('sqlite:///')}"
        name = environ.get("MLFLOW_EXPERIMENT_NAME", "").strip() or DEFAULT_EXPERIMENT
        artifacts = (root / LOCAL_ARTIFACTS).as_uri() if uri.startswith("sqlite:") else None
        return cls(tracking_uri=uri, experiment_name=name, artifact_location=artifacts)


def apply_client_defaults() -> None:
    """CLIENT_DEFAULTS for MLflow's client (bounded retries and timeouts, ...), unless the environment sets
    its own."""
    for name, value in CLIENT_DEFAULTS.items():
        os.environ.setdefault(name, value)


def mlflow_client(settings: TrackingSettings, *, registry: bool = False) -> MlflowClient:
    """An `MlflowClient` on the store in `settings` (and its Model Registry with `registry=True`), with
    CLIENT_DEFAULTS applied: every MLflow client of this package is made here."""
    apply_client_defaults()
    import mlflow

    uri = settings.tracking_uri
    return mlflow.MlflowClient(uri, registry_uri=uri) if registry else mlflow.MlflowClient(uri)
