"""The REST server `mnist-lab serve` runs: MLflow's scoring server (the same app `mlflow models serve` runs,
with its request formats), behind two fixes for what a client sees.

- **Short errors.** A bad request gets `{"error_code": "BAD_REQUEST", "message": ...}` (every 4xx, whichever
  path answered it; a 5xx keeps MLflow's code) with a one-line message of at
  most MAX_MESSAGE characters: never the whole input echoed back (MLflow quotes what it could not parse) and
  never a stack trace with this machine's paths (MLflow adds one to every parsing error).
- **CSV without a header.** `text/csv` whose first line holds numbers is images, one per line (784 values
  for MNIST): the header `pixel_0,...` is added, where MLflow would have taken the first image for one.
- **A fast path for the image formats.** MLflow's own path decodes a JSON body twice, deep-copies every
  pixel of `instances` / `inputs` and writes the answer with the pure-Python JSON encoder: 2,000-3,000
  images/s for a model that predicts 70,000/s (README, Performance). A JSON body whose `instances` or
  `inputs` is a plain array of numbers, and a Parquet body whose columns are `pixel_0...` of numbers, are
  answered here instead: decoded once (orjson), handed to the same model's `predict`, written by orjson
  (0.6 ms for 1,000 answers where Python's encoder takes 14 ms). The answer is MLflow's to the last bit of
  every number (both write each float's shortest round-trip digits; tests/serving/test_rest.py parses and
  compares them), not to the byte: orjson writes no spaces after `,` and `:`, and `1e-7` or `0.00001` where
  Python writes `1e-07` or `1e-05`; predictions with NaN or infinity are written by MLflow's own conversion
  (orjson would write `null`). Anything else, and any request the model refuses, goes to MLflow's path
  unchanged, so every other format and every error answer is MLflow's (shortened as above).

Run by uvicorn as `mnist_lab.serving.rest:app`, with the model's local folder in MLflow's own variable, as
`mlflow models serve --env-manager local` does (`serving.server.serve_command`)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

MAX_MESSAGE = 300
_NUMBER = re.compile(rb"\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*")

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def short_message(text: str) -> str:
    """The first line of `text`, at most MAX_MESSAGE characters; of MLflow's "Failed to predict data
    '<the whole input>'. Error: <the model's reason>", the reason alone."""
    reason = re.search(r"\A\s*Failed to predict data .*\nError: (.*)\Z", text, re.DOTALL)
    if reason:
        text = reason.group(1)
    line = next((part.strip() for part in text.splitlines() if part.strip()), "bad request")
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 1].rstrip() + "…"


def short_error_body(body: bytes, status: int) -> bytes:
    """MLflow's error answer (JSON or text) as `{"error_code", "message"}` with a short message. Every 4xx
    is BAD_REQUEST, as the fast path's and this wrapper's own: MLflow's path answered the same bad pixel
    INVALID_PARAMETER_VALUE (the model's refusal) where the fast path said BAD_REQUEST, so a client's code
    depended on the request's format."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        code = str(parsed.get("error_code") or "INTERNAL_ERROR")
        text = str(parsed.get("message") or "")
    else:
        code = "INTERNAL_ERROR"
        text = body.decode("utf-8", "replace")
    code = "BAD_REQUEST" if status < 500 else code
    return json.dumps({"error_code": code, "message": short_message(text)}).encode()


def with_csv_header(body: bytes) -> bytes:
    """A headerless CSV of images (a first line of numbers) with the header `pixel_0,...,pixel_<n-1>`; any
    other body as it is. A first line `0,1,...,n-1` is a header (pandas writes one for unnamed columns)."""
    first, _, _ = body.lstrip().partition(b"\n")
    fields = first.rstrip(b"\r").split(b",")
    if not first.strip() or not all(_NUMBER.fullmatch(field) for field in fields):
        return body
    if [field.strip() for field in fields] == [str(i).encode() for i in range(len(fields))]:
        return body
    header = ",".join(f"pixel_{i}" for i in range(len(fields))).encode()
    return header + b"\n" + body.lstrip()


PARQUET = b"application/vnd.apache.parquet"
JSON = b"application/json"
TIMED_OUT = b"Request processing time exceeded limit"  # MLflow's words
INLINE_BYTES = 64 * 1024  # up to ~20 MNIST images in JSON: predicted on the event loop, no thread
# A request's body, read whole before any answer: one client must not take the server's memory (a 27 MB JSON
# or a Parquet of a million images was taken, RSS +0.9 GB). Batches belong to `mnist-lab predict`.
MAX_REQUEST_MB_ENV = "MNIST_LAB_SERVE_MAX_REQUEST_MB"
MAX_REQUEST_MB = 100


class BadImages(ValueError):
    """A JSON body of images that MLflow's path would take wrongly or answer obscurely: a 400 naming it."""


def json_images(body: bytes) -> np.ndarray | None:
    """The images of a JSON body `{"instances": [...]}` or `{"inputs": [...]}` whose value is an array of
    numbers (one image or a list of them), as MLflow would hand them to the model; None for anything else.
    BadImages where MLflow's path would go wrong: `true`/`false` as pixels (numpy makes them 1 and 0),
    rows of different lengths (numpy's "inhomogeneous shape"), no images at all (its "shape (0,)")."""
    import numpy as np
    import orjson

    try:
        parsed = orjson.loads(body)  # half json's time; NaN, Infinity, huge integers: left to MLflow
    except orjson.JSONDecodeError:
        return None
    if not isinstance(parsed, dict) or len(parsed) != 1:
        return None
    key, value = next(iter(parsed.items()))
    if key not in ("instances", "inputs") or not isinstance(value, list):
        return None
    if not value:
        raise BadImages(f"request: no images ({key} is an empty list)")
    try:
        images = np.asarray(value)
    except ValueError:  # ragged
        rows = value if all(isinstance(row, list) for row in value) else []
        short = next((i for i, row in enumerate(rows) if len(row) != len(rows[0])), None)
        if short is not None:  # else numpy's own limits (more than 64 dimensions): MLflow's path says it
            raise BadImages(
                f"request: the images of {key} must have the same size; row 0 has {len(value[0])} values, "
                f"row {short} has {len(value[short])}"
            ) from None
        return None
    if images.dtype.kind in "iuf" and (b"true" in body or b"false" in body) and (cell := _a_bool(value)):
        raise BadImages(f"request: pixel values must be numbers 0-255; {cell}")
    return images if images.dtype.kind in "iuf" else None  # not strings, None (object)


def _a_bool(value: Any, at: tuple[int, ...] = ()) -> str | None:
    """Where the first `true`/`false` of nested JSON lists is (`image 0, row 1, column 3`), or None."""
    if isinstance(value, bool):
        names = (
            ("value",) if len(at) == 1 else ("row", "column") if len(at) == 2 else ("image", "row", "column")
        )
        where = ", ".join(f"{name} {index}" for name, index in zip(names, at, strict=False))
        return f"{where or 'the value'} is {str(value).lower()}"
    if isinstance(value, list):
        for index, item in enumerate(value):
            if found := _a_bool(item, (*at, index)):
                return found
    return None


def parquet_images(body: bytes) -> np.ndarray | None:
    """The images of a Parquet body whose columns are exactly `pixel_0 ... pixel_<n-1>`, integers or
    floats without nulls, as an (count, n) array; None for anything else."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:  # one thread: a fifth less time for 784 columns on 2 cores than arrow's pool
        table = pq.ParquetFile(pa.BufferReader(body)).read(use_pandas_metadata=False, use_threads=False)
    except (pa.ArrowException, OSError, ValueError):
        return None
    names = [f"pixel_{i}" for i in range(table.num_columns)]
    if not names or table.column_names != names or table.num_rows == 0:
        return None
    if not all(pa.types.is_integer(kind) or pa.types.is_floating(kind) for kind in set(table.schema.types)):
        return None
    try:  # one row-major copy in C++ (a column at a time in Python costs 3x more); raises on a null
        return np.asarray(table.combine_chunks().to_batches()[0].to_tensor(row_major=True))
    except (pa.ArrowException, ValueError):
        return None


def predictions_json(predictions: Any) -> bytes:
    """What MLflow's scoring server answers for `predictions` (see the module's doc: the same values,
    written by orjson). The model's frame (string column names, finite numbers) is turned into records
    from one float64 copy of it (integer columns back to integers, exactly while they are below 2**53), a
    tenth of pandas' `to_dict`'s time for one image and a fifth of taking its columns one by one; anything
    else goes through MLflow's own conversion and Python's encoder, byte for byte MLflow's."""
    import numpy as np
    import pandas as pd

    if (
        isinstance(predictions, pd.DataFrame)
        and predictions.columns.is_unique
        and all(isinstance(name, str) for name in predictions.columns)
        and all(kind.kind in "iuf" for kind in predictions.dtypes)
        and np.isfinite(values := predictions.to_numpy(dtype=np.float64)).all()
    ):
        import orjson

        names = list(predictions.columns)
        columns = []
        for index, kind in enumerate(predictions.dtypes):
            column = values[:, index]
            if kind.kind in "iu":  # float64 holds every integer below 2**53 exactly; beyond, the column's own
                exact = column.size == 0 or np.abs(column).max() < 2.0**53
                column = column.astype(np.int64) if exact else predictions.iloc[:, index].to_numpy()
            columns.append(column.tolist())
        records = [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
        try:
            return orjson.dumps({"predictions": records})
        except (orjson.JSONEncodeError, TypeError):  # what orjson cannot write (a str subclass as a name)
            pass
    from mlflow.pyfunc.scoring_server import _get_jsonable_obj
    from mlflow.utils.proto_json_utils import NumpyEncoder

    jsonable = _get_jsonable_obj(predictions, pandas_orient="records")
    return json.dumps({"predictions": jsonable}, cls=NumpyEncoder).encode()


class FastImages:
    """The fast path of the module's doc: `answer(content type, body)` is the JSON body of a 200, or None
    where MLflow's path must answer."""

    def __init__(self, model: Any) -> None:
        self.model = model  # MLflow's PyFuncModel

    def answer(self, content_type: bytes, body: bytes) -> bytes | None:
        mime, *parameters = (part.strip().lower() for part in content_type.split(b";"))
        if any(parameter != b"charset=utf-8" for parameter in parameters):
            return None  # MLflow answers other parameters with 415
        images = json_images(body) if mime == JSON else parquet_images(body) if mime == PARQUET else None
        if images is None:
            return None
        try:
            predictions = self.model.predict(images)
        except Exception:  # MLflow's path answers the same request with its error
            return None
        return predictions_json(predictions)


class ClientFacing:
    """ASGI middleware around MLflow's scoring app (see the module's doc): only `/invocations` is touched."""

    def __init__(
        self,
        app: Callable[..., Awaitable[None]],
        fast: FastImages | None = None,
        timeout: float = 60,
        max_bytes: int = MAX_REQUEST_MB * 1_000_000,
    ) -> None:
        self.app = app
        self.fast = fast
        self.timeout = timeout  # MLflow's request time limit, which its app applies to its own path
        self.max_bytes = max_bytes

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != "/invocations":
            await self.app(scope, receive, send)
            return
        if scope.get("method") != "POST":  # MLflow's app answers 405 with no message at all
            await _send_error(
                send,
                405,
                f"/invocations takes a POST of images ({ACCEPTED}), not {scope.get('method')}",
                [(b"allow", b"POST")],
            )
            return
        request_headers = dict(scope.get("headers") or [])
        content_type = request_headers.get(b"content-type", b"")
        mime = content_type.split(b";")[0].strip().lower()
        declared = request_headers.get(b"content-length", b"")
        too_large = (
            f"the request is larger than {self.max_bytes / 1e6:g} MB (`serve --max-request-mb` sets the "
            "limit): send fewer images per request, or predict a batch with `mnist-lab predict`"
        )
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _send_error(send, 413, too_large)  # refused before reading it
            return
        try:
            receive, body = await _read_body(receive, limit=self.max_bytes)
        except _TooLarge:  # no Content-Length (chunked), and more than the limit arrived
            await _send_error(send, 413, too_large)
            return
        if not mime:  # MLflow's app fails on it with a 500
            await _send_error(send, 415, f"no Content-Type header: send one of {ACCEPTED}")
            return
        if mime == b"text/csv":
            receive = await _replayed(receive, with_csv_header)
        elif self.fast is not None and mime in (JSON, PARQUET):
            try:
                if len(body) <= INLINE_BYTES:  # a few images: answered at once (a thread costs more)
                    fast_body = self.fast.answer(content_type, body)
                else:
                    fast_body = await asyncio.wait_for(
                        asyncio.to_thread(self.fast.answer, content_type, body), self.timeout
                    )
                status = 200
            except TimeoutError:  # what MLflow's app answers when its path runs out of time
                fast_body, status = short_error_body(TIMED_OUT, 504), 504
            except BadImages as exc:
                await _send_error(send, 400, str(exc))
                return
            if fast_body is not None:
                headers = [(b"content-type", JSON), (b"content-length", str(len(fast_body)).encode())]
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": fast_body})
                return
        started: Message | None = None
        held: list[bytes] = []

        async def answer(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start" and message["status"] >= 400:
                started = message  # held until its whole body is in, then rewritten
                return
            if started is None:
                await send(message)
                return
            held.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = short_error_body(b"".join(held), started["status"])
            headers = [
                (name, value)
                for name, value in started.get("headers", [])
                if name.lower() not in (b"content-length", b"content-type")
            ]
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            messages = [{**started, "headers": headers}, {"type": "http.response.body", "body": body}]
            if started["status"] >= 500:
                failed.extend(messages)  # sent once the app is done: it may say why (below)
                return
            for message in messages:
                await send(message)

        failed: list[Message] = []
        try:
            await self.app(scope, receive, answer)
        except RecursionError:  # JSON nested deeper than Python's parser goes: the client's, not a 500
            failed.clear()
            await _send_error(
                send, 400, "the JSON body is nested too deeply: send images as lists of numbers"
            )
            return
        finally:
            for message in failed:
                await send(message)


ACCEPTED = "application/json, text/csv, application/vnd.apache.parquet"


async def _send_error(
    send: Send, status: int, message: str, extra_headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """An error answer as every other one here: `{"error_code": "BAD_REQUEST", "message": ...}`."""
    body = json.dumps({"error_code": "BAD_REQUEST", "message": short_message(message)}).encode()
    headers = [(b"content-type", JSON), (b"content-length", str(len(body)).encode()), *(extra_headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _replayed(receive: Receive, change: Callable[[bytes], bytes]) -> Receive:
    """A `receive` that hands the app the whole request body once, changed by `change`."""
    replay, _ = await _read_body(receive, change)
    return replay


class _TooLarge(Exception):
    """More of a request's body arrived than the server takes."""


async def _read_body(
    receive: Receive, change: Callable[[bytes], bytes] | None = None, limit: int | None = None
) -> tuple[Receive, bytes]:
    """(a `receive` that hands the app the whole request body once, changed by `change`; that body).
    _TooLarge as soon as more than `limit` bytes arrived."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if limit is not None and size > limit:
            raise _TooLarge
        if not message.get("more_body"):
            break
    body = b"".join(chunks)
    if change is not None:
        body = change(body)
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()  # a disconnect, as the server reports it
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay, body


def create_app() -> Any:
    """MLflow's scoring app for the model in MLflow's `_SERVER_MODEL_PATH` variable, client-facing."""
    import os
    from pathlib import Path

    from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT
    from mlflow.pyfunc import scoring_server

    from mnist_lab.serving.server import keep_marked

    folder = os.environ[scoring_server._SERVER_MODEL_PATH]
    model = scoring_server.load_model_with_mlflow_config(folder)
    if Path(folder).parent.name == "serve":  # `.mnist-lab/serve/` keeps it while this server runs
        keep_marked(Path(folder))
    timeout = float(MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get())
    megabytes = float(os.environ.get(MAX_REQUEST_MB_ENV) or MAX_REQUEST_MB)  # checked by `mnist-lab serve`
    return ClientFacing(scoring_server.init(model), FastImages(model), timeout, int(megabytes * 1_000_000))
