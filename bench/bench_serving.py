"""Serving and batch inference on MNIST-sized images: REST latency and throughput, `mnist-lab predict` speed.

Models: the project's featurizer + classifier trained on generated 28x28 digits (bench_mnist_scale's
generator; 10,000 training images), an MLP (hidden layer 100, 20 epochs) and a random forest (100 trees),
each saved as the pyfunc the pipeline logs (mnist_lab.serving.pyfunc.DigitClassifier) and served by
`mlflow models serve --env-manager local -w 1` on 127.0.0.1, one at a time.

Per model:
  * baseline, in this process: `DigitClassifier.predict` on one image (no HTTP), p50 / p99;
  * the HTTP floor: `GET /ping` round trips;
  * single-image latency: `POST /invocations` with `{"instances": [[784 pixels]]}`, --requests times, p50/p99;
  * throughput with batches of 1, 32 and 1,000 images (JSON `instances`), images/s over >= --images images;
  * batch inference as `mnist-lab predict` does it: read 10,000 IDX images, predict, write CSV; images/s,
    and `predict_frame` alone.

    python bench/bench_serving.py [--requests 300] [--images 4000] [--json out.json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from bench_mnist_scale import mnist_like
from benchlib import environment, environment_line, log, markdown_table, median, write_json
from mnist_lab.core.data import flatten_images
from mnist_lab.core.features import fit_featurizer, full_model
from mnist_lab.core.idx import encode_idx
from mnist_lab.core.models import train_classifier
from mnist_lab.core.settings import FeatureSettings, MLPSettings, RandomForestSettings
from mnist_lab.serving.inference import predict_frame, read_images, write_predictions
from mnist_lab.serving.pyfunc import DigitClassifier
from mnist_lab.tracking import pinned_requirements, this_package_pickled_by_value

MODELS = {
    "mlp": MLPSettings(type="mlp", hidden_layer_sizes=[100], max_epochs=20, patience=20),
    "random_forest": RandomForestSettings(type="random_forest", n_estimators=100),
}
BATCHES = (1, 32, 1000)
BIN = Path(sys.executable).parent


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def save(model: DigitClassifier, folder: Path) -> Path:
    with this_package_pickled_by_value():
        import mlflow.pyfunc

        mlflow.pyfunc.save_model(
            path=str(folder), python_model=model, signature=False, pip_requirements=pinned_requirements()
        )
    return folder


def serve(model_dir: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    command = [str(BIN / "mlflow"), "models", "serve", "-m", str(model_dir), "--env-manager", "local",
               "-h", "127.0.0.1", "-p", str(port), "-w", "1"]  # fmt: skip
    server = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                return server
        except OSError:
            if server.poll() is not None:
                raise RuntimeError(f"mlflow models serve exited with {server.returncode}") from None
            time.sleep(0.5)
    raise RuntimeError("the server did not answer in 180 s")


def stop(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)


def post(url: str, body: bytes) -> float:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as answer:
        answer.read()
        if answer.status != 200:
            raise RuntimeError(f"HTTP {answer.status}")
    return time.perf_counter() - started


def ping(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=10) as answer:
        answer.read()
    return time.perf_counter() - started


def measure_model(name: str, model: DigitClassifier, test: np.ndarray, args, folder: Path) -> dict[str, Any]:
    one = test[:1]
    in_process = []
    for _ in range(args.requests):
        started = time.perf_counter()
        model.predict(None, one.tolist())
        in_process.append(time.perf_counter() - started)
    model_dir = save(model, folder / name)
    port = free_port()
    log(f"{name}: serving on port {port}")
    started = time.perf_counter()
    server = serve(model_dir, port)
    startup = time.perf_counter() - started
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(10):  # warm-up
            post(f"{base}/invocations", json.dumps({"instances": one.tolist()}).encode())
        pings = [ping(f"{base}/ping") for _ in range(args.requests)]
        single = [
            post(
                f"{base}/invocations", json.dumps({"instances": test[i % len(test)][None].tolist()}).encode()
            )
            for i in range(args.requests)
        ]
        throughput = {}
        for batch in BATCHES:
            requests = max(5, args.images // batch)
            bodies = [
                json.dumps({"instances": test[(i * batch) % len(test) :][:batch].tolist()}).encode()
                for i in range(requests)
            ]
            started = time.perf_counter()
            for body in bodies:
                post(f"{base}/invocations", body)
            seconds = time.perf_counter() - started
            throughput[batch] = {"requests": requests, "images": requests * batch, "seconds": seconds,
                                 "images_per_s": requests * batch / seconds}  # fmt: skip
            log(f"{name}: batch {batch}: {requests * batch / seconds:,.0f} images/s")
    finally:
        stop(server)
    return {
        "startup_s": startup,
        "in_process_ms": {"p50": percentile(in_process, 50) * 1e3, "p99": percentile(in_process, 99) * 1e3},
        "ping_ms": {"p50": percentile(pings, 50) * 1e3, "p99": percentile(pings, 99) * 1e3},
        "single_ms": {"p50": percentile(single, 50) * 1e3, "p99": percentile(single, 99) * 1e3},
        "throughput": throughput,
    }


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
        rows.append((
            name,
            f"{result['in_process_ms']['p50']:.2f} / {result['in_process_ms']['p99']:.2f}",
            f"{result['ping_ms']['p50']:.2f} / {result['ping_ms']['p99']:.2f}",
            f"{result['single_ms']['p50']:.2f} / {result['single_ms']['p99']:.2f}",
            f"{result['single_ms']['p50'] / result['in_process_ms']['p50']:.1f}×",
            *(f"{result['throughput'][b]['images_per_s']:,.0f}" for b in BATCHES),
            f"{result['startup_s']:.1f}",
        ))  # fmt: skip
    out.append(markdown_table(
        ("model", "in-process predict, 1 image, ms p50 / p99", "`GET /ping` ms p50 / p99",
         "REST, 1 image, ms p50 / p99", "REST / in-process (p50)", "images/s, batch 1", "batch 32",
         "batch 1,000", "server start s"),
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
    parser.add_argument("--images", type=int, default=4000, help="images per throughput case (default 4000)")
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
        for name, settings in MODELS.items():
            log(f"training {name}")
            classifier = train_classifier(
                settings, features, data.train_labels.astype(np.int64), seed=0
            ).classifier
            model = DigitClassifier(full_model(featurizer, classifier), train.shape[1])
            raw["models"][name] = measure_model(name, model, test.astype(np.int64), args, Path(folder))
            raw["batch"][name] = measure_batch(name, model, data.test_images, Path(folder))
    raw["note"] = (
        f"`mlflow models serve --env-manager local -w 1` on 127.0.0.1; JSON `instances`; sequential requests "
        f"from one client; 28x28 images; {args.requests} single-image requests; load average "
        f"{load:.1f} -> {os.getloadavg()[0]:.1f}; {time.perf_counter() - started:.0f} s in all."
    )
    target = write_json(args.json, raw, "bench-serving-")
    print(tables(raw))
    print(f"\nraw numbers: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
