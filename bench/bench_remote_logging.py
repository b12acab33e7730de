"""Metric histories go to MLflow in batches: per-point `log_metric` versus `tracking.log_model_run`.

Every store is real and local: an embedded sqlite store, `mlflow server --workers 1` on 127.0.0.1, and the
same server with `--app-name basic-auth`, both with the auth cache on (`auth_cache_ttl_seconds = 60`, as
tests/helpers.py starts it) and off (0, MLflow's default: the server hashes the password on every
request). Credentials reach the client through MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD.
Servers run one at a time, each in its own temporary folder, and are stopped at the end.

Per store, in this process (mlflow imported first; each server left to finish starting its job runner and
huey consumers, which take ~20 s of CPU after /health answers; then --warmup untimed runs):
  * per-point baseline: `MlflowClient.log_metric`, one call per point, until --points points or
    --seconds seconds, whichever comes first;
  * a cheap request (`get_experiment`) --repeats times: the per-request cost;
  * a run logged as the evaluate stage logs it (`tracking.check_server`, the credentials check that also
    finds the experiment's id, then `log_model_run`) of a synthetic record, 100 epochs x 10 metrics (1,000
    points) + 30 params + 20 final metrics, no model; median of --repeats. Points/s counts history points
    and final metrics.
Every HTTP request the client makes is timed (a wrapper on `requests.Session.request`; the check, made with
urllib, is timed around it), so the tables say how many requests a run costs and how much of its wall time
has one in flight (independent requests go several at a time).

Overhead against training, on the basic-auth servers: a real MLP (`train_classifier`, 100 epochs, patience
100) trained on the bundled digits and timed; then `log_model_run` of its real run (4 metrics per epoch) and
of the synthetic 10-metric record, each with and without the model (the model as the evaluate stage logs
it: the DigitClassifier pyfunc around featurizer + classifier, a 5-row `pixel_frame` input example; this
package pickled by value). Overhead = (check + log_model_run) wall time / training wall time (median of
--repeats, --model-repeats with the model). The digits train in about a second, so the share is also
given against an MNIST-scale MLP: one epoch on
random 60,000 x 784 float32 data (the train stage's per-epoch work: partial_fit plus the history's
predictions), times 100.

    python bench/bench_remote_logging.py [--repeats 3] [--model-repeats 2] [--warmup 2]
                                         [--points 100] [--seconds 12] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchlib import BIN_DIR, environment, environment_line, fmt, log, markdown_table, median, write_json
from mnist_lab import tracking
from mnist_lab.core.data import digits_dataset, flatten_images
from mnist_lab.core.features import fit_featurizer, full_model, pixel_frame, scale_pixels
from mnist_lab.core.models import train_classifier
from mnist_lab.core.settings import FeatureSettings, MLPSettings
from mnist_lab.serving.pyfunc import DigitClassifier
from mnist_lab.tracking import runs

ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin-password-0123456789"  # as tests/helpers.py: basic-auth needs 12+ characters
EPOCHS = 100
METRICS_PER_EPOCH = 10
N_PARAMS = 30
N_FINAL_METRICS = 20
MNIST_SHAPE = (60_000, 784)
MNIST_EPOCHS_TIMED = 3
INPUT_EXAMPLE_ROWS = 5
SEED = 42
TARGET_RATIO = 100.0
TARGET_OVERHEAD = 0.03


# --- servers ------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Store:
    """One place runs go: a sqlite file, or a `mlflow server` this script starts (and stops)."""

    key: str
    label: str
    folder: Path
    server: bool = False
    basic_auth: bool = False
    auth_cache_ttl_s: int = 0
    process: subprocess.Popen | None = None
    port: int = field(default_factory=free_port)
    start_s: float | None = None
    settle_s: float | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}" if self.server else f"sqlite:///{self.folder / 'mlflow.db'}"

    def settings(self) -> tracking.TrackingSettings:
        artifacts = None if self.server else (self.folder / "mlartifacts").as_uri()
        return tracking.TrackingSettings(self.uri, "bench-remote-logging", artifacts)

    def start(self) -> None:
        """Start `mlflow server --workers 1` (as tests/helpers.py's MlflowServer) and wait for it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self.server:
            return
        command = [
            str(BIN_DIR / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{self.folder / 'server.db'}",
            "--artifacts-destination",
            str(self.folder / "artifacts"),
        ]
        env = {name: value for name, value in os.environ.items() if not name.startswith("MLFLOW_")}
        env["PATH"] = f"{BIN_DIR}{os.pathsep}{env.get('PATH', '')}"  # its uvicorn, not another one
        if self.basic_auth:
            config = self.folder / "basic_auth.ini"
            config.write_text(
                "[mlflow]\ndefault_permission = READ\n"
                f"database_uri = sqlite:///{self.folder / 'auth.db'}\nadmin_username = {ADMIN_USER}\n"
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                f"auth_cache_ttl_seconds = {self.auth_cache_ttl_s}\n",
                encoding="utf-8",
            )
            env |= {
                "MLFLOW_AUTH_CONFIG_PATH": str(config),
                "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "MLFLOW_FLASK_SERVER_SECRET_KEY": "bench-secret-key",
            }
            command += ["--app-name", "basic-auth"]
        started = time.perf_counter()
        with open(self.folder / "server.log", "ab") as output:
            self.process = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2):
                    break
            except urllib.error.HTTPError:
                break  # it answers (basic auth may refuse /health)
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self.folder / "server.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"mlflow server did not start:\n{tail}")
            time.sleep(0.3)
        self.start_s = time.perf_counter() - started
        self.settle_s = self.wait_until_idle()

    def cpu_seconds(self) -> float:
        """CPU time used so far by the server's processes (its session: uvicorn, the job runner, the huey
        consumers)."""
        assert self.process is not None
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[3]) == self.process.pid:  # session id (field 6)
                    total += int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15)
        return total / os.sysconf("SC_CLK_TCK")

    def wait_until_idle(self, limit_s: float = 60.0) -> float:
        """After /health answers, the server still starts a job runner and 7 huey consumers, each importing
        mlflow (~20 s of CPU on 2 cores): wait until its processes use under 5 % of a core for 2 s."""
        started = time.perf_counter()
        quiet, before = 0, self.cpu_seconds()
        while quiet < 2 and time.perf_counter() - started < limit_s:
            time.sleep(1.0)
            now = self.cpu_seconds()
            quiet = quiet + 1 if now - before < 0.05 else 0
            before = now
        return time.perf_counter() - started

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=5)  # a throw-away server: no need for its graceful shutdown
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    @contextlib.contextmanager
    def running(self) -> Iterator[Store]:
        """The store, started, with the client's credentials in the environment while it is in use."""
        credentials = {"MLFLOW_TRACKING_USERNAME": ADMIN_USER, "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD}
        saved = {name: os.environ.pop(name, None) for name in credentials}
        try:
            self.start()
            if self.basic_auth:
                os.environ.update(credentials)
            yield self
        finally:
            self.stop()
            for name, value in saved.items():
                os.environ.pop(name, None)
                if value is not None:
                    os.environ[name] = value


# --- timing the client's HTTP requests ----------------------------------------------------------------------


class RequestLog:
    """Every `requests.Session.request` the MLflow client makes while `recording()`: (kind, seconds)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float, float]] = []  # (kind, started, ended), perf_counter seconds

    @staticmethod
    def kind(method: str, url: str) -> str:
        """`POST runs/log-batch`, `PUT artifact upload`, ...: what a request is, without ids."""
        path = url.split("://", 1)[-1].split("/", 1)[-1].split("?", 1)[0]
        if "mlflow-artifacts/" in path:
            return f"{method} artifact {'upload' if method == 'PUT' else 'request'}"
        parts = path.split("/mlflow/", 1)[-1].split("/")
        named = [part for part in parts if part and not any(char.isdigit() for char in part)]
        return f"{method} {'/'.join(named[:2])}"

    @contextlib.contextmanager
    def recording(self) -> Iterator[RequestLog]:
        import requests

        original = requests.Session.request
        calls = self.calls

        def timed(session: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(session, method, url, *args, **kwargs)
            finally:
                calls.append((RequestLog.kind(method.upper(), url), started, time.perf_counter()))

        requests.Session.request = timed  # type: ignore[method-assign]
        try:
            yield self
        finally:
            requests.Session.request = original  # type: ignore[method-assign]

    def summary(self) -> dict[str, Any]:
        """Requests, seconds in them (summed: concurrent ones count each), seconds with at least one in
        flight (`busy_s`), and both per kind."""
        by_kind: dict[str, dict[str, float]] = {}
        for kind, started, ended in self.calls:
            entry = by_kind.setdefault(kind, {"count": 0, "seconds": 0.0})
            entry["count"] += 1
            entry["seconds"] += ended - started
        busy, reach = 0.0, float("-inf")
        for _, started, ended in sorted(self.calls, key=lambda call: call[1]):
            busy += max(0.0, ended - max(started, reach))
            reach = max(reach, ended)
        return {
            "requests": len(self.calls),
            "request_s": sum(ended - started for _, started, ended in self.calls),
            "busy_s": busy,
            "by_kind": by_kind,
        }


# --- records ------------------------------------------------------------------------------------------------


def synthetic_history(epochs: int = EPOCHS, per_epoch: int = METRICS_PER_EPOCH) -> list[dict[str, float]]:
    """`epochs` rows of `per_epoch` metrics each, with an "epoch" step from 1."""
    rng = np.random.default_rng(SEED)
    return [
        {"epoch": float(epoch), **{f"metric_{i}": float(rng.random()) for i in range(per_epoch)}}
        for epoch in range(1, epochs + 1)
    ]


def make_record(
    history: list[dict[str, float]], name: str, model: Any = None, input_example: Any = None
) -> tracking.ModelRunRecord:
    """A run with `history`, N_PARAMS params and N_FINAL_METRICS final metrics."""
    params: dict[str, Any] = {f"param_{i:02d}": f"value-{i}" for i in range(N_PARAMS)}
    metrics = {f"final_{i:02d}": 0.5 + i / 100 for i in range(N_FINAL_METRICS)}
    return tracking.ModelRunRecord(
        run_name=name,
        params=params,
        metrics=metrics,
        history=history,
        tags={"bench": "remote-logging"},
        model=model,
        input_example=input_example,
    )


def history_points(record: tracking.ModelRunRecord) -> int:
    return sum(len(row) - 1 for row in record.history)


def log_record(record: tracking.ModelRunRecord, store: Store) -> dict[str, Any]:
    """One timed run logged as the evaluate stage logs it: the credentials check (`tracking.check_server`,
    which also finds the experiment's id; urllib, so timed here) then `log_model_run` (a fresh record id
    each time, so every call is a new run)."""
    record.record_id = runs._new_record_id()
    checks: list[tuple[str, float, float]] = []

    def check_and_log() -> None:
        started = time.perf_counter()
        experiment_id = tracking.check_server(store.settings())
        if store.server:
            checks.append(("GET experiments/get-by-name (credentials check)", started, time.perf_counter()))
        tracking.log_model_run(record, dataclasses.replace(store.settings(), experiment_id=experiment_id))

    requests_log = RequestLog()
    with requests_log.recording():
        started = time.perf_counter()
        check_and_log()
        wall = time.perf_counter() - started
    requests_log.calls.extend(checks)
    requests_summary = requests_log.summary()
    points = history_points(record) + len(record.metrics)
    return {"wall_s": wall, "points": points, "points_per_s": points / wall, **requests_summary}


def log_repeated(record: tracking.ModelRunRecord, store: Store, repeats: int) -> dict[str, Any]:
    """`log_model_run` `repeats` times: every sample and the median run (by wall time)."""
    samples = [log_record(record, store) for _ in range(repeats)]
    middle = sorted(samples, key=lambda sample: sample["wall_s"])[len(samples) // 2]
    return {
        "wall_s": median(sample["wall_s"] for sample in samples),
        "points": samples[0]["points"],
        "points_per_s": median(sample["points_per_s"] for sample in samples),
        "median_run": middle,
        "samples": [sample["wall_s"] for sample in samples],
    }


# --- per store ----------------------------------------------------------------------------------------------


def per_point(store: Store, max_points: int, max_seconds: float) -> dict[str, Any]:
    """`MlflowClient.log_metric`, one call per point, 10 keys per step, until either bound is reached."""
    import mlflow

    client = mlflow.MlflowClient(store.uri)
    experiment_id = runs._experiment_id(client, store.settings())
    run_id = client.create_run(experiment_id, run_name="per-point").info.run_id
    requests_log = RequestLog()
    points = 0
    with requests_log.recording():
        started = time.perf_counter()
        while points < max_points and time.perf_counter() - started < max_seconds:
            step, key = divmod(points, METRICS_PER_EPOCH)
            client.log_metric(run_id, f"metric_{key}", float(points), step=step + 1)
            points += 1
        wall = time.perf_counter() - started
    client.set_terminated(run_id)
    return {"points": points, "wall_s": wall, "points_per_s": points / wall, **requests_log.summary()}


def request_latency(store: Store, repeats: int) -> dict[str, float] | None:
    """Seconds per cheap authenticated request (`get_experiment`): median and min of `repeats`."""
    if not store.server:
        return None
    import mlflow

    client = mlflow.MlflowClient(store.uri)
    experiment_id = runs._experiment_id(client, store.settings())
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        client.get_experiment(experiment_id)
        seconds.append(time.perf_counter() - started)
    return {"median_s": median(seconds), "min_s": min(seconds)}


@dataclass
class Trained:
    """The digits MLP, trained and timed, and what its runs carry."""

    train_s: float
    epochs: int
    epoch_s: float
    history: list[dict[str, float]]
    model: Any
    input_example: Any


def train_digits_mlp() -> Trained:
    """100 epochs of the MLP on the bundled digits, as the train stage runs it (features scaled 0-1), with
    BLAS on one thread: on this shared 2-core machine two OpenBLAS threads made it several times slower, which
    would flatter the overhead share."""
    from threadpoolctl import threadpool_limits

    dataset = digits_dataset()
    pixels = flatten_images(dataset.train_images)
    settings = MLPSettings(type="mlp", max_epochs=EPOCHS, patience=EPOCHS)
    stamps: list[float] = []
    with threadpool_limits(limits=1, user_api="blas"):
        started = time.perf_counter()
        trained = train_classifier(
            settings,
            scale_pixels(pixels),
            dataset.train_labels,
            SEED,
            lambda epoch, _: stamps.append(time.perf_counter()),
        )
        train_s = time.perf_counter() - started
    featurizer = fit_featurizer(pixels, FeatureSettings(), SEED)
    example = pixel_frame(flatten_images(dataset.test_images)[:INPUT_EXAMPLE_ROWS])
    return Trained(
        train_s=train_s,
        epochs=len(trained.history),
        epoch_s=median(np.diff(stamps)),
        history=trained.history,
        model=DigitClassifier(full_model(featurizer, trained.classifier), pixels.shape[1]),
        input_example=example,
    )


def mnist_epoch_seconds(blas_threads: int | None) -> dict[str, float | int | None]:
    """One MLP epoch (partial_fit + the history's predictions) on random MNIST-shaped data, BLAS limited to
    `blas_threads` (None: its default): the median of the epoch intervals after the first (which also
    splits the data), from MNIST_EPOCHS_TIMED epochs."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(SEED)
    features = rng.random(MNIST_SHAPE, dtype=np.float32)
    labels = np.arange(MNIST_SHAPE[0]) % 10
    settings = MLPSettings(type="mlp", max_epochs=MNIST_EPOCHS_TIMED, patience=MNIST_EPOCHS_TIMED)
    stamps: list[float] = []
    with threadpool_limits(limits=blas_threads, user_api="blas"):
        started = time.perf_counter()
        train_classifier(
            settings, features, labels, SEED, lambda epoch, _: stamps.append(time.perf_counter())
        )
    intervals = np.diff([started, *stamps])
    epoch_s = median(intervals[1:]) if len(intervals) > 1 else float(intervals[0])
    return {
        "blas_threads": blas_threads,
        "epoch_s": epoch_s,
        "first_epoch_s": float(intervals[0]),
        "train_100_s": epoch_s * EPOCHS,
    }


# --- the run ------------------------------------------------------------------------------------------------


def stores(folder: Path) -> list[Store]:
    return [
        Store("sqlite", "local sqlite store", folder / "sqlite"),
        Store("plain", "`mlflow server` (no auth)", folder / "plain", server=True),
        Store(
            "auth_cache",
            "`--app-name basic-auth`, auth cache 60 s",
            folder / "auth-cache",
            server=True,
            basic_auth=True,
            auth_cache_ttl_s=60,
        ),
        Store(
            "auth_nocache",
            "`--app-name basic-auth`, no auth cache (default)",
            folder / "auth-nocache",
            server=True,
            basic_auth=True,
            auth_cache_ttl_s=0,
        ),
    ]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Everything, in a temporary folder; returns the raw numbers."""
    for name, value in tracking.CLIENT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN", "MLFLOW_EXPERIMENT_NAME"):
        os.environ.pop(name, None)
    started = time.perf_counter()
    import mlflow.models  # imported once here, so no timed call pays for it
    import mlflow.sklearn  # noqa: F401

    import_s = time.perf_counter() - started
    log(f"import mlflow, mlflow.sklearn, mlflow.models: {import_s:.1f} s (not counted below)")

    log("training the digits MLP, 100 epochs")
    trained = train_digits_mlp()
    log(f"digits MLP: {trained.epochs} epochs in {trained.train_s:.2f} s")
    mnist_runs = []
    for threads in (1, None):
        log(f"MLP epochs on MNIST-shaped random data, BLAS threads: {threads or 'default'}")
        mnist_runs.append(mnist_epoch_seconds(threads))
        log(f"MNIST-shaped epoch: {mnist_runs[-1]['epoch_s']:.2f} s")
    mnist = min(mnist_runs, key=lambda run: run["train_100_s"])  # the faster: the stricter denominator

    synthetic = make_record(synthetic_history(), "synthetic-10x100")
    records = {
        "real_no_model": make_record(trained.history, "digits-mlp"),
        "real_model": make_record(trained.history, "digits-mlp", trained.model, trained.input_example),
        "synthetic_no_model": synthetic,
        "synthetic_model": make_record(
            synthetic_history(), "synthetic-10x100", trained.model, trained.input_example
        ),
    }
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mnist-lab-bench-remote-") as temporary:
        for store in stores(Path(temporary)):
            with store.running():
                log(
                    f"{store.label}: started in {fmt(store.start_s, 1)} s, idle after "
                    f"{fmt(store.settle_s, 1)} s more; {args.warmup} warm-up runs"
                )
                warmup = [log_record(synthetic, store)["wall_s"] for _ in range(args.warmup)]
                entry: dict[str, Any] = {
                    "label": store.label,
                    "start_s": store.start_s,
                    "settle_s": store.settle_s,
                    "warmup_s": warmup,
                }
                entry["request"] = request_latency(store, args.repeats)
                log(f"{store.label}: per-point log_metric (≤{args.points} points, ≤{args.seconds:.0f} s)")
                entry["per_point"] = per_point(store, args.points, args.seconds)
                log(f"{store.label}: log_model_run x{args.repeats}, synthetic record, no model")
                entry["batched"] = log_repeated(synthetic, store, args.repeats)
                entry["ratio"] = entry["batched"]["points_per_s"] / entry["per_point"]["points_per_s"]
                if store.basic_auth:
                    entry["overhead"] = {}
                    for name, record in records.items():
                        repeats = args.repeats if record.model is None else args.model_repeats
                        log(f"{store.label}: log_model_run x{repeats}, {name}")
                        entry["overhead"][name] = log_repeated(record, store, repeats)
                results[store.key] = entry
    return {
        "import_mlflow_s": import_s,
        "digits_mlp": {"train_s": trained.train_s, "epochs": trained.epochs, "epoch_s": trained.epoch_s},
        "mnist_mlp": {**mnist, "measured": mnist_runs},
        "record_points": {name: history_points(record) for name, record in records.items()},
        "stores": results,
        "settings": {
            "repeats": args.repeats,
            "model_repeats": args.model_repeats,
            "points": args.points,
            "seconds": args.seconds,
            "warmup": args.warmup,
        },
    }


# --- reporting ----------------------------------------------------------------------------------------------


def pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def meets(ok: bool) -> str:
    return "yes" if ok else "**no**"


def tables(raw: dict[str, Any]) -> str:
    """The Markdown for the README."""
    stores_raw = raw["stores"]
    rate_rows = []
    for entry in stores_raw.values():
        point, batched, request = entry["per_point"], entry["batched"], entry["request"]
        rate_rows.append(
            (
                entry["label"],
                f"{request['median_s'] * 1000:.0f}" if request else "–",
                f"{point['points_per_s']:.1f} ({point['points']} pts)",
                f"{batched['points_per_s']:,.0f}",
                fmt(batched["wall_s"]),
                batched["median_run"]["requests"],
                f"{entry['ratio']:,.0f}×",
                meets(entry["ratio"] >= TARGET_RATIO),
            )
        )
    rate_table = markdown_table(
        (
            "store",
            "ms / request",
            "per-point `log_metric`, points/s",
            "`log_model_run`, points/s",
            "`log_model_run` s",
            "HTTP requests",
            "speed-up",
            f"≥{TARGET_RATIO:.0f}×",
        ),
        rate_rows,
    )
    digits_s, mnist_s = raw["digits_mlp"]["train_s"], raw["mnist_mlp"]["train_100_s"]
    names = {
        "real_no_model": "digits MLP run (4 metrics × 100 epochs), no model",
        "real_model": "digits MLP run (4 metrics × 100 epochs) + model",
        "synthetic_no_model": "synthetic (10 metrics × 100 epochs), no model",
        "synthetic_model": "synthetic (10 metrics × 100 epochs) + model",
    }
    overhead_rows = []
    for entry in stores_raw.values():
        for name, result in entry.get("overhead", {}).items():
            wall = result["wall_s"]
            run = result["median_run"]
            overhead_rows.append(
                (
                    f"{entry['label']}: {names[name]}",
                    fmt(wall),
                    f"{run['requests']} ({fmt(run.get('busy_s', run['request_s']))} s)",
                    pct(wall / digits_s),
                    pct(wall / mnist_s),
                    meets(wall / mnist_s <= TARGET_OVERHEAD),
                )
            )
    overhead_table = markdown_table(
        (
            "`log_model_run` to",
            "wall s",
            "HTTP requests (s with one in flight)",
            f"share of digits training ({digits_s:.1f} s)",
            f"share of MNIST-scale training ({mnist_s:.0f} s)",
            f"MNIST-scale ≤{pct(TARGET_OVERHEAD)}",
        ),
        overhead_rows,
    )
    breakdown_rows = []
    for entry in stores_raw.values():
        for name in ("real_model",):
            result = entry.get("overhead", {}).get(name)
            if not result:
                continue
            by_kind = result["median_run"]["by_kind"]
            for kind, value in sorted(by_kind.items(), key=lambda item: -item[1]["seconds"]):
                breakdown_rows.append((entry["label"], f"`{kind}`", value["count"], fmt(value["seconds"])))
            run = result["median_run"]
            busy = run.get("busy_s", run["request_s"])
            breakdown_rows.append((entry["label"], "wall time with a request in flight", "", fmt(busy)))
            breakdown_rows.append(
                (entry["label"], "client-side work (no request in flight)", "", fmt(run["wall_s"] - busy))
            )
    breakdown_table = markdown_table(("store", "request", "count", "s (summed)"), breakdown_rows)
    mnist = raw["mnist_mlp"]
    measured = ", ".join(
        f"{run['epoch_s']:.2f} s/epoch with BLAS threads {run['blas_threads'] or 'default'}"
        for run in mnist.get("measured", [mnist])
    )
    return "\n\n".join(
        [
            f"**Remote logging** ({environment_line(raw['environment'])}; load average "
            f"{raw['load_average_start'][0]:.1f} → {raw['load_average_end'][0]:.1f}). Servers: "
            "`mlflow server --workers 1` on 127.0.0.1, sqlite backend. Per-point: `MlflowClient.log_metric` "
            f"one call per point (≤{raw['settings']['points']} points or "
            f"≤{raw['settings']['seconds']:.0f} s). "
            f"`log_model_run`: {N_PARAMS} params, {N_FINAL_METRICS} final metrics and a "
            f"{METRICS_PER_EPOCH}-metric × {EPOCHS}-epoch history (1,020 points), no model, median of "
            f"{raw['settings']['repeats']}, after {raw['settings'].get('warmup', 1)} untimed warm-up runs, "
            "on an idle server (after /health answers it spends ~20 s of CPU starting a job runner and 7 "
            "huey consumers; runs in that window were 3-10× slower); `import mlflow` "
            f"({raw['import_mlflow_s']:.1f} s) not counted. ms / request: a `get_experiment` call.",
            rate_table,
            "**Tracking overhead**: wall time of what the evaluate stage does to log a run (the credentials "
            "check, which also finds the experiment, then `log_model_run`: run creation, params, metrics, "
            "the model (pyfunc) with its input example, run end, independent requests "
            f"{tracking.REMOTE_REQUESTS_AT_ONCE} at a time; not "
            "`import mlflow`) over training wall time. Digits: the MLP trained "
            f"{raw['digits_mlp']['epochs']} epochs on 1,437 8x8 images in {digits_s:.2f} s. MNIST-scale: one "
            f"epoch on random 60,000 × 784 data took {mnist['epoch_s']:.2f} s, × {EPOCHS} = {mnist_s:.0f} s "
            f"(extrapolated, not trained; {measured}; the faster is the denominator). BLAS was limited to "
            "one thread for the digits (two threads were several times slower on this shared machine). "
            f"Median of {raw['settings']['repeats']} runs, "
            f"{raw['settings'].get('model_repeats', raw['settings']['repeats'])} with the model.",
            overhead_table,
            "**Where a run's time goes** (digits MLP run + model, the median run):",
            breakdown_table,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="log_model_run runs per case (default 3)")
    parser.add_argument("--points", type=int, default=100, help="per-point baseline: at most this many")
    parser.add_argument("--seconds", type=float, default=12.0, help="per-point baseline: at most this long")
    parser.add_argument(
        "--model-repeats", type=int, default=2, help="log_model_run runs per case with a model (default 2)"
    )
    parser.add_argument(
        "--warmup", type=int, default=2, help="untimed log_model_run runs per store first (default 2)"
    )
    parser.add_argument("--json", help="where to write the raw numbers (default: a new temporary file)")
    parser.add_argument("--render", metavar="JSON", help="only print the tables of an earlier run's --json")
    args = parser.parse_args(argv)
    if args.render:
        print(tables(json.loads(Path(args.render).read_text(encoding="utf-8"))))
        return 0
    started = time.perf_counter()
    load_start = os.getloadavg()
    with contextlib.redirect_stdout(sys.stderr):  # MLflow prints run links: stdout carries only tables
        raw = measure(args)
    raw["environment"] = environment()
    raw["load_average_start"], raw["load_average_end"] = load_start, os.getloadavg()
    raw["bench_wall_s"] = time.perf_counter() - started
    print(tables(raw))
    path = write_json(args.json, raw, "bench_remote_logging-")
    print(f"\nraw numbers: {path} ({raw['bench_wall_s']:.0f} s in all)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
