from pathlib import Path

import pytest
import yaml

from mnist_lab.errors import SettingsError
from mnist_lab.settings import MLPSettings, Settings, flatten, load_settings, parse_settings

MINIMAL = {"models": {"sgd": {"type": "sgd"}}}


def test_repository_params_are_valid_and_name_every_model(repo_root: Path) -> None:
    settings = load_settings(repo_root / "params.yaml")
    assert set(settings.models) == {"sgd", "random_forest", "mlp"}
    assert settings.features.pca_variance == 0.95
    assert settings.task.positive_class == 5


def test_defaults_fill_everything_but_models() -> None:
    settings = parse_settings(MINIMAL)
    assert settings.seed == 42
    assert settings.task.kind == "multiclass"
    assert settings.select.metric == "f1_macro"


def test_repository_params_spell_out_every_default(repo_root: Path) -> None:
    """params.yaml is the documentation of the settings: every field appears in it."""
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    settings = Settings.model_validate(raw)
    assert set(flatten(settings.model_dump())) == set(flatten(raw))


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
