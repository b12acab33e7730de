"""The one tracking module: MLflow runs, the DagsHub logger's files and the DVC metrics JSON.

Settings are read from the environment (and a git-ignored `.env`) when called, never on import, and
`mlflow` is imported only inside the functions that log: it costs ~1.5 s to import.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from mnist_lab.errors import MnistLabError
from mnist_lab.files import write_text_atomic
from mnist_lab.redact import display_uri, open_url


class TrackingConfigError(MnistLabError):
    """The tracking configuration (environment or .env) is wrong: nothing can be logged until it is fixed."""


DEFAULT_EXPERIMENT = "mnist-lab"
LOCAL_STORE = "mlflow.db"
LOCAL_ARTIFACTS = "mlartifacts"
TAG_PREFIX = "mnist_lab."
PARENT_RUN_TAG = "mlflow.parentRunId"
CLIENT_DEFAULTS = {
    # bounded retries for remote servers: MLflow's defaults block ~4 minutes on a dead server
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    # MLflow prints a run's link by reading the run back (a request) and shows the tracking URI as it is
    # (with any user:password in it): log_model_run prints it itself, credentials masked
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
# What the logged model needs at load time; passing it explicitly saves ~4 s of inference per model.
MODEL_REQUIREMENTS = ("mlflow", "scikit-learn", "numpy", "scipy", "pandas", "cloudpickle")
# Requests sent at once to a remote server when they do not depend on each other (uploads, metrics batches).
REMOTE_REQUESTS_AT_ONCE = 4


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


def uncommitted_diff(root: Path) -> str:
    """What differs from HEAD outside the pipeline's outputs: `git diff HEAD` plus the untracked files'
    names, attached to runs from a dirty tree so they can be understood and reproduced later."""
    excludes = [f":(exclude,glob){glob}" for glob in pipeline_output_globs(root)]
    diff = _git(root, "diff", "HEAD", "--", ".", *excludes) or ""
    untracked = _git(root, "ls-files", "--others", "--exclude-standard", "--", ".", *excludes) or ""
    if untracked.strip():
        diff += "\n# untracked files (not included above):\n" + "".join(
            f"#   {p}\n" for p in untracked.split()
        )
    return diff


def data_version(root: Path, dvc_file: str = "data.dvc") -> str | None:
    """The md5 that `data.dvc` records for the data directory (None: no such file, or not a .dvc file)."""
    from mnist_lab.datafiles import parse_data_version

    path = root / dvc_file
    return parse_data_version(path.read_text(encoding="utf-8")) if path.is_file() else None


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
    project_run = os.environ.get("MLFLOW_RUN_ID")  # inside `mlflow run .`: nest under the project's run
    if project_run:
        tags[PARENT_RUN_TAG] = project_run
    return tags


def run_name(model_name: str, tags: Mapping[str, str]) -> str:
    """`<model>@<DVC experiment>` inside `dvc exp run`, else `<model>@<source commit, 8 characters>` (with
    `+dirty` for a tree with uncommitted changes): runs of one model are told apart in MLflow's lists."""
    experiment = tags.get(f"{TAG_PREFIX}dvc_exp_name")
    if experiment:
        return f"{model_name}@{experiment}"
    commit = tags.get(f"{TAG_PREFIX}git_commit")
    if not commit:
        return model_name
    dirty = "+dirty" if tags.get(f"{TAG_PREFIX}git_dirty") == "true" else ""
    return f"{model_name}@{commit[:8]}{dirty}"


def model_requirements(model: Any) -> tuple[str, ...]:
    """The packages a logged model needs: scikit-learn's stack, and what the model adds (Keras for a CNN)."""
    return (*MODEL_REQUIREMENTS, *getattr(model, "runtime_packages", ()))


def pinned_requirements(packages: Sequence[str] = MODEL_REQUIREMENTS) -> list[str]:
    """`name==version` for the installed packages, for the model's explicit pip requirements."""
    return [f"{name}=={metadata.version(name)}" for name in packages]


# --- MLflow -------------------------------------------------------------------------------------------------


def _new_record_id() -> str:
    import uuid

    return uuid.uuid4().hex


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class ChildRunRecord:
    """A nested run under a model's run: one candidate of its grid search (params and scores only)."""

    run_name: str
    params: dict[str, Any]
    metrics: dict[str, float]
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class ModelRunRecord:
    """Everything one trained model's MLflow run carries. `record_id` (tag `mnist_lab.record_id`) names it
    before any server assigns a run id, and `created_ms` timestamps its metrics, so a run sent later from
    the outbox is identical to one sent at once."""

    run_name: str
    params: dict[str, Any]
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)  # each with an "epoch" (the step)
    tags: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, bytes] = field(default_factory=dict)  # relative path -> content
    model: Any = None
    input_example: Any = None
    children: list[ChildRunRecord] = field(default_factory=list)  # nested runs (`mlflow.parentRunId`)
    record_id: str = field(default_factory=_new_record_id)
    created_ms: int = field(default_factory=_now_ms)


@dataclass(frozen=True)
class LoggedRun:
    run_id: str
    experiment_id: str
    model_uri: str | None
    tracking_uri: str


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


def apply_client_defaults() -> None:
    """CLIENT_DEFAULTS for MLflow's client (bounded retries and timeouts, ...), unless the environment sets
    its own."""
    for name, value in CLIENT_DEFAULTS.items():
        os.environ.setdefault(name, value)


def log_model_run(record: ModelRunRecord, settings: TrackingSettings) -> LoggedRun:
    """Log one run: params, final metrics and histories (batched), tags, artifacts, nested runs and the model
    in MLflow format (an MLflow 3 logged model; the run's `model` artifacts on servers without one).

    Few requests, and the independent ones at once to a remote server (each costs a round trip, and ~0.2 s
    of the server's CPU on MLflow's default basic-auth app, which hashes the password on every request): the
    run, the logged model, then together every file upload, metrics batch, nested run and the run-to-model
    link, then the run's end and the model's READY. The run reads FINISHED only once everything is in; a
    failure marks it (and its model) FAILED when the server still answers, and is raised."""
    apply_client_defaults()
    import mlflow

    mlflow.set_tracking_uri(settings.tracking_uri)
    with store_initialisation_lock(settings):  # a new sqlite store is created (migrated) with the client
        client = mlflow.MlflowClient(settings.tracking_uri)
        experiment_id = settings.experiment_id or _experiment_id(client, settings)
    tags = {**record.tags, f"{TAG_PREFIX}record_id": record.record_id}
    run, experiment_id = _create_run(record, tags, experiment_id, settings, client)
    run_id = run.info.run_id
    workers = REMOTE_REQUESTS_AT_ONCE if settings.is_remote else 1
    logged_model = None
    try:
        with tempfile.TemporaryDirectory(prefix="mnist-lab-run-") as folder:
            tasks = _file_uploads(
                _written(record.artifacts, Path(folder, "artifacts")), run.info.artifact_uri, settings
            )
            model_uri = None
            if record.model is not None:
                model_name = record.tags.get(f"{TAG_PREFIX}model") or "model"
                logged_model = _create_logged_model(client, experiment_id, run_id, model_name)
                model_folder = Path(folder, "model")
                _save_model(record, model_folder, run_id, logged_model)
                if logged_model is None:  # an MLflow 2.x server: the model is the run's `model` artifacts
                    model_uri = f"runs:/{run_id}/model"
                    tasks += _file_uploads(model_folder, run.info.artifact_uri, settings, "model")
                else:
                    model_uri = logged_model.model_uri
                    tasks += _file_uploads(model_folder, logged_model.artifact_location, settings)
                    tasks.append(functools.partial(_link_model, client, run_id, logged_model.model_id))
            model_id = logged_model.model_id if logged_model is not None else None
            tasks += [
                functools.partial(_log_child, child, record, run_id, experiment_id, client)
                for child in getattr(record, "children", [])  # records spooled before children existed
            ]
            tasks += [
                functools.partial(client.log_batch, run_id, params=params, metrics=metrics)
                for params, metrics in _batches(record, model_id)
            ]
            _run_all(tasks, workers)
    except BaseException:
        with contextlib.suppress(Exception):  # the server may be what failed
            if logged_model is not None:
                client.finalize_logged_model(logged_model.model_id, "FAILED")
            client.set_terminated(run_id, status="FAILED")
        raise
    ends = [functools.partial(client.set_terminated, run_id, status="FINISHED")]
    if logged_model is not None:
        ends.append(functools.partial(client.finalize_logged_model, logged_model.model_id, "READY"))
    _run_all(ends, workers)
    if settings.is_remote:
        link = f"{display_uri(settings.tracking_uri).rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
        print(f"run {record.run_name}: {link}", file=sys.stderr)
    return LoggedRun(
        run_id=run_id, experiment_id=experiment_id, model_uri=model_uri, tracking_uri=settings.tracking_uri
    )


def _create_run(
    record: ModelRunRecord, tags: dict[str, str], experiment_id: str, settings: TrackingSettings, client
) -> tuple[Any, str]:
    """(the new run, its experiment id): in `experiment_id`, or beside its parent run when `tags` name one
    (an MLflow project's run). When that is the experiment `preflight` found and it has gone since, the
    experiment is looked up again (or created)."""
    from mlflow.exceptions import MlflowException

    known = settings.experiment_id
    if PARENT_RUN_TAG in tags:
        experiment_id = _parent_experiment(client, tags, experiment_id)

    def create(experiment: str):
        return client.create_run(
            experiment, start_time=record.created_ms, run_name=record.run_name, tags=tags
        )

    try:
        return create(experiment_id), experiment_id
    except MlflowException as exc:
        gone = exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "INVALID_STATE")
        if not (gone and known and experiment_id == known):
            raise
    experiment_id = _experiment_id(client, settings)  # gone since the check: look it up (or create it)
    return create(experiment_id), experiment_id


def _run_all(tasks: Sequence[Callable[[], Any]], workers: int) -> None:
    """Call every task, `workers` at a time (in order, in this thread, for 1); the first failure is raised
    once the running ones are done, and the rest are not started."""
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            task()
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mnist-lab-mlflow") as pool:
        futures = [pool.submit(task) for task in tasks]
        finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [future for future in finished if future.exception() is not None]
        if failed:
            for future in futures:
                future.cancel()
            wait(futures)
            raise failed[0].exception()  # type: ignore[misc]


def _written(files: Mapping[str, bytes], folder: Path) -> Path:
    """`files` (relative path -> content) written under `folder`."""
    for relative, content in files.items():
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return folder


def _file_uploads(
    folder: Path, artifact_uri: str, settings: TrackingSettings, artifact_path: str | None = None
) -> list[Callable[[], None]]:
    """One upload per file under `folder` to `artifact_uri` (under `artifact_path`), keeping subfolders."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    files = sorted(path for path in folder.rglob("*") if path.is_file()) if folder.is_dir() else []
    if not files:
        return []
    repository = get_artifact_repository(artifact_uri, tracking_uri=settings.tracking_uri)
    uploads: list[Callable[[], None]] = []
    for path in files:
        parts = [artifact_path, *path.parent.relative_to(folder).parts]
        target = "/".join(part for part in parts if part) or None
        uploads.append(functools.partial(repository.log_artifact, str(path), target))
    return uploads


def _parent_experiment(client, tags: dict[str, str], default: str) -> str:
    """The experiment of the parent run `tags` names; a parent this store does not know is dropped."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(tags[PARENT_RUN_TAG]).info.experiment_id
    except MlflowException:
        print(
            f"note: parent run {tags.pop(PARENT_RUN_TAG)} (MLFLOW_RUN_ID) is not in this store: not nested",
            file=sys.stderr,
        )
        return default


def _log_child(
    child: ChildRunRecord, record: ModelRunRecord, parent_run_id: str, experiment_id: str, client
) -> None:
    """One nested run (a search candidate), as MLflow's scikit-learn autologging nests them."""
    from mlflow.entities import Metric, Param

    tags = {**child.tags, PARENT_RUN_TAG: parent_run_id, f"{TAG_PREFIX}parent_record_id": record.record_id}
    run_id = client.create_run(
        experiment_id, start_time=record.created_ms, run_name=child.run_name, tags=tags
    ).info.run_id
    params = [Param(key, str(value)) for key, value in child.params.items()]
    metrics = [Metric(key, float(value), record.created_ms, 0) for key, value in child.metrics.items()]
    client.log_batch(run_id, params=params, metrics=metrics)
    client.set_terminated(run_id, status="FINISHED")


def _batches(record: ModelRunRecord, model_id: str | None) -> list[tuple[list, list]]:
    """Params, final metrics and histories as (params, metrics) for as few `log_batch` requests as MLflow's
    limits allow (100 params and 1,000 entries in all per request). Metrics name the model, so MLflow 3 links
    them to it without fetching them back."""
    from mlflow.entities import Metric, Param

    params = [Param(key, str(value)) for key, value in record.params.items()]
    stamp = record.created_ms
    metrics = [
        Metric(key, float(value), stamp, 0, model_id=model_id) for key, value in record.metrics.items()
    ]
    for row in record.history:
        step = int(row["epoch"])
        metrics.extend(
            Metric(key, float(v), stamp, step, model_id=model_id) for key, v in row.items() if key != "epoch"
        )
    batches = []
    while params or metrics:
        batch_params, params = params[:100], params[100:]
        room = 1000 - len(batch_params)
        batch_metrics, metrics = metrics[:room], metrics[room:]
        batches.append((batch_params, batch_metrics))
    return batches


@contextlib.contextmanager
def this_package_pickled_by_value() -> Iterator[None]:
    """The model holds this package's functions (the pixel scaling): cloudpickle stores them by value, so the
    logged model loads and serves where mnist_lab is not installed, with no copy of the package to upload."""
    import cloudpickle

    package = sys.modules[__name__.partition(".")[0]]
    cloudpickle.register_pickle_by_value(package)
    try:
        yield
    finally:
        cloudpickle.unregister_pickle_by_value(package)


def _create_logged_model(client, experiment_id: str, run_id: str, name: str):  # -> LoggedModel | None
    """A PENDING MLflow 3 logged model `name` (the model's name in params.yaml) from run `run_id`, tagged as
    MLflow's `log_model` tags it; None where the server lacks the logged-model endpoints (MLflow 2.x
    servers, such as DagsHub's)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking.context import registry as context_registry

    try:
        return client.create_logged_model(
            experiment_id, name=name, source_run_id=run_id, tags=context_registry.resolve_tags()
        )
    except MlflowException as exc:
        if not _is_missing_endpoint(exc):
            raise
    print(
        "note: this MLflow server has no logged-model endpoints (MLflow 2.x?): the model is stored as "
        "the run's `model` artifacts",
        file=sys.stderr,
    )
    return None


def _link_model(client, run_id: str, model_id: str) -> None:
    """The run's output: its logged model (MLflow's run page lists it)."""
    from mlflow.entities import LoggedModelOutput

    client.log_outputs(run_id, [LoggedModelOutput(model_id, step=0)])


def _save_model(record: ModelRunRecord, folder: Path, run_id: str, logged_model: Any) -> None:
    """Save the model in MLflow format in `folder`, as MLflow's `log_model` would for `logged_model` (None:
    as the run's `model` artifacts): a pyfunc `PythonModel` as it is (no signature: it checks its input
    itself, see mnist_lab.serving), a scikit-learn estimator in the sklearn flavor with a signature
    inferred from the input example; explicit pip requirements, the input example."""
    import mlflow.pyfunc
    import mlflow.sklearn
    from mlflow.models import Model, infer_signature

    # cloudpickle (not skops): the model holds this package's code, pickled by value. MLflow warns about
    # pickle on every save: the model is only ever loaded from this project's own store.
    for name in ("mlflow.sklearn", "mlflow.pyfunc", "mlflow.models.model"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if logged_model is None:
        metadata = Model(artifact_path="model", run_id=run_id)
    else:
        metadata = Model(
            artifact_path=logged_model.artifact_location,
            model_uuid=logged_model.model_id,
            run_id=run_id,
            model_id=logged_model.model_id,
        )
    options: dict[str, Any] = {
        "mlflow_model": metadata,
        "input_example": record.input_example,
        "pip_requirements": pinned_requirements(model_requirements(record.model)),
    }
    if isinstance(record.model, mlflow.pyfunc.PythonModel):
        flavor = mlflow.pyfunc
        options |= {"python_model": record.model, "signature": False}
    else:
        flavor = mlflow.sklearn
        options |= {
            "sk_model": record.model,
            "signature": infer_signature(record.input_example, record.model.predict(record.input_example)),
            "serialization_format": mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
        }
    with _requirements_check_skipped(), this_package_pickled_by_value():
        flavor.save_model(path=str(folder), **options)
    for cache in folder.rglob("__pycache__"):  # as MLflow's log_model: a save may load the model back
        shutil.rmtree(cache, ignore_errors=True)


def _is_missing_endpoint(exc: Exception) -> bool:
    """A 404 from MLflow 3's logged-model endpoints (not a connection error, which names them too)."""
    text = str(exc)
    return bool(re.search(r"error code 404\b|ENDPOINT_NOT_FOUND", text)) and "logged-models" in text


# --- remote servers: the credentials check and the outbox -------------------------------------------------

OUTBOX = Path(".mnist-lab") / "outbox"  # under the repository root, git-ignored
CHECK_ATTEMPTS = 3
CHECK_TIMEOUT_S = 5.0


class TrackingServerUnreachable(MnistLabError):
    """The tracking server did not answer: runs are kept in the outbox until it does."""


def _credentials_hint(environ: Mapping[str, str]) -> str:
    if environ.get("MLFLOW_TRACKING_TOKEN"):
        return "MLFLOW_TRACKING_TOKEN"
    if environ.get("MLFLOW_TRACKING_USERNAME") or environ.get("MLFLOW_TRACKING_PASSWORD"):
        return "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD"
    return "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (not set)"


def check_server(
    settings: TrackingSettings,
    environ: Mapping[str, str] | None = None,
    attempts: int = CHECK_ATTEMPTS,
    timeout: float = CHECK_TIMEOUT_S,
) -> str | None:
    """Prove a remote server answers and accepts the credentials, in seconds, before any training work, and
    return the id of its experiment `settings.experiment_name` (None: not there yet, or a local store).

    401/403 raise TrackingConfigError naming the variables to fix; no answer after `attempts` tries raises
    TrackingServerUnreachable. Uses urllib, so the stages that only train never import MLflow."""
    import base64
    import urllib.error
    import urllib.parse
    import urllib.request

    if not settings.is_remote:
        return None
    environ = os.environ if environ is None else environ
    query = urllib.parse.urlencode({"experiment_name": settings.experiment_name})
    request = urllib.request.Request(
        f"{settings.tracking_uri.rstrip('/')}/api/2.0/mlflow/experiments/get-by-name?{query}"
    )
    if environ.get("MLFLOW_TRACKING_TOKEN"):
        request.add_header("Authorization", f"Bearer {environ['MLFLOW_TRACKING_TOKEN']}")
    elif environ.get("MLFLOW_TRACKING_USERNAME") or environ.get("MLFLOW_TRACKING_PASSWORD"):
        pair = f"{environ.get('MLFLOW_TRACKING_USERNAME', '')}:{environ.get('MLFLOW_TRACKING_PASSWORD', '')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(pair.encode()).decode())
    where = display_uri(settings.tracking_uri)
    last_problem = ""
    for attempt in range(1, attempts + 1):
        try:
            with open_url(request, timeout=timeout) as response:
                return _active_experiment_id(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and b"RESOURCE_DOES_NOT_EXIST" in exc.read():
                return (
                    None  # an MLflow server without this experiment yet: it answered and took the credentials
                )
            if exc.code in (401, 403):
                what = "rejected the credentials (401)" if exc.code == 401 else "refused access (403)"
                raise TrackingConfigError(
                    f"MLflow server {where} {what}: set {_credentials_hint(environ)} in .env to a user and "
                    "password (on DagsHub: your user name and an access token) that may write to it"
                ) from None
            last_problem = f"HTTP {exc.code} {exc.reason}"
            if exc.code < 500:
                raise TrackingConfigError(
                    f"MLflow server {where} answered {last_problem}: is MLFLOW_TRACKING_URI an MLflow server?"
                ) from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            last_problem = str(getattr(exc, "reason", exc))
        if attempt < attempts:
            time.sleep(attempt)
    raise TrackingServerUnreachable(
        f"MLflow server {where} did not answer after {attempts} attempts ({last_problem}); check "
        "MLFLOW_TRACKING_URI, or unset it to log to the local store"
    )


def _active_experiment_id(body: bytes) -> str | None:
    """The experiment id in a `get-by-name` answer, unless the experiment is deleted (or the answer odd)."""
    try:
        experiment = json.loads(body)["experiment"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(experiment, dict) or experiment.get("lifecycle_stage", "active") != "active":
        return None
    identifier = experiment.get("experiment_id")
    return identifier if isinstance(identifier, str) and identifier else None


SERVER_AWAY = Path(".mnist-lab") / "server-away.json"  # under the repository root, git-ignored
SERVER_AWAY_FOR_S = 120


def preflight(root: Path) -> TrackingSettings:
    """The tracking settings, checked (with the experiment's id when the server has it, so logging needs no
    lookup): a configuration error stops the stage (exit 2); an unreachable server only warns, since its runs
    wait in the outbox (`mnist-lab sync` sends them).

    The warning is printed once: the stages that follow within SERVER_AWAY_FOR_S seconds (every stage is its
    own process) neither try the server again nor warn again; they keep their runs in the outbox at once
    (`settings.server_away`), instead of each waiting through the retries."""
    settings = TrackingSettings.from_environment(root)
    if not settings.is_remote:
        return settings
    marker = root / SERVER_AWAY
    if server_recently_away(root, settings):
        return dataclasses.replace(settings, server_away=True)
    try:
        settings = dataclasses.replace(settings, experiment_id=check_server(settings))
    except TrackingServerUnreachable as exc:
        marker.parent.mkdir(parents=True, exist_ok=True)
        uri = display_uri(settings.tracking_uri)
        write_text_atomic(marker, json.dumps({"tracking_uri": uri, "until": time.time() + SERVER_AWAY_FOR_S}))
        print(
            f"warning: {exc}. Runs are kept in {OUTBOX}/ and sent by the next run or `mnist-lab sync` "
            f"(the next {SERVER_AWAY_FOR_S} s of stages do not try it again).",
            file=sys.stderr,
        )
        return dataclasses.replace(settings, server_away=True)
    marker.unlink(missing_ok=True)
    return settings


def server_recently_away(root: Path, settings: TrackingSettings) -> bool:
    """Whether a stage found the server in `settings` unreachable less than SERVER_AWAY_FOR_S ago."""
    try:
        away = json.loads((root / SERVER_AWAY).read_text(encoding="utf-8"))
        return away["tracking_uri"] == display_uri(settings.tracking_uri) and time.time() < float(
            away["until"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


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
