"""Result files and summaries shared by several stages: the per-epoch history CSV, CSV tables, the headline
metrics and the choice of the best model. Light on purpose (no scikit-learn, no MLflow): `select` and
`mnist-lab report` import it without paying for the heavy libraries."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

from mnist_lab.core.errors import DataError, SettingsError

HISTORY_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
HISTORY_COLUMNS = ("epoch", *HISTORY_METRICS)


def rows_csv(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A CSV table as text, with `\\n` line ends."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def history_csv(history: Sequence[dict[str, float]]) -> str:
    """Per-epoch metrics as CSV (just the header for models trained without epochs): the epoch, the four
    losses and accuracies, then any other per-epoch value the model records (the CNN's learning rate)."""
    extra = [key for key in (history[0] if history else {}) if key not in HISTORY_COLUMNS]
    return rows_csv(
        (*HISTORY_COLUMNS, *extra),
        ([int(row["epoch"]), *(row[k] for k in (*HISTORY_METRICS, *extra))] for row in history),
    )


def read_history(path: Path) -> list[dict[str, float]]:
    """The rows of a history CSV written by `history_csv`."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]
    except FileNotFoundError:
        raise DataError(f"{path} is missing: run the train stage (`dvc repro`)") from None


def headline_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics worth a column in a comparison table: all but the per-class ones."""
    return {name: value for name, value in metrics.items() if "_class_" not in name}


def best_model(per_model: dict[str, dict[str, float]], metric: str) -> tuple[str, float]:
    """The model with the highest `metric` (ties: the first in params.yaml order)."""
    for name, metrics in per_model.items():
        if metric not in metrics:
            known = ", ".join(sorted(headline_metrics(metrics)))
            raise SettingsError(
                f"params.yaml select.metric: '{metric}' is not a metric of model '{name}'; "
                f"use one of: {known}"
            )
    name = max(per_model, key=lambda model: per_model[model][metric])
    return name, per_model[name][metric]
