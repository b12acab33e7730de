"""What a client of `mnist-lab serve` sees: short error bodies, CSV without a header (the served end to end
tests are in test_serving.py)."""

from __future__ import annotations

import asyncio
import json

from mnist_lab.serving.rest import MAX_MESSAGE, ClientFacing, short_error_body, short_message, with_csv_header


def test_mlflows_echo_of_the_input_gives_way_to_the_models_reason() -> None:
    echoed = (
        "Failed to predict data '" + "[[0 0 0 " * 500 + "]]'. \nError: request: expected images of 64 pixels"
    )
    assert short_message(echoed) == "request: expected images of 64 pixels"
    long = "x" * 1000
    assert len(short_message(long)) == MAX_MESSAGE and short_message(long).endswith("…")
    assert short_message("first line\n  File '/home/me/x.py', line 3") == "first line"


def test_error_bodies_lose_the_stack_trace() -> None:
    body = json.dumps({"error_code": "BAD_REQUEST", "message": "bad csv", "stack_trace": "File /home/me/x"})
    assert json.loads(short_error_body(body.encode(), 400)) == {
        "error_code": "BAD_REQUEST",
        "message": "bad csv",
    }
    assert json.loads(short_error_body(b"plain text\nmore", 415)) == {
        "error_code": "BAD_REQUEST",
        "message": "plain text",
    }


def test_a_csv_of_numbers_gets_a_header() -> None:
    assert with_csv_header(b"0,12.5,255\n1,2,3\n") == b"pixel_0,pixel_1,pixel_2\n0,12.5,255\n1,2,3\n"
    assert with_csv_header(b"pixel_0,pixel_1\n1,2\n") == b"pixel_0,pixel_1\n1,2\n"
    assert with_csv_header(b"0,1,2\n5,6,7\n") == b"0,1,2\n5,6,7\n"  # pandas' header of unnamed columns
    assert with_csv_header(b"") == b""


def _served(
    app_status: int, app_body: bytes, request_body: bytes, content_type: bytes
) -> tuple[dict, bytes, list[dict]]:
    """Run the middleware over an ASGI app answering `app_status` / `app_body` in two chunks, with the
    request body arriving in two chunks: (what the app received, the body sent back, every message sent)."""
    seen: dict = {}

    async def app(scope, receive, send) -> None:
        seen["body"] = b""
        while True:
            message = await receive()
            seen["body"] += message["body"]
            if not message.get("more_body"):
                break
        await send(
            {"type": "http.response.start", "status": app_status, "headers": [(b"content-length", b"5")]}
        )
        await send({"type": "http.response.body", "body": app_body[:3], "more_body": True})
        await send({"type": "http.response.body", "body": app_body[3:]})

    sent: list[dict] = []
    chunks = [request_body[:4], request_body[4:]]

    async def receive() -> dict:
        return {"type": "http.request", "body": chunks.pop(0), "more_body": bool(chunks)}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "path": "/invocations", "headers": [(b"content-type", content_type)]}
    asyncio.run(ClientFacing(app)(scope, receive, send))
    return seen, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"), sent


def test_the_middleware_rewrites_errors_and_adds_the_csv_header() -> None:
    error = json.dumps({"error_code": "BAD_REQUEST", "message": "x\ny", "stack_trace": "/home"}).encode()
    seen, body, sent = _served(400, error, b"1,2,3\n4,5,6\n", b"text/csv; charset=utf-8")
    assert seen["body"] == b"pixel_0,pixel_1,pixel_2\n1,2,3\n4,5,6\n"
    assert json.loads(body) == {"error_code": "BAD_REQUEST", "message": "x"}
    headers = dict(sent[0]["headers"])
    assert (
        headers[b"content-length"] == str(len(body)).encode()
        and headers[b"content-type"] == b"application/json"
    )
    seen, body, _ = _served(200, b'{"predictions": []}', b'{"instances": [[1]]}', b"application/json")
    assert seen["body"] == b'{"instances": [[1]]}' and body == b'{"predictions": []}'  # left alone
