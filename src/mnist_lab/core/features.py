"""Feature extraction: pixel scaling and optional PCA, fitted on the training set only.

The fitted featurizer is a scikit-learn pipeline, so the model logged to MLflow is
`featurizer + classifier` and takes raw 0-255 pixels: what a user sends to the served model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from mnist_lab.core.data import PIXEL_MAX
from mnist_lab.core.settings import FeatureSettings

if TYPE_CHECKING:
    import pandas as pd


def scale_pixels(pixels: np.ndarray) -> np.ndarray:
    """0-255 grey levels -> float32 in [0, 1]."""
    return np.asarray(pixels, dtype=np.float32) / np.float32(PIXEL_MAX)


def build_featurizer(settings: FeatureSettings, seed: int) -> Pipeline:
    """An unfitted featurizer: scaling, then PCA keeping `pca_variance` of the variance if enabled."""
    steps: list[tuple[str, object]] = [
        ("scale", FunctionTransformer(scale_pixels, feature_names_out="one-to-one"))
    ]
    if settings.pca:
        n_components = None if settings.pca_variance >= 1.0 else settings.pca_variance
        steps.append(("pca", PCA(n_components=n_components, svd_solver="full", random_state=seed)))
    return Pipeline(steps)


def fit_featurizer(train_pixels: np.ndarray, settings: FeatureSettings, seed: int) -> Pipeline:
    """Fit the featurizer on the training pixels (count, n_pixels) only."""
    return build_featurizer(settings, seed).fit(train_pixels)


def describe_featurizer(featurizer: Pipeline, n_pixels: int) -> dict[str, float | int | bool]:
    """What the featurizer does, for the experiment record: input and output sizes, variance kept."""
    summary: dict[str, float | int | bool] = {"n_pixels": n_pixels, "pca": "pca" in featurizer.named_steps}
    if "pca" in featurizer.named_steps:
        pca: PCA = featurizer.named_steps["pca"]
        summary["n_components"] = int(pca.n_components_)
        summary["explained_variance"] = float(np.sum(pca.explained_variance_ratio_))
    else:
        summary["n_components"] = n_pixels
        summary["explained_variance"] = 1.0
    return summary


def pixel_columns(n_pixels: int) -> list[str]:
    """The logged model's input columns: `pixel_0` … `pixel_<n-1>`, row by row as in the IDX image."""
    return [f"pixel_{index}" for index in range(n_pixels)]


def pixel_index(column: object) -> int | None:
    """The pixel a column named `pixel_<i>` holds (`i`, as `pixel_columns` writes it), or None for any
    other column (`pixel_count`, `pixel_05` are no pixels)."""
    name = str(column)
    digits = name.removeprefix("pixel_")
    canonical = digits.isascii() and digits.isdigit() and (digits == "0" or not digits.startswith("0"))
    return int(digits) if digits != name and canonical else None


def pixel_columns_problem(columns: Sequence[object]) -> str | None:
    """What is wrong with a table's `pixel_<i>` columns (None: nothing, or there are none): n of them
    must be pixel_0 ... pixel_<n-1>, each once; a gap or a repeat would shift every pixel after it."""
    indexes = [index for column in columns if (index := pixel_index(column)) is not None]
    if not indexes or sorted(indexes) == list(range(len(indexes))):
        return None
    seen: set[int] = set()
    twice = []
    for index in indexes:
        if index in seen:
            twice.append(f"pixel_{index}")
        seen.add(index)
    missing = [f"pixel_{i}" for i in range(len(indexes)) if i not in seen]
    unexpected = [f"pixel_{i}" for i in sorted({i for i in indexes if i >= len(indexes)})]

    def listed(names: list[str]) -> str:
        return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "") or "none"

    return (
        f"its {len(indexes)} pixel columns must be pixel_0 ... pixel_{len(indexes) - 1}, each once; missing "
        f"{listed(missing)}; beyond them {listed(unexpected)}; twice {listed(twice)}"
    )


def pixel_frame(pixels: np.ndarray) -> pd.DataFrame:
    """Flattened 0-255 images as the DataFrame the logged model takes (float64 columns `pixel_i`)."""
    import pandas as pd  # only the stages that log or serve need it

    n_pixels = pixels.shape[1]
    if n_pixels not in _PIXEL_INDEXES:
        _PIXEL_INDEXES[n_pixels] = pd.Index(pixel_columns(n_pixels))
    return pd.DataFrame(np.asarray(pixels, dtype=np.float64), columns=_PIXEL_INDEXES[n_pixels])


# pixel_columns as a pandas Index, built once per size: building 784 names into one costs more than a served
# MLP's prediction of an image (an Index cannot change, so every frame can share it). A plain dict, not
# functools.cache: the logged model pickles this module's functions by value, and a cache wrapper would be
# pickled by reference (a model that needs mnist_lab installed to load).
_PIXEL_INDEXES: dict[int, pd.Index] = {}


def full_model(featurizer: Pipeline, classifier: ClassifierMixin) -> Pipeline:
    """Featurizer and classifier as one model that takes raw pixels: what is logged, served and registered.
    A classifier that takes raw pixels itself (the CNN: `takes_raw_pixels`) is that model alone."""
    if getattr(classifier, "takes_raw_pixels", False):
        return classifier
    return Pipeline([("featurizer", featurizer), ("classifier", classifier)])
