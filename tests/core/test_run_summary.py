"""What an evaluated model's run records, computed from settings and results (no stage, no tracking)."""

import csv
import io

from mnist_lab.core.run_summary import image_features, run_params, search_candidates, search_csv
from mnist_lab.core.settings import parse_settings

SEARCH = {
    "scoring": "accuracy",
    "cv": 3,
    "best_index": 1,
    "candidates": [
        {
            "params": {"alpha": 0.001},
            "mean_score": 0.90,
            "std_score": 0.01,
            "rank": 2,
            "fold_scores": [0.9] * 3,
        },
        {
            "params": {"alpha": 0.0001},
            "mean_score": 0.93,
            "std_score": 0.02,
            "rank": 1,
            "fold_scores": [0.93] * 3,
        },
    ],
}
FEATURES = {"input": "pixels", "n_pixels": 64, "pca": True, "n_components": 30, "explained_variance": 0.95}


def _settings(search: bool = False):
    sgd = {"type": "sgd", "alpha": 0.01}
    if search:
        sgd["search"] = {"grid": {"alpha": [0.001, 0.0001]}, "cv": 3}
    return parse_settings({"models": {"sgd": sgd}, "features": {"pca": True}})


def test_run_params_flatten_the_model_and_shared_settings() -> None:
    params = run_params(_settings(), "sgd", 100, 20, FEATURES)
    assert params["model.name"] == "sgd" and params["model.alpha"] == 0.01
    assert params["data.n_train"] == 100 and params["data.n_test"] == 20
    assert params["features.pca_variance"] == 0.95 and params["features.n_components"] == 30
    assert params["seed"] == 42 and not any(key.startswith("search.") for key in params)


def test_after_a_search_the_params_are_the_best_candidates() -> None:
    params = run_params(_settings(search=True), "sgd", 100, 20, FEATURES, SEARCH)
    assert params["model.alpha"] == 0.0001  # the best candidate, the model trained
    assert params["search.candidates"] == 2 and params["search.cv"] == 3
    assert "model.search" not in params


def test_a_model_on_images_records_what_it_saw_and_no_pca_settings() -> None:
    features = image_features(28, 28, pca_requested=True)
    assert features["n_pixels"] == 784 and features["pca"] is False and features["pca_skipped"] is True
    params = run_params(_settings(), "sgd", 100, 20, features)
    assert "features.pca_variance" not in params and params["features.pca_skipped"] is True


def test_search_candidates_are_named_as_mlflow_autologging_names_them() -> None:
    candidates = search_candidates(SEARCH, [1.5, 2.5])
    params, metrics = candidates[1]
    assert params == {"model.alpha": 0.0001, "search.scoring": "accuracy", "search.cv": 3}
    assert metrics["mean_test_score"] == 0.93 and metrics["rank_test_score"] == 1.0
    assert metrics["mean_fit_time"] == 2.5 and metrics["split2_test_score"] == 0.93


def test_the_search_table_lists_the_best_candidate_first_with_its_time() -> None:
    rows = list(csv.DictReader(io.StringIO(search_csv(SEARCH, [1.5, 2.5]))))
    assert [row["rank"] for row in rows] == ["1", "2"]
    assert rows[0]["alpha"] == "0.0001" and rows[0]["mean_fit_seconds"] == "2.5"
    assert rows[0]["mean_accuracy"] == "0.93"
