"""Where runs go: the tracking settings from the environment and `.env`, MLflow client defaults, and
the one place MLflow clients are made (`mlflow_client`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mnist_lab.core.errors import MnistLabError
from mnist_lab.system.files import exclusive_lock
from mnist_lab.system.workspace import DAGSHUB_HOST, dagshub_repo, load_env_file

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
        uri = checked_tracking_uri(environ.get("MLFLOW_TRACKING_URI", "").strip())
        repo = environ.get("DAGSHUB_REPO", "").strip()
        if not uri and repo:
            try:
                uri = f"https://{DAGSHUB_HOST}/{dagshub_repo(repo)}.mlflow"
            except ValueError as exc:
                raise TrackingConfigError(str(exc)) from None
        _check_client_variables(environ)
        uri = uri or f"sqlite:///{root / LOCAL_STORE}"
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):  # relative: to the root
            uri = f"sqlite:///{root / uri.removeprefix('sqlite:///')}"
        name = environ.get("MLFLOW_EXPERIMENT_NAME", "").strip() or DEFAULT_EXPERIMENT
        artifacts = (root / LOCAL_ARTIFACTS).as_uri() if uri.startswith("sqlite:") else None
        return cls(tracking_uri=uri, experiment_name=name, artifact_location=artifacts)


# MLflow's tracking stores (a server, or a database through SQLAlchemy); its file store ("./mlruns") is in
# maintenance mode and refused by MLflow 3 unless MLFLOW_ALLOW_FILE_STORE is set
_STORE_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks")


def checked_tracking_uri(uri: str) -> str:
    """`MLFLOW_TRACKING_URI` as MLflow will use it (a server's scheme lower-cased), or a TrackingConfigError
    naming the fix: no scheme (`127.0.0.1:5000`, `mlflow.db`), an unknown one, credentials in the address, an
    address of the MLflow UI's pages (`.../#/experiments/1`)."""
    import urllib.parse

    from mnist_lab.system.redact import display_uri, unencoded_credentials

    if not uri:
        return uri
    shown = display_uri(uri)
    # `http://jane:pa/ss@host`: urllib reads host `jane`, port `pa` (a database URL goes to SQLAlchemy, which
    # reads it as meant)
    if uri.lower().startswith(("http://", "https://")) and unencoded_credentials(uri):
        raise TrackingConfigError(
            f"MLFLOW_TRACKING_URI={shown!r} holds credentials: put them in MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD (.env) and leave them out of the address"
        )
    try:
        parts = urllib.parse.urlsplit(uri)
        if parts.scheme.lower() in ("http", "https"):  # a database URL's own syntax is SQLAlchemy's
            parts.port  # noqa: B018 - reading it checks it (a number from 0 to 65535)
    except ValueError as exc:
        raise TrackingConfigError(
            f"MLFLOW_TRACKING_URI={shown!r} is not a valid address ({exc}): write it as http://<host>:<port>"
        ) from None
    scheme = parts.scheme.lower()
    if uri == "databricks":
        return uri
    if scheme in ("file", "") or "://" not in uri:
        raise TrackingConfigError(
            f"MLFLOW_TRACKING_URI={shown!r} is not a tracking store this package logs to: a server is "
            "http://<host>:<port> (or https://), a local store sqlite:///<path> (relative to the repository "
            "root); fix it in .env or the environment"
        )
    if scheme.partition("+")[0] not in _STORE_SCHEMES:
        raise TrackingConfigError(
            f"MLFLOW_TRACKING_URI={shown!r}: scheme '{parts.scheme}' is not an MLflow tracking store; use "
            "http(s)://<host>:<port>, sqlite:///<path>, or a database URL (postgresql://, mysql://, mssql://)"
        )
    if scheme.partition("+")[0] == "sqlite":
        if scheme != "sqlite":  # the local store's paths, lock and artifacts are found by `sqlite:///`
            raise TrackingConfigError(
                f"MLFLOW_TRACKING_URI={shown!r}: write a local store as sqlite:///<path> (relative to the "
                "repository root), without a driver"
            )
        if not uri.startswith("sqlite:///") or uri == "sqlite:///":
            raise TrackingConfigError(
                f"MLFLOW_TRACKING_URI={shown!r} names no database file (an in-memory store loses every run "
                "when its stage ends): give one, sqlite:///mlflow.db"
            )
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise TrackingConfigError(
                f"MLFLOW_TRACKING_URI={shown!r} names no host: use http://<host>:<port>"
            )
        if parts.username is not None or parts.password is not None:
            raise TrackingConfigError(
                f"MLFLOW_TRACKING_URI={shown!r} holds credentials: put them in MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD (.env) and leave them out of the address"
            )
        if parts.fragment or parts.query:
            raise TrackingConfigError(
                f"MLFLOW_TRACKING_URI={shown!r} is a page's address, not the server's: give its base URL, "
                f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}"
            )
        return urllib.parse.urlunsplit(parts._replace(scheme=scheme))
    return uri


def _check_client_variables(environ: Mapping[str, str]) -> None:
    """MLflow's request limits, which it reads as numbers only when it first sends a request, and
    credentials left as .env.example's placeholders (`<token>`), which a server would only reject."""
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        value = environ.get(name, "").strip()
        if value.startswith("<") and value.endswith(">"):
            raise TrackingConfigError(
                f"{name} is still .env.example's placeholder {value}: set it in .env (on DagsHub: your user "
                "name, an access token), or remove the line"
            )
    for name, unit in (  # MLflow reads each as an int (mlflow.environment_variables): 2.5 fails there
        ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "a whole number"),
        ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "a whole number"),
        ("MLFLOW_HTTP_REQUEST_TIMEOUT", "a whole number of seconds"),
    ):
        value = environ.get(name, "").strip()
        try:
            if value and int(value) < 0:
                raise ValueError
        except ValueError:
            raise TrackingConfigError(
                f"{name}={value!r} is not {unit} (0 or more): fix it in .env or the environment "
                f"(for example {name}={CLIENT_DEFAULTS[name]})"
            ) from None


# What .env.example names (and the TLS settings the README gives): a key in .env one typo away from one of
# these is almost surely it, misspelt; .env's other keys are left alone (MLflow reads many more).
ENV_SETTINGS = (
    "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_EXPERIMENT_NAME", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_TRACKING_SERVER_CERT_PATH",
    "DAGSHUB_REPO", "DVC_REMOTE_URL", "DVC_REMOTE_USER", "DVC_REMOTE_PASSWORD", "DVC_REMOTE_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MNIST_LAB_DASK_SCHEDULER",
)  # fmt: skip


def misspelt_env_keys(keys: list[str]) -> dict[str, str]:
    """The keys of a .env that look like a misspelt setting (`MLFLOW_TRACKING_URL`, a lower-case name), each
    with the setting it most likely means: nothing reads them, so their value was silently ignored (the
    pipeline logged to the local store). Within two letters of one; MLflow's other variables (such as
    MLFLOW_EXPERIMENT_ID, MLFLOW_TRACKING_AUTH) are further from these than that."""
    found = {}
    for key in keys:
        if key in ENV_SETTINGS:
            continue
        distance, meant = min((_edits(key.upper(), name), name) for name in ENV_SETTINGS)
        if distance <= 2:
            found[key] = meant
    return found


def _edits(a: str, b: str) -> int:
    """Levenshtein distance: the insertions, deletions and substitutions that turn `a` into `b`."""
    previous = list(range(len(b) + 1))
    for i, left in enumerate(a, start=1):
        current = [i]
        for j, right in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (left != right)))
        previous = current
    return previous[-1]


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
    with store_initialisation_lock(settings):  # MLflow creates a new store's tables as the client is made
        return mlflow.MlflowClient(uri, registry_uri=uri) if registry else mlflow.MlflowClient(uri)


@contextlib.contextmanager
def store_initialisation_lock(settings: TrackingSettings) -> Iterator[None]:
    """For a sqlite store, one process at a time creates/migrates it and its experiment: several processes
    creating a new store at once corrupt it or fail ("table ... already exists": `dvc queue start -j 2`,
    the board reading the store while a stage logs its first run). Writes to a ready store need no lock.
    Not reentrant: a process holding it must not ask for it again."""
    if not settings.tracking_uri.startswith("sqlite:///"):
        yield
        return
    database = Path(settings.tracking_uri.removeprefix("sqlite:///"))
    with contextlib.ExitStack() as held:
        with contextlib.suppress(PermissionError):  # a store read where nobody may write: nothing to create
            held.enter_context(exclusive_lock(database.with_name(database.name + ".lock")))
        yield
