"""`mnist-lab compare`'s text: what changed between two experiments, said once per change."""

from __future__ import annotations

from mnist_lab.experiments.compare import Comparison, _params_lines, as_text, without_cross_metric_deltas


def test_a_model_dropped_or_added_is_one_line_not_one_per_setting() -> None:
    """Dropping `mlp` listed each of its settings going to None (8 lines for the default MLP)."""
    changes = {
        "models.mlp.type": {"old": "mlp", "new": None},
        "models.mlp.alpha": {"old": 0.0001, "new": None},
        "models.mlp.hidden_layer_sizes": {"old": [128], "new": None},
        "models.wide.type": {"old": None, "new": "mlp"},
        "models.wide.alpha": {"old": None, "new": 0.01},
        "models.random_forest.max_depth": {"old": None, "new": 12},  # a null setting: not a new model
        "seed": {"old": 1, "new": 2},
    }
    assert _params_lines(changes) == [
        "  models.mlp: removed (was mlp)",
        "  models.random_forest.max_depth: None -> 12",
        "  models.wide: added (mlp)",
        "  seed: 1 -> 2",
    ]


def test_the_metrics_that_did_not_change_are_counted_not_listed() -> None:
    """Every metric was listed, the unchanged ones as `0.9806 -> 0.9806 (+0.0000)`: 23 lines to find the
    one that moved. `--all` lists them all."""
    metrics = {
        "best.model": {"old": "cnn", "new": "cnn", "diff": None},
        "models.sgd.accuracy": {"old": 0.9444, "new": 0.95, "diff": 0.0056},
        "models.mlp.accuracy": {"old": 0.9694, "new": 0.9694, "diff": 0.0},
    }
    nothing: dict = {"old": [], "new": []}
    comparison = Comparison("HEAD~1", "HEAD", {}, metrics, {"old": "a", "new": "a"}, [], nothing, nothing)
    text = as_text(comparison).splitlines()
    start = text.index("metrics changed:")
    assert text[start : start + 3] == [
        "metrics changed:",
        "  models.sgd.accuracy: 0.9444 -> 0.9500 (+0.0056)",
        "  (2 unchanged; --all lists them)",
    ]
    everything = as_text(comparison, everything=True).splitlines()
    assert "  models.mlp.accuracy: 0.9694 -> 0.9694 (+0.0000)" in everything
    assert "  best.model: cnn -> cnn" in everything and "metrics:" in everything
    same = {key: {**v, "new": v["old"], "diff": 0.0} for key, v in metrics.items()}
    comparison.metrics = same
    assert "metrics: unchanged (3; --all lists them)" in as_text(comparison).splitlines()


def test_the_best_value_of_two_different_metrics_has_no_delta() -> None:
    """`best.value: 0.9696 -> 1.0000 (+0.0304)` compared f1_macro with roc_auc."""
    metrics = {
        "best.metric": {"old": "f1_macro", "new": "roc_auc", "diff": None},
        "best.value": {"old": 0.9696, "new": 1.0, "diff": 0.0304},
        "models.sgd.accuracy": {"old": 0.9444, "new": 0.95, "diff": 0.0056},
    }
    without_cross_metric_deltas(metrics)
    assert metrics["best.value"]["diff"] is None and metrics["models.sgd.accuracy"]["diff"] == 0.0056
    nothing: dict = {"old": [], "new": []}
    comparison = Comparison("HEAD~1", "HEAD", {}, metrics, {"old": "a", "new": "a"}, [], nothing, nothing)
    text = as_text(comparison).splitlines()
    assert "  best.value: 0.9696 -> 1.0000 (not comparable: best.metric changed)" in text
    same = {"best.metric": {"old": "f1_macro", "new": "f1_macro", "diff": None},
            "best.value": {"old": 0.9, "new": 0.95, "diff": 0.05}}  # fmt: skip
    without_cross_metric_deltas(same)
    assert same["best.value"]["diff"] == 0.05


def test_a_dvc_experiment_name_on_two_baselines_is_ambiguous_not_unknown(tmp_path) -> None:
    import pytest

    from mnist_lab.experiments.compare import experiment_commit
    from mnist_lab.experiments.linking import LinkingError
    from tests.helpers import commit_all, run

    run(["git", "init", "-q", "-b", "main", str(tmp_path)], tmp_path)
    (tmp_path / "notes.txt").write_text("1\n")
    first = commit_all(tmp_path, "one")
    (tmp_path / "notes.txt").write_text("2\n")
    second = commit_all(tmp_path, "two")
    for baseline in (first, second):
        run(["git", "update-ref", f"refs/exps/{baseline[:2]}/{baseline[2:]}/tuned", baseline], tmp_path)
    with pytest.raises(LinkingError, match="'exp:tuned' is ambiguous: 2 DVC experiments are named 'tuned'"):
        experiment_commit(tmp_path, "exp:tuned")


def test_a_removed_param_reads_as_absent_not_as_null(tmp_path) -> None:
    """`~models.sgd.tol` removes the key (its default, 0.001, applies); DVC's diff says None, which reads
    as an explicit `tol: null` (for SGD: no tolerance at all)."""
    from mnist_lab.experiments.compare import _mark_absent
    from tests.helpers import commit_all, run

    run(["git", "init", "-q", "-b", "main", str(tmp_path)], tmp_path)
    params = tmp_path / "params.yaml"
    params.write_text("models:\n  sgd:\n    type: sgd\n    tol: 0.001\n")
    with_tol = commit_all(tmp_path, "tol")
    params.write_text("models:\n  sgd:\n    type: sgd\n")
    removed = commit_all(tmp_path, "removed")
    params.write_text("models:\n  sgd:\n    type: sgd\n    tol: null\n")  # the workspace: null, not absent
    changes = {"models.sgd.tol": {"old": 0.001, "new": None}}
    _mark_absent(tmp_path, changes, with_tol, removed)
    assert changes["models.sgd.tol"]["absent"] == ["new"]
    assert _params_lines(changes) == ["  models.sgd.tol: 0.001 -> (absent: its default)"]
    workspace = {"models.sgd.tol": {"old": None, "new": None}}
    _mark_absent(tmp_path, workspace, removed, None)
    assert workspace["models.sgd.tol"].get("absent") == ["old"]
    assert _params_lines(workspace) == ["  models.sgd.tol: (absent: its default) -> None"]
