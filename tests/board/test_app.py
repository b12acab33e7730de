"""The board's JSON API and page, through FastAPI's test client (no port, no browser: the browser test is in
tests/board/test_browser.py, slow suite)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.linear_model import LogisticRegression

from mnist_lab.board.app import MAX_IMAGES, STATIC, create_app
from mnist_lab.core.features import fit_featurizer
from mnist_lab.core.settings import FeatureSettings
from mnist_lab.experiments.labels import read_labels
from mnist_lab.system.files import load_object, save_object
from tests.board.experiment_history import write_history

PAGE = {"X-Mnist-Lab": "board"}  # what the board's page sends with each POST


def write_workspace_model(root: Path, side: int = 8) -> None:
    """A best model in the workspace as the pipeline leaves it: best_model.json and its DVC-tracked files.
    It tells a bright top half (label 1) from a bright bottom half (label 0)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 60, size=(200, side, side)).astype(np.float64)
    labels = np.arange(200) % 2
    half = side // 2
    images[labels == 1, :half] += 180
    images[labels == 0, half:] += 180
    pixels = images.reshape(200, -1)
    featurizer = fit_featurizer(pixels, FeatureSettings(pca=False), seed=0)
    classifier = LogisticRegression(max_iter=500).fit(featurizer.transform(pixels), labels)
    save_object(root / "outputs" / "featurizer.joblib", featurizer)
    save_object(root / "models" / "mlp" / "classifier.joblib", classifier)
    best = {"model": "mlp", "metric": "f1_macro", "value": 1.0, "model_type": "mlp"}
    (root / "best_model.json").write_text(json.dumps(best))


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> tuple[TestClient, Path, list[str]]:
    root = tmp_path_factory.mktemp("board")
    commits = write_history(root, 6, experiments=1)
    write_workspace_model(root)
    return TestClient(create_app(root), headers=PAGE), root, commits


def test_the_page_loads_only_its_own_scripts_and_styles(client) -> None:
    http, _, _ = client
    page = http.get("/")
    assert page.status_code == 200 and "mnist-lab board" in page.text
    references = re.findall(r'(?:src|href)="([^"#]+)"', page.text)
    assert references and not [r for r in references if "://" in r or r.startswith("//")]
    for reference in references:
        assert http.get(f"/{reference}").status_code == 200, reference
    for name in ("board.js", "query.js", "diff.js", "board.css"):  # nothing fetched from elsewhere either
        assert not re.search(r"https?://", (STATIC / name).read_text()), name
    assert http.get("/snapshot.js").text.strip() == "window.BOARD_SNAPSHOT = null;"


def test_experiments_answer_rows_and_a_query_narrows_them(client) -> None:
    http, _, commits = client
    answer = http.get("/api/experiments").json()
    # the DVC experiment under its baseline (HEAD), as `dvc exp show` lists it
    assert [row["id"] for row in answer["rows"]] == [commits[0], "exp:exp-0", *commits[1:]]
    assert {"id", "accuracy", "params.models.mlp.alpha", "metrics.models.cnn.accuracy"} <= set(
        answer["columns"]
    )
    narrowed = http.get("/api/experiments", params={"q": "mlp.alpha = 0.001 and source = commit"}).json()
    assert narrowed["rows"] and all(r["params.models.mlp.alpha"] == 0.001 for r in narrowed["rows"])
    assert len(narrowed["rows"]) < len(answer["rows"]) and narrowed["total"] == len(answer["rows"])
    ranked = http.get("/api/experiments", params={"sort": "value", "desc": "true"}).json()["rows"]
    assert [r["value"] for r in ranked] == sorted((r["value"] for r in ranked), reverse=True)


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/api/experiments?q=accuracy%20%3E", 400, "query: expected a value after '>' at character 11"),
        ("/api/experiments?q=loss%20%3C%201", 400, "no column 'loss'"),
        ("/api/experiments?q=accuracy%20%3E%20abc", 400, "'accuracy' holds numbers, and 'abc' at character"),
        ("/api/experiments?q=alpha%20%3D%201", 400, "'alpha' is ambiguous: say which one (params.models.mlp"),
        ("/api/experiments/0123456789abcdef", 404, "no experiment '0123456789abcdef'"),
        ("/api/compare?ids=exp:exp-0", 400, "two experiments or more"),
        ("/api/compare?ids=exp:exp-0,nope", 404, "no experiment 'nope'"),
        ("/api/compare?ids=exp:exp-0,exp:exp-0", 400, "names exp:exp-0 a second time: name each once"),
        ("/api/experiments/a%00b", 404, "no experiment 'a\\x00b': an id has no control characters"),
        ("/api/compare?ids=exp:exp-0,a%00b", 404, "an id has no control characters"),
        ("/api/model?experiment=a%00b", 404, "an id has no control characters"),
        ("/api/experiments?q=" + "not%20" * 60 + "accuracy%20%3E%200", 400, "query: nested too deeply at"),
        ("/api/experiments?q=" + "(" * 3000 + "accuracy%20%3E%200" + ")" * 3000, 400, "nested too deeply"),
        ("/api/nothing-here", 404, "no such page or API route: GET /api/nothing-here (the API is listed at"),
        ("/static/missing.js", 404, "no such page or API route: GET /static/missing.js"),
    ],
)
def test_bad_requests_answer_4xx_with_a_clear_message(client, path: str, status: int, message: str) -> None:
    http, _, _ = client
    answer = http.get(path)
    assert answer.status_code == status and message in answer.json()["error"]


def test_compare_answers_what_the_compare_view_draws(client) -> None:
    http, _, commits = client
    answer = http.get("/api/compare", params={"ids": f"{commits[1][:8]},exp:exp-0"}).json()
    assert answer["experiments"] == [commits[1], "exp:exp-0"] and answer["baseline"] == commits[1]
    assert set(answer) >= {"params", "metrics", "curves", "confusion", "diffs", "rows"}
    assert answer["curves"]["exp:exp-0"]["cnn"][0]["epoch"] == 1
    rebased = http.get("/api/compare", params={"ids": f"{commits[1]},exp:exp-0", "baseline": "exp:exp-0"})
    assert rebased.json()["baseline"] == "exp:exp-0"


def test_the_digit_pad_answers_with_the_served_pyfunc(client) -> None:
    http, _, _ = client
    described = http.get("/api/model").json()
    assert described["n_pixels"] == 64 and described["rows"] == 8 and "mlp" in described["model"]
    top, bottom = [0.0] * 64, [0.0] * 64
    top[:32] = [250.0] * 32
    bottom[32:] = [250.0] * 32
    answer = http.post("/api/predict", json={"pixels": [top, bottom]}).json()
    labels = [p["label"] for p in answer["predictions"]]
    assert labels == [1, 0]
    first = answer["predictions"][0]
    assert sum(v for k, v in first.items() if k.startswith("probability_")) == pytest.approx(1.0)


def test_the_pad_answers_with_the_workspaces_model_as_it_is_now(tmp_path: Path, monkeypatch) -> None:
    """The workspace's best model was loaded once per board: after a `dvc repro` the pad kept answering
    with the old one. And the models it keeps are bounded (any site can make it load a commit's)."""
    from mnist_lab.board import app as board_app

    write_history(tmp_path, 1)
    write_workspace_model(tmp_path)
    pad = board_app.DigitPad(tmp_path)
    top = [250.0] * 32 + [0.0] * 32
    assert pad.predict([top])[0]["label"] == 1
    classifier = tmp_path / "models" / "mlp" / "classifier.joblib"
    retrained = load_object(classifier)
    retrained.classes_ = retrained.classes_[::-1]  # the rerun's model answers the other way
    save_object(classifier, retrained)
    assert pad.predict([top])[0]["label"] == 0
    monkeypatch.setattr(board_app, "MAX_PAD_MODELS", 1)
    save_object(classifier, load_object(classifier))  # another identity again
    pad.predict([top])
    assert len(pad._models) == 1


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"pixels": [[0.0] * 63]}, 400, "image 0 has 63 values; this model takes 64 (8x8"),
        ({"pixels": [[300.0] * 64]}, 400, "0-255"),
        ({"pixels": []}, 400, f"send 1 to {MAX_IMAGES} images"),
        ({"pixels": [[0.0] * 64] * (MAX_IMAGES + 1)}, 400, f"send 1 to {MAX_IMAGES} images"),
        ({"pixels": [[0.0] * 64], "experiment": "nope"}, 404, "no experiment 'nope'"),
        ({"pixels": [[True] * 64]}, 422, "pixels.0.0: Input should be a valid number"),
        ({"pixels": [["1"] * 64]}, 422, "pixels.0.0: Input should be a valid number"),
    ],
)
def test_bad_images_answer_4xx_naming_the_fix(client, body: dict, status: int, message: str) -> None:
    http, _, _ = client
    answer = http.post("/api/predict", json=body)
    assert answer.status_code == status and message in answer.json()["error"], answer.json()


def test_an_oversize_body_is_refused_before_it_is_read(client) -> None:
    http, _, _ = client
    answer = http.post("/api/predict", content=b"x" * 3_000_000, headers={"content-type": "application/json"})
    assert answer.status_code == 413 and "over 2,000,000 bytes" in answer.json()["error"]
    # without a declared length (chunked): refused as it arrives, not parsed whole
    chunks = (b"[" + b"0," * 50_000 for _ in range(30))
    chunked = http.post("/api/predict", content=chunks, headers={"content-type": "application/json"})
    assert chunked.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in chunked.request.headers
    assert chunked.status_code == 413 and "over 2,000,000 bytes" in chunked.json()["error"]
    small = http.post(  # chunked and small: read whole, then answered as usual
        "/api/predict",
        content=iter([b'{"pixels": [[0', b"]]}"]),
        headers={"content-type": "application/json"},
    )
    assert small.status_code == 400 and "image 0 has 1 values" in small.json()["error"], small.json()


def test_a_body_longer_than_it_declares_is_counted_as_it_arrives(client) -> None:
    """h11 reads a request with both Content-Length and Transfer-Encoding: chunked as chunked: the
    declared length proves nothing, the bytes are counted."""
    import asyncio

    _, root, _ = client
    messages = [{"type": "http.request", "body": b"x" * 500_000, "more_body": i < 4} for i in range(5)]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    headers = {"host": "127.0.0.1", "content-type": "application/json", "content-length": "5",
               "transfer-encoding": "chunked", **PAGE}  # fmt: skip
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/api/predict", "raw_path": b"/api/predict", "query_string": b"",
        "root_path": "", "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8050),
    }  # fmt: skip
    asyncio.run(create_app(root)(scope, receive, send))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    assert b"over 2,000,000 bytes" in sent[1]["body"] and len(messages) == 0


def test_a_method_a_route_does_not_take_is_a_405_naming_the_allowed_ones(client) -> None:
    http, root, _ = client
    answer = http.delete("/api/experiments")
    assert answer.status_code == 405 and answer.headers["allow"] == "GET"
    assert answer.json()["error"] == "DELETE /api/experiments: method not allowed (allowed: GET)"
    # without the page's header too (it was a 403 about the header): only a POST changes anything
    bare = TestClient(create_app(root)).put("/api/labels", json={})
    assert bare.status_code == 405 and bare.json()["error"].startswith("PUT /api/labels: method not allowed")
    # so the cross-site check on POSTs covers every route that changes something
    methods = {m for route in create_app(root).routes for m in getattr(route, "methods", None) or ()}
    assert methods <= {"GET", "HEAD", "POST"}


def test_a_malformed_body_is_a_4xx_too(client) -> None:
    http, _, _ = client
    answer = http.post("/api/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert answer.status_code == 422
    assert answer.json()["error"].startswith("malformed request: the body is not JSON (JSON decode error")
    missing = http.post("/api/predict", json={"images": []})
    assert missing.status_code == 422 and "pixels: Field required" in missing.json()["error"]


def test_the_api_is_documented(client) -> None:
    http, _, _ = client
    schema = http.get("/api/openapi.json").json()
    assert {
        "/api/experiments",
        "/api/experiments/{experiment}",
        "/api/compare",
        "/api/model",
        "/api/predict",
    } <= set(schema["paths"])
    assert http.get("/docs").status_code == 404  # the interactive docs would load scripts from a CDN


def test_labels_are_written_to_labels_yaml_as_the_cli_writes_them(client) -> None:
    http, root, commits = client
    answer = http.post("/api/labels", json={"experiment": commits[2][:9], "label": "hidden"})
    assert answer.status_code == 200 and answer.json()["labels"] == ["hidden"]
    assert f"{commits[2]}: [hidden]" in (root / "labels.yaml").read_text()
    assert commits[2] not in [r["id"] for r in http.get("/api/experiments").json()["rows"]]
    assert commits[2] in [r["id"] for r in http.get("/api/experiments?hidden=true").json()["rows"]]
    bad = http.post("/api/labels", json={"experiment": commits[2], "label": "Not OK!"})
    assert bad.status_code == 400 and "label 'Not OK!': use 1-32 lower-case letters" in bad.json()["error"]
    assert (
        http.post("/api/labels", json={"experiment": commits[2], "label": "hidden", "remove": True}).json()[
            "labels"
        ]
        == []
    )
    assert "hidden" not in (root / "labels.yaml").read_text()
    assert commits[2] in [r["id"] for r in http.get("/api/experiments").json()["rows"]]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"models.mlp.alpha": "-1"}, "models.mlp.alpha"),
        ({"models.nope.alpha": "1"}, "--set models.nope.alpha: params.yaml has no section 'nope' there"),
        ({"models.mlp.alhpa": "1"}, "alhpa"),
        (
            {"models.mlp.hidden_layer_sizes": "[50,"},
            "--set models.mlp.hidden_layer_sizes=[50,: not a YAML value",
        ),
    ],
)
def test_queueing_a_wrong_value_is_refused_with_the_clis_message(
    client, overrides: dict, message: str
) -> None:
    from mnist_lab.core.errors import SettingsError
    from mnist_lab.core.settings import load_params_yaml
    from mnist_lab.experiments.project import check_overrides

    http, root, _ = client
    answer = http.post("/api/queue", json={"set": overrides})
    assert answer.status_code == 400 and message in answer.json()["error"]
    with pytest.raises(SettingsError) as raised:  # what `mlflow run . -e train -P set=...` says
        check_overrides(load_params_yaml((root / "params.yaml").read_text()), None, list(overrides.items()))
    # the same message, and DVC never ran (in this repository, which has no .dvc, it would have said so)
    assert answer.json()["error"] == str(raised.value)


def test_override_values_may_be_json_numbers_and_booleans(client) -> None:
    """`{"models.mlp.alpha": 0.001}` was a 422 "Input should be a valid string": a number is written as
    -S takes it, and checked by the settings like text."""
    http, _, _ = client
    refused = http.post("/api/queue", json={"set": {"models.mlp.alpha": -1}})
    assert refused.status_code == 400 and "models.mlp.alpha" in refused.json()["error"]
    # past the settings: DVC's turn (this repository has no .dvc, so DVC refuses), with the value as sent
    taken = http.post("/api/queue", json={"set": {"models.mlp.alpha": 0.001, "+features.pca": False}})
    said = taken.json()["error"]
    assert taken.status_code == 400 and "-S models.mlp.alpha=0.001 -S +features.pca=false" in said, said
    assert http.post("/api/queue", json={"set": {"models.mlp.alpha": [1]}}).status_code == 422


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"message": "   ", "experiment": "exp:anything"}, 400, "the commit message is empty"),
        # an experiment the table does not hold: a 404 before DVC runs (it was DVC's raw text, a 400)
        ({"message": "try", "experiment": "exp:nope"}, 404, "no experiment 'exp:nope'"),
    ],
)
def test_a_commit_refused_is_refused_before_applying_anything(
    client, body: dict, status: int, message: str
) -> None:
    http, root, _ = client
    before = sorted(p.name for p in root.iterdir())
    answer = http.post("/api/commit", json=body)
    assert answer.status_code == status and message in answer.json()["error"]
    assert sorted(p.name for p in root.iterdir()) == before


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"force": "yes"}, "force: Input should be a valid boolean"),
        ({"force": 1}, "force: Input should be a valid boolean"),
        ({"min_delta": "0.1"}, "min_delta: Input should be a valid number"),
    ],
)
def test_promote_takes_json_booleans_and_numbers_only(client, body: dict, message: str) -> None:
    http, _, _ = client
    answer = http.post("/api/promote", json=body)
    assert answer.status_code == 422 and message in answer.json()["error"]


def test_a_label_request_takes_a_json_boolean(client) -> None:
    http, _, commits = client
    answer = http.post("/api/labels", json={"experiment": commits[0], "label": "x", "remove": "no"})
    assert answer.status_code == 422 and "remove: Input should be a valid boolean" in answer.json()["error"]


def test_queueing_nothing_is_refused(client) -> None:
    http, _, _ = client
    answer = http.post("/api/queue", json={"set": {}})
    assert answer.status_code == 400 and "at least one params.yaml override" in answer.json()["error"]


def test_params_answer_the_workspaces_params_flattened(client) -> None:
    http, _, _ = client
    assert http.get("/api/params").json()["params"]["models.mlp.alpha"] == 0.01


def test_a_post_from_anywhere_but_the_boards_page_is_refused(client) -> None:
    _, root, commits = client
    bare = TestClient(create_app(root))  # no page header: a cross-site form, or a script without preflight
    refused = bare.post("/api/labels", json={"experiment": commits[0], "label": "hidden"})
    assert refused.status_code == 403 and "must come from the board's page" in refused.json()["error"]
    evil = bare.post(
        "/api/labels",
        json={"experiment": commits[0], "label": "hidden"},
        headers={**PAGE, "Origin": "http://evil.example"},
    )
    assert evil.status_code == 403 and "from another site (http://evil.example)" in evil.json()["error"]
    assert "hidden" not in read_labels(root).get(commits[0], [])
    for other_scheme in ("https://testserver", "ws://testserver"):  # the same host, another origin
        answer = bare.post(
            "/api/labels",
            json={"experiment": commits[0], "label": "hidden"},
            headers={**PAGE, "Origin": other_scheme},
        )
        assert answer.status_code == 403, other_scheme
    same = bare.post(
        "/api/labels",
        json={"experiment": commits[0], "label": "hidden", "remove": True},
        headers={**PAGE, "Origin": "http://TestServer"},  # a host name's case is no other site
    )
    assert same.status_code == 200
    assert bare.get("/api/experiments").status_code == 200  # reading needs no header


def test_bound_to_loopback_only_its_own_host_names_are_answered_in_json(client) -> None:
    """DNS rebinding: a page of another site whose name now points at 127.0.0.1 sends its own Host. It gets
    the API's JSON error naming the header and the way out, before any route reads the repository."""
    from mnist_lab.board.app import LOOPBACK

    _, root, _ = client
    http = TestClient(create_app(root, hosts=LOOPBACK), base_url="http://127.0.0.1:8050", headers=PAGE)
    # any address passes: a page reaches this machine by its address only from that address's own origin
    for own in ("127.0.0.1:8050", "localhost:8050", "[::1]:8050", "127.0.0.1", "[::2]:8050", "10.1.2.3"):
        assert http.get("/api/experiments", headers={"Host": own}).status_code == 200, own
    for other in (
        "evil.example",
        "evil.example:8050",
        "127.0.0.1.evil.example",
        "",
        "[::1",
        "1.2.3.4.example",
    ):
        refused = http.get("/api/experiments", headers={"Host": other})
        assert refused.status_code == 400, other
        error = refused.json()["error"]
        assert f"the Host header {other!r} is not this board's" in error
        assert "127.0.0.1, localhost, ::1" in error and "open it as http://127.0.0.1:<port>" in error
    labels = read_labels(root)
    posted = http.post(
        "/api/labels", json={"experiment": "x", "label": "hidden"}, headers={"Host": "evil.example"}
    )
    assert posted.status_code == 400 and read_labels(root) == labels


@pytest.mark.parametrize("bound", ["0.0.0.0", "::", "127.0.1.1", "192.0.2.7"])
def test_bound_to_any_address_a_rebound_name_is_still_refused(client, monkeypatch, bound) -> None:
    """Bound to 0.0.0.0 or another address, the Host check was off: a page of evil.example rebound to the
    machine read the API and posted labels (its Origin matched its own Host). `serve` now always checks:
    the loopback names, the bound address, the machine's own name and `--allow-host` names pass."""
    import socket

    import uvicorn

    from mnist_lab.board import app as board_app

    _, root, commits = client
    served: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.update(app=app, **options))
    board_app.serve(root, bound, 8050, ["board.team.example:8050"])  # a port given with it: left out
    assert served["host"] == bound
    http = TestClient(served["app"], base_url="http://127.0.0.1:8050", headers=PAGE)
    # the machine's own addresses (a network's, which its name need not resolve to) pass as any address
    own = ["127.0.0.1:8050", "localhost", "BOARD.team.example:8050", "192.0.2.99:8050", "[fd00::2]:8050"]
    own += (
        [f"{socket.gethostname()}:8050"]
        if bound in ("0.0.0.0", "::")
        else [f"[{bound}]:8050" if ":" in bound else bound]
    )
    for name in own:
        assert http.get("/api/experiments", headers={"Host": name}).status_code == 200, name
    labels = read_labels(root)
    for other in ("evil.example:8050", "team.example", "192.0.2.8.example"):
        assert http.get("/api/experiments", headers={"Host": other}).status_code == 400, other
        posted = http.post(
            "/api/labels",
            json={"experiment": commits[0], "label": "pwned"},
            headers={"Host": other, "Origin": f"http://{other}"},
        )
        assert posted.status_code == 400, other
        assert "--allow-host" in posted.json()["error"]
    assert read_labels(root) == labels
