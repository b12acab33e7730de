import re
from pathlib import Path

import pytest
import yaml

from mnist_lab.core.errors import SettingsError
from mnist_lab.core.settings import MLPSettings, Settings, flatten, load_settings, parse_settings

MINIMAL = {"models": {"sgd": {"type": "sgd"}}}


def test_repository_params_are_valid_and_name_every_model(repo_root: Path) -> None:
    settings = load_settings(repo_root / "params.yaml")
    assert set(settings.models) == {"sgd", "random_forest", "mlp", "cnn"}
    assert settings.features.pca_variance == 0.95
    assert settings.task.positive_class == 5


def test_defaults_fill_everything_but_models() -> None:
    settings = parse_settings(MINIMAL)
    assert settings.seed == 42
    assert settings.task.kind == "multiclass"
    assert settings.select.metric == "f1_macro"


def test_repository_params_spell_out_every_default(repo_root: Path) -> None:
    """params.yaml is the documentation of the settings: every field appears in it (a model's optional
    `search` is shown in a comment there)."""
    text = (repo_root / "params.yaml").read_text()
    raw = yaml.safe_load(text)
    settings = Settings.model_validate(raw)
    spelled = {key for key in flatten(settings.model_dump()) if not key.endswith(".search")}
    assert spelled == set(flatten(raw))
    assert re.search(r"^#\s+search:$", text, re.MULTILINE)


def test_a_search_lists_its_candidates_in_grid_search_order() -> None:
    settings = parse_settings(
        {
            "models": {
                "m": {"type": "sgd", "search": {"grid": {"loss": ["hinge", "log_loss"], "alpha": [0.1, 1]}}}
            }
        }
    )
    search = settings.models["m"].search
    assert search is not None and (search.cv, search.scoring) == (3, "accuracy")
    assert search.candidates() == [
        {"alpha": 0.1, "loss": "hinge"},
        {"alpha": 0.1, "loss": "log_loss"},
        {"alpha": 1, "loss": "hinge"},
        {"alpha": 1, "loss": "log_loss"},
    ]
    best = settings.models["m"].without_search(alpha=1.0, loss="log_loss")
    assert (best.alpha, best.loss, best.search) == (1.0, "log_loss", None)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"models": {"sgd": {"type": "sgd", "alpah": 1}}}, "unknown key 'models.sgd.alpah'"),
        ({**MINIMAL, "featurs": {}}, "unknown key 'featurs'"),
        (
            {"models": {"sgd": {"type": "sgd", "alpha": "big"}}},
            "models.sgd.alpha: Input should be a valid number",
        ),
        ({**MINIMAL, "features": {"pca": "yes"}}, "features.pca: Input should be a valid boolean"),
        ({**MINIMAL, "task": {"kind": "ternary"}}, "task.kind"),
        ({**MINIMAL, "task": {"positive_class": 10}}, "task.positive_class"),
        ({**MINIMAL, "features": {"pca_variance": 1.5}}, "features.pca_variance"),
        (
            {"models": {"xgb": {"type": "xgboost"}}},
            "models.xgb: unknown model type 'xgboost'; use one of: sgd",
        ),
        ({"models": {"m": 3}}, "model 'm' needs a mapping with a 'type' key"),
        ({"models": {}}, "models"),
        ({}, "missing key 'models'"),
        ({"models": {"Bad Name": {"type": "sgd"}}}, "String should match pattern"),
        ({"models": {"m": {"type": "mlp", "hidden_layer_sizes": [0]}}}, "models.m.hidden_layer_sizes.0"),
        (
            {"models": {"m": {"type": "cnn", "filters": 32}}},
            "models.m.filters: Input should be a valid list, in brackets: [32] (got 32)",
        ),
        (  # scikit-learn's own check failed in train@random_forest, after validate
            {"models": {"m": {"type": "random_forest", "max_features": 0.0}}},
            "models.m.max_features: use 'sqrt', 'log2', a whole number of features (1 or more)",
        ),
        ({"models": {"m": {"type": "random_forest", "max_features": 1.5}}}, "models.m.max_features"),
        ({"models": {"m": {"type": "random_forest", "max_features": True}}}, "models.m.max_features"),
        (
            {"models": {"m": {"type": "sgd", "search": {"grid": {"alhpa": [0.1]}}}}},
            "models.m: search.grid: 'alhpa' is not a setting of a sgd model; use: loss, alpha, max_iter, tol",
        ),
        (
            {"models": {"m": {"type": "sgd", "search": {"grid": {"alpha": [0.1, -1.0]}}}}},
            "models.m: search.grid: alpha=-1.0 is not valid: Input should be greater than 0",
        ),
        (
            {"models": {"m": {"type": "sgd", "search": {"grid": {"alpha": []}}}}},
            "models.m.search.grid: 'alpha' needs at least one value to try",
        ),
        ({"models": {"m": {"type": "sgd", "search": {"grid": {}}}}}, "models.m.search.grid"),
        (
            {"models": {"m": {"type": "sgd", "search": {"grid": {"alpha": [0.1]}, "cv": 1}}}},
            "models.m.search.cv",
        ),
        (
            {"models": {"m": {"type": "sgd", "search": {"grid": {"alpha": [0.1]}, "scoring": "f2"}}}},
            "models.m.search.scoring: Input should be 'accuracy'",
        ),
        (
            {"models": {"m": {"type": "sgd", "search": {"grid": {"type": ["mlp"]}}}}},
            "'type' is not a setting of a sgd model",
        ),
    ],
)
def test_invalid_settings_name_the_key(raw: dict, expected: str) -> None:
    with pytest.raises(SettingsError, match="invalid settings") as info:
        parse_settings(raw)
    assert expected in str(info.value)


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(SettingsError) as info:
        parse_settings({"models": {"sgd": {"type": "sgd", "alpha": "x", "tol": "y"}}, "sed": 1})
    message = str(info.value)
    assert "models.sgd.alpha" in message and "models.sgd.tol" in message and "'sed'" in message


def test_yaml_errors_and_missing_file_are_settings_errors(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("models: [unclosed\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("- a list\n")
    with pytest.raises(SettingsError, match="expected a mapping"):
        load_settings(tmp_path / "params.yaml")
    # saved as Latin-1, or a folder given: said, not a traceback
    (tmp_path / "params.yaml").write_bytes("seed: 1  # réglé\n".encode("latin-1"))
    with pytest.raises(SettingsError, match=r"params.yaml: not UTF-8 text .* at byte 12\); save it as UTF-8"):
        load_settings(tmp_path / "params.yaml")
    with pytest.raises(
        SettingsError, match=r": cannot be read \(Is a directory\); give the params.yaml file"
    ):
        load_settings(tmp_path)


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_infinity_and_nan_are_refused_before_any_work(value: str) -> None:
    """Every bound (`alpha > 0`) let `.inf` through: scikit-learn refused it only when the stage fitted."""
    raw = {"models": {"sgd": {"type": "sgd", "alpha": yaml.safe_load(value)}}}
    with pytest.raises(SettingsError, match=r"models.sgd.alpha.*finite number"):
        parse_settings(raw)
    mlp = {"models": {"mlp": {"type": "mlp", "learning_rate_init": float("inf")}}}
    with pytest.raises(SettingsError, match=r"models.mlp.learning_rate_init.*finite number"):
        parse_settings(mlp)


def test_unknown_model_name_lists_the_known_ones() -> None:
    settings = parse_settings(MINIMAL)
    with pytest.raises(SettingsError, match="unknown model 'mlp'.*defines sgd"):
        settings.model("mlp")


def test_ints_are_accepted_for_floats_but_strings_are_not_coerced() -> None:
    settings = parse_settings({"models": {"m": {"type": "mlp", "alpha": 1}}})
    assert isinstance(settings.models["m"], MLPSettings) and settings.models["m"].alpha == 1.0
    with pytest.raises(SettingsError):
        parse_settings({"seed": "42", **MINIMAL})


def test_flatten() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {"a.b": 1, "a.c.d": [1, 2], "e": {}}


def test_numbers_are_read_as_dvc_writes_them(tmp_path: Path) -> None:
    """`dvc exp run -S models.sgd.alpha=0.00001` writes `alpha: 1e-05`, a string to YAML 1.1 (PyYAML)."""
    path = tmp_path / "params.yaml"
    path.write_text("models:\n  sgd:\n    type: sgd\n    alpha: 1e-05\n    max_iter: 1000\n")
    sgd = load_settings(path).models["sgd"]
    assert sgd.alpha == 1e-05 and sgd.max_iter == 1000
    path.write_text("models:\n  sgd:\n    type: sgd\n    loss: 1e5hinge\n")
    with pytest.raises(SettingsError, match="models.sgd.loss"):
        load_settings(path)


@pytest.mark.parametrize("kind", ["multiclass", "binary"])
def test_select_metric_is_checked_when_settings_load_against_what_evaluate_computes(kind: str) -> None:
    import numpy as np

    from mnist_lab.core.metrics import evaluate_predictions
    from mnist_lab.core.results import headline_metrics
    from mnist_lab.core.settings import selectable_metrics

    binary = kind == "binary"
    y_true = np.array([0, 1, 0, 1, 1, 0]) if binary else np.arange(10).repeat(2)
    scores = np.eye(2 if binary else 10)[y_true] * 0.8 + 0.01
    computed = evaluate_predictions(y_true, y_true, scores, list(range(scores.shape[1])), binary).metrics
    assert set(selectable_metrics(kind)) == set(headline_metrics(computed))
    task = {"kind": kind}
    for metric in (*selectable_metrics(kind), "recall_class_1"):
        parse_settings({"models": {"s": {"type": "sgd"}}, "task": task, "select": {"metric": metric}})
    wrong = "roc_auc_micro" if binary else "roc_auc"
    with pytest.raises(SettingsError) as refused:
        parse_settings({"models": {"s": {"type": "sgd"}}, "task": task, "select": {"metric": wrong}})
    assert (
        f"params.yaml: select.metric: '{wrong}' is not a metric of a {kind} task; use one of: accuracy"
        in str(refused.value)
    )
    # per class: a binary task's labels are 1 (the positive class) and 0, whatever the digit
    assert {f"precision_class_{c}" for c in ((0, 1) if binary else range(10))} <= set(computed)
    if binary:
        with pytest.raises(SettingsError) as digit:
            parse_settings(
                {"models": {"s": {"type": "sgd"}}, "task": task, "select": {"metric": "recall_class_5"}}
            )
        assert "(or precision_class_1 / recall_class_1 for the positive class, _0 for the others)" in str(
            digit.value
        )


def test_every_problem_is_listed_with_the_metric_check_across_keys() -> None:
    """pydantic runs checks across keys only once every key passed: the select.metric check is listed
    with the others, not after they are fixed."""
    raw = {
        "models": {"s": {"type": "sgd", "alpha": "big"}},
        "features": {"pca_varaince": 0.9},
        "select": {"metric": "acuracy"},
    }
    with pytest.raises(SettingsError) as refused:
        parse_settings(raw)
    problems = str(refused.value).splitlines()[1:]
    assert [problem.strip() for problem in problems] == [
        "params.yaml: unknown key 'features.pca_varaince' (check its spelling; see the defaults in the "
        "README)",
        "params.yaml: models.s.alpha: Input should be a valid number (got 'big')",
        "params.yaml: select.metric: 'acuracy' is not a metric of a multiclass task; use one of: accuracy, "
        "f1_macro, precision_macro, recall_macro, roc_auc_micro (or precision_class_<digit> / "
        "recall_class_<digit>)",
    ]
    raw["task"] = {"kind": "binary"}
    with pytest.raises(SettingsError, match="'acuracy' is not a metric of a binary task"):
        parse_settings(raw)
    with pytest.raises(SettingsError) as alone:  # the check across keys alone: listed once
        parse_settings({"models": {"s": {"type": "sgd"}}, "select": {"metric": "acuracy"}})
    assert str(alone.value).count("acuracy") == 1


def test_max_features_keeps_scikit_learns_meanings() -> None:
    """7 is a number of features (it became 7.0, which scikit-learn refuses), 0.5 a fraction, null all."""
    from mnist_lab.core.models import build_classifier

    for value in ("sqrt", 7, 0.5, 1.0, None):
        forest = parse_settings({"models": {"f": {"type": "random_forest", "max_features": value}}}).model(
            "f"
        )
        assert forest.max_features == value and type(forest.max_features) is type(value)
        assert build_classifier(forest, seed=0).get_params()["max_features"] == value


@pytest.mark.parametrize(
    "override",
    ["seed=7", "models.sgd.alpha=0.001", "models.random_forest.n_estimators=50", "models.cnn.dropout=0.25"],
)
def test_an_override_by_dvc_changes_only_its_own_line(repo_root: Path, tmp_path: Path, override: str) -> None:
    """`dvc exp run -S` writes params.yaml back with its own YAML dump: `[32, 64]` and `null` came back
    rewritten, four hunks of noise in every experiment's commit and the page's code diff. params.yaml is
    written in DVC's layout, so that an override's diff is its own line."""
    from dvc.utils.hydra import apply_overrides

    copy = tmp_path / "params.yaml"
    copy.write_text((repo_root / "params.yaml").read_text())
    apply_overrides(str(copy), [override])
    before, after = (repo_root / "params.yaml").read_text().splitlines(), copy.read_text().splitlines()
    assert len(before) == len(after)
    changed = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
    path, value = override.split("=")
    key = path.rsplit(".", 1)[-1]
    assert len(changed) == 1 and changed[0][1].strip().startswith(f"{key}: {value}"), changed


def test_yes_and_no_are_text_as_dvc_reads_them_and_refused_for_a_switch() -> None:
    """`pca: yes` trained with PCA (YAML 1.1 reads yes as true) while DVC, reading YAML 1.2, recorded the
    text "yes" in dvc.lock: `compare` showed `features.pca: False -> yes`. Refused now, naming the key."""
    from mnist_lab.core.settings import load_params_yaml

    assert load_params_yaml("a: yes\nb: no\nc: on\nd: true\ne: False\n") == {
        "a": "yes",
        "b": "no",
        "c": "on",
        "d": True,
        "e": False,
    }
    with pytest.raises(SettingsError, match=r"features.pca: Input should be a valid boolean"):
        parse_settings(load_params_yaml("features:\n  pca: yes\n"))
