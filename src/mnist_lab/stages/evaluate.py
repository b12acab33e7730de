"""evaluate: test-set metrics, plots and figures for one model, and its MLflow run.

The model logged to MLflow is the featurizer and the classifier as one scikit-learn pipeline, so it takes
raw 0-255 pixels, as a user of the served model sends them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from mnist_lab import tracking
from mnist_lab.core.data import check_detector_labels, task_labels
from mnist_lab.core.experiment_files import RunFile
from mnist_lab.core.features import full_model, pixel_frame
from mnist_lab.core.figures import confusion_matrix_png, curve_png, history_png
from mnist_lab.core.metrics import Curve, Evaluation, evaluate_predictions, thin_curve
from mnist_lab.core.models import class_scores, takes_images
from mnist_lab.core.results import read_history, rows_csv
from mnist_lab.core.settings import Settings, flatten
from mnist_lab.serving.pyfunc import DigitClassifier
from mnist_lab.stages.common import StageContext, load_arrays, main_for, stage_parser
from mnist_lab.system import workspace
from mnist_lab.system.files import load_object, read_json, write_json, write_text_atomic
from mnist_lab.system.redact import display_uri
from mnist_lab.tracking import ChildRunRecord
from mnist_lab.tracking.outbox import log_or_spool

INPUT_EXAMPLE_ROWS = 3


def curve_csv(curve: Curve, x_name: str, y_name: str) -> str:
    thin = thin_curve(curve)
    return rows_csv((x_name, y_name), zip(np.round(thin.x, 6), np.round(thin.y, 6), strict=True))


def run_params(
    settings: Settings,
    model_name: str,
    n_train: int,
    n_test: int,
    features: dict,
    search: dict[str, Any] | None = None,
) -> dict:
    """Everything that shaped this model, flattened: its own settings and the shared ones. After a grid
    search (`search`: the training JSON's), `model.*` are the settings of the best candidate, the one
    trained, and `search.*` say what was searched."""
    shared = settings.model_dump(exclude={"models", "select"})
    model_settings = settings.model(model_name)
    searched: dict[str, Any] = {}
    if model_settings.search is not None and search is not None:
        best = search["candidates"][search["best_index"]]["params"]
        searched = {"search": {**model_settings.search.model_dump(), "candidates": len(search["candidates"])}}
        model_settings = model_settings.without_search(**best)
    model = {"name": model_name, **model_settings.model_dump(exclude={"search"})}
    data = {**shared.pop("data"), "n_train": n_train, "n_test": n_test}
    feature_settings = shared.pop("features")
    if "pca_skipped" in features:  # trained on the images: the PCA settings did not shape it
        feature_settings = {}
    return flatten(
        {
            **shared,
            "data": data,
            "features": {**feature_settings, **features},
            "model": model,
            **searched,
        }
    )


def image_features(rows: int, cols: int, pca_requested: bool) -> dict[str, Any]:
    """The run's `features.*` for a model trained on the images (the CNN): what it really saw. PCA never
    applies to it; `features.pca_skipped` says when params.yaml asked for it."""
    return {
        "input": f"images {rows}x{cols}",
        "n_pixels": rows * cols,
        "pca": False,
        "n_components": rows * cols,
        "explained_variance": 1.0,
        "pca_skipped": pca_requested,
    }


def search_children(
    model_name: str, search: dict[str, Any], fit_seconds: list[float], tags: dict[str, str]
) -> list[ChildRunRecord]:
    """One nested run per grid-search candidate, named and scored as MLflow's scikit-learn autologging does
    (`mean_test_score`, `std_test_score`, `rank_test_score`, `split<k>_test_score`, `mean_fit_time`);
    `fit_seconds` holds each candidate's mean fit time (the timing JSON)."""
    children = []
    for index, candidate in enumerate(search["candidates"]):
        metrics = {
            "mean_test_score": candidate["mean_score"],
            "std_test_score": candidate["std_score"],
            "rank_test_score": float(candidate["rank"]),
            "mean_fit_time": fit_seconds[index],
        }
        metrics |= {f"split{k}_test_score": score for k, score in enumerate(candidate["fold_scores"])}
        params = {f"model.{key}": value for key, value in candidate["params"].items()}
        params |= {"search.scoring": search["scoring"], "search.cv": search["cv"]}
        child_tags = {**tags, f"{tracking.TAG_PREFIX}search_candidate": str(index)}
        children.append(ChildRunRecord(f"{model_name}-candidate-{index}", params, metrics, child_tags))
    return children


def search_csv(search: dict[str, Any], fit_seconds: list[float]) -> str:
    """Every candidate's settings, scores and mean fit time, best first."""
    keys = sorted(search["candidates"][0]["params"])
    timed = [
        {**candidate, "seconds": seconds}
        for candidate, seconds in zip(search["candidates"], fit_seconds, strict=True)
    ]
    ranked = sorted(timed, key=lambda candidate: candidate["rank"])
    header = ("rank", *keys, f"mean_{search['scoring']}", f"std_{search['scoring']}", "mean_fit_seconds")
    rows = (
        (c["rank"], *(c["params"][k] for k in keys), c["mean_score"], c["std_score"], c["seconds"])
        for c in ranked
    )
    return rows_csv(header, rows)


def figures(model_name: str, evaluation: Evaluation, history: list[dict[str, float]]) -> dict[str, bytes]:
    out = {
        "confusion_matrix.png": confusion_matrix_png(
            evaluation.confusion, evaluation.labels, f"{model_name}: confusion matrix"
        ),
        "roc.png": curve_png(
            evaluation.curves["roc"],
            "false positive rate",
            "true positive rate",
            f"{model_name}: ROC",
            diagonal=True,
        ),
        "precision_recall.png": curve_png(
            evaluation.curves["precision_recall"], "recall", "precision", f"{model_name}: precision-recall"
        ),
        "classification_report.txt": evaluation.report.encode("utf-8"),
    }
    if history:
        out["training_curves.png"] = history_png(history, model_name)
    return out


def evaluate(context: StageContext) -> None:
    settings, args = context.settings, context.args
    model_settings = settings.model(args.model)
    prepared = load_arrays(args.prepared, ("test_pixels", "test_labels", "train_labels", "image_shape"))
    classifier = load_object(args.model_dir / "classifier.joblib")
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
        images = figures(args.model, evaluation, history)

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
