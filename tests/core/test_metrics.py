import numpy as np
import pytest

from mnist_lab.core.metrics import Curve, evaluate_predictions, thin_curve
from mnist_lab.core.results import headline_metrics


def test_multiclass_metrics_by_hand() -> None:
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    scores = np.eye(3)[y_pred]
    evaluation = evaluate_predictions(y_true, y_pred, scores, [0, 1, 2], binary=False)
    m = evaluation.metrics
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision_class_1"] == pytest.approx(2 / 3) and m["recall_class_1"] == 1.0
    assert m["precision_class_0"] == pytest.approx(1 / 2) and m["recall_class_2"] == pytest.approx(1 / 2)
    assert m["f1_macro"] == pytest.approx(np.mean([0.5, 0.8, 2 / 3]))
    assert evaluation.confusion.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # micro one-vs-rest: 18 (image, class) pairs, 6 positive; the one-hot scores mark 4 of them and 2 of the
    # 12 negatives: ROC (0,0) -> (2/12, 4/6) -> (1,1), area 1/18 + 25/36 = 0.75
    assert m["roc_auc_micro"] == pytest.approx(0.75) and "roc_auc" not in m
    assert set(evaluation.curves) == {"roc", "precision_recall"}
    assert "0.6667" in evaluation.report


def test_a_class_neither_in_the_test_set_nor_predicted_is_left_out_of_the_macro_averages() -> None:
    """A test set without one of the model's classes (a user's own t10k files): the class was counted as
    precision 0 and recall 0, lowering each macro average by a share (here a third) and the model choice."""
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 1, 1, 1])
    scores = np.eye(3)[y_pred]
    m = evaluate_predictions(y_true, y_pred, scores, [0, 1, 2], binary=False).metrics
    assert m["f1_macro"] == pytest.approx(np.mean([2 / 3, 0.8]))
    assert m["precision_macro"] == pytest.approx(np.mean([1.0, 2 / 3]))
    assert m["recall_macro"] == pytest.approx(np.mean([0.5, 1.0]))
    assert "precision_class_2" not in m and "recall_class_2" not in m  # undefined, not 0
    evaluation = evaluate_predictions(y_true, y_pred, scores, [0, 1, 2], binary=False)
    assert evaluation.confusion.shape == (3, 3) and evaluation.labels == [0, 1, 2]
    from mnist_lab.core.errors import SettingsError
    from mnist_lab.core.results import best_model

    with pytest.raises(SettingsError, match="no test image has that class and the model never predicts it"):
        best_model({"sgd": m}, "precision_class_2")


def test_binary_metrics_by_hand() -> None:
    y_true = np.array([1, 1, 0, 0, 0])
    scores = np.array([0.9, 0.4, 0.6, 0.2, 0.1])
    y_pred = (scores > 0.5).astype(int)
    evaluation = evaluate_predictions(y_true, y_pred, scores, [0, 1], binary=True)
    m = evaluation.metrics
    assert (m["precision"], m["recall"]) == (0.5, 0.5)
    assert m["roc_auc"] == pytest.approx(5 / 6)
    roc = evaluation.curves["roc"]
    assert roc.x[0] == 0.0 and roc.x[-1] == 1.0 and roc.y[-1] == 1.0
    pr = evaluation.curves["precision_recall"]
    assert pr.x.shape == pr.y.shape == pr.thresholds.shape


def test_probability_columns_work_for_binary() -> None:
    y_true = np.array([1, 0, 1, 0])
    proba = np.array([[0.2, 0.8], [0.7, 0.3], [0.4, 0.6], [0.9, 0.1]])
    evaluation = evaluate_predictions(y_true, np.array([1, 0, 1, 0]), proba, [0, 1], binary=True)
    assert evaluation.metrics["roc_auc"] == 1.0


def test_thin_curve_keeps_ends_and_caps_points() -> None:
    x = np.linspace(0, 1, 10_001)
    thin = thin_curve(Curve(x, x**2, x), max_points=100)
    assert thin.x.size == 100 and thin.x[0] == 0 and thin.x[-1] == 1
    small = Curve(x[:5], x[:5], x[:5])
    assert thin_curve(small) is small


def test_headline_metrics_drop_per_class() -> None:
    assert headline_metrics({"accuracy": 1.0, "recall_class_3": 0.5}) == {"accuracy": 1.0}


@pytest.mark.parametrize(
    ("name", "direction"),
    [
        ("models.cnn.accuracy", "higher"),
        ("models.mlp.f1_macro", "higher"),
        ("models.cnn.roc_auc_micro", "higher"),
        ("val_loss", "lower"),
        ("models.sgd.fit_seconds", "lower"),
        ("models.cnn.fit_ms", "lower"),  # was "higher": a slower model was coloured better
        ("serving.latency_p50", "lower"),
        ("peak_rss_mb", "lower"),
        ("models.cnn.recall_macro", "higher"),
    ],
)
def test_which_way_a_metric_improves_is_read_from_its_name(name: str, direction: str) -> None:
    from mnist_lab.core.results import metric_direction

    assert metric_direction(name) == direction
