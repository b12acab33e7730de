"""The MLflow Model Registry: the pipeline registers its best model as the `challenger`; `promote` moves the
`champion` alias to it only when it beats the champion on the same test data, and can move it back.

Where the tracking server has no registry (an MLflow 2.x server without one, as DagsHub's hosted MLflow has
been reported), registering is skipped with a note and the pipeline goes on."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mnist_lab import tracking
from mnist_lab.core.errors import MnistLabError
from mnist_lab.core.experiment_files import BestModelFile, RegistryFile, RunFile, parse_experiment_file
from mnist_lab.system.files import read_experiment_file, read_json

if TYPE_CHECKING:
    from mlflow import MlflowClient

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
    """A 404 from a registry endpoint (not a connection error, whose message names the endpoint too)."""
    text = str(exc)
    return bool(re.search(r"error code 404\b|ENDPOINT_NOT_FOUND", text)) and (
        "registered-models" in text or "model-versions" in text
    )


def _client(root: Path) -> tuple[MlflowClient, str]:
    """(an MlflowClient on the repository's tracking store and its registry, the store's URI)."""
    settings = tracking.TrackingSettings.from_environment(root)
    client = tracking.mlflow_client(settings, registry=True)
    import mlflow

    uri = settings.tracking_uri
    mlflow.set_tracking_uri(uri)  # models:/ URIs resolve against it
    mlflow.set_registry_uri(uri)
    return client, uri


@dataclass(frozen=True)
class Registration:
    model_name: str
    version: str | None
    run_id: str | None
    note: str

    def as_json(self) -> dict[str, Any]:
        """As `registry.json` holds it."""
        return RegistryFile(
            model_name=self.model_name,
            registered=self.version is not None,
            version=self.version,
            alias=CHALLENGER if self.version is not None else None,
            run_id=self.run_id,
            note=self.note,
        ).as_json()


def register_challenger(root: Path, model_name: str, best_file: Path, reports: Path) -> Registration:
    """Register the experiment's best model (named by `best_file`, its run by `reports/<model>/mlflow.json`)
    as a version of `model_name` with alias `challenger`, carrying its commit, data version and metrics.
    The same run registered twice is one version. Never raises for what only delays registering (a run
    still in the outbox, a server without a registry): the returned note says so."""
    from mlflow.exceptions import MlflowException

    best = read_experiment_file(best_file, BestModelFile)
    link = read_experiment_file(reports / best.model / "mlflow.json", RunFile)
    run_id, model_uri = link.run_id, link.model_uri
    if not run_id:  # waited in the outbox: the id it got once sent
        from mnist_lab.tracking.outbox import find_sent_run

        sent = find_sent_run(root, link.record_id)
        run_id, model_uri = (sent.run_id, sent.model_uri) if sent else (None, None)
    if not run_id or not model_uri:
        return Registration(
            model_name,
            None,
            None,
            f"not registered: the run of '{best.model}' waits in the outbox; once `mnist-lab sync` has "
            "sent it, `dvc repro -f -s register` registers it",
        )
    client, uri = _client(root)
    try:
        existing = client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
        if existing:
            version = str(existing[0].version)
        else:
            version = _create_version(client, root, model_name, run_id, model_uri, reports / best.model)
        client.set_registered_model_alias(model_name, CHALLENGER, version)
    except MlflowException as exc:
        if not _is_missing_registry(exc):
            if not uri.startswith(("http://", "https://")):
                raise
            return _server_failed(model_name, run_id, exc)
        return Registration(
            model_name,
            None,
            run_id,
            "not registered: this tracking server has no Model Registry (MLflow 2.x without one, as "
            "DagsHub's); the model stays in its run and in DVC (`models/`, `best_model.json`)",
        )
    except OSError as exc:  # requests' connection errors are OSErrors
        if not uri.startswith(("http://", "https://")):
            raise
        return _server_failed(model_name, run_id, exc)
    return Registration(
        model_name, str(version), run_id, f"registered {model_name} v{version} as {CHALLENGER}"
    )


def _server_failed(model_name: str, run_id: str, exc: Exception) -> Registration:
    """A remote server that failed while registering: the pipeline goes on, the note says how to retry."""
    from mnist_lab.system.redact import redact

    reason = redact(f"{type(exc).__name__}: {exc}").splitlines()[0][:300]
    return Registration(
        model_name,
        None,
        run_id,
        f"not registered: the tracking server failed ({reason}); once it answers, "
        "`dvc repro -f -s register` registers it",
    )


def _create_version(
    client: MlflowClient, root: Path, model_name: str, run_id: str, model_uri: str, reports: Path
) -> str:
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
    """What `promote` compared and did; challenger and champion are labels: `v3` (a registry version) or a
    commit (without a registry)."""

    metric: str
    challenger: str
    challenger_value: float
    champion: str | None
    champion_value: float | None
    promoted: bool
    reason: str
    decided_by: str = ""  # which test images the two models disagree on

    def table(self) -> str:
        champion = f"{self.champion}: {self.champion_value:.6f}" if self.champion else "none yet"
        decided = f"\n{self.decided_by}" if self.decided_by else ""
        return (
            f"{self.metric} on the workspace's test set: challenger {self.challenger}: "
            f"{self.challenger_value:.6f}, champion {champion}{decided}\n{self.reason}"
        )


def _version_by_alias(client: MlflowClient, model_name: str, alias: str):
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


@dataclass(frozen=True)
class Score:
    """A model's test metrics and its predicted labels (which say on which images two models differ)."""

    metrics: dict[str, float]
    predicted: np.ndarray


def score_version(
    root: Path, model_name: str, version: str, test_pixels: np.ndarray, y_true: np.ndarray, binary: bool
) -> Score:
    """The test metrics of a registered version on (test_pixels, y_true)."""
    model = load_sklearn_model(root, f"models:/{model_name}/{version}")
    return _score(model, test_pixels, y_true, binary, f"v{version}")


def _decide(
    new: str,
    new_value: float,
    old: str | None,
    old_value: float | None,
    force: bool,
    min_delta: float = 0.0,
) -> tuple[bool, str]:
    """Whether challenger `new` replaces champion `old` (a score higher by more than `min_delta`, or
    `force`), and why."""
    if old is None or old_value is None:
        return True, f"promoted {new} to {CHAMPION}: there was no champion"
    margin = f" by more than {min_delta:g}" if min_delta else ""
    if new_value - old_value > min_delta:
        return True, f"promoted {new} to {CHAMPION}: it beats {old}{margin} (+{new_value - old_value:.6f})"
    if force:
        return True, f"promoted {new} to {CHAMPION} (--force), though it does not beat {old}{margin}"
    return (
        False,
        f"not promoted: {new} does not beat {old}{margin}, which stays {CHAMPION} (--force to promote "
        "anyway)",
    )


def decided_by(new: Score, old: Score, y_true: np.ndarray) -> str:
    """How many test images decided it: those only the challenger gets right, and only the champion."""
    new_right, old_right = new.predicted == y_true, old.predicted == y_true
    only_new, only_old = int(np.sum(new_right & ~old_right)), int(np.sum(old_right & ~new_right))
    return (
        f"decided by {only_new + only_old} of {len(y_true)} test images: {only_new} only the challenger "
        f"gets right, {only_old} only the champion"
    )


def _check_comparable(version, task: str, positive_class: int, data_version: str | None) -> None:
    tags = version.tags
    version_task = tags.get(f"{tracking.TAG_PREFIX}task")
    version_class = tags.get(f"{tracking.TAG_PREFIX}positive_class", "?")
    if version_task != task or (task == "binary" and version_class != str(positive_class)):
        detail = f" (positive class {version_class})" if version_task == "binary" else ""
        raise RegistryError(
            f"v{version.version} was trained for task '{version_task}'{detail}, not this workspace's "
            f"'{task}': the two cannot be compared on this test set (--force to promote anyway)"
        )
    version_data = tags.get(f"{tracking.TAG_PREFIX}data_version", "unknown")
    if data_version and version_data not in ("unknown", data_version):
        raise RegistryError(
            f"v{version.version} was trained on data version {version_data[:12]}, not the workspace's "
            f"{data_version[:12]} (data.dvc): scores on different data do not compare. Check out the "
            "data it was trained on, or --force to promote anyway"
        )


def workspace_version(root: Path) -> str:
    """The version the experiment in the workspace registered (`registry.json`, written by `register`)."""
    path = root / "registry.json"
    if not path.is_file():
        raise RegistryError(f"{path} is missing: `dvc repro` registers the workspace's best model")
    registration = read_experiment_file(path, RegistryFile)
    if not registration.registered or not registration.version:
        raise RegistryError(f"the workspace's best model is not registered ({registration.note or path})")
    return registration.version


def promote(
    root: Path,
    model_name: str,
    metric: str,
    test_pixels: np.ndarray,
    y_true: np.ndarray,
    task: str,
    positive_class: int,
    force: bool = False,
    min_delta: float = 0.0,
) -> Comparison:
    """Move `champion` to the challenger if it scores higher by more than `min_delta` on `metric` than the
    champion on the same test data (or `force`); the new champion's version remembers the one it replaced.
    The challenger must be the model of the experiment in the workspace (`registry.json`), both versions
    trained for this task on this data version."""
    client, _ = _client(root)
    challenger = _version_by_alias(client, model_name, CHALLENGER)
    if challenger is None:
        raise RegistryError(
            f"'{model_name}' has no {CHALLENGER}: `dvc repro` registers the best model as one"
        )
    new = str(challenger.version)
    if not force:
        ours = workspace_version(root)
        if ours != new:
            raise RegistryError(
                f"the {CHALLENGER} is v{new}, not v{ours}, the model of the experiment in the workspace "
                f"(registry.json): a `dvc exp run` since moved the alias. Apply that experiment to promote "
                f"it (`dvc exp apply`), or `dvc repro -f -s register` to make v{ours} the {CHALLENGER} "
                f"again (--force promotes v{new} anyway)"
            )
    champion = _version_by_alias(client, model_name, CHAMPION)
    if not force:
        data_version = tracking.data_version(root)
        for version in filter(None, (challenger, champion)):
            _check_comparable(version, task, positive_class, data_version)
    binary = task == "binary"
    new_score = score_version(root, model_name, new, test_pixels, y_true, binary)
    new_value = new_score.metrics[metric]
    old = str(champion.version) if champion is not None else None
    if old == new:
        return Comparison(
            metric, f"v{new}", new_value, f"v{old}", new_value, False, f"v{new} is already the {CHAMPION}"
        )
    old_score = score_version(root, model_name, old, test_pixels, y_true, binary) if old else None
    old_value = old_score.metrics[metric] if old_score else None
    promoted, reason = _decide(f"v{new}", new_value, f"v{old}" if old else None, old_value, force, min_delta)
    if promoted:
        if old is not None:
            client.set_model_version_tag(model_name, new, PREVIOUS_CHAMPION_TAG, old)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        client.set_model_version_tag(model_name, new, PROMOTION_TAG, f"{stamp} {reason}")
        client.set_registered_model_alias(model_name, CHAMPION, new)
    return Comparison(
        metric, f"v{new}", new_value, f"v{old}" if old else None, old_value, promoted, reason,
        decided_by(new_score, old_score, y_true) if old_score else "",
    )  # fmt: skip


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
    return f"v{champion.version}", f"v{previous}"


# --- without a registry: the champion is a git tag on an experiment commit -------------------------------

CHAMPION_TAG = "mnist-lab/champion"
PREVIOUS_CHAMPION_GIT_TAG = "mnist-lab/champion-previous"


def registry_available(root: Path) -> bool:
    """Whether the tracking server has a Model Registry (MLflow 2.x servers such as DagsHub's may not)."""
    from mlflow.exceptions import MlflowException

    client, _ = _client(root)
    try:
        client.search_registered_models(max_results=1)
    except MlflowException as exc:
        if _is_missing_registry(exc):
            return False
        raise
    return True


def _git(root: Path, *args: str) -> str:
    from mnist_lab.experiments.linking import run_git

    return run_git(root, *args).stdout.strip()


def tagged_commit(root: Path, tag: str) -> str | None:
    """The commit git tag `tag` points at, or None."""
    from mnist_lab.experiments.linking import run_git

    done = run_git(root, "rev-parse", "--verify", "--quiet", f"refs/tags/{tag}^{{commit}}", check=False)
    return done.stdout.strip() or None


def committed_model(root: Path, commit: str) -> tuple[str, Any]:
    """(model name, featurizer + classifier) of an experiment commit, from DVC (cache or remote)."""
    import io
    import json

    import dvc.api
    import joblib

    from mnist_lab.core.features import full_model

    source = f"{commit[:12]}:best_model.json"
    name = parse_experiment_file(BestModelFile, json.loads(_git(root, "show", source)), source).model
    parts = []
    for path in ("outputs/featurizer.joblib", f"models/{name}/classifier.joblib"):
        try:
            parts.append(joblib.load(io.BytesIO(dvc.api.read(path, repo=str(root), rev=commit, mode="rb"))))
        except Exception as exc:  # DVC raises many kinds: missing in cache and remote, no remote, ...
            raise RegistryError(
                f"cannot read {path} of commit {commit[:12]} from DVC ({exc}); `dvc pull` it first"
            ) from None
    return name, full_model(*parts)


def _score(model: Any, test_pixels: np.ndarray, y_true: np.ndarray, binary: bool, label: str) -> Score:
    from mnist_lab.core.features import pixel_frame
    from mnist_lab.core.metrics import evaluate_predictions
    from mnist_lab.core.models import class_scores

    frame = pixel_frame(test_pixels.reshape(len(test_pixels), -1))
    expected = getattr(model, "n_features_in_", None)
    if expected is not None and expected != frame.shape[1]:
        raise RegistryError(
            f"{label} takes images of {expected} pixels, the workspace's test set has {frame.shape[1]}: "
            "models for another image size cannot be compared on it"
        )
    predicted = model.predict(frame)
    metrics = evaluate_predictions(
        y_true, predicted, class_scores(model, frame), list(model.classes_), binary
    )
    return Score(metrics.metrics, np.asarray(predicted))


def promote_commit(
    root: Path,
    metric: str,
    test_pixels: np.ndarray,
    y_true: np.ndarray,
    binary: bool,
    force: bool = False,
    min_delta: float = 0.0,
) -> Comparison:
    """Without a registry: the challenger is the experiment committed at HEAD (its DVC-tracked best model),
    the champion the commit git tag `mnist-lab/champion` points at; the tag moves only if the challenger
    scores higher by more than `min_delta` on the same test data (or `force`), and
    `mnist-lab/champion-previous` keeps the last one."""
    from mnist_lab.experiments.linking import pipeline_status

    head = _git(root, "rev-parse", "HEAD")
    changed = _git(root, "status", "--porcelain", "--", "best_model.json", "dvc.lock", "params.yaml")
    if changed or pipeline_status(root):
        raise RegistryError(
            "without a registry the champion is an experiment commit: commit this experiment first "
            "(`dvc repro`, then `mnist-lab commit -m ...`)"
        )
    champion = tagged_commit(root, CHAMPION_TAG)
    _, challenger_model = committed_model(root, head)
    new, old = head[:12], champion[:12] if champion else None
    new_score = _score(challenger_model, test_pixels, y_true, binary, f"commit {new}")
    new_value = new_score.metrics[metric]
    if champion == head:
        return Comparison(metric, new, new_value, old, new_value, False, f"{new} is already the {CHAMPION}")
    old_score = None
    if champion is not None:
        if not force:
            ours, theirs = _committed_data_version(root, head), _committed_data_version(root, champion)
            if ours and theirs and ours != theirs:
                raise RegistryError(
                    f"{CHAMPION} {old} was trained on data version {theirs[:12]}, not this experiment's "
                    f"{ours[:12]} (data.dvc): scores on different data do not compare (--force to promote "
                    "anyway)"
                )
        old_score = _score(committed_model(root, champion)[1], test_pixels, y_true, binary, f"commit {old}")
    old_value = old_score.metrics[metric] if old_score else None
    promoted, reason = _decide(new, new_value, old, old_value, force, min_delta)
    if promoted:
        if champion is not None:
            _git(root, "tag", "-f", PREVIOUS_CHAMPION_GIT_TAG, champion)
        _git(root, "tag", "-f", "-a", CHAMPION_TAG, "-m", reason, head)
    return Comparison(
        metric, new, new_value, old, old_value, promoted, reason,
        decided_by(new_score, old_score, y_true) if old_score else "",
    )  # fmt: skip


def _committed_data_version(root: Path, commit: str) -> str | None:
    """The data version (`data.dvc`'s hash) an experiment commit was run on."""
    from mnist_lab.experiments.linking import run_git

    done = run_git(root, "show", f"{commit}:data.dvc", check=False)
    from mnist_lab.datasets.folder import parse_data_version

    return parse_data_version(done.stdout) if done.returncode == 0 else None


def roll_back_commit(root: Path) -> tuple[str, str]:
    """Without a registry: move git tag `mnist-lab/champion` back to `mnist-lab/champion-previous`."""
    champion = tagged_commit(root, CHAMPION_TAG)
    previous = tagged_commit(root, PREVIOUS_CHAMPION_GIT_TAG)
    if champion is None:
        raise RegistryError(f"no {CHAMPION} to roll back (git tag {CHAMPION_TAG})")
    if previous is None:
        raise RegistryError(f"{CHAMPION} {champion[:12]} replaced no earlier champion: nothing to go back to")
    _git(root, "tag", "-f", "-a", CHAMPION_TAG, "-m", f"rolled back from {champion[:12]}", previous)
    _git(root, "tag", "-d", PREVIOUS_CHAMPION_GIT_TAG)
    return champion[:12], previous[:12]
