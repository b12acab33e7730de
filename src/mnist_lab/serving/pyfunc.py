"""The logged model as MLflow serves it: a pyfunc that checks every request and answers with the label and
per-class probabilities (or decision scores, for models without probabilities).

`mlflow models serve` turns the MlflowException raised here into an HTTP 400 with this message. The model
stores no signature on purpose: MLflow's column-signature enforcement silently drops extra columns, rejects
list-of-lists `instances`/`inputs` (the natural shape of images) and answers with the whole schema; here
every request format is accepted and every bad one gets a short 4xx naming what is wrong. The class and
the functions it calls are pickled by value with the model, so serving needs no mnist_lab install."""

import sys
from typing import Any

import pandas as pd
from mlflow.pyfunc.model import PythonModel

from mnist_lab.core.errors import DataError
from mnist_lab.core.models import single_threaded_prediction
from mnist_lab.serving.inference import predict_frame, request_pixels


class DigitClassifier(PythonModel):
    """A fitted scikit-learn pipeline that takes raw 0-255 pixels (featurizer + classifier)."""

    def __init__(self, pipeline: Any, n_pixels: int) -> None:
        # One thread per request (a server answers requests one at a time per worker; add workers to scale):
        # a forest answers one image about 4x faster with n_jobs=1 than with all cores (README, Performance),
        # and the same probabilities every time (single_threaded_prediction).
        self.pipeline = single_threaded_prediction(pipeline)
        self.n_pixels = n_pixels
        # packages beyond scikit-learn's that predicting needs (the CNN's Keras and its backend)
        self.runtime_packages = tuple(getattr(pipeline, "runtime_packages", ()))

    # MLflow reads `model_input`'s hint: `Any` made it try to infer an input schema and print two warnings at
    # every import, save and load. A DataFrame hint is one it neither infers from nor converts to; requests
    # also arrive as arrays, lists or dicts (MLflow parses them so without a signature): request_pixels
    # takes them all.
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE

        try:
            pixels = request_pixels(model_input, self.n_pixels)
        except DataError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
        try:
            return predict_frame(self.pipeline, pixels)
        except DataError as exc:  # the model's own check of the request (its pixel count): the client's
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
        except Exception as exc:  # the request was valid: the model failed (MLflow would answer 400)
            import traceback

            traceback.print_exc(file=sys.stderr)  # for whoever runs the server: the answer has one line
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise MlflowException(
                f"the model failed on a valid request ({type(exc).__name__}: {reason}): a fault of the "
                "server, not of the request; its log has the traceback",
                error_code=INTERNAL_ERROR,
            ) from None
