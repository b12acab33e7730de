"""mnist-lab: reproducible handwritten-digit experiments with DVC, MLflow and the DagsHub logger."""

__version__ = "0.1.0"
