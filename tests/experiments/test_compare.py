"""`mnist-lab compare`'s text: what changed between two experiments, said once per change."""

from __future__ import annotations

from mnist_lab.experiments.compare import _params_lines


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
