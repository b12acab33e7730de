"""`mnist-lab board`: the experiments page and its JSON API, served on 127.0.0.1 by uvicorn.

Every script and style comes from this package (`board/static/`), nothing from a CDN: the page works offline.
The API (its OpenAPI schema at `/api/openapi.json`; the README lists the endpoints):

    GET  /api/experiments?q=&sort=&desc=&hidden=&runs=&code_only=
                                                   the table: columns, rows (400: bad query or sort)
    GET  /api/runs                                 the tracking store's runs no experiment names, as rows
    GET  /api/experiments/{id}                     one row
    GET  /api/champion                             the champion: its registry version's run, or tagged commit
    GET  /api/compare?ids=a,b[,c...]&baseline=a    params, metrics with deltas, curves, confusion, code diffs
    GET  /api/model?experiment=                    the pad's model (an id, `champion`) and its input size
    POST /api/labels   {"experiment": id, "label": "hidden", "remove": false}
                                                   a label in labels.yaml, as `mnist-lab label` sets it
    GET  /api/params                               the workspace's params.yaml, flattened
    GET  /api/queue                                DVC's experiment queue (`dvc queue status`)
    POST /api/queue    {"set": {"models.mlp.alpha": "0.001"}, "name": null}
                                                   checked by the settings, then `dvc exp run --queue -S`
    GET  /api/queue/{name}/output                  what a queued experiment printed so far (`dvc queue logs`):
                                                   its stage, its last epoch line, its last lines
    POST /api/queue/start                          `dvc queue start`
    POST /api/commit   {"message": "...", "experiment": "exp:<name>"}   `dvc exp apply` + `mnist-lab commit`
    POST /api/promote  {"force": false, "min_delta": 0}   `mnist-lab promote`
    POST /api/predict  {"pixels": [[0-255, ...]], "experiment": id}
                                                   labels and per-class probabilities (the served pyfunc)

Bad input answers 4xx with `{"error": "<what is wrong and how to fix it>"}`. GET requests change nothing; a
POST is served only from the board's own page (its `X-Mnist-Lab: board` header, and a browser's Origin, when
sent, this server's): another site cannot make a visitor's browser queue, commit or promote. Bound to a
loopback address (the default), the app answers only Host names of that address (no DNS rebinding).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import socket
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, Strict
from starlette.exceptions import HTTPException

from mnist_lab.board.views import ExperimentsBoard, StoreUnavailable, UnknownExperiment
from mnist_lab.core.errors import MnistLabError

STATIC = Path(__file__).with_name("static")
MAX_IMAGES = 64  # per predict request: the pad sends one; a few for batch checks
MAX_BODY_BYTES = 2_000_000


TOO_LARGE = f"request body over {MAX_BODY_BYTES:,} bytes: send fewer or smaller images"


class _CountedBody:
    """ASGI middleware: every request body is read here, at most MAX_BODY_BYTES of it (413 past that,
    before the app parses anything), then handed to the app, whatever length it declares (chunked, or
    Content-Length and chunked at once, which h11 reads as chunked). A body declaring a length over the
    limit is refused before it is read (`_limit_body`)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        messages, received = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            received += len(message.get("body", b""))
            if received > MAX_BODY_BYTES:
                await JSONResponse({"error": TOO_LARGE}, status_code=413)(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> dict[str, Any]:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


PAGE_HEADER, PAGE_HEADER_VALUE = "X-Mnist-Lab", "board"  # sent by static/board.js with every POST
LOOPBACK = ("127.0.0.1", "localhost", "::1")
WILDCARD = ("0.0.0.0", "::", "")  # bound to every address of the machine


def allowed_hosts(host: str, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """The host names a request's Host header may give to a board bound to `host`, besides any IP address
    (a page can reach this machine by its address only from this machine's own origin; DNS rebinding needs
    a name): the loopback names, the bound address, `extra` (`--allow-host`: the names others reach it by;
    a port given with one is left out) and, bound to every address, the machine's own name. Any other name
    is a page of another site whose name was rebound to this machine, whatever address the board listens
    on."""
    names = [*LOOPBACK, host, *extra]
    if host in WILDCARD:
        names.append(socket.gethostname())
    hostnames = (_host_name(name) for name in names if name not in WILDCARD)
    return tuple(dict.fromkeys(name for name in hostnames if name))


def _host_name(given: str) -> str | None:
    """The host name of a Host header or a name given by the user (`board.example:8050`, `[::1]:8050`),
    lowercase and without port or brackets; None when it is none."""
    try:
        name = urlsplit(f"//{given}").hostname if given.isprintable() else None
    except ValueError:  # "[::1" and the like: no host name at all
        return None
    if name is None and ":" in given and "[" not in given:  # a bare IPv6 address, as --host takes one
        name = given.lower()
    return name


def _is_address(name: str | None) -> bool:
    try:
        ipaddress.ip_address(name or "")
    except ValueError:
        return False
    return True


CHAMPION = "champion"  # the pad's name for the champion's model (registry alias, else the champion commit)
MAX_PAD_MODELS = 8  # models the digit pad keeps loaded


def _workspace_identity(root: Path) -> str:
    """What the workspace's best model is made of, as it is now: best_model.json's text and the size and
    time of the model files (cheap: nothing is read but one small file)."""
    best = root / "best_model.json"
    try:
        text = best.read_text(encoding="utf-8")
        name = json.loads(text).get("model", "")
    except (OSError, ValueError, AttributeError):
        return "unreadable"  # loading says what is wrong
    parts = [text]
    for path in (root / "outputs" / "featurizer.joblib", root / "models" / str(name) / "classifier.joblib"):
        with contextlib.suppress(OSError):
            stat = path.stat()
            parts.append(f"{stat.st_mtime_ns}:{stat.st_size}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


class DigitPad:
    """The models the digit pad asks, each in the pyfunc that `mnist-lab serve` serves, loaded once: the
    workspace's best model (from its DVC-tracked files), the best model of any experiment commit (from the
    DVC cache), a run's logged model (`run:<id>`, from the tracking store), or the champion (the registry's
    alias; without a registry, the tagged champion commit's)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        # by commit, "champion <which one>" or "workspace <its files' identity>"; the MAX_PAD_MODELS used
        # last (any page, another site's too, can make the board load a commit's model: memory is bounded)
        self._models: OrderedDict[str, tuple[Any, str]] = OrderedDict()

    def model(self, commit: str | None = None) -> tuple[Any, str]:
        """(the pyfunc, what it is) for `commit`'s best model, or the workspace's when None."""
        from mnist_lab.serving.pyfunc import DigitClassifier

        # the champion is asked which model it is each time (a newly promoted one is loaded, not the old),
        # and the workspace's files (a `dvc repro` since makes another best model)
        if commit == CHAMPION:
            key = f"{CHAMPION} {_champion_identity(self.root)}"
        elif commit is None:
            key = f"workspace {_workspace_identity(self.root)}"
        else:
            key = commit
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
            else:
                if commit is None:
                    from mnist_lab.serving.inference import workspace_best_model

                    name, pipeline, _ = workspace_best_model(self.root)
                    described = f"the workspace's best model ({name}, from DVC)"
                elif commit == CHAMPION:
                    pipeline, described = _champion(self.root, key.split(" ", 1)[1])
                elif commit is not None and commit.startswith("run:"):
                    pipeline, described = _run_model(self.root, commit.removeprefix("run:"))
                else:
                    from mnist_lab.serving.registry import committed_model

                    name, pipeline = committed_model(self.root, commit)
                    described = f"{name} of experiment {commit[:12]} (from the DVC cache)"
                self._models[key] = (DigitClassifier(pipeline, int(pipeline.n_features_in_)), described)
                while len(self._models) > MAX_PAD_MODELS:
                    self._models.popitem(last=False)
            return self._models[key]

    def describe(self, commit: str | None = None) -> dict[str, Any]:
        model, described = self.model(commit)
        side = round(model.n_pixels**0.5)
        return {"model": described, "commit": commit, "n_pixels": model.n_pixels, "rows": side, "cols": side}

    def predict(self, pixels: list[list[float]], commit: str | None = None) -> list[dict[str, Any]]:
        import numpy as np

        from mnist_lab.core.features import pixel_frame
        from mnist_lab.serving.inference import check_pixel_values

        model, _ = self.model(commit)
        if not pixels or len(pixels) > MAX_IMAGES:
            raise BadRequest(f"pixels: send 1 to {MAX_IMAGES} images, each a list of {model.n_pixels} values")
        side = round(model.n_pixels**0.5)
        wrong = [i for i, image in enumerate(pixels) if len(image) != model.n_pixels]
        if wrong:
            raise BadRequest(
                f"pixels: image {wrong[0]} has {len(pixels[wrong[0]])} values; this model takes "
                f"{model.n_pixels} ({side}x{side}, row by row): resize the image first"
            )
        array = np.asarray(pixels, dtype=np.float64)
        check_pixel_values(array, "pixels")
        frame = model.predict(None, pixel_frame(array))
        return frame.to_dict(orient="records")


def _run_model(root: Path, run_id: str) -> tuple[Any, str]:
    """A run's logged model (its pipeline) from the tracking store, and what it is."""
    from mnist_lab import tracking
    from mnist_lab.serving import registry

    client = tracking.mlflow_client(tracking.TrackingSettings.from_environment(root))
    run = client.get_run(run_id)
    uri = tracking.logged_model_uri(client, run)
    if uri is None:
        raise BadRequest(f"run:{run_id} logged no model: the pad answers with a model; pick another row")
    name = run.data.tags.get(f"{tracking.TAG_PREFIX}model") or run.info.run_name
    return registry.load_sklearn_model(
        root, uri
    ), f"{name} of run {run_id[:12]} ({uri}, from the tracking store)"


def _champion_identity(root: Path) -> str:
    """Which model is the champion now: `v<version>` of the registry's alias, or without a registry the
    commit git tag `mnist-lab/champion` points at (RegistryError saying how to get one when there is none)."""
    from mnist_lab.core.settings import load_settings
    from mnist_lab.serving import registry

    if registry.registry_available(root):
        name = load_settings(root / "params.yaml").registry.model_name
        return f"v{registry.champion_version(root, name)}"
    commit = registry.tagged_commit(root, registry.CHAMPION_TAG)
    if commit is None:
        raise registry.RegistryError(
            f"no champion: this server has no registry and no commit is tagged {registry.CHAMPION_TAG}; "
            "promote one first (`mnist-lab promote`)"
        )
    return commit


def _champion(root: Path, identity: str) -> tuple[Any, str]:
    """The champion's pipeline and what it is, for `_champion_identity`'s answer."""
    from mnist_lab.core.settings import load_settings
    from mnist_lab.serving import registry

    if identity.startswith("v"):
        name = load_settings(root / "params.yaml").registry.model_name
        pipeline = registry.load_sklearn_model(root, f"models:/{name}/{identity[1:]}")
        return pipeline, f"the registry's champion ({name} {identity})"
    model, pipeline = registry.committed_model(root, identity)
    return pipeline, f"the champion commit {identity[:12]}'s {model} (from the DVC cache)"


class PredictRequest(BaseModel):
    # strict: JSON numbers only (true or "1" are not grey levels)
    pixels: list[list[Annotated[float, Strict()]]] = Field(
        description="images, 0-255 grey levels, row by row"
    )
    experiment: str | None = Field(
        None, description="whose model: an id, or `champion` (default: the workspace's)"
    )


class LabelRequest(BaseModel):
    experiment: str = Field(description="an experiment id")
    label: str = Field(description="1-32 characters: a-z 0-9 - _ .")
    remove: Annotated[bool, Strict()] = Field(False, description="remove the label instead (true or false)")


OverrideValue = (
    Annotated[str, Strict()]
    | Annotated[bool, Strict()]
    | Annotated[int, Strict()]
    | Annotated[float, Strict()]
)


def override_text(value: str | bool | int | float) -> str:
    """A JSON value of an override as `-S key=<text>` takes it: text as it is, numbers and true/false as
    JSON writes them (0.001 arrives as 0.001, not as the text a client had to send before)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else repr(value)


class QueueRequest(BaseModel):
    set: dict[str, OverrideValue] = Field(
        description="params.yaml overrides, `{key: value}` (dvc exp run -S key=value): text, a number or a "
        "boolean"
    )
    name: str | None = Field(None, description="the experiment's name (default: DVC's)")


class CommitRequest(BaseModel):
    message: str = Field(min_length=1, description="the commit message")
    experiment: str | None = Field(None, description="a DVC experiment (exp:<name>) to apply first")


class PromoteRequest(BaseModel):
    # strict: JSON true/false and numbers only ("yes" or "1" promoting by force would be a surprise)
    force: Annotated[bool, Strict()] = Field(
        False, description="promote even if the challenger does not beat the champion"
    )
    min_delta: Annotated[float, Strict()] = Field(
        0.0, ge=0, description="the challenger must win by more than this"
    )


class BadRequest(MnistLabError):
    """A request the API refuses (400), with what to send instead."""


def _same_origin(origin: str, scheme: str, host: str) -> bool:
    """Whether a browser's Origin is this server's: the same scheme and host (a host name's case aside)."""
    try:
        given = urlsplit(origin)
    except ValueError:
        return False
    return given.scheme.lower() == scheme.lower() and given.netloc.lower() == host.lower()


def create_app(root: Path, hosts: Sequence[str] | None = None) -> FastAPI:
    """The board's app over the repository at `root`. `hosts`: the only host names a request may give in
    its Host header (`serve` passes allowed_hosts()); None: any (tests)."""
    board = ExperimentsBoard(root)
    pad = DigitPad(root)
    app = FastAPI(
        title="mnist-lab board",
        description=__doc__,
        docs_url=None,  # the interactive docs load scripts from a CDN: the page must work offline
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.board = board
    # the requests that change the repository run one at a time (FastAPI runs them in threads): DVC takes
    # its own lock and refuses a second command at once, and labels.yaml is read, changed and written
    changing = threading.Lock()

    @app.exception_handler(StoreUnavailable)
    async def _store_away(request: Request, exc: StoreUnavailable) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=503)

    @app.exception_handler(UnknownExperiment)
    async def _unknown(request: Request, exc: UnknownExperiment) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=404)

    @app.exception_handler(HTTPException)
    async def _no_route(request: Request, exc: HTTPException) -> JSONResponse:
        """Unknown paths and methods answer like every other error: {"error": ...}, naming the request."""
        where = f"{request.method} {request.url.path}"
        if exc.status_code == 404:
            message = f"no such page or API route: {where} (the API is listed at /api/openapi.json)"
        elif exc.status_code == 405:
            message = f"{where}: method not allowed (allowed: {(exc.headers or {}).get('Allow', '?')})"
        else:
            message = f"{where}: {exc.detail}"
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _malformed(request: Request, exc: RequestValidationError) -> JSONResponse:
        def problem(error: dict[str, Any]) -> str:
            if error["type"] == "json_invalid":  # its location is a character offset, not a field
                return f"the body is not JSON ({error['msg']})"
            return f"{'.'.join(str(part) for part in error['loc'][1:]) or 'body'}: {error['msg']}"

        problems = "; ".join(problem(error) for error in exc.errors())
        return JSONResponse({"error": f"malformed request: {problems}"}, status_code=422)

    @app.exception_handler(MnistLabError)
    async def _refused(request: Request, exc: MnistLabError) -> JSONResponse:
        from mnist_lab.system.redact import redact

        return JSONResponse({"error": redact(str(exc))}, status_code=400)

    @app.middleware("http")
    async def _own_page_only(request: Request, call_next):
        """A POST changes the repository: it must come from this board's own page. The page sends a header
        no cross-site form can (and a cross-site script cannot without a CORS preflight, which this app
        never grants), and a browser's Origin, when sent, must be this server's."""
        # every change is a POST (no route takes PUT, DELETE, ...: routing answers those 405, a test holds it)
        if request.method == "POST":
            origin = request.headers.get("origin")
            if request.headers.get(PAGE_HEADER.lower()) != PAGE_HEADER_VALUE:
                return JSONResponse(
                    {"error": f"refused: a POST must come from the board's page (header {PAGE_HEADER})"},
                    status_code=403,
                )
            if origin and not _same_origin(origin, request.url.scheme, request.headers.get("host", "")):
                return JSONResponse(
                    {"error": f"refused: a POST from another site ({origin})"}, status_code=403
                )
        return await call_next(request)

    @app.middleware("http")
    async def _own_host_only(request: Request, call_next):
        """A request naming another host comes from a page of another site whose name was rebound to this
        machine's address (DNS rebinding): refused before any route reads anything."""
        if hosts is not None:
            given = request.headers.get("host", "")
            name = _host_name(given)
            if name not in hosts and not _is_address(name):
                allowed = ", ".join(hosts)
                return JSONResponse(
                    {
                        "error": f"refused: the Host header {given!r} is not this board's (it answers "
                        f"only {allowed}): open it as http://127.0.0.1:<port> or http://localhost:<port>, "
                        "or start it with --allow-host <the name you open it by>"
                    },
                    status_code=400,
                )
        return await call_next(request)

    @app.middleware("http")
    async def _limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
            return JSONResponse({"error": TOO_LARGE}, status_code=413)
        return await call_next(request)

    app.add_middleware(_CountedBody)  # every body counted as it arrives, whatever length it declares

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/ping", include_in_schema=False)
    def ping() -> Response:
        return Response("ok\n", media_type="text/plain")

    @app.get("/snapshot.js", include_in_schema=False)
    def snapshot() -> Response:  # a static export fills it; the live page asks the API
        return Response("window.BOARD_SNAPSHOT = null;\n", media_type="text/javascript")

    @app.get("/api/experiments")
    def experiments(
        q: str = Query("", description="a query: `accuracy > 0.97 and model = cnn` (see the README)"),
        sort: str | None = Query(None, description="a column to sort by"),
        desc: bool = Query(False, description="sort descending"),
        hidden: bool = Query(False, description="include experiments labelled `hidden`"),
        runs: bool = Query(False, description="include the store's runs that no experiment names"),
        code_only: bool = Query(
            False,
            description="include the commits that changed code alone (the params, data, results and runs of "
            "the experiment before them)",
        ),
    ) -> dict[str, Any]:
        return board.table(q, sort, desc, hidden, runs, code_only)

    @app.get("/api/runs")
    def unlinked_runs() -> Any:
        """The tracking store's runs that no experiment commit or DVC experiment names, as rows (503 with
        the reason when the store cannot be read)."""
        return {"rows": board.runs()}

    @app.get("/api/champion")
    def champion() -> dict[str, Any]:
        """The champion: the registry's (`run_id`, `version`) or, without a registry, the tagged commit's
        (`commit`); nulls when there is none yet (503 with the reason when the store cannot be asked)."""
        return board.champion()

    @app.get("/api/experiments/{experiment}")
    def experiment(experiment: str) -> dict[str, Any]:
        return board.row(experiment)

    @app.get("/api/compare")
    def compare(
        ids: str = Query(..., description="experiment ids, comma-separated (two or more)"),
        baseline: str | None = Query(None, description="the experiment deltas are taken against"),
    ) -> dict[str, Any]:
        return board.compare([i for i in ids.split(",") if i], baseline)

    def _commit(experiment: str | None) -> str | None:
        """Whose model the pad answers with: a commit, `run:<id>`, CHAMPION, or None (the workspace's)."""
        if experiment == CHAMPION:
            return CHAMPION
        if not experiment:
            return None
        row = board.row(experiment)
        if row["source"] == "run":  # its logged model (its commit is the code it ran, not its model)
            return str(row["id"])
        return row["commit"]

    @app.get("/api/model")
    def model(
        experiment: str | None = Query(
            None, description="an experiment id, or `champion` (default: the workspace's best model)"
        ),
    ) -> dict[str, Any]:
        return pad.describe(_commit(experiment))

    @app.post("/api/predict")
    def predict(request: PredictRequest) -> dict[str, Any]:
        commit = _commit(request.experiment)
        return {"predictions": pad.predict(request.pixels, commit), "model": pad.describe(commit)["model"]}

    @app.post("/api/labels")
    def label(request: LabelRequest) -> dict[str, Any]:
        """Add or remove a label in labels.yaml, as `mnist-lab label` does; answers the experiment's row."""
        with changing:
            return board.set_label(request.experiment, request.label, not request.remove)

    @app.get("/api/params")
    def params() -> dict[str, Any]:
        """The workspace's params.yaml, flattened: what a queued experiment changes."""
        from mnist_lab.core.settings import flatten, load_params_yaml

        return {"params": flatten(load_params_yaml((root / "params.yaml").read_text(encoding="utf-8")) or {})}

    @app.get("/api/queue")
    def queue() -> dict[str, Any]:
        """DVC's experiment queue (`dvc queue status`)."""
        from mnist_lab.experiments.queue import queue_status

        return {"tasks": queue_status(root)}

    @app.post("/api/queue")
    def enqueue(request: QueueRequest) -> dict[str, Any]:
        """Check the overrides with the typed settings, then `dvc exp run --queue -S ...`."""
        from mnist_lab.experiments.queue import queue_experiment

        if not request.set:
            raise BadRequest(
                'set: give at least one params.yaml override, e.g. {"models.mlp.alpha": "0.001"}'
            )
        with changing:
            overrides = [(key, override_text(value)) for key, value in request.set.items()]
            return {"queued": queue_experiment(root, overrides, request.name)}

    @app.get("/api/queue/{name}/output")
    def queue_output(name: str) -> dict[str, Any]:
        """What the queued experiment `name` has printed so far: `started`, `stage`, `epoch`, `lines`."""
        from mnist_lab.experiments.queue import NotQueued, experiment_output

        try:
            return {"name": name, **experiment_output(root, name)}
        except NotQueued as exc:
            raise UnknownExperiment(str(exc)) from None

    @app.post("/api/queue/start")
    def start() -> dict[str, Any]:
        """`dvc queue start`: a DVC worker runs the queued experiments; each shows up in the table."""
        from mnist_lab.experiments.queue import start_queue

        with changing:
            return {"started": start_queue(root)}

    @app.post("/api/commit")
    def commit(request: CommitRequest) -> dict[str, Any]:
        """Apply a DVC experiment (if given), then commit the experiment as `mnist-lab commit -m` does."""
        from mnist_lab.experiments.linking import commit_experiment
        from mnist_lab.experiments.queue import NoSuchExperiment, apply_experiment
        from mnist_lab.experiments.table import carry_labels

        if not request.message.strip():  # before an apply changes the workspace
            raise BadRequest("message: say what this experiment changes (the commit message is empty)")
        if request.experiment and not request.experiment.startswith("exp:"):
            raise BadRequest(
                "experiment: only a DVC experiment (exp:<name>) is applied; commits are already in git"
            )
        with changing:
            if request.experiment:
                try:
                    apply_experiment(root, request.experiment[4:])
                except NoSuchExperiment as exc:  # an applied one is not a row any more
                    raise UnknownExperiment(str(exc)) from None
            sha, links, tagging = commit_experiment(root, request.message)
            carried = carry_labels(root, sha)  # the experiment's row is this commit's now
        return {
            "commit": sha,
            "labels_moved": carried,  # exp:<name> -> its labels, now the commit's
            "runs": {link.model: link.run_id for link in links},
            "untagged": sorted(tagging.untagged),
            "untagged_because": tagging.untagged,
            "kept": tagging.kept,  # model -> the earlier commit that recorded its run first (keeps its tag)
        }

    @app.post("/api/promote")
    def promote(request: PromoteRequest) -> dict[str, Any]:
        """`mnist-lab promote`: the challenger becomes champion only if it beats it (same rules)."""
        from mnist_lab.serving.promotion import promote_champion

        with changing:
            name, decision = promote_champion(root, force=request.force, min_delta=request.min_delta)
        return {"model": name, "promoted": decision.promoted, "decision": decision.table()}

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def serve(root: Path, host: str, port: int, allow_hosts: Sequence[str] = ()) -> None:
    """Serve the board until interrupted. The table is read before the server starts (a fraction of a
    second), the store's runs in the background after, so the first page waits for neither MLflow's import
    (about 3 s) nor the git history."""
    import uvicorn

    app = create_app(root, hosts=allowed_hosts(host, allow_hosts))
    board = app.state.board
    _quietly(board.rows)
    threading.Thread(target=_quietly, args=(board.runs,), daemon=True).start()
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _quietly(read: Any) -> None:
    with contextlib.suppress(Exception):  # the page asks again and shows what is wrong
        read()
