"""What `mnist-lab serve` starts (MLflow's scoring app under uvicorn, as `mnist_lab.serving.rest` wraps it)
and the model folders it serves: a store's or registry's model downloaded once per content, the
workspace's best model or the champion commit's saved as the pyfunc (serving.pyfunc.DigitClassifier),
all under `.mnist-lab/serve/`. Apart from serving.pyfunc, which the evaluate stage logs: a change here
reruns no stage."""

import os
import sys
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import mlflow.pyfunc

from mnist_lab.serving.pyfunc import DigitClassifier


def pyfunc_dir(root: Path, key: str, pipeline: Any) -> Path:
    """`pipeline` saved as this pyfunc under `.mnist-lab/serve/<key>/` (once per key, whole or not at all)."""
    import shutil
    import tempfile

    from mnist_lab.tracking import (
        model_requirements,
        pinned_requirements,
        quiet_pickling_warnings,
        this_package_pickled_by_value,
    )

    target = serve_cache(root) / key
    if (target / "MLmodel").is_file():
        mark_used(target)  # before anything else can prune it
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
    try:  # `serve --workspace` printed MLflow's CloudPickle warning at every start
        with this_package_pickled_by_value(), quiet_pickling_warnings():
            mlflow.pyfunc.save_model(
                path=str(staging / "model"),
                python_model=(model := DigitClassifier(pipeline, int(pipeline.n_features_in_))),
                signature=False,
                pip_requirements=pinned_requirements(model_requirements(model)),
            )
        if not target.exists():
            (staging / "model").rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    mark_used(target)
    return target


def workspace_model_dir(root: Path) -> tuple[Path, str]:
    """The workspace's best model (from its DVC-tracked files) as this pyfunc, for serving without a
    registry or tracking store."""
    import hashlib

    from mnist_lab.serving.inference import workspace_best_model

    name, pipeline, files = workspace_best_model(root)
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in files)).hexdigest()[:16]
    return pyfunc_dir(root, f"{name}-{digest}", pipeline), f"the workspace's best model ({name}, from DVC)"


def champion_commit_dir(root: Path) -> tuple[Path, str]:
    """Without a registry: the model of the commit git tag `mnist-lab/champion` points at, as this pyfunc."""
    from mnist_lab.serving import registry

    commit = registry.tagged_commit(root, registry.CHAMPION_TAG)
    if commit is None:
        raise registry.RegistryError(
            f"this tracking server has no Model Registry and no commit is tagged {registry.CHAMPION_TAG}: "
            "promote one (`mnist-lab promote`), or serve the workspace's best model with --workspace"
        )
    name, pipeline = registry.committed_model(root, commit)
    return pyfunc_dir(root, f"{name}-{commit[:16]}", pipeline), f"{name} of champion commit {commit[:12]}"


def serve_command(
    root: Path, model_uri: str | None, workspace: bool, host: str, port: int, workers: int
) -> tuple[list[str], dict[str, str], str]:
    """(the uvicorn command line serving MLflow's scoring app as mnist_lab.serving.rest wraps it, its
    environment, what it serves). The registry's champion by default; checks that it exists first, so a
    missing one is a clear error rather than a server that dies."""
    from mnist_lab import tracking
    from mnist_lab.core.settings import load_settings
    from mnist_lab.serving import registry

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # uvicorn, mlflow
    if workspace:
        model_dir, described = workspace_model_dir(root)
        uri = str(model_dir)
    else:
        settings = tracking.TrackingSettings.from_environment(root)
        env["MLFLOW_TRACKING_URI"] = settings.tracking_uri
        env["MLFLOW_REGISTRY_URI"] = settings.tracking_uri
        if model_uri is None and not registry.registry_available(root):
            model_dir, described = champion_commit_dir(root)
            uri = str(model_dir)
        elif model_uri is None:
            name = load_settings(root / "params.yaml").registry.model_name
            champion = registry.champion_version(root, name)
            uri, described = (
                f"models:/{name}@{registry.CHAMPION}",
                f"{name} v{champion} ({registry.CHAMPION})",
            )
        else:
            uri, described = model_uri, model_uri
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server

    try:
        served = local_model_dir(root, uri)
    except MlflowException as exc:
        raise registry.RegistryError(f"cannot load model '{uri}': {exc.message}") from None
    if model_uri is not None and not workspace:
        try:  # fails clearly if it cannot be loaded (from the local copy: not downloaded twice)
            registry.load_sklearn_model(root, served)
        except registry.RegistryError as exc:
            raise registry.RegistryError(str(exc).replace(served, model_uri)) from None
    prune_serve_cache(root, served)
    # what `mlflow models serve --env-manager local` runs, with mnist_lab.serving.rest's client-facing fixes
    env[scoring_server._SERVER_MODEL_PATH] = served
    executable = str(Path(sys.executable).parent / "uvicorn")
    command = [executable, "--host", host, "--port", str(port), "--workers", str(workers)]
    return [*command, "--factory", "mnist_lab.serving.rest:create_app"], env, described


def local_model_dir(root: Path, uri: str) -> str:
    """A local folder holding the MLflow model at `uri` (downloaded from the store or registry the
    environment names, as `mlflow models serve` does), or `uri` itself when it is one.

    Every start downloads it (a registry alias may have moved) beside `.mnist-lab/serve/` (a user cache
    folder outside a repository) and keeps it there as `download-<digest of its files>/`, whole or not at
    all, one copy per model: the server replaces this process, so a temporary folder would outlive it
    (every start left a copy of the model in /tmp). Two starts at once keep the first copy in place."""
    if Path(uri).is_dir():
        return str(Path(uri).resolve())
    import hashlib
    import shutil
    import tempfile

    import mlflow

    cache = serve_cache(root)
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=cache))
    try:
        downloaded = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(staging)))
        digest = hashlib.sha256()
        for path in sorted(p for p in downloaded.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(downloaded)).encode() + b"\0" + path.read_bytes())
        target = cache / f"download-{digest.hexdigest()[:16]}"
        if not (target / "MLmodel").is_file():
            try:
                downloaded.rename(target)  # atomic: a folder in place is never replaced while it serves
            except OSError:
                if not (target / "MLmodel").is_file():  # not another start's copy: one left broken by hand
                    shutil.rmtree(target)
                    downloaded.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    mark_used(target)  # before anything else can prune it
    return str(target)


KEEP_NEWEST = 5  # model folders of `.mnist-lab/serve/` kept whatever their age: the most recently used
KEEP_DAYS = 7.0  # and any other used within this many days
STAGING_DAYS = 1.0  # a half-made folder (`.download-*`, `.<key>-*`) of a start killed midway, after this
MARK_EVERY_S = 3600.0  # a running server marks its model's folder as used this often


def mark_used(folder: Path, now: float | None = None) -> None:
    """Mark a model folder of the serve cache as used (its mtime): pruning keeps what was used lately."""
    with suppress(OSError):  # gone or not ours: pruning is housekeeping, never a reason to fail
        os.utime(folder, None if now is None else (now, now))


def keep_marked(folder: Path) -> threading.Thread:
    """Mark `folder` as used every MARK_EVERY_S while this process runs (a server started from it): a
    server running for weeks keeps its folder, which a worker uvicorn restarts loads the model from."""

    def mark() -> None:
        while True:
            mark_used(folder)
            time.sleep(MARK_EVERY_S)

    marker = threading.Thread(target=mark, name="mnist-lab-serve-mark", daemon=True)
    marker.start()
    return marker


def prune_serve_cache(root: Path, served: str, now: float | None = None) -> list[Path]:
    """Mark `served` (when it is a folder of the serve cache) as used now, and remove the cache's other
    model folders that are neither among the KEEP_NEWEST last used nor used within KEEP_DAYS, and staging
    folders older than STAGING_DAYS: every new champion or model left a copy there for good. A folder is
    marked when a start chooses it (before it loads or checks the model) and every hour by the server
    serving it (`keep_marked`), so neither a start under way nor a running server loses its folder; the
    next start of a pruned model downloads or saves it again. The folders removed; a folder that cannot be
    read or removed (another start's, gone meanwhile) is left."""
    import shutil

    cache = serve_cache(root)
    if not cache.is_dir():
        return []
    now = time.time() if now is None else now
    used = Path(served).resolve()
    in_cache = used.parent == cache.resolve()
    if in_cache:
        mark_used(used, now)
    models, removed = [], []
    for folder in (path for path in cache.iterdir() if path.is_dir() and not path.is_symlink()):
        try:
            age_days = (now - folder.stat().st_mtime) / 86400
        except OSError:  # removed meanwhile (another start's staging folder)
            continue
        if folder.name.startswith("."):
            if age_days > STAGING_DAYS:
                removed.append(folder)
        elif not (in_cache and folder.name == used.name):
            models.append((age_days, folder))
    models.sort(key=lambda aged: aged[0])
    others_kept = KEEP_NEWEST - 1 if in_cache else KEEP_NEWEST
    removed += [folder for age_days, folder in models[others_kept:] if age_days > KEEP_DAYS]
    for folder in removed:
        shutil.rmtree(folder, ignore_errors=True)
    return [folder for folder in removed if not folder.exists()]


def serve_cache(root: Path) -> Path:
    """Where served models are kept: `.mnist-lab/serve/` of the repository, or the user's cache folder
    (`$XDG_CACHE_HOME/mnist-lab/serve`, `~/.cache/...`) when `root` is none (a batch machine's folder)."""
    if (root / "dvc.yaml").is_file() or (root / ".dvc").is_dir():  # as system.workspace finds one
        return root / ".mnist-lab" / "serve"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mnist-lab" / "serve"
