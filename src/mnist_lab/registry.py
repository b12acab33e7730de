"""The MLflow Model Registry: the pipeline registers its best model as the `challenger`; `promote` moves the
`champion` alias to it only when it beats the champion on the same test data, and can move it back.

Where the tracking server has no registry (an MLflow 2.x server without one, as DagsHub's hosted MLflow has
been reported), registering is skipped with a note and the pipeline goes on."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnist_lab import tracking
from mnist_lab.errors import MnistLabError
from mnist_lab.files import read_json

CHALLENGER = "challenger"
CHAMPION = "champion"
PREVIOUS_CHAMPION_TAG = f"{tracking.TAG_PREFIX}previous_champion"
PROMOTION_TAG = f"{tracking.TAG_PREFIX}promotion"
# copied from the run onto the version, so a version says where it comes from without its run
RUN_TAGS_ON_VERSION = (
    "model",
    "model_type",
    "task",
    "git_commit",
    "git_branch",
    "git_dirty",
    "data_version",
    "dvc_exp_name",
    "record_id",
)


class RegistryError(MnistLabError):
    """The registry cannot do what was asked (no challenger, an incomparable champion, ...)."""


class RegistryUnavailable(RegistryError):
    """The tracking server has no Model Registry."""


def _is_missing_registry(exc: Exception) -> bool:
    text = str(exc)
    return (
        "registered-models" in text
        or "ENDPOINT_NOT_FOUND" in text
        or "model-versions" in text
        or ("404" in text and "registered" in text.lower())
    )


def _client(root: Path) -> tuple[Any, str]:
    """(an MlflowClient on the repository's tracking store and its registry, the store's URI)."""
    import os

    for name, value in tracking.HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    import mlflow

    uri = tracking.TrackingSettings.from_environment(root).tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.MlflowClient(uri, registry_uri=uri), uri


@dataclass(frozen=True)
class Registration:
    model_name: str
    version: str | None
    run_id: str | None
    note: str

    def as_json(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "registered": self.version is not None,
            "version": self.version,
            "alias": CHALLENGER if self.version is not None else None,
            "run_id": self.run_id,
            "note": self.note,
        }


def register_challenger(root: Path, model_name: str, best_file: Path, reports: Path) -> Registration:
    """Register the experiment's best model (named by `best_file`, its run by `reports/<model>/mlflow.json`)
    as a version of `model_name` with alias `challenger`, carrying its commit, data version and metrics.
    The same run registered twice is one version. Never raises for what only delays registering (a run
    still in the outbox, a server without a registry): the returned note says so."""
    from mlflow.exceptions import MlflowException

    best = read_json(best_file)
    link = read_json(reports / best["model"] / "mlflow.json")
    run_id, model_uri = link.get("run_id"), link.get("model_uri")
    if not run_id or not model_uri:
        return Registration(
            model_name,
            None,
            None,
            f"not registered: the run of '{best['model']}' waits in the outbox; once `mnist-lab sync` has "
            "sent it, `dvc repro -f -s register` registers it",
        )
    client, _ = _client(root)
    try:
        existing = client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
        if existing:
            version = str(existing[0].version)
        else:
            version = _create_version(client, root, model_name, run_id, model_uri, reports / best["model"])
        client.set_registered_model_alias(model_name, CHALLENGER, version)
    except MlflowException as exc:
        if not _is_missing_registry(exc):
            raise
        return Registration(
            model_name,
            None,
            run_id,
            "not registered: this tracking server has no Model Registry (MLflow 2.x without one, as "
            "DagsHub's); the model stays in its run and in DVC (`models/`, `best_model.json`)",
        )
    return Registration(
        model_name, str(version), run_id, f"registered {model_name} v{version} as {CHALLENGER}"
    )


def _create_version(client, root: Path, model_name: str, run_id: str, model_uri: str, reports: Path) -> str:
    from mlflow.exceptions import MlflowException

    run = client.get_run(run_id)
    tags = {
        f"{tracking.TAG_PREFIX}{key}": run.data.tags[f"{tracking.TAG_PREFIX}{key}"]
        for key in RUN_TAGS_ON_VERSION
        if f"{tracking.TAG_PREFIX}{key}" in run.data.tags
    }
    tags[f"{tracking.TAG_PREFIX}positive_class"] = run.data.params.get("task.positive_class", "")
    metrics = read_json(reports / "metrics.json")
    tags |= {f"metric.{key}": repr(float(value)) for key, value in metrics.items() if "_class_" not in key}
    try:
        client.create_registered_model(model_name)
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc) and "already exists" not in str(exc):
            raise
    model_id = None
    if model_uri.startswith("models:/"):  # an MLflow 3 logged model, registered as mlflow.register_model does
        source, model_id = model_uri, model_uri.removeprefix("models:/")
    else:  # runs:/<id>/model, the MLflow 2.x fallback: the artifacts' own location
        from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

        source = RunsArtifactRepository.get_underlying_uri(model_uri)
    version = client.create_model_version(
        model_name,
        source,
        run_id=run_id,
        tags=tags,
        description=f"{run.data.tags.get(f'{tracking.TAG_PREFIX}model', '')} from run {run_id}",
        model_id=model_id,
    )
    return str(version.version)


# --- promotion ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    metric: str
    challenger_version: str
    challenger_value: float
    champion_version: str | None
    champion_value: float | None
    promoted: bool
    reason: str

    def table(self) -> str:
        champion = (
            f"v{self.champion_version}: {self.champion_value:.6f}" if self.champion_version else "none yet"
        )
        return (
            f"{self.metric} on the workspace's test set: challenger v{self.challenger_version}: "
            f"{self.challenger_value:.6f}, champion {champion}\n{self.reason}"
        )


def _version_by_alias(client, model_name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        if _is_missing_registry(exc):
            raise RegistryUnavailable(
                "this tracking server has no Model Registry (MLflow 2.x without one, as DagsHub's): there is "
                "nothing to promote; serve or predict the workspace's DVC-tracked model instead (`mnist-lab "
                "serve --workspace`, `mnist-lab predict`)"
            ) from None
        if "RESOURCE_DOES_NOT_EXIST" in str(exc) or "not found" in str(exc).lower():
            return None
        raise


def load_sklearn_model(root: Path, model_uri: str) -> Any:
    """A logged or registered model (`models:/mnist-lab@champion`, `runs:/...`) as its scikit-learn
    pipeline, from the repository's tracking store and registry: the pipeline inside the pyfunc this
    project logs, or an sklearn-flavor model as it is."""
    from mlflow.exceptions import MlflowException

    _client(root)  # sets the tracking and registry URIs
    import mlflow.pyfunc
    import mlflow.sklearn

    try:
        model = mlflow.pyfunc.load_model(model_uri)
        if "sklearn" in model.metadata.flavors:
            return mlflow.sklearn.load_model(model_uri)
        return model.unwrap_python_model().pipeline
    except MlflowException as exc:
        raise RegistryError(f"cannot load model '{model_uri}': {exc.message}") from None


def score_version(
    root: Path, model_name: str, version: str, test_pixels: np.ndarray, y_true: np.ndarray, binary: bool
) -> dict[str, float]:
    """The test metrics of a registered version on (test_pixels, y_true)."""
    from mnist_lab.features import pixel_frame
    from mnist_lab.metrics import evaluate_predictions
    from mnist_lab.models import class_scores

    model = load_sklearn_model(root, f"models:/{model_name}/{version}")
    frame = pixel_frame(test_pixels.reshape(len(test_pixels), -1))
    y_pred = model.predict(frame)
    scores = class_scores(model, frame)
    return evaluate_predictions(y_true, y_pred, scores, list(model.classes_), binary).metrics


def _check_comparable(version, task: str, positive_class: int) -> None:
    tags = version.tags
    version_task = tags.get(f"{tracking.TAG_PREFIX}task")
    version_class = tags.get(f"{tracking.TAG_PREFIX}positive_class", "?")
    if version_task != task or (task == "binary" and version_class != str(positive_class)):
        detail = f" (positive class {version_class})" if version_task == "binary" else ""
        raise RegistryError(
            f"v{version.version} was trained for task '{version_task}'{detail}, not this workspace's "
            f"'{task}': the two cannot be compared on this test set (--force to promote anyway)"
        )


def promote(
    root: Path,
    model_name: str,
    metric: str,
    test_pixels: np.ndarray,
    y_true: np.ndarray,
    task: str,
    positive_class: int,
    force: bool = False,
) -> Comparison:
    """Move `champion` to the challenger if it scores higher on `metric` than the champion on the same test
    data (or `force`); the new champion's version remembers the one it replaced."""
    client, _ = _client(root)
    challenger = _version_by_alias(client, model_name, CHALLENGER)
    if challenger is None:
        raise RegistryError(
            f"'{model_name}' has no {CHALLENGER}: `dvc repro` registers the best model as one"
        )
    champion = _version_by_alias(client, model_name, CHAMPION)
    if not force:
        for version in filter(None, (challenger, champion)):
            _check_comparable(version, task, positive_class)
    binary = task == "binary"
    new = str(challenger.version)
    new_value = score_version(root, model_name, new, test_pixels, y_true, binary)[metric]
    old = str(champion.version) if champion is not None else None
    if old == new:
        return Comparison(metric, new, new_value, old, new_value, False, f"v{new} is already the {CHAMPION}")
    old_value = score_version(root, model_name, old, test_pixels, y_true, binary)[metric] if old else None
    if old is None or old_value is None:
        promoted, reason = True, f"promoted v{new} to {CHAMPION}: there was no champion"
    elif new_value > old_value:
        promoted, reason = True, f"promoted v{new} to {CHAMPION}: it beats v{old}"
    elif force:
        promoted, reason = True, f"promoted v{new} to {CHAMPION} (--force), though it does not beat v{old}"
    else:
        promoted = False
        reason = (
            f"not promoted: v{new} does not beat v{old}, which stays {CHAMPION} (--force to promote anyway)"
        )
    if promoted:
        if old is not None:
            client.set_model_version_tag(model_name, new, PREVIOUS_CHAMPION_TAG, old)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        client.set_model_version_tag(model_name, new, PROMOTION_TAG, f"{stamp} {reason}")
        client.set_registered_model_alias(model_name, CHAMPION, new)
    return Comparison(metric, new, new_value, old, old_value, promoted, reason)


def champion_version(root: Path, model_name: str) -> str:
    """The version alias `champion` points at, or a RegistryError saying how to get one."""
    client, _ = _client(root)
    champion = _version_by_alias(client, model_name, CHAMPION)
    if champion is None:
        raise RegistryError(
            f"'{model_name}' has no {CHAMPION}: promote one (`mnist-lab promote`), or serve the workspace's "
            "best model with --workspace"
        )
    return str(champion.version)


def roll_back(root: Path, model_name: str) -> tuple[str, str]:
    """Move `champion` back to the version it replaced; returns (from version, to version)."""
    client, _ = _client(root)
    champion = _version_by_alias(client, model_name, CHAMPION)
    if champion is None:
        raise RegistryError(f"'{model_name}' has no {CHAMPION} to roll back")
    previous = champion.tags.get(PREVIOUS_CHAMPION_TAG)
    if not previous:
        raise RegistryError(
            f"{CHAMPION} v{champion.version} replaced no earlier champion: nothing to go back to"
        )
    client.set_registered_model_alias(model_name, CHAMPION, previous)
    return str(champion.version), previous
