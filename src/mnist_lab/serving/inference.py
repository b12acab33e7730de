"""Predicting images: checked pixels in (a served request, a table's rows), predictions out (label and
per-class probabilities or scores). The model is any fitted scikit-learn pipeline that takes raw 0-255
pixels (what the pipeline logs and registers). Files, a chunk at a time, are serving/batch.py's;
`workspace_best_model` reads the workspace's model and `add_predict_stage` adds the DVC stage that reruns a
batch prediction."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mnist_lab.core.errors import DataError
from mnist_lab.core.features import pixel_columns, pixel_columns_problem, pixel_frame, pixel_index

if TYPE_CHECKING:
    import pandas as pd


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


def table_pixels(table: pd.DataFrame, source: str, first_row: int = 0) -> np.ndarray:
    """The pixel columns of a table (`pixel_<i>` if it has them, else all its columns), checked; errors
    count rows from `first_row` (the table's first row's number in its file)."""
    if problem := pixel_columns_problem(list(table.columns)):
        raise DataError(f"{source}: {problem}")
    pixel_names = [c for c in table.columns if pixel_index(c) is not None]
    if pixel_names:
        table = table[sorted(pixel_names, key=lambda c: pixel_index(c) or 0)]
    if table.empty:
        raise DataError(f"{source}: no images (an empty table)")
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    non_numeric = [c for c in table.columns if not is_numeric_dtype(table[c]) or is_bool_dtype(table[c])]
    if non_numeric:
        table = table.copy()
        for column in non_numeric:
            table[column] = _text_as_numbers(table[column], source, first_row)
    pixels = table.to_numpy(dtype=np.float64)
    check_pixel_values(pixels, source, first_row)
    return pixels


def request_pixels(request: Any, n_pixels: int, source: str = "request") -> np.ndarray:
    """The images of a served request as float64 (count, n_pixels), or a DataError saying what is wrong.
    Accepts what MLflow's scoring server hands a model without a signature: a DataFrame (`dataframe_split`,
    `dataframe_records`, CSV; columns `pixel_<i>`, or none at all), a dict of columns (`inputs`), an array
    or nested lists (`instances`, `inputs`), one image alone included."""
    import pandas as pd

    if isinstance(request, dict):
        try:
            request = pd.DataFrame({key: np.ravel(value) for key, value in request.items()})
        except ValueError as exc:
            raise DataError(f"{source}: malformed columns: {exc}") from None
    if isinstance(request, pd.DataFrame):
        names = pixel_columns(n_pixels)
        columns = list(request.columns)
        if columns != names:
            # dataframe_split sent without "columns" (0, 1, ...), or a CSV whose header is pandas' column
            # numbers for unnamed columns ("0", "1", ...): in order, the pixels
            if len(columns) == n_pixels and [str(c) for c in columns] == [str(i) for i in range(n_pixels)]:
                request = request.set_axis(names, axis=1)
            else:
                missing = [c for c in names if c not in columns]
                extra = [str(c) for c in columns if c not in names]
                if missing or extra:
                    raise DataError(
                        f"{source}: expected the {n_pixels} columns pixel_0 ... pixel_{n_pixels - 1}; "
                        f"missing {_some(missing)}, unexpected {_some(extra)}"
                    )
                request = request[names]
    if isinstance(request, pd.DataFrame) and (
        flags := [c for c, t in request.dtypes.items() if t.kind == "b"]
    ):
        raise DataError(f"{source}: pixel values must be numbers 0-255; column {flags[0]} holds true/false")
    if isinstance(request, np.ndarray) and request.dtype.kind == "b":  # numpy would make them 1 and 0
        raise DataError(f"{source}: pixel values must be numbers 0-255, not true/false")
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
        except (TypeError, ValueError):  # not even a table: ragged rows, or one value alone
            if np.ndim(request) == 0:  # `{"instances": "abc"}`: numpy would quote it as np.str_('abc')
                item = request.item() if isinstance(request, np.ndarray) else request
                where = f"got {item!r} alone, not images"
            else:
                where = f"({exc})"
        raise DataError(f"{source}: pixel values must be numbers 0-255; {where}") from None
    side = round(n_pixels**0.5)
    square = (side, side) if side * side == n_pixels else None
    if pixels.ndim == 1 and pixels.size == n_pixels:
        pixels = pixels.reshape(1, n_pixels)
    elif square and pixels.shape[-2:] == square and pixels.ndim in (2, 3):  # images as rows x cols
        pixels = pixels.reshape(-1, n_pixels)
    if pixels.ndim != 2 or pixels.shape[1] != n_pixels:
        shapes = f"(count, {n_pixels})" + (f" or (count, {side}, {side})" if square else "")
        raise DataError(
            f"{source}: expected images of {n_pixels} pixels, shape {shapes}; got shape {pixels.shape}"
        )
    if pixels.shape[0] == 0:
        raise DataError(f"{source}: no images")
    check_pixel_values(pixels, source)
    return pixels


def _some(names: list[str], shown: int = 5) -> str:
    """The first `shown` of `names`, and how many more there are."""
    if not names:
        return "none"
    return f"{names[:shown]}" + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _text_as_numbers(values: pd.Series, source: str, first_row: int) -> pd.Series:
    """A column of numbers written as text ("5", a Parquet column of strings) as numbers, as `serve` reads
    them (`predict` refused them naming no cell: "a value is not a number"); a DataError naming the cell
    for a word or a true/false, and the column for a kind of value that is no number (dates, durations)."""
    import pandas as pd
    from pandas.api.types import infer_dtype, is_bool_dtype, is_string_dtype

    def refused(where: str) -> DataError:
        return DataError(f"{source}: pixel values must be numbers 0-255; {where}")

    if is_bool_dtype(values):
        raise refused(first_bad_cell(values.to_frame(), first_row))
    if not (
        values.dtype == object or is_string_dtype(values) or isinstance(values.dtype, pd.CategoricalDtype)
    ):
        raise refused(f"column {values.name} holds {values.dtype} values")
    if infer_dtype(values, skipna=True) in ("mixed", "mixed-integer", "boolean"):  # true/false among them?
        flags = values.map(lambda v: isinstance(v, (bool, np.bool_))).to_numpy(dtype=bool)
        if flags.any():
            raise refused(_cell(values, int(np.flatnonzero(flags)[0]), first_row))
    try:
        return values.astype(np.float64)  # each value parsed once, in C
    except (TypeError, ValueError):  # a word: found (slowly) to be named
        bad = (pd.to_numeric(values.astype(object), errors="coerce").isna() & values.notna()).to_numpy()
        if not bad.any():  # (not expected: what astype refuses, to_numeric does too)
            raise refused(f"column {values.name} holds values that are not numbers") from None
        raise refused(_cell(values, int(np.flatnonzero(bad)[0]), first_row)) from None


def _cell(values: pd.Series, row: int, first_row: int) -> str:
    """ "row 3, column pixel_7 is 'x'": the value at position `row` of `values` (rows from `first_row`)."""
    value = values.iloc[row]
    shown = repr(str(value)) if isinstance(value, str) else repr(value)  # 'x', not np.str_('x')
    return f"row {first_row + row}, column {values.name} is {shown}"


def first_bad_cell(table: pd.DataFrame, first_row: int = 0) -> str:
    """Where the first value that is not a number is: "row 3, column pixel_7 is 'x'" (rows from
    `first_row`)."""
    return bad_cell(table, first_row) or "a value is not a number"


def bad_cell(table: pd.DataFrame, first_row: int = 0) -> str | None:
    """As first_bad_cell; None when every value reads as a number (numbers written as text too)."""
    import pandas as pd
    from pandas.api.types import is_bool_dtype

    for column in table.columns:
        values = table[column]
        if is_bool_dtype(values):
            bad = values.notna().to_numpy()
        else:
            bad = pd.to_numeric(values, errors="coerce").isna() & values.notna()
            if values.dtype == object:  # true/false among other values: numbers to numpy, not to us
                bad |= values.map(lambda v: isinstance(v, (bool, np.bool_))).astype(bool)
            bad = bad.to_numpy()
        if bad.any():
            return _cell(values, int(np.flatnonzero(bad)[0]), first_row)
    return None


def check_pixel_values(pixels: np.ndarray, source: str, first_row: int = 0) -> None:
    if pixels.size == 0 or (pixels.min() >= 0 and pixels.max() <= 255):  # NaN fails both: looked at below
        return  # two passes over the pixels; the five below cost 4x that (1,000 MNIST images: 1.8 ms)
    bad = ~np.isfinite(pixels) | (pixels < 0) | (pixels > 255)
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        value = pixels[row, column]
        # a JSON null, an empty CSV field and NaN all arrive as NaN
        shown = "missing (null, an empty field or NaN)" if np.isnan(value) else str(value)
        raise DataError(
            f"{source}: pixel values must be 0-255 grey levels; "
            f"row {first_row + row}, pixel {column} is {shown}"
        )


def expected_pixels(model: Any) -> int | None:
    """How many pixels per image `model` takes (None if it does not say)."""
    count = getattr(model, "n_features_in_", None)
    return int(count) if count is not None else None


# Classifiers whose `predict` is by definition the class of highest `predict_proba` (ties to the first),
# with the same arithmetic: a forest's averaged tree votes; an MLP's output layer (binary: p > 0.5, which is
# argmax of [1 - p, p], ties included, since 1 - p is exact for p >= 0.5). Not SGD: its `predict` takes
# the argmax of decision scores, which two saturated probabilities can no longer tell apart.
_LABEL_IS_MOST_PROBABLE = {
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.neural_network._multilayer_perceptron.MLPClassifier",
}


def labels_are_most_probable(model: Any) -> bool:
    """Whether `model`'s labels are the argmax of its probabilities (see _LABEL_IS_MOST_PROBABLE; the CNN's
    classifier says so itself), so that one `predict_proba` gives both."""
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    kind = type(final)
    return bool(getattr(final, "label_is_most_probable", False)) or (
        f"{kind.__module__}.{kind.__qualname__}" in _LABEL_IS_MOST_PROBABLE
    )


def scale_warning(brightest: float, source: str) -> str | None:
    """A warning when the brightest pixel of a whole input says it is not on the 0-255 scale the models
    take (they answer anyway, and wrongly): images scaled to [0, 1], or scikit-learn's `load_digits()`
    (0-16); None when it may well be 0-255."""
    if brightest <= 1.0:
        return (
            f"{source}: every pixel value is 1 or less: the models take grey levels 0-255, so images "
            "scaled to [0, 1] get meaningless predictions; multiply them by 255"
        )
    if brightest <= 16.0:
        return (
            f"{source}: every pixel value is 16 or less, the scale of scikit-learn's load_digits() (0-16): "
            "the models take grey levels 0-255; multiply such images by 255/16"
        )
    return None


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
    if hasattr(model, "predict_proba"):
        values, prefix = model.predict_proba(frame), "probability"
        if labels_are_most_probable(model):  # one pass of the model instead of two
            labels = np.asarray(model.classes_)[np.argmax(values, axis=1)]
        else:
            labels = model.predict(frame)
    else:
        labels = model.predict(frame)
        values, prefix = model.decision_function(frame), "score"
        if values.ndim == 1:  # binary: the positive class's score
            values = np.column_stack([-values, values])
    columns = {f"{prefix}_{label}": values[:, index] for index, label in enumerate(classes)}
    return pd.DataFrame({"label": labels.astype(np.int64), **columns})  # one frame: not 10 inserts


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def add_predict_stage(
    root: Path, images: Path | str, output: Path | str, keep: Sequence[str] = ()
) -> tuple[str, str | None]:
    """Add (or replace) a `predict` stage in dvc.yaml that reruns `mnist-lab predict` with the workspace's
    best model when the images, that model or this package's code change: (the stage's command, the
    command of the `predict` stage it replaced or None). The stage is written as text at the end of
    `stages:` (its last key), the rest of dvc.yaml left byte for byte (`dvc stage add` reformats it all)."""
    import json
    import os
    import shlex

    import yaml

    from mnist_lab.core.errors import MnistLabError
    from mnist_lab.system.files import write_text_atomic

    relative = [Path(os.path.relpath(Path(p).resolve(), root.resolve())) for p in (images, output)]
    for given, path in zip((images, output), relative, strict=True):
        if path.parts[:1] == ("..",):
            raise DataError(
                f"{given}: outside the repository, so a clone could not rerun the stage; copy it in (and "
                "`dvc add` the images), or predict without --as-stage"
            )
    images, output = relative
    if not (root / images).is_file():
        raise DataError(f"{images}: no such file")
    command = f"python -m mnist_lab.cli predict {shlex.quote(str(images))} -o {shlex.quote(str(output))}"
    command += "".join(f" --keep {shlex.quote(column)}" for column in keep)
    deps = [str(images), "best_model.json", "outputs/featurizer.joblib", "models", "src/mnist_lab"]
    path = root / "dvc.yaml"
    text = path.read_text(encoding="utf-8")

    def by_hand(why: str) -> MnistLabError:
        stage = {"predict": {"cmd": command, "deps": deps, "outs": [str(output)]}}
        return MnistLabError(
            f"{path}: {why}; add the stage by hand:\n{yaml.safe_dump(stage, sort_keys=False)}"
        )

    try:
        pipeline = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise by_hand(f"not YAML DVC can read ({str(exc).splitlines()[0]})") from None
    if not isinstance(pipeline, dict) or list(pipeline)[-1:] != ["stages"]:
        raise by_hand("`stages:` is not its last section")
    stages = pipeline["stages"] or {}
    replaced = (stages.get("predict") or {}).get("cmd") if isinstance(stages, dict) else None
    lines = text.splitlines(keepends=True)
    top = next(i for i, line in enumerate(lines) if line.startswith("stages:"))
    below = [i for i in range(top + 1, len(lines)) if lines[i].strip()]
    keys = [i for i in below if not lines[i].lstrip().startswith("#")]
    indent = _indent(lines[keys[0]]) if keys else 2
    if "predict" in stages:  # the stage's block: from its key to the next line indented as little, or the end
        begin = next((i for i in keys if lines[i].startswith(" " * indent + "predict:")), None)
        if begin is None:
            raise by_hand("its `predict` stage is not where this command can replace it")
        # a comment at the stages' indent belongs to the stage after it
        finish = next((i for i in below if i > begin and _indent(lines[i]) <= indent), len(lines))
        lines[begin:finish] = []
    pad, body = " " * indent, "".join(lines)
    stage = "".join(
        [
            f"{pad}predict:  # added by `mnist-lab predict --as-stage`\n",
            f"{pad}  cmd: {json.dumps(command)}\n",
            f"{pad}  deps:\n",
            *(f"{pad}    - {json.dumps(dep)}\n" for dep in deps),
            f"{pad}  outs:\n",
            f"{pad}    - {json.dumps(str(output))}\n",
        ]
    )
    updated = body + ("" if body.endswith("\n") else "\n") + stage
    try:
        written = (yaml.safe_load(updated)["stages"] or {}).get("predict")
    except yaml.YAMLError:
        written = None
    if written != {"cmd": command, "deps": deps, "outs": [str(output)]}:  # never write what DVC would misread
        raise by_hand("the stage could not be added as text")
    write_text_atomic(path, updated)
    return command, replaced
