"""The results table printed after a run: one row per model, from the committed experiment files."""

from __future__ import annotations

from pathlib import Path

from mnist_lab.core.errors import MnistLabError
from mnist_lab.core.experiment_files import MetricsFile, RunFile
from mnist_lab.system.files import read_experiment_file
from mnist_lab.system.redact import display_uri

COLUMNS = ("accuracy", "f1_macro", "precision_macro", "recall_macro", "roc_auc", "roc_auc_micro")


def results_table(root: Path) -> str:
    """A plain-text table of `metrics.json`, marking the best model, with each model's MLflow run id."""
    metrics_file = root / "metrics.json"
    if not metrics_file.is_file():
        raise MnistLabError(f"{metrics_file} is missing: run the pipeline first (`make run` or `dvc repro`)")
    summary = read_experiment_file(metrics_file, MetricsFile)
    models = summary.models
    columns = [c for c in COLUMNS if any(c in m for m in models.values())]
    header = ["model", *columns, "mlflow run"]
    rows = []
    run_ids, stores = _run_ids(root, list(models))
    for name, metrics in models.items():
        run_id = run_ids.get(name, "")
        mark = " *" if name == summary.best.model else ""
        rows.append([name + mark, *(f"{metrics[c]:.4f}" if c in metrics else "-" for c in columns), run_id])
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    waiting_for = sorted({stores[name] for name, run_id in run_ids.items() if run_id.startswith("pending")})
    if waiting_for:
        here = _store_named_now(root)
        for store in waiting_for:
            if store == here:
                lines.append(
                    "pending: the run waits in the outbox (.mnist-lab/outbox/); `mnist-lab sync` sends it"
                )
            else:
                lines.append(f"pending: the run waits in the outbox for {store}, {_sync_elsewhere(here)}")
    best = summary.best
    lines.append(f"* best by {best.metric}: {best.model} ({best.value:.4f})")
    return "\n".join(lines)


def run_stores(root: Path) -> list[str]:
    """Where each model's run is, as `reports/<model>/mlflow.json` recorded it when logged (the store then,
    which need not be the one .env names now): one line per store, how to open it, and the runs still
    waiting in the outbox for theirs."""
    from mnist_lab.experiments.linking import run_id_in_trailers
    from mnist_lab.tracking.outbox import sent_runs

    here = _store_named_now(root)
    sent = sent_runs(root)  # a run that waited and was sent since (from this clone) is a run in its store
    by_store: dict[tuple[str, bool], list[str]] = {}
    for run_file in sorted((root / "reports").glob("*/mlflow.json")):
        record = read_experiment_file(run_file, RunFile)
        pending = (
            record.state == "pending"
            and record.record_id not in sent
            and run_id_in_trailers(root, record.record_id) is None  # sent from another clone, committed
        )
        by_store.setdefault((record.store, pending), []).append(run_file.parent.name)
    if not by_store:
        return ["No model has an MLflow run yet: run the pipeline (`make run` or `dvc repro`)"]
    lines = []
    for (store, pending), models in sorted(by_store.items()):
        named = ", ".join(models)
        now = "" if store == here else " (not the store .env names now)"
        if pending and store != here:
            lines.append(f"{named}: waiting in the outbox for {store}, {_sync_elsewhere(here)}")
        elif pending:
            lines.append(f"{named}: waiting in the outbox for {store}: `mnist-lab sync` sends them")
        elif store == "local":
            lines.append(f"{named}: MLflow runs in the local store{now}: `make ui` opens them at "
                         "http://127.0.0.1:5000")  # fmt: skip
        elif store.startswith(("http://", "https://")):
            lines.append(f"{named}: MLflow runs on {store}{now} (open it in a browser)")
        else:  # a database: no page to open
            lines.append(f"{named}: MLflow runs in {store}{now}")
    return lines


def _store_named_now(root: Path) -> str:
    """The tracking store .env (or the environment) names now, as `reports/<model>/mlflow.json` names one."""
    from mnist_lab.tracking import TrackingSettings

    current = TrackingSettings.from_environment(root)
    return "local" if current.is_local else display_uri(current.tracking_uri)


def _sync_elsewhere(here: str) -> str:
    """What to do about runs waiting for a store .env no longer names (`send_pending` leaves them)."""
    return (
        "not the store .env names now: `mnist-lab sync` sends them once MLFLOW_TRACKING_URI names it again, "
        f"or `mnist-lab sync --to-this-server` sends them to {here}"
    )


def _run_ids(root: Path, models: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """(each model's MLflow run id, the store it was logged to or waits for) from
    `reports/<model>/mlflow.json`; for a run that waited in the outbox and has been sent since, the id it got
    (found by its record id); "pending (record ...)" while it waits."""
    from mnist_lab.experiments.linking import RunLink, resolve_sent_runs

    links, stores = [], {}
    for name in models:
        run_file = root / "reports" / name / "mlflow.json"
        if run_file.is_file():
            record = read_experiment_file(run_file, RunFile)
            links.append(RunLink(name, record.run_id, record.record_id))
            stores[name] = record.store
    if any(not link.run_id and link.record_id for link in links):
        links = resolve_sent_runs(root, links)
    run_ids = {link.model: link.run_id or f"pending (record {link.record_id[:8]})" for link in links}
    return run_ids, stores
