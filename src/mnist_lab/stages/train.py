"""train: fit one model (`models.<name>` in params.yaml); the MLP's and the CNN's per-epoch history go to a
CSV. A CNN trains on the prepared images' pixels, every other model on the featurizer's output.

With `models.<name>.search`, a grid search picks the settings first: every candidate's cross-validation
scores go to the training JSON (`search`), where the evaluate stage finds them for MLflow's nested runs.

Wall-clock figures (the fit time, each candidate's mean fit time) go to a separate timing JSON, a DVC-cached
output that git never sees, so the committed training JSON is the same on every rerun of an experiment."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np

from mnist_lab import tracking
from mnist_lab.core.cnn import COMPILE_CACHE_ENV
from mnist_lab.core.data import check_detector_labels, check_training_labels, task_labels
from mnist_lab.core.errors import TrainingDiverged
from mnist_lab.core.models import (
    TrainedModel,
    progress_units,
    takes_images,
    train_classifier,
)
from mnist_lab.core.results import history_csv
from mnist_lab.core.settings import CNNSettings, ModelSettings
from mnist_lab.stages.common import StageContext, keep_compiled_programs, main_for, stage_parser
from mnist_lab.system import workspace
from mnist_lab.system.cluster import cluster_address, dask_search
from mnist_lab.system.files import load_arrays, save_object, write_json, write_text_atomic


def train(context: StageContext) -> None:
    settings, args = context.settings, context.args
    model_settings = settings.model(args.model)
    image_shape = None
    if takes_images(model_settings):
        keep_compiled_programs(COMPILE_CACHE_ENV)
        prepared = load_arrays(args.prepared, ("train_pixels", "train_labels", "image_shape"))
        features, labels = prepared["train_pixels"], prepared["train_labels"]
        image_shape = (int(prepared["image_shape"][0]), int(prepared["image_shape"][1]))
        if settings.features.pca:
            print(
                f"note: features.pca does not apply to {args.model} (a CNN needs the images): it is trained "
                "on the pixels; the MLP and the other models use the PCA features",
                file=sys.stderr,
            )
    else:
        features = load_arrays(args.features, ("train_features",))["train_features"]
        labels = load_arrays(args.prepared, ("train_labels",))["train_labels"]
    labels = task_labels(labels, settings.task.kind, settings.task.positive_class)
    if settings.task.kind == "binary":
        check_detector_labels(labels, settings.task.positive_class, "training")
    check_training_labels(model_settings, labels, f"models.{args.model}")
    shape = (
        f"{features.shape[0]} images of {image_shape[0]}x{image_shape[1]}"
        if image_shape
        else f"{features.shape[0]} x {features.shape[1]} features"
    )
    print(f"train {args.model} ({model_settings.type}) on {shape}", file=sys.stderr)
    # a wrong tracking server or credentials stop the pipeline here, before any training work
    root = workspace.repository_root()
    tracking.preflight(root)
    cluster = None
    if model_settings.search is not None:
        count = len(model_settings.search.candidates())
        workspace.load_env_file(root)
        cluster = cluster_address(os.environ)  # a wrong address stops here too, before any work
        print(
            f"grid search: {count} candidates x {model_settings.search.cv} folds "
            f"({count * model_settings.search.cv} fits), scored by {model_settings.search.scoring}"
            + (f", on the Dask cluster at {cluster}" if cluster else ""),
            file=sys.stderr,
        )
    device = None
    if isinstance(model_settings, CNNSettings):
        from mnist_lab.core.cnn import compute_device, describe_network

        device = compute_device()
        n_classes = int(np.unique(labels).size)
        assert image_shape is not None  # a CNN takes images
        print(f"{args.model}: {describe_network(model_settings, image_shape, n_classes)}", file=sys.stderr)
        print(f"{args.model}: Keras on {os.environ.get('KERAS_BACKEND')}, {device}", file=sys.stderr)
        on_progress = epoch_printer(args.model, model_settings.max_epochs)
    else:
        on_progress = ProgressBar(args.model, model_settings)

    started = time.perf_counter()
    searched_on = None
    try:
        with context.compute(), dask_search(cluster) if cluster else contextlib.nullcontext() as client:
            if model_settings.search is not None:
                searched_on = search_location(cluster, client)
            try:
                trained = train_classifier(
                    model_settings, features, labels, settings.seed, on_progress, image_shape=image_shape,
                    on_search_fit=search_printer(args.model) if model_settings.search is not None else None,
                )  # fmt: skip
            except TrainingDiverged as exc:  # its settings are the cause: named as params.yaml has them
                raise TrainingDiverged(f"models.{args.model}: {exc}") from None
    finally:
        if hasattr(on_progress, "close"):
            on_progress.close()
    fit_seconds = time.perf_counter() - started
    if trained.history and trained.best_epoch:  # how the epochs ended, in one line
        ran, best = len(trained.history), trained.best_epoch
        most, kept = getattr(model_settings, "max_epochs", ran), trained.history[best - 1]["val_loss"]
        epochs = "1 epoch" if ran == 1 else f"{ran} epochs"
        print(f"{args.model}: {epochs} (at most {most}); kept epoch {best}, the lowest val_loss "
              f"({kept:.4f})", file=sys.stderr)  # fmt: skip
    save_object(args.out / "classifier.joblib", trained.classifier)
    training, timing = training_records(args.model, model_settings.type, trained, fit_seconds, device)
    if searched_on is not None:
        timing["search_ran_on"] = searched_on
    write_json(args.training, training)
    write_json(args.timing, timing)
    write_text_atomic(args.history, history_csv(trained.history))


def search_location(cluster: str | None, client: Any) -> str:
    """Where a grid search's fits run, for its MLflow run (`mnist_lab.search_ran_on`): the Dask cluster and
    how many workers it had when the search started, or this machine and the processes joblib runs the fits
    in (the search's n_jobs=-1: its usable cores)."""
    if cluster is None:
        import joblib

        processes = joblib.effective_n_jobs(-1)
        return f"this machine ({processes} process{'es' if processes != 1 else ''})"
    workers = len(client.scheduler_info().get("workers", {}))
    return f"Dask cluster {cluster} ({workers} worker{'s' if workers != 1 else ''})"


def training_records(
    model: str, model_type: str, trained: TrainedModel, fit_seconds: float, device: str | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what training decided, how long it took): the first is committed with the experiment and is the
    same on every rerun; the second holds the wall-clock figures, which never are."""
    search = asdict(trained.search) if trained.search is not None else None
    candidate_seconds = []
    if search is not None:
        for candidate in search["candidates"]:
            candidate_seconds.append(round(candidate.pop("mean_fit_seconds"), 4))
    training = {
        "model": model,
        "type": model_type,
        "epochs": len(trained.history),
        "best_epoch": trained.best_epoch,
        "search": search,
        **({"device": device} if device is not None else {}),
    }
    timing = {"fit_seconds": round(fit_seconds, 3), "search_mean_fit_seconds": candidate_seconds}
    return training, timing


class ProgressBar:
    """A tqdm bar over epochs (MLP) or trees (forest); a no-op for models trained in one go. Drawn at the
    first epoch or tree: after a grid search, not before it (it sat at 0% through the search, then showed
    the search's minutes as the first epoch's)."""

    def __init__(self, model: str, model_settings: ModelSettings) -> None:
        self.model, self.units = model, progress_units(model_settings)
        self.unit = "epoch" if model_settings.type == "mlp" else "tree"
        self.bar: Any = None

    def __call__(self, done: int, record: dict[str, float]) -> None:
        if self.units is None:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=self.units, desc=self.model, unit=self.unit, file=sys.stderr, disable=None)
        self.bar.update(done - self.bar.n)
        if record:
            self.bar.set_postfix(
                val_loss=f"{record['val_loss']:.4f}", val_acc=f"{record['val_accuracy']:.4f}"
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def search_printer(model: str) -> Callable[[int, int], None]:
    """A line on stderr as a grid search's fits finish (`mlp grid search: 12/40 fits done, 31 s`): at most one
    per tenth of the fits or 15 s, and the last; lines, like the epochs', so that logs keep them."""
    started = time.perf_counter()
    shown = [0, started]  # the fits last shown, and when

    def report(done: int, fits: int) -> None:
        now = time.perf_counter()
        if done <= shown[0] or (done < fits and done - shown[0] < max(1, fits // 10) and now - shown[1] < 15):
            return
        shown[:] = [done, now]
        line = f"{model} grid search: {done}/{fits} fits done, {now - started:.0f} s"
        print(line, file=sys.stderr, flush=True)

    return report


def epoch_printer(model: str, max_epochs: int) -> Callable[[int, dict[str, float]], None]:
    """One line per epoch on stderr (losses, accuracies, learning rate, seconds), so a long training shows
    where it is; lines, not a bar, so that logs of `dvc repro` and CI keep every epoch."""
    last = [time.perf_counter()]
    width = len(str(max_epochs))

    def report(epoch: int, record: dict[str, float]) -> None:
        now = time.perf_counter()
        # the first epoch's seconds hold what came before it: compiling the network, a grid search
        took = f"{now - last[0]:.1f} s" + (" with start-up" if epoch == 1 else "")
        print(
            f"{model} epoch {epoch:>{width}}/{max_epochs}: loss {record['train_loss']:.4f} "
            f"acc {record['train_accuracy']:.4f} | val_loss {record['val_loss']:.4f} "
            f"val_acc {record['val_accuracy']:.4f} | lr {record['learning_rate']:.3g} | {took}",
            file=sys.stderr,
            flush=True,
        )
        last[0] = now

    return report


def parser():
    from pathlib import Path

    p = stage_parser(__doc__, model_argument=True)
    p.add_argument("--prepared", required=True, help="prepared arrays (.npz), for the labels")
    p.add_argument("--features", required=True)
    p.add_argument("--out", required=True, type=Path, help="folder for the fitted classifier")
    p.add_argument("--history", required=True, help="per-epoch metrics (CSV; header only without epochs)")
    p.add_argument("--training", required=True, help="JSON: epochs run, best epoch, grid-search scores")
    p.add_argument("--timing", required=True, help="JSON: fit time (and grid-search fit times)")
    return p


if __name__ == "__main__":
    main_for("train", parser(), train)
