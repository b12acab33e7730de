"""evaluate: test-set metrics, plots and figures for one model, and its MLflow run.

The model logged to MLflow is the featurizer and the classifier as one scikit-learn pipeline, so it takes
raw 0-255 pixels, as a user of the served model sends them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from mnist_lab import tracking
from mnist_lab.core.cnn import COMPILE_CACHE_ENV
from mnist_lab.core.data import check_detector_labels, task_labels
from mnist_lab.core.experiment_files import RunFile
from mnist_lab.core.features import full_model, pixel_frame
from mnist_lab.core.metrics import Evaluation, evaluate_predictions
from mnist_lab.core.models import class_scores, single_threaded_prediction, takes_images
from mnist_lab.core.results import read_history, rows_csv
from mnist_lab.core.run_summary import (
    curve_csv,
    evaluation_figures,
    image_features,
    run_params,
    search_candidates,
    search_csv,
)
from mnist_lab.serving.pyfunc import DigitClassifier
from mnist_lab.stages.common import StageContext, keep_compiled_programs, main_for, stage_parser
from mnist_lab.system import workspace
from mnist_lab.system.files import load_arrays, load_object, read_json, write_json, write_text_atomic
from mnist_lab.system.redact import display_uri
from mnist_lab.tracking import ChildRunRecord
from mnist_lab.tracking.outbox import log_or_spool

INPUT_EXAMPLE_ROWS = 3


def search_children(
    model_name: str, search: dict[str, Any], fit_seconds: list[float], tags: dict[str, str]
) -> list[ChildRunRecord]:
    """One nested run per grid-search candidate (`run_summary.search_candidates`), tagged with its index."""
    return [
        ChildRunRecord(
            f"{model_name}-candidate-{index}",
            params,
            metrics,
            {**tags, f"{tracking.TAG_PREFIX}search_candidate": str(index)},
        )
        for index, (params, metrics) in enumerate(search_candidates(search, fit_seconds))
    ]


def evaluate(context: StageContext) -> None:
    settings, args = context.settings, context.args
    model_settings = settings.model(args.model)
    prepared = load_arrays(args.prepared, ("test_pixels", "test_labels", "train_labels", "image_shape"))
    if takes_images(model_settings):
        keep_compiled_programs(COMPILE_CACHE_ENV)  # before loading the network compiles anything
    classifier = single_threaded_prediction(load_object(args.model_dir / "classifier.joblib"))
    if takes_images(model_settings):
        test_features = prepared["test_pixels"]
    else:
        test_features = load_arrays(args.features, ("test_features",))["test_features"]
    featurizer = load_object(args.featurizer)
    training = read_json(args.training)
    timing = read_json(args.timing)
    history = read_history(args.history)
    binary = settings.task.kind == "binary"
    y_true = task_labels(prepared["test_labels"], settings.task.kind, settings.task.positive_class)
    if settings.task.kind == "binary":
        check_detector_labels(y_true, settings.task.positive_class, "test")

    with context.compute():
        y_pred = classifier.predict(test_features)
        scores = class_scores(classifier, test_features)
        evaluation = evaluate_predictions(y_true, y_pred, scores, list(classifier.classes_), binary)
        images = evaluation_figures(args.model, evaluation, history)

    write_reports(args.reports, evaluation, y_true, y_pred, images)

    root = workspace.repository_root()
    tracking_settings = tracking.preflight(root)
    if takes_images(model_settings):
        rows, cols = (int(size) for size in prepared["image_shape"])
        features_summary = image_features(rows, cols, settings.features.pca)
    else:
        features_summary = {k: v for k, v in read_json(args.features_summary).items() if k != "pca"}
    n_train, n_test = int(prepared["train_labels"].size), int(y_true.size)
    epochs = {"best_epoch": float(training["best_epoch"])} if training.get("best_epoch") else {}
    search = training.get("search")
    tags = tracking.run_tags(workspace.workspace_root(), args.model, model_settings.type, settings.task.kind)
    if training.get("device"):
        tags[f"{tracking.TAG_PREFIX}device"] = training["device"]
    if timing.get("search_ran_on"):  # the results are the same wherever it ran; not a committed record
        tags[f"{tracking.TAG_PREFIX}search_ran_on"] = timing["search_ran_on"]
    artifacts = run_artifacts(images, workspace.workspace_root())
    searched, candidate_seconds = {}, []
    if search:
        searched = {"best_cv_score": search["candidates"][search["best_index"]]["mean_score"]}
        candidate_seconds = timing["search_mean_fit_seconds"]
        artifacts["search/cv_results.csv"] = search_csv(search, candidate_seconds).encode("utf-8")
    record = tracking.ModelRunRecord(
        run_name=tracking.run_name(args.model, tags),
        params=run_params(settings, args.model, n_train, n_test, features_summary, search),
        metrics={**evaluation.metrics, "fit_seconds": float(timing["fit_seconds"]), **epochs, **searched},
        history=history,
        tags=tags,
        artifacts=artifacts,
        model=DigitClassifier(full_model(featurizer, classifier), int(prepared["test_pixels"].shape[1])),
        input_example=pixel_frame(prepared["test_pixels"][:INPUT_EXAMPLE_ROWS]),
        children=search_children(args.model, search, candidate_seconds, tags) if search else [],
    )
    where = display_uri(tracking_settings.tracking_uri)
    print(f"log {args.model} to MLflow at {where}", file=sys.stderr)
    outcome = log_or_spool(record, tracking_settings, root)
    # no local paths in committed files: the local store is always <repository root>/mlflow.db
    store = "local" if tracking_settings.is_local else where
    if isinstance(outcome, tracking.LoggedRun):
        link = RunFile(
            record_id=record.record_id,
            store=store,
            run_id=outcome.run_id,
            experiment_id=outcome.experiment_id,
            model_uri=outcome.model_uri,
        )
    else:  # waiting in the outbox: the run id is known once it is sent (find it by tag mnist_lab.record_id)
        link = RunFile(record_id=record.record_id, store=store, state="pending")
    write_json(args.reports / "mlflow.json", link.as_json())


def run_artifacts(images: dict[str, bytes], workspace: Path) -> dict[str, bytes]:
    """The figures, and for a run from a dirty tree the uncommitted changes (`git/uncommitted.diff`)."""
    artifacts = {f"figures/{name}": content for name, content in images.items()}
    if tracking.git_state(workspace).dirty:
        artifacts["git/uncommitted.diff"] = tracking.uncommitted_diff(workspace).encode("utf-8")
    return artifacts


def write_reports(
    reports: Path, evaluation: Evaluation, y_true: np.ndarray, y_pred: np.ndarray, images: dict[str, bytes]
) -> None:
    """Per-model files: metrics (JSON), plot data (CSV, for `dvc plots`) and the figures."""
    write_json(reports / "metrics.json", evaluation.metrics)
    predictions = rows_csv(("actual", "predicted"), zip(y_true, y_pred, strict=True))
    write_text_atomic(reports / "predictions.csv", predictions)
    write_text_atomic(reports / "roc.csv", curve_csv(evaluation.curves["roc"], "fpr", "tpr"))
    pr_curve = curve_csv(evaluation.curves["precision_recall"], "recall", "precision")
    write_text_atomic(reports / "precision_recall.csv", pr_curve)
    (reports / "figures").mkdir(parents=True, exist_ok=True)
    for name, content in images.items():
        (reports / "figures" / name).write_bytes(content)


def parser():
    p = stage_parser(__doc__, model_argument=True)
    p.add_argument("--prepared", required=True)
    p.add_argument("--features", required=True)
    p.add_argument("--features-summary", required=True, type=Path)
    p.add_argument("--featurizer", required=True)
    p.add_argument("--model-dir", required=True, type=Path)
    p.add_argument("--history", required=True, type=Path)
    p.add_argument("--training", required=True, type=Path)
    p.add_argument("--timing", required=True, type=Path, help="the train stage's wall-clock figures (JSON)")
    p.add_argument("--reports", required=True, type=Path, help="folder for this model's reports")
    return p


if __name__ == "__main__":
    main_for("evaluate", parser(), evaluate)
