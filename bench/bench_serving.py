"""Serving and batch inference on MNIST-sized images: REST latency and throughput, `mnist-lab predict` speed.

Models: trained on generated 28x28 digits (bench_mnist_scale's generator; 10,000 training images) and saved
as the pyfunc the pipeline logs (mnist_lab.serving.pyfunc.DigitClassifier): an MLP (the featurizer + hidden
layer 100, 20 epochs), a random forest (100 trees) and the CNN (params.yaml's network, 2 epochs; its speed
does not depend on how well it is trained).

Per model, two servers on 127.0.0.1, one worker each, one after the other, the same model folder:
  * `mlflow models serve --env-manager local` (MLflow's scoring app alone: the baseline), and
  * `mnist-lab serve`'s app (mnist_lab.serving.rest: the same app behind the fast path for image arrays and
    Parquet), started as `mnist-lab serve` starts it (uvicorn, --factory);
and for each: `GET /ping` round trips, single-image latency (`{"instances": [[784 pixels]]}`, --requests
times, p50/p99), each with a new connection per request (urllib) and on one kept-alive connection (what a
client session or pool does), and images/s of the median 1,000-image request (--images / 1,000 requests)
in three formats MLflow documents: JSON `instances`, Parquet (`application/vnd.apache.parquet`, columns
pixel_0...) and CSV. The in-process baseline: `DigitClassifier.predict` in this process (no HTTP), one
image p50/p99 and 1,000 images. Every answer of the two servers is checked equal. Then batch inference
as `mnist-lab predict` does it.

    python bench/bench_serving.py [--requests 300] [--images 15000] [--models mlp,cnn] [--json out.json]
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench_mnist_scale import mnist_like
from benchlib import environment, environment_line, log, markdown_table, median, write_json
from mnist_lab.core.data import flatten_images
from mnist_lab.core.features import fit_featurizer, full_model
from mnist_lab.core.idx import encode_idx
from mnist_lab.core.models import train_classifier
from mnist_lab.core.settings import CNNSettings, FeatureSettings, MLPSettings, RandomForestSettings
from mnist_lab.serving.batch import read_images, write_predictions
from mnist_lab.serving.inference import predict_frame
from mnist_lab.serving.pyfunc import DigitClassifier
from mnist_lab.tracking import model_requirements, pinned_requirements, this_package_pickled_by_value

MODELS = {
    "mlp": MLPSettings(type="mlp", hidden_layer_sizes=[100], max_epochs=20, patience=20),
    "random_forest": RandomForestSettings(type="random_forest", n_estimators=100),
    "cnn": CNNSettings(type="cnn", max_epochs=2),
}
SERVERS = ("mlflow models serve", "mnist-lab serve")
FORMATS = ("json", "parquet", "csv")
CONTENT_TYPES = {"json": "application/json", "parquet": "application/vnd.apache.parquet", "csv": "text/csv"}
BATCH = 1000
BIN = Path(sys.executable).parent


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def save(model: DigitClassifier, folder: Path) -> Path:
    try:
        requirements = pinned_requirements(model_requirements(model))
    except metadata.PackageNotFoundError:  # mlflow-skinny alone (a GPU machine's): served locally, unpinned
        requirements = list(model_requirements(model))
    with this_package_pickled_by_value():
        import mlflow.pyfunc

        mlflow.pyfunc.save_model(
            path=str(folder), python_model=model, signature=False, pip_requirements=requirements
        )
    return folder


def program(name: str) -> list[str]:
    """The environment's `name` command, or `python -m name` where its packages were installed without
    their scripts (a GPU machine's PYTHONPATH)."""
    return [str(BIN / name)] if (BIN / name).exists() else [sys.executable, "-m", name]


def serve(server: str, model_dir: Path, port: int) -> subprocess.Popen:
    from mlflow.pyfunc import scoring_server

    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    if server == "mlflow models serve":
        command = [*program("mlflow"), "models", "serve", "-m", str(model_dir), "--env-manager", "local",
                   "-h", "127.0.0.1", "-p", str(port), "-w", "1"]  # fmt: skip
    else:  # what mnist_lab.serving.server.serve_command runs
        env[scoring_server._SERVER_MODEL_PATH] = str(model_dir)
        command = [*program("uvicorn"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                   "--factory", "mnist_lab.serving.rest:create_app"]  # fmt: skip
    errors = tempfile.TemporaryFile()  # noqa: SIM115 (the server's output, shown if it does not start)
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=errors, start_new_session=True
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                return process
        except OSError:
            if process.poll() is not None:
                errors.seek(0)
                output = errors.read().decode(errors="replace")[-3000:]
                raise RuntimeError(f"{server} exited with {process.returncode}:\n{output}") from None
            time.sleep(0.5)
    raise RuntimeError(f"{server} did not answer in 180 s")


def stop(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)


def post(url: str, body: bytes, content_type: str = "application/json") -> tuple[float, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as answer:
        content = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"HTTP {answer.status}")
    return time.perf_counter() - started, content


class KeepAlive:
    """One persistent HTTP/1.1 connection, as a client's session or pool keeps one (requests.Session, any
    production HTTP client): no TCP handshake and no new opener per request, unlike `urllib.request`."""

    def __init__(self, port: int) -> None:
        import http.client

        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def timed(self, method: str, path: str, body: bytes | None = None) -> float:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        started = time.perf_counter()
        self.connection.request(method, path, body=body, headers=headers)
        answer = self.connection.getresponse()
        answer.read()
        if answer.status != 200:
            raise RuntimeError(f"HTTP {answer.status}")
        return time.perf_counter() - started

    def close(self) -> None:
        self.connection.close()


def ping(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=10) as answer:
        answer.read()
    return time.perf_counter() - started


def encode(form: str, images: np.ndarray) -> bytes:
    """`images` (count, 784) of 0-255 as a request body in `form`."""
    if form == "json":
        return json.dumps({"instances": images.tolist()}).encode()
    frame = pd.DataFrame(images.astype(np.uint8), columns=[f"pixel_{i}" for i in range(images.shape[1])])
    if form == "parquet":
        buffer = io.BytesIO()
        frame.to_parquet(buffer)
        return buffer.getvalue()
    return frame.to_csv(index=False).encode()


def in_process(model: DigitClassifier, test: np.ndarray, requests: int) -> dict[str, Any]:
    single = []
    for i in range(requests):
        started = time.perf_counter()
        model.predict(None, test[i % len(test)][None])
        single.append(time.perf_counter() - started)
    batches = [test[(i * BATCH) % len(test) :][:BATCH] for i in range(5)]
    model.predict(None, batches[0])
    started = time.perf_counter()
    for batch in batches:
        model.predict(None, batch)
    seconds = time.perf_counter() - started
    return {"single_ms": {"p50": percentile(single, 50) * 1e3, "p99": percentile(single, 99) * 1e3},
            "images_per_s": len(batches) * BATCH / seconds}  # fmt: skip


def measure_server(server: str, model_dir: Path, test: np.ndarray, args) -> dict[str, Any]:
    port = free_port()
    started = time.perf_counter()
    process = serve(server, model_dir, port)
    startup = time.perf_counter() - started
    url = f"http://127.0.0.1:{port}/invocations"
    try:
        for i in range(10):  # warm-up: every image count the CNN pads to is compiled once
            post(url, encode("json", test[: 1 << i]))
        pings = [ping(f"http://127.0.0.1:{port}/ping") for _ in range(args.requests)]
        single = [post(url, encode("json", test[i % len(test)][None]))[0] for i in range(args.requests)]
        session = KeepAlive(port)
        try:
            kept_pings = [session.timed("GET", "/ping") for _ in range(args.requests)]
            kept_single = [
                session.timed("POST", "/invocations", encode("json", test[i % len(test)][None]))
                for i in range(args.requests)
            ]
        finally:
            session.close()
        throughput, answers = {}, {}
        for form in FORMATS:
            requests = max(5, args.images // BATCH)
            bodies = [encode(form, test[(i * BATCH) % len(test) :][:BATCH]) for i in range(requests)]
            post(url, bodies[0], CONTENT_TYPES[form])
            seconds = []
            for body in bodies:
                elapsed, content = post(url, body, CONTENT_TYPES[form])
                seconds.append(elapsed)
            answers[form] = json.loads(content)
            throughput[form] = BATCH / median(seconds)  # the median request: robust to a busy moment
            log(f"{server}: {form}: {throughput[form]:,.0f} images/s")
    finally:
        stop(process)
    return {
        "startup_s": startup,
        "ping_ms": {"p50": percentile(pings, 50) * 1e3, "p99": percentile(pings, 99) * 1e3},
        "single_ms": {"p50": percentile(single, 50) * 1e3, "p99": percentile(single, 99) * 1e3},
        "keep_alive_ping_ms": {
            "p50": percentile(kept_pings, 50) * 1e3,
            "p99": percentile(kept_pings, 99) * 1e3,
        },
        "keep_alive_single_ms": {
            "p50": percentile(kept_single, 50) * 1e3,
            "p99": percentile(kept_single, 99) * 1e3,
        },
        "images_per_s": throughput,
        "answers": answers,
    }


def measure_model(name: str, model: DigitClassifier, test: np.ndarray, args, folder: Path) -> dict[str, Any]:
    model_dir = save(model, folder / name)
    result: dict[str, Any] = {"in_process": in_process(model, test, args.requests), "servers": {}}
    for server in SERVERS:
        log(f"{name}: {server}")
        result["servers"][server] = measure_server(server, model_dir, test, args)
    answers = [result["servers"][server].pop("answers") for server in SERVERS]
    for form in FORMATS:
        if answers[0][form] != answers[1][form]:
            raise RuntimeError(f"{name}: the two servers answered {form} differently")
    return result


def measure_batch(name: str, model: DigitClassifier, images: np.ndarray, folder: Path) -> dict[str, Any]:
    path = folder / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(encode_idx(images), compresslevel=6))
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        pixels = read_images(path)
        read_s = time.perf_counter() - started
        frame = predict_frame(model.pipeline, pixels)
        predict_s = time.perf_counter() - started - read_s
        write_predictions(frame, folder / "predictions.csv")
        total_s = time.perf_counter() - started
        runs.append({"read_s": read_s, "predict_s": predict_s, "total_s": total_s})
    total = median(r["total_s"] for r in runs)
    predict = median(r["predict_s"] for r in runs)
    return {"images": len(images), "total_s": total, "predict_s": predict,
            "images_per_s": len(images) / total, "predict_images_per_s": len(images) / predict}  # fmt: skip


def tables(raw: dict[str, Any]) -> str:
    out = [f"**Serving** ({environment_line(raw['environment'])}). {raw['note']}", ""]
    rows = []
    for name, result in raw["models"].items():
        base = result["in_process"]
        single = f"{base['single_ms']['p50']:.2f} / {base['single_ms']['p99']:.2f}"
        speed = f"{base['images_per_s']:,.0f}"
        rows.append((name, "in-process `predict`", "", single, "1.0×", "", "", "1.0×", speed, "", "", "", ""))
        for server, measured in result["servers"].items():
            speed = measured["images_per_s"]
            kept = measured["keep_alive_single_ms"]
            rows.append((
                "", f"`{server}`", f"{measured['ping_ms']['p50']:.2f}",
                f"{measured['single_ms']['p50']:.2f} / {measured['single_ms']['p99']:.2f}",
                f"{measured['single_ms']['p50'] / base['single_ms']['p50']:.2f}×",
                f"{measured['keep_alive_ping_ms']['p50']:.2f}", f"{kept['p50']:.2f} / {kept['p99']:.2f}",
                f"{kept['p50'] / base['single_ms']['p50']:.2f}×",
                "", *(f"{speed[form]:,.0f} ({speed[form] / base['images_per_s']:.2f}×)" for form in FORMATS),
                f"{measured['startup_s']:.1f}",
            ))  # fmt: skip
    out.append(markdown_table(
        ("model", "answered by", "`GET /ping` ms p50", "1 image, ms p50 / p99", "p50 / in-process",
         "kept-alive: `GET /ping` ms p50", "kept-alive: 1 image, ms p50 / p99", "p50 / in-process",
         "images/s, 1,000 at once", "REST JSON `instances`", "REST Parquet", "REST CSV", "server start s"),
        rows,
    ))  # fmt: skip
    out += [
        "",
        "**Batch inference** (`mnist-lab predict`'s path: read IDX, predict, write CSV; median of 3):",
        "",
    ]
    out.append(markdown_table(
        ("model", "images", "total s", "images/s (all)", "images/s (predict only)"),
        [(name, f"{r['images']:,}", f"{r['total_s']:.2f}", f"{r['images_per_s']:,.0f}",
          f"{r['predict_images_per_s']:,.0f}") for name, r in raw["batch"].items()],
    ))  # fmt: skip
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300, help="single-image requests (default 300)")
    parser.add_argument("--images", type=int, default=15000, help="images per format (default 15,000)")
    parser.add_argument("--models", default=",".join(MODELS), help="which models (default: all)")
    parser.add_argument("--json", help="where to write the raw numbers")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    log("generating 10,000 + 10,000 MNIST-sized images")
    data = mnist_like(10_000, 10_000, seed=0)
    train = flatten_images(data.train_images)
    test = flatten_images(data.test_images)
    featurizer = fit_featurizer(train, FeatureSettings(), seed=0)
    features = featurizer.transform(train)
    raw: dict[str, Any] = {"environment": environment(), "models": {}, "batch": {}}
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as folder:
        for name in args.models.split(","):
            settings = MODELS[name]
            log(f"training {name}")
            inputs = train if settings.type == "cnn" else features
            classifier = train_classifier(
                settings, inputs, data.train_labels.astype(np.int64), seed=0, image_shape=(28, 28)
            ).classifier
            model = DigitClassifier(full_model(featurizer, classifier), train.shape[1])
            raw["models"][name] = measure_model(name, model, test.astype(np.int64), args, Path(folder))
            raw["batch"][name] = measure_batch(name, model, data.test_images, Path(folder))
    raw["note"] = (
        f"one worker per server on 127.0.0.1; sequential requests from one client; 28x28 images; "
        f"{args.requests} single-image requests; (×) against in-process; load average "
        f"{load:.1f} -> {os.getloadavg()[0]:.1f}; {time.perf_counter() - started:.0f} s in all."
    )
    target = write_json(args.json, raw, "bench-serving-")
    print(tables(raw))
    print(f"\nraw numbers: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
