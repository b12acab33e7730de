"""The JSON files an experiment commits about its runs and models, one typed schema each, used by every
reader and writer: `reports/<model>/mlflow.json` (`RunFile`), `best_model.json` (`BestModelFile`),
`registry.json` (`RegistryFile`) and `metrics.json` (`MetricsFile`, read by `report`).

Readers are tolerant of keys they do not know (a file written by a newer version still reads) and strict
about the ones they do: a missing or mistyped field is a `DataError` naming the file, the field and the fix.
The `as_json` of each writes the keys in a fixed order, so the committed files stay diff-friendly."""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from mnist_lab.core.errors import DataError


class _ExperimentFile(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    def as_json(self) -> dict[str, Any]:
        return self.model_dump()


class RunFile(_ExperimentFile):
    """`reports/<model>/mlflow.json`: the model's MLflow run. While the run waits in the outbox, `run_id` is
    None and `state` is "pending"; the record id finds the run once it is sent."""

    record_id: str
    store: str  # "local" for <repository root>/mlflow.db, else the server's URI without credentials
    run_id: str | None = None
    experiment_id: str | None = None
    model_uri: str | None = None
    state: Literal["pending"] | None = None

    def as_json(self) -> dict[str, Any]:
        written = {"record_id": self.record_id, "store": self.store, "run_id": self.run_id}
        for key in ("experiment_id", "model_uri", "state"):
            if getattr(self, key) is not None:
                written[key] = getattr(self, key)
        return written


class BestModelFile(_ExperimentFile):
    """`best_model.json`: the model `select` chose, by which metric, and its run."""

    model: str
    metric: str
    value: float
    model_type: str
    mlflow_run_id: str | None = None
    mlflow_record_id: str | None = None  # names the run even while it waits in the outbox


class RegistryFile(_ExperimentFile):
    """`registry.json`: the version `register` made the challenger, or why there is none."""

    model_name: str
    registered: bool
    version: str | None = None
    alias: str | None = None
    run_id: str | None = None
    note: str = ""


class BestChoice(_ExperimentFile):
    model: str
    metric: str
    value: float


class MetricsFile(_ExperimentFile):
    """`metrics.json` (for `dvc metrics`): the best model and each model's headline metrics."""

    best: BestChoice
    models: dict[str, dict[str, float]]


FileT = TypeVar("FileT", bound=_ExperimentFile)


def parse_experiment_file(kind: type[FileT], data: Any, source: str) -> FileT:
    """`data` (a parsed JSON document read from `source`) as a `kind`, or a DataError naming what is wrong."""
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(str(part) for part in problem["loc"]) or "the document"
        raise DataError(
            f"{source}: {field}: {problem['msg']}; it is written by `dvc repro`: restore it with "
            f"`git checkout -- {source}` or rerun the pipeline"
        ) from None
