"""params.yaml overrides checked before any work (the board's queue, `mlflow run . -e train -P set=...`),
applied as `dvc exp run -S` applies them: DVC's own Hydra code, so `+`, `++`, `~` and merged dicts mean
what they mean to DVC, and its refusals come first, not after DVC started."""

from __future__ import annotations

import pytest

from mnist_lab.core.errors import SettingsError
from mnist_lab.core.settings import load_params_yaml
from mnist_lab.experiments.project import check_overrides, override_arguments, parse_overrides
from tests.helpers import REPO_ROOT

RAW = load_params_yaml((REPO_ROOT / "params.yaml").read_text())
SEARCH = "{grid: {alpha: [0.0001, 0.001]}, cv: 3}"


def test_a_key_params_yaml_lacks_is_added_with_plus_as_dvc_asks() -> None:
    with pytest.raises(SettingsError, match=r"To append to your config use \+models.mlp.search="):
        check_overrides(RAW, "mlp", [("models.mlp.search", SEARCH)])
    check_overrides(RAW, "mlp", [("+models.mlp.search", SEARCH)])  # the search the settings then check
    with pytest.raises(SettingsError, match=r"search.grid: 'alhpa' is not a setting of a mlp model"):
        check_overrides(RAW, "mlp", [("+models.mlp.search", "{grid: {alhpa: [0.1]}}")])
    with pytest.raises(SettingsError, match=r"An item is already at 'models.mlp.alpha'"):
        check_overrides(RAW, "mlp", [("+models.mlp.alpha", "0.1")])
    check_overrides(RAW, "mlp", [("++models.mlp.alpha", "0.1")])


def test_a_typo_is_named_by_the_settings_not_taken_for_a_key_to_add() -> None:
    with pytest.raises(SettingsError, match=r"unknown key 'models.sgd.alpah'"):
        check_overrides(RAW, "sgd", [("models.sgd.alpah", "1.0")])


def test_removing_a_null_key_says_it_is_null_already() -> None:
    """Hydra cannot remove a key whose value is null ("does not exist", of a key params.yaml shows)."""
    assert RAW["models"]["cnn"]["augmentation"] is None
    with pytest.raises(SettingsError, match=r"--set ~models.cnn.augmentation: .* cannot remove a key whose "
                       r"value is null; it is null already"):  # fmt: skip
        check_overrides(RAW, "cnn", [("~models.cnn.augmentation", "")])
    with pytest.raises(SettingsError, match=r"'models.cnn.augmentaton' does not exist"):  # a typo: DVC's word
        check_overrides(RAW, "cnn", [("~models.cnn.augmentaton", "")])


def test_a_key_is_removed_with_a_tilde() -> None:
    check_overrides(RAW, "mlp", [("~models.mlp.alpha", "")])  # back to its default
    assert override_arguments([("~models.mlp.alpha", ""), ("models.sgd.alpha", "0.1")]) == [
        "~models.mlp.alpha",
        "models.sgd.alpha=0.1",
    ]
    assert parse_overrides("~models.mlp.alpha models.sgd.alpha=0.1") == [
        ("~models.mlp.alpha", ""),
        ("models.sgd.alpha", "0.1"),
    ]


def test_a_comma_inside_brackets_belongs_to_the_value() -> None:
    """`-P set=` lists: the comma between overrides splits, the one inside a list does not."""
    assert parse_overrides("models.cnn.filters=[16,32],models.cnn.dense_units=64") == [
        ("models.cnn.filters", "[16,32]"),
        ("models.cnn.dense_units", "64"),
    ]
    check_overrides(RAW, "cnn", parse_overrides("models.cnn.filters=[16,32]"))
    assert parse_overrides("a='{x: 1, y: 2}' b='p,q' c=\"[1,\" d=3") == [
        ("a", "{x: 1, y: 2}"),
        ("b", "p,q"),
        ("c", "[1,"),
        ("d", "3"),
    ]
    with pytest.raises(SettingsError, match="No closing quotation"):
        parse_overrides("a='open")


def test_a_space_inside_brackets_belongs_to_the_value() -> None:
    """`[16, 32]`, as YAML and the error messages write a list, was split at its space ("'32]' is not
    key=value")."""
    assert parse_overrides("models.cnn.filters=[16, 32] models.cnn.dense_units=[ 64 ]") == [
        ("models.cnn.filters", "[16, 32]"),
        ("models.cnn.dense_units", "[ 64 ]"),
    ]
    assert parse_overrides("models.x={a: 1, b: [1, 2]},seed=3") == [
        ("models.x", "{a: 1, b: [1, 2]}"),
        ("seed", "3"),
    ]
    check_overrides(RAW, "cnn", parse_overrides("models.cnn.filters=[16, 32]"))


def test_a_parameter_mlproject_does_not_declare_is_named(capsys) -> None:
    """`mlflow run . -e train -P bogus=1` appends `--bogus 1`: argparse said `project.py: error:
    unrecognized arguments`; now the entry point's parameters are named, before any work."""
    from mnist_lab.experiments.project import main

    assert main(["train", "--model", "mlp", "--bogus", "1"]) == 2
    assert capsys.readouterr().err.startswith(
        "error: unknown parameter (--bogus 1): the train entry point takes model and set"
    )


def test_dvc_can_write_every_list_of_params_yaml_empty_and_back() -> None:
    """`dvc exp run -S 'models.cnn.dense_units=[]'` (the default, after trying [64]) made DVC's writer put
    the next key on the list's line, after its comment (`dropout: 0.5 optimizer: adam`): params.yaml broken,
    DVC calling it corrupted, and no `-S` could go back to the classic network."""
    from dvc.utils.serialize._yaml import dumps_yaml, parse_yaml_for_update

    from mnist_lab.core.settings import flatten

    text = (REPO_ROOT / "params.yaml").read_text()
    lists = [key for key, value in flatten(RAW).items() if isinstance(value, list)]
    assert "models.cnn.filters" in lists and "models.cnn.dense_units" in lists
    for key in lists:
        written = text
        for value in ([64], [], [32, 64]):  # as successive `-S` leave the file
            data = parse_yaml_for_update(written, "params.yaml")
            *parents, name = key.split(".")
            node = data
            for part in parents:
                node = node[part]
            node[name] = value
            written = dumps_yaml(data)
            assert flatten(load_params_yaml(written))[key] == value, (key, value, written)
