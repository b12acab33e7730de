"""train: fit one model (`models.<name>` in params.yaml); the MLP's per-epoch history goes to a CSV.

With `models.<name>.search`, a grid search picks the settings first: every candidate's cross-validation
scores go to the training JSON (`search`), where the evaluate stage finds them for MLflow's nested runs."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict

from mnist_lab import tracking
from mnist_lab.data import task_labels
from mnist_lab.files import write_json, write_text_atomic
from mnist_lab.models import progress_units, train_classifier
from mnist_lab.results import history_csv
from mnist_lab.stages.common import StageContext, load_arrays, main_for, save_object, stage_parser


def train(context: StageContext) -> None:
    settings, args = context.settings, context.args
    model_settings = settings.model(args.model)
    features = load_arrays(args.features, ("train_features",))["train_features"]
    labels = load_arrays(args.prepared, ("train_labels",))["train_labels"]
    labels = task_labels(labels, settings.task.kind, settings.task.positive_class)
    print(
        f"train {args.model} ({model_settings.type}) on {features.shape[0]} x {features.shape[1]}",
        file=sys.stderr,
    )
    # a wrong tracking server or credentials stop the pipeline here, before any training work
    tracking.preflight(tracking.repository_root())
    if model_settings.search is not None:
        count = len(model_settings.search.candidates())
        print(
            f"grid search: {count} candidates x {model_settings.search.cv} folds "
            f"({count * model_settings.search.cv} fits), scored by {model_settings.search.scoring}",
            file=sys.stderr,
        )
    units = progress_units(model_settings)
    progress = None
    if units is not None:
        from tqdm import tqdm

        unit = "epoch" if model_settings.type == "mlp" else "tree"
        progress = tqdm(total=units, desc=args.model, unit=unit, file=sys.stderr, disable=None)

    def on_progress(done: int, record: dict[str, float]) -> None:
        progress.update(done - progress.n)
        if record:
            progress.set_postfix(
                val_loss=f"{record['val_loss']:.4f}", val_acc=f"{record['val_accuracy']:.4f}"
            )

    started = time.perf_counter()
    try:
        with context.compute():
            trained = train_classifier(
                model_settings, features, labels, settings.seed, on_progress if progress else None
            )
    finally:
        if progress is not None:
            progress.close()
    fit_seconds = time.perf_counter() - started
    save_object(args.out / "classifier.joblib", trained.classifier)
    # timing lives outside the cached model folder, so that folder's hash changes only with the model
    write_json(
        args.training,
        {
            "model": args.model,
            "type": model_settings.type,
            "fit_seconds": round(fit_seconds, 3),
            "epochs": len(trained.history),
            "best_epoch": trained.best_epoch,
            "search": asdict(trained.search) if trained.search is not None else None,
        },
    )
    write_text_atomic(args.history, history_csv(trained.history))


def parser():
    from pathlib import Path

    p = stage_parser(__doc__, model_argument=True)
    p.add_argument("--prepared", required=True, help="prepared arrays (.npz), for the labels")
    p.add_argument("--features", required=True)
    p.add_argument("--out", required=True, type=Path, help="folder for the fitted classifier")
    p.add_argument("--history", required=True, help="per-epoch metrics (CSV; header only without epochs)")
    p.add_argument("--training", required=True, help="JSON: fit time, epochs run, best epoch")
    return p


if __name__ == "__main__":
    main_for("train", parser(), train)
