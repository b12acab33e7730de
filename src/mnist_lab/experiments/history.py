"""`mnist-lab history`: one row per experiment commit, from git alone (offline, no MLflow store needed)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mnist_lab.core.settings import flatten, load_params_yaml
from mnist_lab.datasets.folder import parse_data_version
from mnist_lab.experiments.linking import parse_trailers, resolve_commit
from mnist_lab.system import commands

SEPARATOR = "\x1f"


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


def _show(root: Path, commit: str, path: str) -> str | None:
    return commands.git_output("show", f"{commit}:{path}", cwd=root)


def _params(root: Path, commit: str | None) -> dict[str, Any]:
    text = _show(root, commit, "params.yaml") if commit else None
    try:
        return flatten(load_params_yaml(text) or {}) if text else {}
    except yaml.YAMLError:
        return {}


def params_diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[Any]]:
    """Flattened keys whose value differs: key -> [before, after] (None where absent)."""
    return {
        key: [before.get(key), after.get(key)]
        for key in sorted(before.keys() | after.keys())
        if before.get(key) != after.get(key)
    }


def experiment_history(root: Path, revision: str = "HEAD", limit: int | None = None) -> list[ExperimentRow]:
    """Every commit (newest first) that changed the pipeline's results (`dvc.lock` or `metrics.json`): the
    experiments. A rerun whose metrics came out the same still records new runs in `dvc.lock`."""
    command = [
        "git",
        "log",
        f"--format=%H{SEPARATOR}%P{SEPARATOR}%aI{SEPARATOR}%s",
        revision,
        "--",
        "dvc.lock",
        "metrics.json",
    ]
    if limit:
        command.insert(2, f"-n{limit}")
    resolve_commit(root, revision)  # a clear error for a revision that does not exist
    log = commands.git(*command[1:], cwd=root, check=True).stdout
    rows = []
    for line in log.splitlines():
        commit, parents, date, subject = line.split(SEPARATOR, 3)
        parent = parents.split()[0] if parents else None
        metrics_text = _show(root, commit, "metrics.json")
        metrics = json.loads(metrics_text) if metrics_text else {}
        data_version = parse_data_version(_show(root, commit, "data.dvc"))
        body = commands.git_output("log", "-1", "--format=%B", commit, cwd=root) or ""
        rows.append(
            ExperimentRow(
                commit=commit,
                date=date,
                message=subject,
                data_version=data_version,
                params_changed=params_diff(_params(root, parent), _params(root, commit)),
                best=metrics.get("best", {}),
                accuracy={
                    name: m["accuracy"] for name, m in metrics.get("models", {}).items() if "accuracy" in m
                },
                runs={link.model: link.run_id for link in parse_trailers(body)},
            )
        )
    return rows


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
        lines.append(
            f"| {row.commit[:8]} | {row.date[:10]} | {row.message} | {data} | {changed} | {best} | "
            f"{accuracy} | {runs} |"
        )
    return "\n".join(lines)


def as_text(rows: list[ExperimentRow]) -> str:
    out = []
    for row in rows:
        out.append(f"{row.commit[:12]}  {row.date[:19]}  {row.message}")
        out.append(
            f"    data {(row.data_version or '?')[:12]}   best "
            + (f"{row.best['model']} {row.best['metric']}={row.best['value']:.4f}" if row.best else "-")
        )
        for key, (before, after) in row.params_changed.items():
            out.append(f"    {key}: {before} -> {after}")
        if row.runs:
            out.append("    runs: " + ", ".join(f"{m}={r or 'pending'}" for m, r in row.runs.items()))
    return "\n".join(out) if out else "no experiment commits (commits that change dvc.lock or metrics.json)"
