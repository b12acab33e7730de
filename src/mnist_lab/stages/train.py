"""train: fit one model (`models.<name>` in params.yaml); the MLP's per-epoch history goes to a CSV."""

from __future__ import annotations

import csv
import io
import sys
import time

from mnist_lab.data import task_labels
from mnist_lab.files import write_json, write_text_atomic
from mnist_lab.models import HISTORY_METRICS, train_classifier
from mnist_lab.stages.common import StageContext, load_arrays, main_for, save_object, stage_parser

HISTORY_COLUMNS = ("epoch", *HISTORY_METRICS)


def history_csv(history: list[dict[str, float]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({**row, "epoch": int(row["epoch"])})
    return buffer.getvalue()


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
    progress = None
    if model_settings.type == "mlp":
        from tqdm import tqdm

        progress = tqdm(
            total=model_settings.max_epochs,
            desc=f"{args.model} epochs",
            unit="epoch",
            file=sys.stderr,
            disable=None,
        )

    def on_epoch(record: dict[str, float]) -> None:
        progress.update(1)
        progress.set_postfix(val_loss=f"{record['val_loss']:.4f}", val_acc=f"{record['val_accuracy']:.4f}")

    started = time.perf_counter()
    try:
        with context.compute():
            trained = train_classifier(
                model_settings, features, labels, settings.seed, on_epoch if progress else None
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
