"""The results table printed after a run: one row per model, from the committed experiment files."""

from __future__ import annotations

from pathlib import Path

from mnist_lab.errors import MnistLabError
from mnist_lab.files import read_json

COLUMNS = ("accuracy", "f1_macro", "precision_macro", "recall_macro", "roc_auc", "roc_auc_micro")


def results_table(root: Path) -> str:
    """A plain-text table of `metrics.json`, marking the best model, with each model's MLflow run id."""
    metrics_file = root / "metrics.json"
    if not metrics_file.is_file():
        raise MnistLabError(f"{metrics_file} is missing: run the pipeline first (`make run` or `dvc repro`)")
    summary = read_json(metrics_file)
    models: dict[str, dict[str, float]] = summary["models"]
    columns = [c for c in COLUMNS if any(c in m for m in models.values())]
    header = ["model", *columns, "mlflow run"]
    rows = []
    for name, metrics in models.items():
        run_file = root / "reports" / name / "mlflow.json"
        run_id = read_json(run_file).get("run_id", "") if run_file.is_file() else ""
        best = " *" if name == summary["best"]["model"] else ""
        rows.append([name + best, *(f"{metrics[c]:.4f}" if c in metrics else "-" for c in columns), run_id])
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    best = summary["best"]
    lines.append(f"* best by {best['metric']}: {best['model']} ({best['value']:.4f})")
    return "\n".join(lines)
