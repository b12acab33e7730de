"""`python -m mnist_lab.stages <stage> [arguments]`: run a pipeline stage, warm when it can (`dvc.yaml`'s
commands). The stage is the same as `python -m mnist_lab.stages.<stage> [arguments]`, which always starts
cold; this one hands it to a process that has already imported the libraries below (system/warm.py)."""

from __future__ import annotations

import os
import sys

from mnist_lab.system.warm import WarmImports, run_module

STAGES = ("code", "validate", "prepare", "featurize", "train", "evaluate", "select", "register")
# Third-party modules the stages import, imported once by the warm process; never this package's modules
# (each stage imports them anew).
PRELOAD: tuple[str, ...] = (
    "numpy",
    "pandas",
    "pandas.api.types",
    "scipy.stats",
    "sklearn.base",
    "sklearn.datasets",
    "sklearn.decomposition",
    "sklearn.ensemble",
    "sklearn.linear_model",
    "sklearn.metrics",
    "sklearn.model_selection",
    "sklearn.neural_network",
    "sklearn.pipeline",
    "sklearn.preprocessing",
    "joblib",
    "threadpoolctl",
    "pydantic",
    "yaml",
    "dotenv",
    "tqdm",
    "matplotlib.figure",
    "matplotlib.backends.backend_agg",
    "mlflow",
    "mlflow.entities",
    "mlflow.exceptions",
    "mlflow.models",
    "mlflow.pyfunc",
    "mlflow.sklearn",
    "mlflow.tracking.context",
    "mlflow.utils.environment",
    "mlflow.store.artifact.artifact_repository_registry",
    "mlflow.store.tracking.sqlalchemy_store",
    "dagshub.logger",
)


def warm_imports() -> WarmImports:
    """PRELOAD, plus Keras on JAX when that is the backend the CNN stages will use (core/cnn.py sets
    KERAS_BACKEND to JAX where it is unset, so the server does the same). Checked: XLA reads XLA_FLAGS (set
    by core/cnn.py for exact CPU reductions) when its backend starts in the stage, not when imported, and
    importing JAX starts no thread (a fork copies none). Other backends are imported by the stage itself."""
    modules = PRELOAD
    if os.environ.get("KERAS_BACKEND", "jax") == "jax":
        modules = (*modules, "keras", "jax")
    config = os.environ.get("XDG_CONFIG_HOME") or "~/.config"
    return WarmImports(
        modules=modules,
        environment={"KERAS_BACKEND": "jax"},
        config_files=(
            "matplotlibrc",  # matplotlib reads one in the current directory first
            os.path.join(
                os.environ.get("MPLCONFIGDIR") or os.path.join(config, "matplotlib"), "matplotlibrc"
            ),
            os.path.join(os.environ.get("KERAS_HOME") or "~/.keras", "keras.json"),
        ),
    )


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in STAGES:
        print(f"usage: python -m mnist_lab.stages {{{','.join(STAGES)}}} [arguments]", file=sys.stderr)
        return 2
    return run_module(f"mnist_lab.stages.{argv[0]}", argv[1:], warm_imports())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
