"""`mnist-lab serve`: the registry's champion over REST with `mlflow models serve`, every request format,
and a 4xx with a message for every bad request (slow: starts real servers)."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mnist_lab.core.data import Dataset, digits_dataset
from mnist_lab.datasets.folder import encode_dataset, replace_directory
from tests.helpers import (
    REPO_ROOT,
    free_port,
    post,
    run,
    run_all,
    run_dvc_stage,
    start,
    stop,
    wait_until_ready,
)

pytestmark = pytest.mark.slow
NAME = "digits"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A workspace whose random forest is registered and promoted, served on a free port."""
    root = tmp_path_factory.mktemp("serving") / "repo"
    root.mkdir()
    shutil.copy(REPO_ROOT / "dvc.yaml", root / "dvc.yaml")
    params = {"seed": 1, "models": {"forest": {"type": "random_forest", "n_estimators": 20}},
              "registry": {"model_name": NAME}}  # fmt: skip
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    digits = digits_dataset()
    small = Dataset(
        digits.train_images[:400],
        digits.train_labels[:400],
        digits.test_images[:100],
        digits.test_labels[:100],
    )
    replace_directory(encode_dataset(small), root / "data")
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{root.parent / 'mlflow.db'}", "DVC_ROOT": ""}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        for name, value in env.items():
            patch.setenv(name, value)
        patch.delenv("DVC_ROOT")
        run_all(["forest"])
        assert run_dvc_stage("register") == 0
    run(["mnist-lab", "promote"], root, env)
    port = free_port()
    server = start(["mnist-lab", "serve", "--port", str(port)], root, env)
    try:
        wait_until_ready(server, port)
        test_pixels = np.load(root / "outputs" / "prepared.npz")["test_pixels"]
        yield {"root": root, "env": env, "url": f"http://127.0.0.1:{port}", "pixels": test_pixels}
    finally:
        stop(server)


def columns(n: int) -> list[str]:
    return [f"pixel_{i}" for i in range(n)]


def test_every_request_format_gets_labels_and_probabilities(served: dict) -> None:
    pixels = served["pixels"][:5].astype(int)
    names = columns(pixels.shape[1])
    rows = pixels.tolist()
    bodies = {
        "dataframe_split": {"dataframe_split": {"columns": names, "data": rows}},
        "dataframe_records": {"dataframe_records": [dict(zip(names, r, strict=True)) for r in rows]},
        "instances (pixel lists)": {"instances": rows},
        "instances (rows x cols)": {
            "instances": pixels.reshape(5, *[round(pixels.shape[1] ** 0.5)] * 2).tolist()
        },
        "instances (records)": {"instances": [dict(zip(names, r, strict=True)) for r in rows]},
        "inputs (pixel lists)": {"inputs": rows},
        "inputs (columns)": {"inputs": {n: pixels[:, i].tolist() for i, n in enumerate(names)}},
        "floats": {"dataframe_split": {"columns": names, "data": (pixels * 0.5 + 0.25).tolist()}},
    }
    answers = {form: post(served["url"], json.dumps(body)) for form, body in bodies.items()}
    csv = ",".join(names) + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n"
    answers["csv"] = post(served["url"], csv, "text/csv")
    headerless = "\n".join(",".join(map(str, r)) for r in rows) + "\n"  # 64 (or 784) values per line
    answers["csv without a header"] = post(served["url"], headerless, "text/csv")
    numbered = ",".join(map(str, range(len(names)))) + "\n" + headerless  # pandas' unnamed columns
    answers["csv with column numbers"] = post(served["url"], numbered, "text/csv")
    parquet = io.BytesIO()
    pd.DataFrame(pixels.astype(np.uint8), columns=names).to_parquet(parquet)
    answers["parquet"] = post(served["url"], parquet.getvalue(), "application/vnd.apache.parquet")
    expected = None
    for form, (status, answer) in answers.items():
        assert status == 200, (form, answer)
        predictions = answer["predictions"]
        assert len(predictions) == 5 and set(predictions[0]) == {
            "label",
            *(f"probability_{d}" for d in range(10)),
        }
        assert all(abs(sum(v for k, v in p.items() if k != "label") - 1) < 1e-9 for p in predictions), form
        labels = [p["label"] for p in predictions]
        if form != "floats":
            expected = expected or labels
            assert labels == expected, form
    local = run(["mnist-lab", "predict", "data/t10k-images-idx3-ubyte.gz", "-o", "local.csv"],
                served["root"], served["env"])  # fmt: skip
    assert local.returncode == 0
    assert (served["root"] / "local.csv").read_text().splitlines()[1].split(",")[0] == str(expected[0])


JSON = "application/json"
SPLIT_65 = {"dataframe_split": {"columns": columns(65), "data": [[1] * 65]}}
SPLIT_63 = {"dataframe_split": {"columns": columns(63), "data": [[1] * 63]}}


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        ({"instances": [[1] * 63]}, JSON, 400, "expected images of 64 pixels"),
        (SPLIT_65, JSON, 400, "unexpected ['pixel_64']"),
        (SPLIT_63, JSON, 400, "missing ['pixel_63']"),
        ({"instances": [["abc"] * 64]}, JSON, 400, "pixel values must be numbers"),
        ({"instances": [[300] * 64]}, JSON, 400, "pixel values must be 0-255"),
        ({"instances": [[None] * 64]}, JSON, 400, "is missing (null, an empty field or NaN)"),
        ({"instances": []}, JSON, 400, "request: no images (instances is an empty list)"),
        ({"instances": [[1] * 64, [1] * 3]}, JSON, 400, "row 0 has 64 values, row 1 has 3"),
        ({"instances": [[0.5, True] + [0] * 62]}, JSON, 400, "row 0, column 1 is true"),
        ({}, JSON, 400, "exactly one of the input fields"),
        ("", JSON, 400, "valid JSON"),
        ("not json at all", JSON, 400, "valid JSON"),
        ("pixel_0\n1\n", "text/csv", 400, "missing ['pixel_1'"),
        (
            {"instances": [[0] * 784]},
            JSON,
            400,
            "expected images of 64 pixels, shape (count, 64) or (count, 8, 8); got shape (1, 784)",
        ),
        ({"instances": [[0] * 63 + ["x"]]}, JSON, 400, "row 0, column 63 is 'x'"),
        ("", "text/csv", 400, "No columns to parse from file"),
        ({"instances": [[1] * 64]}, "text/plain", 415, "content types"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_message(
    served: dict, body, content_type: str, status: int, message: str
) -> None:
    text = body if isinstance(body, str) else json.dumps(body)
    code, answer = post(served["url"], text, content_type)
    assert code == status and isinstance(answer, dict), (code, answer)
    # a short JSON reason: no stack trace (with this machine's paths), never the whole input echoed back
    assert set(answer) == {"error_code", "message"} and message in answer["message"], answer
    assert answer["error_code"] == "BAD_REQUEST", answer  # whichever path answered (the model's refusal too)
    assert len(answer["message"]) <= 300 and "\n" not in answer["message"]


def test_the_workspace_model_serves_without_a_registry(served: dict, tmp_path: Path) -> None:
    env = {**served["env"], "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'empty.db'}"}  # no champion here
    refused = run(["mnist-lab", "serve", "--port", str(free_port())], served["root"], env, check=False)
    assert refused.returncode == 2 and "has no champion: promote one" in refused.stderr
    assert "--workspace" in refused.stderr
    port = free_port()
    server = start(["mnist-lab", "serve", "--workspace", "--port", str(port)], served["root"], env)
    try:
        wait_until_ready(server, port)
        rows = served["pixels"][:3].astype(int).tolist()
        status, answer = post(f"http://127.0.0.1:{port}", json.dumps({"instances": rows}))
        assert status == 200 and len(answer["predictions"]) == 3
        champion = post(served["url"], json.dumps({"instances": rows}))[1]
        assert answer == champion  # the same model: the champion is this workspace's best
    finally:
        stop(server)
    bad = run(["mnist-lab", "serve", "--port", "70000"], served["root"], served["env"], check=False)
    assert bad.returncode == 2 and "argument --port: '70000' is not a port number (1 to 65535)" in bad.stderr
