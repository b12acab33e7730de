"""The MLflow Model Registry: the pipeline registers its best model as the `challenger`; this module registers
it, loads registered and logged models, and reads the aliases and the champion's git tags. Moving `champion`
(only when the challenger beats it) and moving it back is `serving.promotion`.

Where the tracking server has no registry (an MLflow 2.x server without one, as DagsHub's hosted MLflow has
been reported), registering is skipped with a note and the pipeline goes on."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


def registry_client(root: Path) -> tuple[MlflowClient, str]:
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
    client, uri = registry_client(root)
    try:
        existing = client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
        if existing:
            version = str(existing[0].version)
        elif not _run_exists(client, run_id):
            from mnist_lab.system.redact import display_uri

            return Registration(
                model_name,
                None,
                run_id,
                f"not registered: the run of '{best.model}' ({run_id}) is not in this tracking store "
                f"({display_uri(uri)}): it was logged to another store (a fresh clone starts with an empty "
                "one). Log the models and register the best here with `dvc repro -f`",
            )
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


def _run_exists(client: MlflowClient, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
    except MlflowException as exc:
        if _does_not_exist(exc):
            return False
        raise
    return True


def _server_failed(model_name: str, run_id: str, exc: Exception) -> Registration:
    """A remote server that failed while registering: the pipeline goes on, the note says how to retry."""
    from mnist_lab.system.redact import first_line, redact

    reason = first_line(redact(f"{type(exc).__name__}: {exc}"))
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
    # MLflow logs "Waiting up to 300 seconds for model version to finish creation" (at INFO, on stderr) before
    # it asks whether the version is ready, even when it is at once (always, on an open-source server): quiet
    # that line; the wait itself, and its failure, are kept
    waiting = logging.getLogger("mlflow.store.model_registry.abstract_store")
    level = waiting.level
    waiting.setLevel(logging.WARNING)
    try:
        version = client.create_model_version(
            model_name,
            source,
            run_id=run_id,
            tags=tags,
            description=f"{run.data.tags.get(f'{tracking.TAG_PREFIX}model', '')} from run {run_id}",
            model_id=model_id,
        )
    finally:
        waiting.setLevel(level)
    return str(version.version)


# --- promotion ----------------------------------------------------------------------------------------


def version_by_number(client: MlflowClient, model_name: str, version: str):
    """Version `version` of `model_name`; None when this store has no such version (or model)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(model_name, version)
    except MlflowException as exc:
        if _does_not_exist(exc):
            return None
        raise


def _does_not_exist(exc: Exception) -> bool:
    return "RESOURCE_DOES_NOT_EXIST" in str(exc) or "not found" in str(exc).lower()


def version_by_alias(client: MlflowClient, model_name: str, alias: str):
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
        if _does_not_exist(exc):
            return None
        raise


def load_sklearn_model(root: Path, model_uri: str) -> Any:
    """A logged or registered model (`models:/mnist-lab@champion`, `runs:/...`) as its scikit-learn
    pipeline, from the repository's tracking store and registry: the pipeline inside the pyfunc this
    project logs, or an sklearn-flavor model as it is."""
    from mlflow.exceptions import MlflowException

    registry_client(root)  # sets the tracking and registry URIs
    import mlflow.pyfunc
    import mlflow.sklearn

    try:
        model = mlflow.pyfunc.load_model(model_uri)
        if "sklearn" in model.metadata.flavors:
            return mlflow.sklearn.load_model(model_uri)
        return model.unwrap_python_model().pipeline
    except MlflowException as exc:
        from mnist_lab.system.redact import redact
        from mnist_lab.tracking.server import describe_store_failure

        if away := describe_store_failure(exc):  # the server, not the model: MLflow's retries in one line
            raise RegistryError(f"cannot load model '{model_uri}': {redact(away)}") from None
        fix = ""
        if f"@{CHAMPION}" in model_uri and "alias" in exc.message.lower():
            fix = "; promote one first (`mnist-lab promote`), or use the workspace's model (no --model)"
        raise RegistryError(f"cannot load model '{model_uri}': {exc.message}{fix}") from None


def champion_version(root: Path, model_name: str) -> str:
    """The version alias `champion` points at, or a RegistryError saying how to get one."""
    client, _ = registry_client(root)
    champion = version_by_alias(client, model_name, CHAMPION)
    if champion is None:
        raise RegistryError(
            f"'{model_name}' has no {CHAMPION}: promote one (`mnist-lab promote`), or use the workspace's "
            "best model (`mnist-lab serve --workspace`; the digit pad's 'the workspace's best model')"
        )
    return str(champion.version)


# --- without a registry: the champion is a git tag on an experiment commit -------------------------------

CHAMPION_TAG = "mnist-lab/champion"
PREVIOUS_CHAMPION_GIT_TAG = "mnist-lab/champion-previous"


def registry_available(root: Path) -> bool:
    """Whether the tracking server has a Model Registry (MLflow 2.x servers such as DagsHub's may not)."""
    from mlflow.exceptions import MlflowException

    client, _ = registry_client(root)
    try:
        client.search_registered_models(max_results=1)
    except MlflowException as exc:
        if _is_missing_registry(exc):
            return False
        raise
    return True


def git_stdout(root: Path, *args: str) -> str:
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
    name = parse_experiment_file(BestModelFile, json.loads(git_stdout(root, "show", source)), source).model
    parts = []
    for path in ("outputs/featurizer.joblib", f"models/{name}/classifier.joblib"):
        try:
            parts.append(joblib.load(io.BytesIO(dvc.api.read(path, repo=str(root), rev=commit, mode="rb"))))
        except Exception as exc:  # DVC raises many kinds: missing in cache and remote, no remote, ...
            said = f"cannot read {path} of commit {commit[:12]} from DVC"
            if _has_dvc_remote(root, commit):  # what DVC says of its remote helps
                raise RegistryError(f"{said} ({exc}); `dvc pull` it first") from None
            # without a remote DVC says the path is "neither a DVC output nor a Git-tracked file",
            # which the commit's dvc.yaml contradicts: the cache lacks it, which is said below
            raise RegistryError(f"{said}; {MISSING_OUTPUT_FIX}") from None
    return name, full_model(*parts)


MISSING_OUTPUT_FIX = (
    "no DVC remote is set and this repository's DVC cache lacks it (made on another machine, or the cache "
    "was cleared): add the remote it was pushed to (`dvc remote add -d NAME URL`) and `dvc pull`, or rebuild "
    "it: check that commit out, `dvc checkout`, `dvc repro` (the same models come out), then go back to your "
    "branch"
)


def _has_dvc_remote(root: Path, commit: str) -> bool:
    """Whether a DVC remote is set, in the repository's config (with config.local) or in `commit`'s
    `.dvc/config` (what `dvc pull` at that commit reads); True when that cannot be told."""
    from mnist_lab.datasets.remote import remote_names
    from mnist_lab.system.commands import git_output

    if remote_names(git_output("show", f"{commit}:.dvc/config", cwd=root) or ""):
        return True
    try:
        from dvc.repo import Repo

        with Repo(str(root)) as repo:
            return bool(repo.config.get("remote"))
    except Exception:
        return True
