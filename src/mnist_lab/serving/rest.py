"""The REST server `mnist-lab serve` runs: MLflow's scoring server (the same app `mlflow models serve` runs,
with its request formats), behind two fixes for what a client sees.

- **Short errors.** A bad request gets `{"error_code": ..., "message": ...}` with a one-line message of at
  most MAX_MESSAGE characters: never the whole input echoed back (MLflow quotes what it could not parse) and
  never a stack trace with this machine's paths (MLflow adds one to every parsing error).
- **CSV without a header.** `text/csv` whose first line holds numbers is images, one per line (784 values
  for MNIST): the header `pixel_0,...` is added, where MLflow would have taken the first image for one.

Run by uvicorn as `mnist_lab.serving.rest:app`, with the model's local folder in MLflow's own variable, as
`mlflow models serve --env-manager local` does (`serving.serve_command`)."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

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
    """MLflow's error answer (JSON or text) as `{"error_code", "message"}` with a short message."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        code = str(parsed.get("error_code") or ("BAD_REQUEST" if status < 500 else "INTERNAL_ERROR"))
        text = str(parsed.get("message") or "")
    else:
        code = "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR"
        text = body.decode("utf-8", "replace")
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


class ClientFacing:
    """ASGI middleware around MLflow's scoring app (see the module's doc): only `/invocations` is touched."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != "/invocations":
            await self.app(scope, receive, send)
            return
        content_type = dict(scope.get("headers") or []).get(b"content-type", b"")
        if content_type.split(b";")[0].strip().lower() == b"text/csv":
            receive = await _replayed(receive, with_csv_header)
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
            await send({**started, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, answer)


async def _replayed(receive: Receive, change: Callable[[bytes], bytes]) -> Receive:
    """A `receive` that hands the app the whole request body once, changed by `change`."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = change(b"".join(chunks))
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()  # a disconnect, as the server reports it
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def create_app() -> Any:
    """MLflow's scoring app for the model in MLflow's `_SERVER_MODEL_PATH` variable, client-facing."""
    import os

    from mlflow.pyfunc import scoring_server

    model = scoring_server.load_model_with_mlflow_config(os.environ[scoring_server._SERVER_MODEL_PATH])
    return ClientFacing(scoring_server.init(model))
