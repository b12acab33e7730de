"""Batch inference: images in (IDX, CSV or Parquet), predictions out (label and per-class probabilities).

Pure except for reading and writing the files it is given (and `add_predict_stage`, which adds the DVC stage
that reruns a batch prediction); the model is any fitted scikit-learn pipeline that takes raw 0-255 pixels
(what the pipeline logs and registers)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mnist_lab.core.errors import DataError
from mnist_lab.core.features import pixel_frame
from mnist_lab.core.idx import check_images, decode_idx

if TYPE_CHECKING:
    import pandas as pd

TABLE_SUFFIXES = (".csv", ".parquet")


def _is_idx(path: Path) -> bool:
    name = path.name.removesuffix(".gz")
    return name.endswith(("-ubyte", ".idx", ".idx3")) or path.suffix == ".gz"


def workspace_best_model(root: Path) -> tuple[str, Any, list[Path]]:
    """(name, featurizer + classifier, the files it came from) of the workspace's best model: the one
    best_model.json names, from its DVC-tracked files (no tracking store needed)."""
    from mnist_lab.core.experiment_files import BestModelFile
    from mnist_lab.core.features import full_model
    from mnist_lab.system.files import load_object, read_experiment_file

    best_file = root / "best_model.json"
    if not best_file.is_file():
        raise DataError(
            f"{best_file} is missing: run `dvc repro` (or `dvc pull`), or name a model with --model"
        )
    name = read_experiment_file(best_file, BestModelFile).model
    files = [root / "outputs" / "featurizer.joblib", root / "models" / name / "classifier.joblib"]
    featurizer, classifier = (load_object(path) for path in files)  # DataError naming a missing one
    return name, full_model(featurizer, classifier), files


def read_images(path: Path | str) -> np.ndarray:
    """Flattened images (count, n_pixels) as float64 0-255 grey levels, from an IDX images file (gzipped or
    not), or a CSV/Parquet table with one row per image: columns `pixel_0`... or, for CSV, plain numbers."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; give an IDX images file, a .csv or a .parquet table")
    if _is_idx(path):
        images = check_images(decode_idx(path.read_bytes(), str(path)), str(path))
        return images.reshape(len(images), -1).astype(np.float64)
    if path.suffix not in TABLE_SUFFIXES:
        raise DataError(
            f"{path}: unknown format; give an IDX images file (*-idx3-ubyte[.gz]), a .csv or a .parquet table"
        )
    import pandas as pd

    try:
        if path.suffix == ".parquet":
            table = pd.read_parquet(path)
        else:
            table = pd.read_csv(path)
            if not any(str(c).startswith("pixel_") for c in table.columns):  # no header: numbers only
                table = pd.read_csv(path, header=None)
    except Exception as exc:  # pandas and pyarrow raise many kinds
        raise DataError(f"{path}: cannot read it as {path.suffix[1:]}: {exc}") from None
    return table_pixels(table, str(path))


def table_pixels(table: pd.DataFrame, source: str) -> np.ndarray:
    """The pixel columns of a table (`pixel_<i>` if it has them, else all its columns), checked."""
    pixel_names = [c for c in table.columns if str(c).startswith("pixel_")]
    if pixel_names:
        table = table[sorted(pixel_names, key=lambda c: int(str(c).removeprefix("pixel_")))]
    if table.empty:
        raise DataError(f"{source}: no images (an empty table)")
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    non_numeric = [str(c) for c in table.columns if not is_numeric_dtype(table[c]) or is_bool_dtype(table[c])]
    if non_numeric:
        raise DataError(f"{source}: pixel values must be numbers 0-255; {first_bad_cell(table)}")
    pixels = table.to_numpy(dtype=np.float64)
    check_pixel_values(pixels, source)
    return pixels


def request_pixels(request: Any, n_pixels: int, source: str = "request") -> np.ndarray:
    """The images of a served request as float64 (count, n_pixels), or a DataError saying what is wrong.
    Accepts what MLflow's scoring server hands a model without a signature: a DataFrame (`dataframe_split`,
    `dataframe_records`, CSV; columns `pixel_<i>`, or none at all), a dict of columns (`inputs`), an array
    or nested lists (`instances`, `inputs`), one image alone included."""
    import pandas as pd

    names = [f"pixel_{i}" for i in range(n_pixels)]
    if isinstance(request, dict):
        try:
            request = pd.DataFrame({key: np.ravel(value) for key, value in request.items()})
        except ValueError as exc:
            raise DataError(f"{source}: malformed columns: {exc}") from None
    if isinstance(request, pd.DataFrame):
        columns = list(request.columns)
        if columns != names:
            if len(columns) == n_pixels and all(isinstance(c, int | np.integer) for c in columns):
                request = request.set_axis(names, axis=1)  # dataframe_split sent without "columns"
            else:
                missing = [c for c in names if c not in columns]
                extra = [str(c) for c in columns if c not in names]
                if missing or extra:
                    raise DataError(
                        f"{source}: expected the {n_pixels} columns pixel_0 ... pixel_{n_pixels - 1}; "
                        f"missing {missing[:5] or 'none'}, unexpected {extra[:5] or 'none'}"
                    )
                request = request[names]
    if isinstance(request, list) and request and all(isinstance(row, list | tuple) for row in request):
        lengths = {len(row) for row in request}
        if len(lengths) > 1:  # ragged: say which row, where numpy would say "inhomogeneous shape"
            short = next(i for i, row in enumerate(request) if len(row) != n_pixels)
            raise DataError(
                f"{source}: each image needs {n_pixels} pixel values; row {short} has {len(request[short])}"
            )
    try:
        pixels = np.asarray(request, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        try:
            where = first_bad_cell(pd.DataFrame(request))
        except (TypeError, ValueError):  # not even a table: ragged rows
            where = f"({exc})"
        raise DataError(f"{source}: pixel values must be numbers 0-255; {where}") from None
    if pixels.ndim == 1 and pixels.size == n_pixels:
        pixels = pixels.reshape(1, n_pixels)
    if pixels.ndim != 2 or pixels.shape[1] != n_pixels:
        raise DataError(
            f"{source}: expected images of {n_pixels} pixels, shape (count, {n_pixels}); "
            f"got shape {pixels.shape}"
        )
    if pixels.shape[0] == 0:
        raise DataError(f"{source}: no images")
    check_pixel_values(pixels, source)
    return pixels


def first_bad_cell(table: pd.DataFrame) -> str:
    """Where the first value that is not a number is: "row 3, column pixel_7 is 'x'" (rows from 0)."""
    import pandas as pd
    from pandas.api.types import is_bool_dtype

    for column in table.columns:
        values = table[column]
        if is_bool_dtype(values):
            bad = values.notna().to_numpy()
        else:
            bad = (pd.to_numeric(values, errors="coerce").isna() & values.notna()).to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            return f"row {row}, column {column} is {values.iloc[row]!r}"
    return "a value is not a number"


def check_pixel_values(pixels: np.ndarray, source: str) -> None:
    bad = ~np.isfinite(pixels) | (pixels < 0) | (pixels > 255)
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"{source}: pixel values must be 0-255 grey levels; "
            f"row {row}, pixel {column} is {pixels[row, column]}"
        )


def expected_pixels(model: Any) -> int | None:
    """How many pixels per image `model` takes (None if it does not say)."""
    count = getattr(model, "n_features_in_", None)
    return int(count) if count is not None else None


def predict_frame(model: Any, pixels: np.ndarray, source: str = "input") -> pd.DataFrame:
    """`label` and, per class c, `probability_<c>` (models with `predict_proba`) or `score_<c>` (decision
    values, for models without probabilities such as a hinge-loss SGD)."""
    import pandas as pd

    expected = expected_pixels(model)
    if expected is not None and pixels.shape[1] != expected:
        raise DataError(
            f"{source}: images have {pixels.shape[1]} pixels, the model takes {expected}: "
            "use images of the size it was trained on"
        )
    frame = pixel_frame(pixels)
    classes = [int(c) for c in model.classes_]
    out = pd.DataFrame({"label": model.predict(frame).astype(np.int64)})
    if hasattr(model, "predict_proba"):
        values, prefix = model.predict_proba(frame), "probability"
    else:
        values, prefix = model.decision_function(frame), "score"
        if values.ndim == 1:  # binary: the positive class's score
            values = np.column_stack([-values, values])
    for index, label in enumerate(classes):
        out[f"{prefix}_{label}"] = values[:, index]
    return out


def write_predictions(predictions: pd.DataFrame, path: Path | str) -> None:
    """Write atomically as CSV or Parquet (by the suffix)."""
    from mnist_lab.system.files import replace_via_temp

    path = Path(path)
    if path.suffix not in TABLE_SUFFIXES:
        raise DataError(f"{path}: write predictions to a .csv or a .parquet file")
    if path.suffix == ".parquet":
        replace_via_temp(path, lambda temporary: predictions.to_parquet(temporary, index=False), ".parquet")
    else:
        replace_via_temp(path, lambda temporary: predictions.to_csv(temporary, index=False), ".csv")


def add_predict_stage(root: Path, images: Path | str, output: Path | str) -> str:
    """Add (or replace) a `predict` stage in dvc.yaml that reruns `mnist-lab predict` with the workspace's
    best model when the images or that model change; returns the stage's command."""
    import os

    from mnist_lab.core.errors import MnistLabError
    from mnist_lab.system.commands import dvc

    images, output = (Path(os.path.relpath(Path(p).resolve(), root)) for p in (images, output))
    if not (root / images).is_file():
        raise DataError(f"{images}: no such file")
    deps = [str(images), "best_model.json", "outputs/featurizer.joblib", "models"]
    command = f"python -m mnist_lab.cli predict {images} -o {output}"
    added = dvc("stage", "add", "--force", "--name", "predict", *(f"--deps={d}" for d in deps),
                f"--outs={output}", command, cwd=root)  # fmt: skip
    if added.returncode != 0:
        raise MnistLabError(f"`dvc stage add` failed: {added.stderr.strip() or added.stdout.strip()}")
    return command
