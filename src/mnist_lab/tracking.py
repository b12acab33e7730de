"""The one tracking module: MLflow runs, the DagsHub logger's files and the DVC metrics JSON.

Settings are read from the environment (and a git-ignored `.env`) when called, never on import, and
`mlflow` is imported only inside the functions that log: it costs ~1.5 s to import.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from mnist_lab.errors import MnistLabError

DEFAULT_EXPERIMENT = "mnist-lab"
LOCAL_STORE = "mlflow.db"
LOCAL_ARTIFACTS = "mlartifacts"
TAG_PREFIX = "mnist_lab."
# Bounded retries for remote servers: MLflow's defaults block ~4 minutes on a dead server.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
# What the logged model needs at load time; passing it explicitly saves ~4 s of inference per model.
MODEL_REQUIREMENTS = ("mlflow", "scikit-learn", "numpy", "scipy", "pandas", "cloudpickle")


# --- where things are -------------------------------------------------------------------------------------


def workspace_root(start: Path | str | None = None) -> Path:
    """Where the pipeline runs: the nearest folder at or above `start` (default `DVC_ROOT`, else the cwd)
    holding `dvc.yaml` or `.dvc`. For `dvc exp run --temp/--queue` that is DVC's temporary copy."""
    here = Path(start or os.environ.get("DVC_ROOT") or os.getcwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "dvc.yaml").is_file() or (candidate / ".dvc").is_dir():
            return candidate
    raise MnistLabError(f"no repository found at or above {here}: run inside the mnist-lab repository")


def repository_root(start: Path | str | None = None) -> Path:
    """The repository that owns the workspace: the workspace itself, or for DVC experiments run in a
    temporary copy (`<repo>/.dvc/tmp/exps/...`) the repository around it, so runs land in its store."""
    workspace = workspace_root(start)
    parts = workspace.parts
    for index in range(len(parts) - 2):
        if parts[index : index + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:index])
    return workspace


def load_env_file(root: Path) -> None:
    """Load `<root>/.env` into the environment without overriding variables that are already set."""
    from dotenv import load_dotenv

    load_dotenv(root / ".env", override=False)


@dataclass(frozen=True)
class TrackingSettings:
    """Where MLflow runs go."""

    tracking_uri: str
    experiment_name: str
    artifact_location: str | None  # set for the local store; a server decides its own

    @property
    def is_local(self) -> bool:
        return self.tracking_uri.startswith(("sqlite:", "file:")) or "://" not in self.tracking_uri

    @classmethod
    def from_environment(cls, root: Path, environ: Mapping[str, str] | None = None) -> TrackingSettings:
        """`MLFLOW_TRACKING_URI` and `MLFLOW_EXPERIMENT_NAME` from the environment or `.env`; by default
        an embedded store at `<root>/mlflow.db`, artifacts in `<root>/mlartifacts` (never cwd-relative)."""
        if environ is None:
            load_env_file(root)
            environ = os.environ
        uri = environ.get("MLFLOW_TRACKING_URI", "").strip() or f"sqlite:///{root / LOCAL_STORE}"
        name = environ.get("MLFLOW_EXPERIMENT_NAME", "").strip() or DEFAULT_EXPERIMENT
        artifacts = None
        if uri.startswith("sqlite:"):
            artifacts = (root / LOCAL_ARTIFACTS).as_uri()
        return cls(tracking_uri=uri, experiment_name=name, artifact_location=artifacts)


def display_uri(uri: str) -> str:
    """The URI without any user:password part, safe to print."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://{rest.split('@', 1)[1]}"
    return uri


# --- what a run is tagged with ---------------------------------------------------------------------------


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def pipeline_output_globs(root: Path) -> list[str]:
    """Git pathspec globs of everything `dvc.yaml` writes (plus `dvc.lock`): changes there do not make a
    tree dirty, since a run in progress rewrites them."""
    try:
        pipeline = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return ["dvc.lock"]
    globs = {"dvc.lock"}
    for stage in (pipeline.get("stages") or {}).values():
        body = stage.get("do", stage) if isinstance(stage, dict) else {}
        for section in ("outs", "metrics", "plots"):
            for entry in body.get(section) or []:
                path = next(iter(entry)) if isinstance(entry, dict) else entry
                if isinstance(path, str):
                    globs.add(_template_to_glob(path))
    return sorted(globs)


def _template_to_glob(path: str) -> str:
    out, rest = [], path
    while "${" in rest:
        before, _, after = rest.partition("${")
        out.append(before + "*")
        rest = after.partition("}")[2]
    out.append(rest)
    return "".join(out)


@dataclass(frozen=True)
class GitState:
    commit: str | None
    branch: str | None
    dirty: bool
    changed_paths: tuple[str, ...] = ()


def git_state(root: Path) -> GitState:
    """HEAD, branch and whether files other than pipeline outputs differ from HEAD."""
    commit = (_git(root, "rev-parse", "HEAD") or "").strip() or None
    branch = (_git(root, "rev-parse", "--abbrev-ref", "HEAD") or "").strip() or None
    excludes = [f":(exclude,glob){glob}" for glob in pipeline_output_globs(root)]
    status = _git(root, "status", "--porcelain", "--untracked-files=normal", "--", ".", *excludes)
    changed = tuple(line[3:] for line in (status or "").splitlines() if line.strip())  # "XY path"
    return GitState(
        commit=commit, branch=None if branch == "HEAD" else branch, dirty=bool(changed), changed_paths=changed
    )


def data_version(root: Path, dvc_file: str = "data.dvc") -> str | None:
    """The md5 that `data.dvc` records for the data directory."""
    try:
        record = yaml.safe_load((root / dvc_file).read_text(encoding="utf-8"))
        return str(record["outs"][0]["md5"])
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError):
        return None


def run_tags(root: Path, model_name: str, model_type: str, task: str) -> dict[str, str]:
    """Tags linking a run to its code, data and experiment."""
    state = git_state(root)
    tags = {
        f"{TAG_PREFIX}model": model_name,
        f"{TAG_PREFIX}model_type": model_type,
        f"{TAG_PREFIX}task": task,
        f"{TAG_PREFIX}git_dirty": str(state.dirty).lower(),
        f"{TAG_PREFIX}data_version": data_version(root) or "unknown",
    }
    if state.commit:
        tags[f"{TAG_PREFIX}git_commit"] = state.commit
        tags["mlflow.source.git.commit"] = state.commit
    if state.branch:
        tags[f"{TAG_PREFIX}git_branch"] = state.branch
        tags["mlflow.source.git.branch"] = state.branch
    experiment = os.environ.get("DVC_EXP_NAME")
    if experiment:
        tags[f"{TAG_PREFIX}dvc_exp_name"] = experiment
    return tags


def pinned_requirements(packages: Sequence[str] = MODEL_REQUIREMENTS) -> list[str]:
    """`name==version` for the installed packages, for the model's explicit pip requirements."""
    return [f"{name}=={metadata.version(name)}" for name in packages]


# --- MLflow -------------------------------------------------------------------------------------------------


@dataclass
class ModelRunRecord:
    """Everything one trained model's MLflow run carries."""

    run_name: str
    params: dict[str, Any]
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)  # each with an "epoch" (the step)
    tags: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, bytes] = field(default_factory=dict)  # relative path -> content
    model: Any = None
    input_example: Any = None
    code_paths: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LoggedRun:
    run_id: str
    experiment_id: str
    model_uri: str | None
    tracking_uri: str


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _experiment_id(client, settings: TrackingSettings) -> str:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(settings.experiment_name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(
            settings.experiment_name, artifact_location=settings.artifact_location
        )
    except MlflowException:  # created meanwhile by a parallel run
        experiment = client.get_experiment_by_name(settings.experiment_name)
        if experiment is None:
            raise
        return experiment.experiment_id


@contextlib.contextmanager
def store_initialisation_lock(settings: TrackingSettings) -> Iterator[None]:
    """For a sqlite store, one process at a time creates/migrates it and its experiment: several processes
    creating a new store at once corrupt it (`dvc queue start -j 2`). Writes to a ready store need no lock."""
    if not settings.tracking_uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    database = Path(settings.tracking_uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def _requirements_check_skipped() -> Iterator[None]:
    """MLflow checks explicit pip requirements against the installed packages by mapping every installed
    module to its distribution (0.4-0.8 s per model here). Ours are read from the installed packages
    (`pinned_requirements`), so they match by construction: skip that check."""
    import mlflow.utils.environment as environment

    original = getattr(environment, "warn_dependency_requirement_mismatches", None)
    if original is None:  # a future MLflow without the check
        yield
        return
    environment.warn_dependency_requirement_mismatches = lambda requirements: None
    try:
        yield
    finally:
        environment.warn_dependency_requirement_mismatches = original


def log_model_run(record: ModelRunRecord, settings: TrackingSettings) -> LoggedRun:
    """Log one run: params, final metrics and histories (batched), tags, artifacts and the model in MLflow
    format with signature, input example and explicit pip requirements. A failure marks the run FAILED."""
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    import mlflow
    import mlflow.sklearn
    from mlflow.entities import Metric, Param
    from mlflow.models import infer_signature

    mlflow.set_tracking_uri(settings.tracking_uri)
    with store_initialisation_lock(settings):
        client = mlflow.MlflowClient(settings.tracking_uri)
        experiment_id = _experiment_id(client, settings)
    run = client.create_run(experiment_id, run_name=record.run_name, tags=record.tags)
    run_id = run.info.run_id
    status = "FAILED"
    try:
        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, 0) for key, value in record.metrics.items()]
        for row in record.history:
            step = int(row["epoch"])
            metrics.extend(Metric(key, float(v), now, step) for key, v in row.items() if key != "epoch")
        params = [Param(key, str(value)) for key, value in record.params.items()]
        for batch in _chunks(params, 100):
            client.log_batch(run_id, params=batch)
        for batch in _chunks(metrics, 1000):
            client.log_batch(run_id, metrics=batch)
        if record.artifacts:
            with tempfile.TemporaryDirectory(prefix="mnist-lab-artifacts-") as folder:
                for relative, content in record.artifacts.items():
                    target = Path(folder, relative)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(content)
                client.log_artifacts(run_id, folder)
        model_uri = None
        if record.model is not None:
            # cloudpickle (not skops) because the pipeline holds this package's scaling function; MLflow
            # warns about pickle on every save: the model is only ever loaded from this project's own store.
            logging.getLogger("mlflow.sklearn").setLevel(logging.ERROR)
            with mlflow.start_run(run_id=run_id), _requirements_check_skipped():
                signature = infer_signature(record.input_example, record.model.predict(record.input_example))
                info = mlflow.sklearn.log_model(
                    record.model,
                    name="model",
                    signature=signature,
                    input_example=record.input_example,
                    pip_requirements=pinned_requirements(),
                    code_paths=record.code_paths or None,
                    serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
                )
                model_uri = info.model_uri
        status = "FINISHED"
    finally:
        client.set_terminated(run_id, status=status)
    return LoggedRun(
        run_id=run_id, experiment_id=experiment_id, model_uri=model_uri, tracking_uri=settings.tracking_uri
    )


# --- files committed with each experiment ------------------------------------------------------------------


@contextlib.contextmanager
def dagshub_files(metrics_path: Path | str, params_path: Path | str) -> Iterator[Any]:
    """The DagsHub logger, writing `metrics.csv` / `params.yml` for DagsHub's experiments tab.

    It writes to temporary files that replace the real ones only once it is closed without error: the
    logger opens its CSV with "w" and buffers rows until `close()`, so a crash would otherwise leave an
    empty or partial file where the last good one was."""
    from dagshub.logger import DAGsHubLogger

    metrics_path, params_path = Path(metrics_path), Path(params_path)
    staging = Path(tempfile.mkdtemp(prefix=".dagshub-", dir=metrics_path.parent))
    staged_metrics, staged_params = staging / metrics_path.name, staging / params_path.name
    logger = DAGsHubLogger(
        metrics_path=str(staged_metrics), hparams_path=str(staged_params), eager_logging=False
    )
    try:
        yield logger
        logger.save()
        logger.close()
        os.replace(staged_metrics, metrics_path)
        os.replace(staged_params, params_path)
    finally:
        logger.close()
        for leftover in staging.iterdir():
            leftover.unlink()
        staging.rmdir()


def as_python_scalar(value: Any) -> Any:
    """numpy scalars -> Python int/float (the DagsHub logger writes anything else as a string)."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)
