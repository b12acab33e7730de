"""Logging a model's run to MLflow: params, metrics and per-epoch histories in batches, tags, artifacts,
nested grid-search runs and the model itself, with uploads to a remote server in parallel.

One piece (about 480 lines): the run, its nested runs and its model are created, filled and finished
together, and a failure half-way marks all of them FAILED; the model is saved by the fast path here
(`model_logging_path`) or by MLflow's own `log_model`, its fallback."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnist_lab.system.redact import display_uri
from mnist_lab.tracking.config import (
    PARENT_RUN_TAG,
    REMOTE_REQUESTS_AT_ONCE,
    TAG_PREFIX,
    TrackingSettings,
    apply_client_defaults,
    mlflow_client,
    store_initialisation_lock,
)
from mnist_lab.tracking.metadata import model_requirements, pinned_requirements

if TYPE_CHECKING:
    from mlflow import MlflowClient


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


def _experiment_id(client: MlflowClient, settings: TrackingSettings) -> str:
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
def _requirements_check_skipped() -> Iterator[None]:
    """MLflow checks explicit pip requirements against the installed packages by mapping every installed
    module to its distribution (a fraction of a second per model). Ours are read from the installed packages
    (`pinned_requirements`), so they match by construction: skip that check."""
    import mlflow.utils.environment as environment

    original = getattr(environment, "warn_dependency_requirement_mismatches", None)
    if original is None:  # a future MLflow without the check
        yield
        return
    environment.warn_dependency_requirement_mismatches = lambda model_requirements: None
    try:
        yield
    finally:
        environment.warn_dependency_requirement_mismatches = original


def logged_model_uri(client: MlflowClient, run: Any) -> str | None:
    """Where a run's model is: its MLflow 3 logged model, else its `model` artifacts (MLflow 2.x servers);
    None for a run without a model. The artifacts are listed in the run's own artifact store: MLflow 3's
    `list_artifacts(run, "model")` resolves `runs:/<run>/model` by searching logged models first, which an
    MLflow 2.x server answers with a 404."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    outputs = getattr(getattr(run, "outputs", None), "model_outputs", None) or []
    if outputs:
        return f"models:/{outputs[0].model_id}"
    artifacts = get_artifact_repository(run.info.artifact_uri, tracking_uri=client.tracking_uri)
    if artifacts.list_artifacts("model"):
        return f"runs:/{run.info.run_id}/model"
    return None


def log_model_run(record: ModelRunRecord, settings: TrackingSettings) -> LoggedRun:
    """Log one run: params, final metrics and histories (batched), tags, artifacts, nested runs and the model
    in MLflow format (an MLflow 3 logged model; the run's `model` artifacts on servers without one).

    Few requests, and the independent ones at once to a remote server (each costs a round trip, and server
    CPU on MLflow's default basic-auth app, which hashes the password on every request): the
    run, the logged model, then together every file upload, metrics batch, nested run and the run-to-model
    link, then the run's end and the model's READY. The run reads FINISHED only once everything is in; a
    failure marks it (and its model) FAILED when the server still answers, and is raised."""
    apply_client_defaults()
    import mlflow

    mlflow.set_tracking_uri(settings.tracking_uri)
    client = mlflow_client(settings)  # creates (migrates) a new sqlite store under its lock
    with store_initialisation_lock(settings):  # and its experiment, one process at a time
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
            model_name = record.tags.get(f"{TAG_PREFIX}model") or "model"
            fast_model = record.model is not None and model_logging_path() == "fast"
            if fast_model:
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
            if record.model is not None and not fast_model:
                model_uri = _log_model_with_mlflow_api(record, run_id, model_name)
    except BaseException:
        with contextlib.suppress(Exception):  # the server may be what failed
            if logged_model is not None:
                client.finalize_logged_model(logged_model.model_id, "FAILED")
            client.set_terminated(run_id, status="FAILED")
        raise
    ends: list[Callable[[], object]] = [functools.partial(client.set_terminated, run_id, status="FINISHED")]
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
    record: ModelRunRecord,
    tags: dict[str, str],
    experiment_id: str,
    settings: TrackingSettings,
    client: MlflowClient,
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
) -> list[Callable[[], object]]:
    """One upload per file under `folder` to `artifact_uri` (under `artifact_path`), keeping subfolders."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    files = sorted(path for path in folder.rglob("*") if path.is_file()) if folder.is_dir() else []
    if not files:
        return []
    repository = get_artifact_repository(artifact_uri, tracking_uri=settings.tracking_uri)
    uploads: list[Callable[[], object]] = []
    for path in files:
        parts = [artifact_path, *path.parent.relative_to(folder).parts]
        target = "/".join(part for part in parts if part) or None
        uploads.append(functools.partial(repository.log_artifact, str(path), target))
    return uploads


def _parent_experiment(client: MlflowClient, tags: dict[str, str], default: str) -> str:
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
    child: ChildRunRecord,
    record: ModelRunRecord,
    parent_run_id: str,
    experiment_id: str,
    client: MlflowClient,
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


def _create_logged_model(
    client: MlflowClient, experiment_id: str, run_id: str, name: str
):  # -> LoggedModel | None
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


def _link_model(client: MlflowClient, run_id: str, model_id: str) -> None:
    """The run's output: its logged model (MLflow's run page lists it)."""
    from mlflow.entities import LoggedModelOutput

    client.log_outputs(run_id, [LoggedModelOutput(model_id, step=0)])


MODEL_LOGGING_ENV = "MNIST_LAB_MODEL_LOGGING"  # "mlflow-api" forces MLflow's own log_model


def model_logging_path() -> str:
    """How the model is logged: "fast" (saved here and uploaded with the run's other files, in parallel:
    `_create_logged_model` + `_save_model` + `_file_uploads`) when the MLflow internals that relies on are
    all there, else "mlflow-api" (`mlflow.<flavor>.log_model` in the run, MLflow's public API: slower, one
    upload at a time, and it needs a server with MLflow 3's logged-model endpoints). `MNIST_LAB_MODEL_LOGGING
    =mlflow-api` chooses the public API whatever the MLflow version."""
    if os.environ.get(MODEL_LOGGING_ENV, "").strip() == "mlflow-api":
        return "mlflow-api"
    try:
        import mlflow
        from mlflow.entities import LoggedModelOutput  # noqa: F401
        from mlflow.models import Model
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository  # noqa: F401
        from mlflow.tracking.context import registry

        needed = [
            registry.resolve_tags,
            mlflow.MlflowClient.create_logged_model,
            mlflow.MlflowClient.finalize_logged_model,
            mlflow.MlflowClient.log_outputs,
        ]
        Model(artifact_path="model", run_id="0", model_id="m-0", model_uuid="m-0")
    except (ImportError, AttributeError, TypeError):
        return "mlflow-api"
    return "fast" if all(callable(item) for item in needed) else "mlflow-api"


def _model_options(record: ModelRunRecord) -> tuple[Any, dict[str, Any]]:
    """(the MLflow flavor module, its save/log options) for `record.model`: a pyfunc `PythonModel` as it is
    (no signature: it checks its input itself, see mnist_lab.serving.pyfunc), a scikit-learn estimator in the
    sklearn flavor with a signature inferred from the input example; explicit pip requirements, the input
    example."""
    import mlflow.pyfunc
    import mlflow.sklearn
    from mlflow.models import infer_signature

    options: dict[str, Any] = {
        "input_example": record.input_example,
        "pip_requirements": pinned_requirements(model_requirements(record.model)),
    }
    if isinstance(record.model, mlflow.pyfunc.PythonModel):
        return mlflow.pyfunc, options | {"python_model": record.model, "signature": False}
    return mlflow.sklearn, options | {
        "sk_model": record.model,
        "signature": infer_signature(record.input_example, record.model.predict(record.input_example)),
        "serialization_format": mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
    }


@contextlib.contextmanager
def quiet_pickling_warnings() -> Iterator[None]:
    """cloudpickle (not skops): the model holds this package's code, pickled by value. MLflow warns about
    pickle on every save: the model is only ever loaded from this project's own store (or folder). Quiet
    while saving only: loading a model later warns of what matters (its requirements not met)."""
    loggers = [logging.getLogger(name) for name in ("mlflow.sklearn", "mlflow.pyfunc", "mlflow.models.model")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)


def _log_model_with_mlflow_api(record: ModelRunRecord, run_id: str, name: str) -> str:
    """The fallback: log the model with MLflow's public API in the (otherwise complete) run; its URI."""
    import mlflow

    flavor, options = _model_options(record)
    with mlflow.start_run(run_id=run_id), this_package_pickled_by_value(), quiet_pickling_warnings():
        info = flavor.log_model(name=name, **options)
    return info.model_uri


def _save_model(record: ModelRunRecord, folder: Path, run_id: str, logged_model: Any) -> None:
    """The fast path: save the model in MLflow format in `folder`, as MLflow's `log_model` would for
    `logged_model` (None: as the run's `model` artifacts), with `_model_options`."""
    from mlflow.models import Model

    if logged_model is None:
        metadata = Model(artifact_path="model", run_id=run_id)
    else:
        metadata = Model(
            artifact_path=logged_model.artifact_location,
            model_uuid=logged_model.model_id,
            run_id=run_id,
            model_id=logged_model.model_id,
        )
    flavor, options = _model_options(record)
    with _requirements_check_skipped(), this_package_pickled_by_value(), quiet_pickling_warnings():
        flavor.save_model(path=str(folder), mlflow_model=metadata, **options)
    for cache in folder.rglob("__pycache__"):  # as MLflow's log_model: a save may load the model back
        shutil.rmtree(cache, ignore_errors=True)


def _is_missing_endpoint(exc: Exception) -> bool:
    """A 404 from MLflow 3's logged-model endpoints (not a connection error, which names them too)."""
    text = str(exc)
    return bool(re.search(r"error code 404\b|ENDPOINT_NOT_FOUND", text)) and "logged-models" in text
