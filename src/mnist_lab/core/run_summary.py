"""What an evaluated model's run and reports hold, computed from its settings and results (pure: no I/O,
no tracking): the run's flattened params, the features a CNN saw, the grid search's table and per-candidate
params and scores (one nested run each), the curves' plot data and the figures."""

from __future__ import annotations

from typing import Any

import numpy as np

from mnist_lab.core.figures import confusion_matrix_png, curve_png, history_png
from mnist_lab.core.metrics import Curve, Evaluation, thin_curve
from mnist_lab.core.results import rows_csv
from mnist_lab.core.settings import Settings, flatten


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


def search_candidates(search: dict[str, Any], fit_seconds: list[float]) -> list[tuple[dict, dict]]:
    """`(params, metrics)` of each grid-search candidate, named as MLflow's scikit-learn autologging names
    them (`mean_test_score`, `std_test_score`, `rank_test_score`, `split<k>_test_score`, `mean_fit_time`);
    `fit_seconds` holds each candidate's mean fit time (the timing JSON)."""
    candidates = []
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
        candidates.append((params, metrics))
    return candidates


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


def evaluation_figures(
    model_name: str, evaluation: Evaluation, history: list[dict[str, float]]
) -> dict[str, bytes]:
    """The run's figures (PNG) and the classification report, by file name."""
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
