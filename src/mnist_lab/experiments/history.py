"""`mnist-lab history`: one row per experiment commit, from git alone (offline, no MLflow store needed)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mnist_lab.experiments.linking import resolve_commit
from mnist_lab.experiments.table import experiment_rows


@dataclass
class ExperimentRow:
    """An experiment commit: what changed against its parent and what it measured."""

    commit: str
    date: str
    message: str
    data_version: str | None
    params_changed: dict[str, list[Any]] = field(default_factory=dict)  # key -> [parent value, value]
    best: dict[str, Any] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)
    runs: dict[str, str | None] = field(default_factory=dict)
    dirty_because: list[str] = field(default_factory=list)  # what dvc.lock disagrees with (empty: clean)
    code_only: bool = False  # changed code alone: the params, data, results and runs of the one before it


def experiment_history(root: Path, revision: str = "HEAD", limit: int | None = None) -> list[ExperimentRow]:
    """Every commit (newest first) that changed the pipeline's record (`dvc.lock` or `metrics.json`): the
    experiments, and the commits that changed code alone (`code_only`: dvc.lock's records of the code
    changed, the results and runs are the previous experiment's). A rerun whose metrics came out the same
    is an experiment: it logged runs of its own. Read as the experiments page reads them
    (`table.experiment_rows`: a fixed number of git processes however long the history)."""
    resolve_commit(root, revision)  # a clear error for a revision that does not exist
    return [
        ExperimentRow(
            commit=row["commit"],
            date=row["date"],
            message=row["message"],
            data_version=row["data"],
            params_changed=row["changed"],
            best={"model": row["model"], "metric": row["metric"], "value": row["value"]}
            if row["model"]
            else {},
            accuracy={
                key.split(".")[2]: value
                for key, value in row.items()
                if key.startswith("metrics.models.") and key.endswith(".accuracy")
            },
            runs=row["runs"],
            dirty_because=row["dirty_because"],
            code_only=row["code_only"],
        )
        for row in experiment_rows(root, revision, limit, dvc_experiments=False)
    ]


def as_json(rows: list[ExperimentRow]) -> str:
    return json.dumps([asdict(row) for row in rows], indent=2)


def as_markdown(rows: list[ExperimentRow]) -> str:
    lines = [
        "| commit | date | message | data | params changed | best | accuracy | runs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        changed = ", ".join(f"{k}: {b} → {a}" for k, (b, a) in row.params_changed.items()) or "–"
        if len(changed) > 120:
            changed = changed[:117] + "…"
        best = (
            f"{row.best.get('model')} {row.best.get('metric')}={row.best.get('value', 0):.4f}"
            if row.best
            else "–"
        )
        accuracy = ", ".join(f"{m} {v:.4f}" for m, v in row.accuracy.items())
        runs = ", ".join(f"{m} {r[:8] if r else 'pending'}" for m, r in row.runs.items()) or "–"
        data = (row.data_version or "–")[:8]
        message = (
            f"**dirty** ({', '.join(row.dirty_because)}) {row.message}" if row.dirty_because else row.message
        )
        cells = [row.commit[:8], row.date[:10], message, data, changed, best, accuracy, runs]
        lines.append("| " + " | ".join(_markdown_cell(cell) for cell in cells) + " |")
    return "\n".join(lines)


def _markdown_cell(text: str) -> str:
    """`text` as one cell of a Markdown table: a `|` escaped (it ended the cell; GitHub's tables take `\\|`
    inside code spans too), line breaks as spaces. A backslash stays: a code span shows it as it is."""
    return " ".join(text.replace("|", "\\|").split())


def as_text(rows: list[ExperimentRow]) -> str:
    out = []
    for row in rows:
        out.append(f"{row.commit[:12]}  {row.date[:19]}  {row.message}")
        out.append(
            f"    data {(row.data_version or '?')[:12]}   best "
            + (f"{row.best['model']} {row.best['metric']}={row.best['value']:.4f}" if row.best else "-")
        )
        if row.accuracy:
            out.append("    accuracy " + ", ".join(f"{m} {v:.4f}" for m, v in row.accuracy.items()))
        if row.dirty_because:
            out.append(
                "    dirty: its results are not what its own files make; dvc.lock disagrees with "
                + ", ".join(row.dirty_because)
            )
        for key, (before, after) in row.params_changed.items():
            out.append(f"    {key}: {before} -> {after}")
        if row.runs:
            out.append("    runs: " + ", ".join(f"{m}={r or 'pending'}" for m, r in row.runs.items()))
    return "\n".join(out) if out else "no experiment commits (commits that change dvc.lock or metrics.json)"
