"""select: pick the best model by `select.metric`; write the experiment's metrics (`metrics.json` for
`dvc metrics`, `metrics.csv` / `params.yml` in the DagsHub logger's format) and `best_model.json`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mnist_lab import tracking
from mnist_lab.core.errors import DataError
from mnist_lab.core.experiment_files import BestModelFile, RunFile
from mnist_lab.core.results import best_model, headline_metrics, read_history
from mnist_lab.core.settings import Settings, flatten
from mnist_lab.stages.common import StageContext, main_for, stage_parser
from mnist_lab.system import workspace
from mnist_lab.system.files import read_experiment_file, read_json, write_json


def experiment_params(
    settings: Settings, data_version: str | None, chosen: dict[str, dict[str, Any]] | None = None
) -> dict:
    """params.yml for DagsHub: every setting, flattened, the data version, and for each model whose settings
    hold a grid search the candidate it chose (`models.<m>.search.chosen.<param>`): the values the model was
    trained with, which the settings alone do not say."""
    chosen_params = {
        f"models.{name}.search.chosen.{key}": value
        for name, params in (chosen or {}).items()
        for key, value in params.items()
    }
    return {**flatten(settings.model_dump()), "data.version": data_version or "unknown", **chosen_params}


def select(context: StageContext) -> None:
    settings, args = context.settings, context.args
    reports: Path = args.reports
    per_model: dict[str, dict[str, float]] = {}
    histories: dict[str, list[dict[str, float]]] = {}
    for name in settings.models:
        path = reports / name / "metrics.json"
        if not path.is_file():
            raise DataError(f"{path} is missing: model '{name}' has not been evaluated; run `dvc repro`")
        per_model[name] = read_json(path)
        histories[name] = read_history(reports / name / "history.csv")
    searches = {name: search for name in settings.models if (search := _search(reports / name))}
    with context.compute():
        best_name, best_value = best_model(per_model, settings.select.metric)
    summary: dict[str, Any] = {
        "best": {"model": best_name, "metric": settings.select.metric, "value": best_value},
        "models": {name: headline_metrics(metrics) for name, metrics in per_model.items()},
    }
    for name, search in searches.items():  # the chosen candidate's cross-validated score, beside its test's
        summary["models"][name]["best_cv_score"] = search["candidates"][search["best_index"]]["mean_score"]
    write_json(args.metrics, summary)
    best_run = read_experiment_file(reports / best_name / "mlflow.json", RunFile)
    best = BestModelFile(
        model=best_name,
        metric=settings.select.metric,
        value=best_value,
        model_type=settings.model(best_name).type,
        mlflow_run_id=best_run.run_id,
        mlflow_record_id=best_run.record_id,  # names the run even while it waits in the outbox
    )
    write_json(args.best, best.as_json())

    root = workspace.workspace_root()
    with tracking.dagshub_files(args.dagshub_metrics, args.dagshub_params) as logger:
        logger.log_hyperparams(
            {
                key: tracking.as_python_scalar(v)
                for key, v in experiment_params(
                    settings,
                    tracking.data_version(root),
                    {
                        name: search["candidates"][search["best_index"]]["params"]
                        for name, search in searches.items()
                    },
                ).items()
            }
        )
        logger.log_metrics(
            {
                f"{name}.{key}": float(value)
                for name, metrics in summary["models"].items()
                for key, value in metrics.items()
            },
            step_num=1,
        )
        logger.log_metrics({f"best.{settings.select.metric}": float(best_value)}, step_num=1)
        for name, history in histories.items():
            for row in history:
                logger.log_metrics(
                    {f"{name}.{key}": float(value) for key, value in row.items() if key != "epoch"},
                    step_num=int(row["epoch"]),
                )


def _search(reports: Path) -> dict[str, Any] | None:
    """The grid search a model's training ran (`training.json`), or None."""
    path = reports / "training.json"
    return read_json(path).get("search") if path.is_file() else None


def parser():
    p = stage_parser(__doc__)
    p.add_argument(
        "--reports", required=True, type=Path, help="folder with one sub-folder of reports per model"
    )
    p.add_argument("--metrics", required=True, help="experiment metrics for `dvc metrics` (JSON)")
    p.add_argument("--best", required=True, help="JSON naming the best model")
    p.add_argument("--dagshub-metrics", required=True, help="DagsHub logger metrics (CSV)")
    p.add_argument("--dagshub-params", required=True, help="DagsHub logger params (YAML)")
    return p


if __name__ == "__main__":
    main_for("select", parser(), select)
