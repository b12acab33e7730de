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
        return read_history_text(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} is missing: run the train stage (`dvc repro`)") from None


def read_history_text(text: str) -> list[dict[str, float]]:
    """The rows of a history CSV's text (a committed version of it, say)."""
    return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(io.StringIO(text))]


def confusion_counts(predictions_csv: str) -> dict[str, list]:
    """`{"labels", "matrix"}` from a predictions CSV (`actual,predicted` per test image): matrix[i][j] counts
    the images of class labels[i] predicted as labels[j]."""
    pairs = [(row["actual"], row["predicted"]) for row in csv.DictReader(io.StringIO(predictions_csv))]
    labels = sorted({label for pair in pairs for label in pair}, key=lambda x: (len(x), x))
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for actual, predicted in pairs:
        matrix[index[actual]][index[predicted]] += 1
    return {"labels": labels, "matrix": matrix}


LOWER_IS_BETTER = ("loss", "error", "seconds", "time", "rank", "latency", "duration", "memory")
LOWER_IS_BETTER_UNITS = ("_s", "_ms", "_us", "_ns", "_mb", "_gb", "_kb", "_bytes")  # fit_ms, peak_rss_mb


def metric_direction(name: str) -> str:
    """ "higher" or "lower": which way a metric improves, from its name (losses, errors, times, latencies,
    memory, ranks, and anything measured in seconds or bytes go down; accuracies, F1, precision, recall,
    AUC and the rest go up)."""
    last = name.rsplit(".", 1)[-1].lower()
    lower = any(word in last for word in LOWER_IS_BETTER) or last.endswith(LOWER_IS_BETTER_UNITS)
    return "lower" if lower else "higher"


def headline_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics worth a column in a comparison table: all but the per-class ones."""
    return {name: value for name, value in metrics.items() if "_class_" not in name}


def best_model(per_model: dict[str, dict[str, float]], metric: str) -> tuple[str, float]:
    """The model with the highest `metric` (ties: the first in params.yaml order)."""
    for name, metrics in per_model.items():
        if metric not in metrics:
            known = ", ".join(sorted(headline_metrics(metrics)))
            why = (
                " (no test image has that class and the model never predicts it)"
                if "_class_" in metric
                else ""
            )
            raise SettingsError(
                f"params.yaml select.metric: '{metric}' is not a metric of model '{name}'{why}; "
                f"use one of: {known}"
            )
    name = max(per_model, key=lambda model: per_model[model][metric])
    return name, per_model[name][metric]
