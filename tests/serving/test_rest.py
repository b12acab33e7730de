"""What a client of `mnist-lab serve` sees: short error bodies, CSV without a header, the fast path for
image arrays and Parquet giving MLflow's own answers (the served end to end tests are in test_pyfunc.py)."""

from __future__ import annotations

import asyncio
import io
import json
import time

import numpy as np
import pandas as pd
import pytest

from mnist_lab.serving.rest import (
    MAX_MESSAGE,
    ClientFacing,
    FastImages,
    predictions_json,
    short_error_body,
    short_message,
    with_csv_header,
)

JSON_TYPE = "application/json"
PARQUET_TYPE = "application/vnd.apache.parquet"


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
    app_status: int,
    app_body: bytes,
    request_body: bytes,
    content_type: bytes,
    fast: object = None,
    timeout: float = 60,
    max_bytes: int = 10**9,
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

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/invocations",
        "headers": [(b"content-type", content_type)],
    }
    asyncio.run(ClientFacing(app, fast, timeout, max_bytes)(scope, receive, send))  # type: ignore[arg-type]
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
    # the model's refusal, INVALID_PARAMETER_VALUE in MLflow's path: BAD_REQUEST as the fast path says it
    refused = json.dumps({"error_code": "INVALID_PARAMETER_VALUE", "message": "pixel values must be 0-255"})
    _, body, _ = _served(400, refused.encode(), b"pixel_0\n300\n", b"text/csv")
    assert json.loads(body) == {"error_code": "BAD_REQUEST", "message": "pixel values must be 0-255"}
    seen, body, _ = _served(200, b'{"predictions": []}', b'{"instances": [[1]]}', b"application/json")
    assert seen["body"] == b'{"instances": [[1]]}' and body == b'{"predictions": []}'  # left alone
    # a 5xx is held until the app is done (it may raise what makes it a 400), then sent, shortened
    failure = json.dumps({"error_code": "INTERNAL_ERROR", "message": "db gone\n  File /x"}).encode()
    _, body, sent = _served(500, failure, b'{"dataframe_split": {}}', b"application/json")
    assert json.loads(body) == {"error_code": "INTERNAL_ERROR", "message": "db gone"}
    assert sent[0]["status"] == 500 and [m["type"] for m in sent] == [
        "http.response.start",
        "http.response.body",
    ]


@pytest.fixture(scope="module")
def served_model(tmp_path_factory):
    """A small forest as the pipeline logs it (DigitClassifier), loaded the way the server loads it."""
    import mlflow.pyfunc
    from mlflow.pyfunc import scoring_server
    from sklearn.ensemble import RandomForestClassifier

    from mnist_lab.core.features import fit_featurizer, full_model
    from mnist_lab.core.settings import FeatureSettings
    from mnist_lab.serving.pyfunc import DigitClassifier

    pixels = np.random.default_rng(0).integers(0, 256, size=(60, 16))
    featurizer = fit_featurizer(pixels, FeatureSettings(), seed=0)
    forest = RandomForestClassifier(n_estimators=5, random_state=0)
    pipeline = full_model(featurizer, forest.fit(featurizer.transform(pixels), np.arange(60) % 3))
    folder = tmp_path_factory.mktemp("model") / "model"
    mlflow.pyfunc.save_model(
        path=str(folder), python_model=DigitClassifier(pipeline, 16), signature=False, pip_requirements=[]
    )
    return scoring_server.load_model_with_mlflow_config(str(folder))


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return buffer.getvalue()


IMAGES = np.random.default_rng(1).integers(0, 256, size=(7, 16))
ROWS = IMAGES.tolist()
FRAME = pd.DataFrame(IMAGES, columns=[f"pixel_{i}" for i in range(16)])
NAMES = [f"pixel_{i}" for i in range(16)]
FAST = {
    "instances": (JSON_TYPE, json.dumps({"instances": IMAGES.tolist()})),
    "inputs": (JSON_TYPE, json.dumps({"inputs": IMAGES.tolist()})),
    "one image": (JSON_TYPE, json.dumps({"instances": IMAGES[0].tolist()})),
    "floats": (JSON_TYPE, json.dumps({"inputs": (IMAGES * 0.5 + 0.25).tolist()})),
    "charset": ("application/json; charset=utf-8", json.dumps({"instances": IMAGES.tolist()})),
    "parquet": (PARQUET_TYPE, _parquet(pd.DataFrame(IMAGES.astype(np.uint8), columns=NAMES))),
    "parquet floats": (PARQUET_TYPE, _parquet(pd.DataFrame(IMAGES / 2, columns=NAMES))),
    "parquet, range index": (PARQUET_TYPE, _parquet(FRAME.set_axis(range(5, 12)))),
    "parquet, mixed": (PARQUET_TYPE, _parquet(FRAME.astype({"pixel_3": "float32", "pixel_5": "int16"}))),
}
MLFLOWS = {
    "records": (
        JSON_TYPE,
        json.dumps({"instances": [dict(zip(NAMES, r, strict=True)) for r in IMAGES.tolist()]}),
    ),
    "columns": (JSON_TYPE, json.dumps({"inputs": {n: IMAGES[:, i].tolist() for i, n in enumerate(NAMES)}})),
    "split": (JSON_TYPE, json.dumps({"dataframe_split": {"columns": NAMES, "data": IMAGES.tolist()}})),
    "params": (JSON_TYPE, json.dumps({"instances": IMAGES.tolist(), "params": {}})),
    "strings": (JSON_TYPE, json.dumps({"instances": [["1"] * 16]})),
    "bools": (JSON_TYPE, json.dumps({"instances": [[True] * 16]})),
    "nulls": (JSON_TYPE, json.dumps({"instances": [[None] * 16]})),
    "not json": (JSON_TYPE, "not json"),
    "out of range": (JSON_TYPE, json.dumps({"instances": [[300] * 16]})),
    "wrong size": (JSON_TYPE, json.dumps({"instances": [[1] * 15]})),
    "unknown parameter": (
        "application/json; format=pandas-split",
        json.dumps({"instances": IMAGES.tolist()}),
    ),
    "spaced parameter": ("application/json; charset = utf-8", json.dumps({"instances": ROWS})),  # a 415
    "parquet, other columns": (PARQUET_TYPE, _parquet(pd.DataFrame(IMAGES, columns=NAMES[::-1]))),
    "parquet, text index": (PARQUET_TYPE, _parquet(FRAME.set_axis(list("abcdefg")))),
    "parquet, nulls": (
        PARQUET_TYPE,
        _parquet(pd.DataFrame(IMAGES, columns=NAMES).astype(float).mask(IMAGES > 250)),
    ),
    "parquet, text": (PARQUET_TYPE, _parquet(pd.DataFrame(IMAGES, columns=NAMES).astype(str))),
    "parquet, bools": (PARQUET_TYPE, _parquet(FRAME > 100)),
    "parquet, no rows": (PARQUET_TYPE, _parquet(FRAME.iloc[:0])),
    "not parquet": (PARQUET_TYPE, b"PAR1 not really"),
}


def _mlflows_answer(model, content_type: str, body: str | bytes) -> tuple[int, bytes]:
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server

    try:
        result = scoring_server.invocations(body, content_type, model, None)
    except MlflowException as exc:
        return exc.get_http_status_code(), b""
    return result.status, result.response.encode()


def _values(answer: bytes) -> str:
    """An answer's JSON values, written by Python's encoder: equal for two answers only if every number is
    the same float (or the same int: 1 and 1.0 differ) in the same structure, whatever the spacing."""
    return json.dumps(json.loads(answer))


@pytest.mark.parametrize("form", FAST)
def test_the_fast_path_answers_mlflows_values(served_model, form: str) -> None:
    content_type, body = FAST[form]
    data = body.encode() if isinstance(body, str) else body
    answer = FastImages(served_model).answer(content_type.encode(), data)
    assert answer is not None, form
    status, mlflows = _mlflows_answer(served_model, content_type, body)
    assert status == 200 and _values(answer) == _values(mlflows)


def test_every_float_is_written_to_its_last_bit() -> None:
    from mlflow.pyfunc.scoring_server import predictions_to_json

    # where orjson's and Python's spellings differ (1e-7 / 1e-07, 0.00001 / 1e-05) and the extremes
    tiny = [1e-7, 1e-5, 1.5e-5, 9.61105174536181e-05, 5e-324, 2.2250738585072014e-308, 0.1 + 0.2, 1e16, 0.0]
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {"label": np.arange(len(tiny) + 1000), "probability_0": tiny + list(rng.random(1000) ** 30)}
    )
    expected = io.StringIO()
    predictions_to_json(frame, expected)
    answer = predictions_json(frame)
    assert _values(answer) == _values(expected.getvalue().encode())
    assert [row["probability_0"] for row in json.loads(answer)["predictions"]] == frame[
        "probability_0"
    ].tolist()
    assert answer != expected.getvalue().encode()  # orjson wrote it (the spacing differs), not the fallback


def test_every_column_type_keeps_its_values() -> None:
    """The answer is built from one float64 copy of the frame: integers must come back as integers (huge
    ones exactly), float32 probabilities as their own values, as MLflow writes them."""
    from mlflow.pyfunc.scoring_server import predictions_to_json

    frames = [
        pd.DataFrame({"label": np.array([7, 0], dtype=np.uint8), "probability_0": np.float32([0.1, 1e-7])}),
        pd.DataFrame({"label": np.array([3], dtype=np.int32), "score_0": np.float16([-2.5])}),
        pd.DataFrame({"id": np.array([2**62 + 1, -(2**60) - 3]), "label": [1, 2]}),  # beyond float64's
        pd.DataFrame({"id": np.array([2**64 - 1], dtype=np.uint64), "label": [1]}),
        pd.DataFrame({"label": np.array([], dtype=np.int64), "probability_0": np.array([], dtype=float)}),
    ]
    for frame in frames:
        expected = io.StringIO()
        predictions_to_json(frame, expected)
        typed = [
            [(name, type(value), value) for name, value in row.items()]
            for row in json.loads(predictions_json(frame))["predictions"]
        ]
        assert typed == [  # 7 is not 7.0
            [(name, type(value), value) for name, value in row.items()]
            for row in json.loads(expected.getvalue())["predictions"]
        ], frame.dtypes


def test_what_orjson_cannot_write_is_written_as_mlflow_writes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import orjson
    from mlflow.pyfunc.scoring_server import predictions_to_json

    def refuse(value: object) -> bytes:
        raise orjson.JSONEncodeError("refused")

    monkeypatch.setattr(orjson, "dumps", refuse)
    frame = pd.DataFrame({"label": [1, 2], "probability_0": [0.25, 1e-7]})
    expected = io.StringIO()
    predictions_to_json(frame, expected)
    assert predictions_json(frame) == expected.getvalue().encode()


def test_predictions_of_any_other_kind_are_written_as_mlflow_writes_them() -> None:
    import io as _io

    from mlflow.pyfunc.scoring_server import predictions_to_json

    frames = [
        pd.DataFrame({"label": [1, 2], "probability_0": [0.25, float("nan")]}),  # orjson: null, MLflow: NaN
        pd.DataFrame({"label": [1], "score_0": [float("inf")]}),
        pd.DataFrame({"label": [3], "text": ["x"]}),  # not numbers: MLflow's conversion
        pd.DataFrame([[1, 2]], columns=[0, 1]),  # names that are not text
        np.array([[0.5, 0.5]]),
    ]
    for frame in frames:
        expected = _io.StringIO()
        predictions_to_json(frame, expected)
        assert predictions_json(frame) == expected.getvalue().encode()


@pytest.mark.parametrize("form", MLFLOWS)
def test_anything_else_is_left_to_mlflow(served_model, form: str) -> None:
    content_type, body = MLFLOWS[form]
    data = body.encode() if isinstance(body, str) else body
    assert FastImages(served_model).answer(content_type.encode(), data) is None


class _Fast:
    def __init__(self, answer: bytes | None, seconds: float = 0) -> None:
        self.answer_body, self.seconds, self.calls = answer, seconds, 0

    def answer(self, content_type: bytes, body: bytes) -> bytes | None:
        self.calls += 1
        time.sleep(self.seconds)
        return self.answer_body


def test_the_middleware_answers_from_the_fast_path_or_hands_the_request_on() -> None:
    fast = _Fast(b'{"predictions": [1]}')
    seen, body, sent = _served(500, b"never", b'{"instances": [[1]]}', b"application/json", fast)
    assert body == b'{"predictions": [1]}' and "body" not in seen and fast.calls == 1
    assert sent[0]["status"] == 200 and dict(sent[0]["headers"])[b"content-length"] == b"20"
    fast = _Fast(None)  # not for the fast path: MLflow's app gets the whole body, unchanged
    seen, body, _ = _served(200, b'{"predictions": []}', b'{"instances": "x"}', b"application/json", fast)
    assert seen["body"] == b'{"instances": "x"}' and body == b'{"predictions": []}' and fast.calls == 1
    fast = _Fast(b"never")  # CSV goes to MLflow with its header added
    seen, _, _ = _served(200, b'{"predictions": []}', b"1,2\n", b"text/csv", fast)
    assert seen["body"] == b"pixel_0,pixel_1\n1,2\n" and fast.calls == 0


def test_a_slow_fast_path_times_out_as_mlflow_does() -> None:
    fast = _Fast(b'{"predictions": [1]}', seconds=0.5)
    many = json.dumps({"instances": [[255] * 784] * 30}).encode()  # beyond INLINE_BYTES: on a thread
    seen, body, sent = _served(200, b"never", many, b"application/json", fast, 0.05)
    assert sent[0]["status"] == 504 and "body" not in seen
    assert json.loads(body) == {
        "error_code": "INTERNAL_ERROR",
        "message": "Request processing time exceeded limit",
    }


def test_requests_mlflows_app_fails_on_are_answered_4xx(served_model) -> None:
    """MLflow's scoring app answers 500 to a request without a Content-Type (it splits None) and to JSON
    nested deeper than Python's parser goes (RecursionError): both are the client's mistake."""
    from mlflow.pyfunc import scoring_server
    from starlette.testclient import TestClient

    app = ClientFacing(scoring_server.init(served_model), FastImages(served_model))
    client = TestClient(app, raise_server_exceptions=False)
    untyped = client.post("/invocations", content=json.dumps({"instances": ROWS}).encode())
    assert "content-type" not in untyped.request.headers
    assert untyped.status_code == 415 and untyped.json() == {
        "error_code": "BAD_REQUEST",
        "message": "no Content-Type header: send one of application/json, text/csv, "
        "application/vnd.apache.parquet",
    }
    for depth in (1010, 5000):  # past Python's parser, and past orjson's too
        body = "[" * depth + "]" * depth
        for sent in (body, json.dumps({"instances": "x"}).replace('"x"', body)):
            deep = client.post("/invocations", content=sent, headers={"Content-Type": JSON_TYPE})
            assert deep.status_code == 400, (depth, deep.text[:200])
            assert deep.json()["message"].startswith("the JSON body is nested too deeply")
    fine = client.post("/invocations", json={"instances": ROWS})
    assert fine.status_code == 200 and len(fine.json()["predictions"]) == len(ROWS)


def test_json_images_mlflow_would_take_wrongly_or_answer_obscurely_get_a_400_naming_them(
    served_model,
) -> None:
    """`true` as a pixel was read as 1 (numpy makes a bool list an int array); rows of different lengths got
    numpy's "inhomogeneous shape"; an empty list "shape (0,)"; a GET the message "bad request"."""
    from mlflow.pyfunc import scoring_server
    from starlette.testclient import TestClient

    client = TestClient(
        ClientFacing(scoring_server.init(served_model), FastImages(served_model)),
        raise_server_exceptions=False,
    )
    width = len(ROWS[0])
    cases = {
        "a bool": ({"instances": [ROWS[0], [True, *ROWS[1][1:]]]}, "row 1, column 0 is true"),
        "a bool alone": ({"inputs": [False, *ROWS[0][1:]]}, "value 0 is false"),
        "ragged": (
            {"instances": [ROWS[0], ROWS[1][:3]]},
            f"the images of instances must have the same size; row 0 has {width} values, row 1 has 3",
        ),
        "empty": ({"inputs": []}, "request: no images (inputs is an empty list)"),
        "only bools": ({"instances": [[True] * width]}, "pixel values must be numbers 0-255, not true/false"),
        "a bool among floats": ({"inputs": [[0.5, False, *ROWS[0][2:]]]}, "row 0, column 1 is false"),
        "images as rows": ({"instances": [[[0, 1], [2, True]]]}, "image 0, row 1, column 1 is true"),
    }
    for name, (body, message) in cases.items():
        answer = client.post("/invocations", json=body)
        assert answer.status_code == 400, (name, answer.text)
        assert message in answer.json()["message"], (name, answer.json())
    flags = client.post("/invocations", content=_parquet(FRAME > 100), headers={"Content-Type": PARQUET_TYPE})
    assert flags.status_code == 400 and "column pixel_0 holds true/false" in flags.json()["message"]
    got = client.get("/invocations")
    assert got.status_code == 405 and got.json()["message"].startswith("/invocations takes a POST of images")
    assert got.headers["allow"] == "POST"
    assert client.post("/invocations", json={"instances": ROWS[:2]}).status_code == 200


def test_a_request_larger_than_the_limit_is_refused_before_it_takes_the_servers_memory(served_model) -> None:
    """A 27 MB JSON and a Parquet of a million images were taken whole (RSS +0.9 GB): past the limit a
    request is a 413, by its Content-Length before it is read, or as its chunks arrive without one."""

    from mlflow.pyfunc import scoring_server
    from starlette.testclient import TestClient

    small = json.dumps({"instances": ROWS[:2]}).encode()
    app = ClientFacing(scoring_server.init(served_model), FastImages(served_model), max_bytes=len(small))
    client = TestClient(app, raise_server_exceptions=False)
    assert client.post("/invocations", content=small, headers={"Content-Type": JSON_TYPE}).status_code == 200
    large = json.dumps({"instances": ROWS[:3]}).encode()
    refused = client.post("/invocations", content=large, headers={"Content-Type": JSON_TYPE})
    assert refused.status_code == 413
    assert refused.json()["message"].startswith(f"the request is larger than {len(small) / 1e6:g} MB")
    # chunked, no Content-Length: refused once the chunks pass the limit, before the app reads any
    seen, _, sent = _served(200, b"never", large, b"text/csv", None, 60, max_bytes=3)
    assert sent[0]["status"] == 413 and "body" not in seen
