"""The files committed with each experiment for DagsHub's experiments tab: the DagsHub logger's
`metrics.csv` and `params.yml`, written whole or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def dagshub_files(metrics_path: Path | str, params_path: Path | str) -> Iterator[Any]:
    """The DagsHub logger, writing `metrics.csv` / `params.yml` for DagsHub's experiments tab.

    It writes to temporary files that replace the real ones only once it is closed without error: the
    logger opens its CSV with "w" and buffers rows until `close()`, so a crash would otherwise leave an
    empty or partial file where the last good one was."""
    from dagshub.logger import DAGsHubLogger

    metrics_path, params_path = Path(metrics_path), Path(params_path)
    staging = Path(tempfile.mkdtemp(prefix=".dagshub-", dir=metrics_path.parent))
    staged_metrics, staged_params = staging / metrics_path.name, staging / params_path.name
    logger = DAGsHubLogger(
        metrics_path=str(staged_metrics), hparams_path=str(staged_params), eager_logging=False
    )
    try:
        yield logger
        logger.save()
        logger.close()
        os.replace(staged_metrics, metrics_path)
        os.replace(staged_params, params_path)
    finally:
        logger.close()
        for leftover in staging.iterdir():
            leftover.unlink()
        staging.rmdir()


def as_python_scalar(value: Any) -> Any:
    """numpy scalars -> Python int/float (the DagsHub logger writes anything else as a string)."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)
