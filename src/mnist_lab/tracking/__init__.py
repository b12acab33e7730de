"""Tracking: everything this package writes to MLflow, and the files committed for DagsHub.

- `config`: where runs go (`TrackingSettings` from the environment and `.env`) and `mlflow_client`, the one
  place MLflow clients are made;
- `metadata`: what a run is tagged with (git state, data version, DVC experiment, run name);
- `runs`: logging a model's run (`log_model_run`);
- `server`: the credentials check before training (`preflight`) and an unreachable server's marker;
- `outbox`: runs waiting for an unreachable server, sent later (`mnist-lab sync`);
- `dagshub`: the DagsHub logger's `metrics.csv` / `params.yml`.

The names other layers use are imported here (`from mnist_lab import tracking; tracking.preflight(...)`).
Settings are read from the environment when called, never on import, and `mlflow` is imported only inside
the functions that talk to it (it costs more than a second to import).
"""

from __future__ import annotations

from mnist_lab.tracking.config import (
    CLIENT_DEFAULTS,
    DEFAULT_EXPERIMENT,
    LOCAL_ARTIFACTS,
    LOCAL_STORE,
    MODEL_REQUIREMENTS,
    PARENT_RUN_TAG,
    REMOTE_REQUESTS_AT_ONCE,
    TAG_PREFIX,
    TrackingConfigError,
    TrackingSettings,
    apply_client_defaults,
    mlflow_client,
    store_initialisation_lock,
)
from mnist_lab.tracking.dagshub import (
    as_python_scalar,
    dagshub_files,
)
from mnist_lab.tracking.metadata import (
    GitState,
    data_version,
    git_state,
    model_requirements,
    pinned_requirements,
    pipeline_output_globs,
    run_name,
    run_tags,
    uncommitted_diff,
)
from mnist_lab.tracking.runs import (
    ChildRunRecord,
    LoggedRun,
    ModelRunRecord,
    log_model_run,
    logged_model_uri,
    quiet_pickling_warnings,
    this_package_pickled_by_value,
)
from mnist_lab.tracking.server import (
    CHECK_ATTEMPTS,
    CHECK_TIMEOUT_S,
    OUTBOX,
    SERVER_AWAY,
    SERVER_AWAY_FOR_S,
    TrackingServerUnreachable,
    check_server,
    preflight,
    server_recently_away,
)

__all__ = [
    "CHECK_ATTEMPTS",
    "CHECK_TIMEOUT_S",
    "CLIENT_DEFAULTS",
    "DEFAULT_EXPERIMENT",
    "LOCAL_ARTIFACTS",
    "LOCAL_STORE",
    "MODEL_REQUIREMENTS",
    "OUTBOX",
    "PARENT_RUN_TAG",
    "REMOTE_REQUESTS_AT_ONCE",
    "SERVER_AWAY",
    "SERVER_AWAY_FOR_S",
    "TAG_PREFIX",
    "ChildRunRecord",
    "GitState",
    "LoggedRun",
    "ModelRunRecord",
    "TrackingConfigError",
    "TrackingServerUnreachable",
    "TrackingSettings",
    "apply_client_defaults",
    "as_python_scalar",
    "check_server",
    "dagshub_files",
    "data_version",
    "git_state",
    "log_model_run",
    "logged_model_uri",
    "mlflow_client",
    "model_requirements",
    "pinned_requirements",
    "pipeline_output_globs",
    "preflight",
    "quiet_pickling_warnings",
    "run_name",
    "run_tags",
    "server_recently_away",
    "store_initialisation_lock",
    "this_package_pickled_by_value",
    "uncommitted_diff",
]
