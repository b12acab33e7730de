"""Typed settings: `params.yaml` is loaded once into these models.

Unknown keys and wrong types are rejected with a message naming the key, so a typo in `params.yaml` (or in
`dvc exp run -S key=value`) fails before any work instead of being silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mnist_lab.core.errors import SettingsError

MODEL_NAME_PATTERN = r"^[a-z][a-z0-9_]*$"


class _Strict(BaseModel):
    # no `.inf` or `.nan`: YAML has both, every bound (`gt=0`) lets `.inf` through, and scikit-learn refuses
    # them only when the stage fits
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class DataSettings(_Strict):
    """How the train/test split is made when the data has no test set of its own."""

    test_size: float = Field(0.2, gt=0.0, lt=1.0)


class TaskSettings(_Strict):
    """`multiclass` (10 digits) or `binary`: the classic "5-detector" (is it `positive_class` or not)."""

    kind: Literal["multiclass", "binary"] = "multiclass"
    positive_class: int = Field(5, ge=0, le=9)


class FeatureSettings(_Strict):
    """Optional PCA keeping `pca_variance` of the variance, fitted on the training set only."""

    pca: bool = False
    pca_variance: float = Field(0.95, gt=0.0, le=1.0)


SEARCH_SCORINGS = (
    "accuracy",
    "balanced_accuracy",
    "f1_macro",
    "f1_weighted",
    "precision_macro",
    "recall_macro",
)


class SearchSettings(_Strict):
    """A grid search (scikit-learn `GridSearchCV`) over some of this model's own settings: every combination
    of the `grid` values is cross-validated on the training set (`cv` stratified folds, scored by `scoring`),
    and the best one is refitted on the whole training set and becomes the model."""

    grid: dict[str, list[Any]] = Field(min_length=1)
    cv: int = Field(3, ge=2)
    scoring: Literal[SEARCH_SCORINGS] = "accuracy"  # type: ignore[valid-type]

    @field_validator("grid")
    @classmethod
    def _every_setting_has_values(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            if not values:
                raise ValueError(f"'{key}' needs at least one value to try")
        return grid

    def candidates(self) -> list[dict[str, Any]]:
        """Every combination of the grid's values, in GridSearchCV's order (keys sorted)."""
        from itertools import product

        keys = sorted(self.grid)
        return [dict(zip(keys, values, strict=True)) for values in product(*(self.grid[k] for k in keys))]


class _ModelSettings(_Strict):
    if TYPE_CHECKING:  # for the type checker: each model type declares its own Literal (the discriminator)
        type: str
    search: SearchSettings | None = None

    @model_validator(mode="after")
    def _grid_names_settings_of_this_model(self) -> Self:
        if self.search is None:
            return self
        own = [name for name in type(self).model_fields if name not in ("type", "search")]
        for key in self.search.grid:
            if key not in own:
                known = ", ".join(own)
                raise ValueError(
                    f"search.grid: '{key}' is not a setting of a {self.type} model; use: {known}"
                )
        for candidate in self.search.candidates():
            try:
                self.without_search(**candidate)
            except ValidationError as exc:
                problem = exc.errors()[0]
                where = ".".join(str(p) for p in problem["loc"])
                raise ValueError(
                    f"search.grid: {where}={problem.get('input')!r} is not valid: {problem['msg']}"
                ) from None
        return self

    def without_search(self, **changes: Any) -> Self:
        """These settings with `changes` applied (validated) and no search: one candidate of the grid."""
        return type(self).model_validate({**self.model_dump(exclude={"search"}), **changes})


class SGDSettings(_ModelSettings):
    """scikit-learn `SGDClassifier`."""

    type: Literal["sgd"]
    loss: Literal["hinge", "log_loss", "modified_huber", "squared_hinge", "perceptron"] = "hinge"
    alpha: float = Field(1e-4, gt=0.0)
    max_iter: int = Field(1000, ge=1)
    tol: float | None = Field(1e-3, ge=0.0)


class RandomForestSettings(_ModelSettings):
    """scikit-learn `RandomForestClassifier`, trained on all cores (results do not depend on their count)."""

    type: Literal["random_forest"]
    n_estimators: int = Field(100, ge=1)
    max_depth: int | None = Field(None, ge=1)
    min_samples_leaf: int = Field(1, ge=1)
    # as scikit-learn reads it: a rule, a number of features (int), a fraction of them (float), all (null)
    max_features: str | int | float | None = "sqrt"

    @field_validator("max_features", mode="before")
    @classmethod
    def _max_features_scikit_learn_takes(cls, value: Any) -> Any:
        ok = (
            value is None
            or value in ("sqrt", "log2")
            or (type(value) is int and value >= 1)
            or (type(value) is float and 0.0 < value <= 1.0)
        )
        if not ok:
            raise ValueError(
                "use 'sqrt', 'log2', a whole number of features (1 or more), a fraction of them "
                "(0 < x <= 1.0) or null for all"
            )
        return value


class MLPSettings(_ModelSettings):
    """scikit-learn `MLPClassifier` trained epoch by epoch (Adam); keeps the best validation-loss epoch."""

    type: Literal["mlp"]
    hidden_layer_sizes: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [100], min_length=1)
    alpha: float = Field(1e-4, ge=0.0)
    learning_rate_init: float = Field(1e-3, gt=0.0)
    batch_size: int = Field(200, ge=1)
    max_epochs: int = Field(100, ge=1)
    validation_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    patience: int = Field(10, ge=1)


class AugmentationSettings(_Strict):
    """Random shifts and rotations of the training images (seeded; never applied at prediction time)."""

    shift: float = Field(0.1, ge=0.0, lt=1.0)  # share of the image height/width
    rotation_degrees: float = Field(10.0, ge=0.0, le=180.0)


class CNNSettings(_ModelSettings):
    """A Keras 3 convolutional network on the images (never on PCA features): one convolution + 2x2 max-pool
    block per entry of `filters`, then dropout, optional dense layers and softmax. Trained epoch by epoch;
    keeps the best validation-loss epoch and stops after `patience` epochs without improvement."""

    type: Literal["cnn"]
    filters: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [32, 64], min_length=1)
    kernel_size: int = Field(3, ge=1)
    dense_units: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list)
    dropout: float = Field(0.5, ge=0.0, lt=1.0)
    optimizer: Literal["adam", "sgd", "rmsprop"] = "adam"
    learning_rate: float = Field(1e-3, gt=0.0)
    batch_size: int = Field(128, ge=1)
    max_epochs: int = Field(100, ge=1)
    validation_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    patience: int = Field(5, ge=1)
    augmentation: AugmentationSettings | None = None


ModelSettings = Annotated[
    SGDSettings | RandomForestSettings | MLPSettings | CNNSettings, Field(discriminator="type")
]
MODEL_TYPES = ("sgd", "random_forest", "mlp", "cnn")


class SelectSettings(_Strict):
    """How the best model is picked: the highest value of `metric` on the test set."""

    metric: str = "f1_macro"


class RegistrySettings(_Strict):
    """The registered model the `register` stage adds the best model to, as alias `challenger`."""

    model_name: str = Field("mnist-lab", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def selectable_metrics(task_kind: str) -> tuple[str, ...]:
    """The headline metrics the evaluate stage computes for a task (`mnist_lab.core.metrics`): what
    `select.metric` may name."""
    shared = ("accuracy", "f1_macro", "precision_macro", "recall_macro")
    if task_kind == "binary":
        return (*shared, "precision", "recall", "f1", "roc_auc")
    return (*shared, "roc_auc_micro")


class Settings(_Strict):
    """Everything in `params.yaml`."""

    seed: int = Field(42, ge=0, le=2**32 - 1)
    data: DataSettings = DataSettings()
    task: TaskSettings = TaskSettings()
    features: FeatureSettings = FeatureSettings()
    models: dict[Annotated[str, Field(pattern=MODEL_NAME_PATTERN)], ModelSettings] = Field(min_length=1)
    select: SelectSettings = SelectSettings()
    registry: RegistrySettings = RegistrySettings()

    @field_validator("models", mode="before")
    @classmethod
    def _model_entries_are_mappings(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for name, entry in value.items():
                if not isinstance(entry, dict) or "type" not in entry:
                    raise ValueError(
                        f"model '{name}' needs a mapping with a 'type' key, one of: {', '.join(MODEL_TYPES)}"
                    )
        return value

    @model_validator(mode="after")
    def _select_metric_is_one_evaluate_computes(self) -> Settings:
        problem = _metric_problem(self.select.metric, self.task.kind)
        if problem:
            raise ValueError(problem)
        return self

    def model(self, name: str) -> ModelSettings:
        """The settings of model `name`, or a SettingsError naming the models that exist."""
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(self.models) or "none"
            raise SettingsError(
                f"unknown model '{name}': params.yaml `models` defines {known}. "
                "Add it under `models:` or use one of those names."
            ) from None


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists are kept whole (logged as their string form)."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def _metric_problem(metric: str, task_kind: str) -> str | None:
    """Why `select.metric` cannot pick a model of this task (None: it can)."""
    known = selectable_metrics(task_kind)
    # per class: the digits, or a binary task's two labels (1: the positive class, 0: every other digit)
    classes = "[01]" if task_kind == "binary" else "[0-9]"
    if metric in known or re.fullmatch(rf"(precision|recall)_class_{classes}", metric):
        return None
    per_class = (
        "precision_class_1 / recall_class_1 for the positive class, _0 for the others"
        if task_kind == "binary"
        else "precision_class_<digit> / recall_class_<digit>"
    )
    return (
        f"select.metric: '{metric}' is not a metric of a {task_kind} task; use one of: "
        f"{', '.join(known)} (or {per_class})"
    )


def _unchecked_metric_problem(raw: Mapping[str, Any]) -> str | None:
    """The select.metric check, for settings whose other keys failed (pydantic checks across keys only once
    every key passed): so one run lists every problem."""
    select, task = raw.get("select"), raw.get("task", {})
    metric = select.get("metric") if isinstance(select, dict) else None
    kind = task.get("kind", "multiclass") if isinstance(task, dict) else None
    if isinstance(metric, str) and kind in ("multiclass", "binary"):
        return _metric_problem(metric, kind)
    return None


def _describe(error: Mapping[str, Any], source: str) -> str:
    # Discriminated unions repeat the tag in the location (models.sgd.sgd.alpha): drop the tag.
    parts = [str(p) for p in error["loc"]]
    if len(parts) >= 3 and parts[0] == "models" and parts[2] in MODEL_TYPES:
        parts.pop(2)
    location = ".".join(parts) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{source}: unknown key '{location}' (check its spelling; see the defaults in the README)"
    if kind == "missing":
        return f"{source}: missing key '{location}'"
    if kind == "union_tag_invalid":
        tag = error.get("ctx", {}).get("tag")
        return f"{source}: {location}: unknown model type '{tag}'; use one of: {', '.join(MODEL_TYPES)}"
    value = error.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    message = error["msg"].removeprefix("Value error, ")
    if kind == "list_type" and not isinstance(value, dict | list):  # `filters: 32` meant [32]
        message += f", in brackets: [{value}]"
    if not parts:  # a check across keys names its key itself
        return f"{source}: {message}"
    return f"{source}: {location}: {message}{shown}"


def parse_settings(raw: Any, source: str = "params.yaml") -> Settings:
    """Validate an already-parsed mapping; raise SettingsError listing every problem."""
    if not isinstance(raw, dict):
        raise SettingsError(
            f"{source}: expected a mapping of settings at the top level, got {type(raw).__name__}"
        )
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        problems = [_describe(error, source) for error in exc.errors()]
        metric = _unchecked_metric_problem(raw)
        if metric and f"{source}: {metric}" not in problems:
            problems.append(f"{source}: {metric}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems)) from None


class _ParamsLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML as DVC reads and writes params.yaml (YAML 1.2 numbers): `1e-05`, which `dvc exp run -S` writes
    for 0.00001, is a float, not the string that YAML 1.1 (PyYAML) makes of a number without a dot. LibYAML's
    parser where PyYAML has it (10x faster: the experiments page parses one params.yaml per experiment)."""


# YAML 1.2's booleans, as DVC reads params.yaml: `pca: yes` is the text "yes" to DVC (dvc.lock records it so,
# and `compare` showed `False -> yes`), so the settings refuse it rather than read it as true (YAML 1.1)
_ParamsLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in _ParamsLoader.yaml_implicit_resolvers.items()
}
_ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_params_yaml(text: str) -> Any:
    """Parse params.yaml text as DVC does (see `_ParamsLoader`)."""
    return yaml.load(text, Loader=_ParamsLoader)


def load_settings(path: Path | str = "params.yaml") -> Settings:
    """Read and validate `params.yaml`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingsError(f"{path}: not found; run from the repository root or pass --params") from None
    except UnicodeDecodeError as exc:
        raise SettingsError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
        ) from None
    except OSError as exc:  # a folder, no permission
        raise SettingsError(
            f"{path}: cannot be read ({exc.strerror or exc}); give the params.yaml file"
        ) from None
    try:
        raw = load_params_yaml(text)
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML: {exc}") from None
    return parse_settings(raw, source=str(path))
