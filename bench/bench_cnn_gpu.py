"""The CNN on a GPU (issue 10): what `train@cnn` does on a machine with an NVIDIA GPU and JAX's CUDA build,
against that machine's own CPU in the same run. Needs only the package's core (numpy, scikit-learn, pydantic,
Keras, JAX), not MLflow or DVC, so that it runs on a bare GPU machine (PYTHONPATH=src:bench).

1. The device `compute_device()` reports (the `mnist_lab.device` tag) and the versions in use.
2. MNIST size (60,000 + 10,000 generated 28x28 digits, `bench_mnist_scale.mnist_like`), params.yaml's CNN:
   seconds per epoch on the GPU, bare `model.fit` against `train@cnn` (`train_classifier` with the stage's
   `epoch_printer`), alternated bare, train@cnn, train@cnn, bare, `--epochs` each; the same on the CPU
   (`JAX_PLATFORMS=cpu`, a child process, every core); the first epoch (compilation) apart.
3. Repeatability on the GPU: the weights of the two train@cnn runs compared, as the stages run (XLA's
   deterministic ops, `repeatable_xla_flags`) and with XLA's default kernels (`MNIST_LAB_EXACT_GPU=0`; a
   child process each: XLA reads its flags once).
4. The bundled digits (`data/`, params.yaml as committed): the CNN trained on the GPU to its early stop,
   twice (the weights compared), its test accuracy against the committed experiment's (`metrics.csv`,
   trained on the CPU), its pickled classifier and test probabilities written to `--out`, so that another
   machine can check that it loads and predicts the same.
5. In-process prediction on the GPU: images/s for 1,000-image batches of the MNIST-size network.

    PYTHONPATH=src:bench python bench/bench_cnn_gpu.py --out DIR          # ~2.5 minutes on an H100
    PYTHONPATH=src:bench python bench/bench_cnn_gpu.py --quick --out DIR  # 6,000 + 1,000 images
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from bench_cnn import bare_fit, tracked_training  # the same fits as bench_cnn.py's

REPO_ROOT = Path(__file__).resolve().parents[1]


def log(message: str) -> None:
    print(f"[bench_cnn_gpu {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def versions() -> dict[str, str]:
    found = {}
    for name in ("keras", "jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "numpy", "scikit-learn"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def mnist_settings(epochs: int) -> Any:
    from mnist_lab.core.settings import load_settings

    params = load_settings(REPO_ROOT / "params.yaml")
    return params, params.model("cnn").model_copy(update={"max_epochs": epochs, "patience": epochs + 1})


def weights_difference(first: list[np.ndarray], second: list[np.ndarray]) -> dict[str, Any]:
    pairs = list(zip(first, second, strict=True))
    identical = all(np.array_equal(a, b) for a, b in pairs)
    largest = max(float(np.max(np.abs(a - b))) for a, b in pairs)
    return {"identical": identical, "max_abs_difference": largest}


def load_mnist_size(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    with np.load(path) as arrays:
        return arrays["pixels"], arrays["labels"], (int(arrays["shape"][0]), int(arrays["shape"][1]))


def part_epochs(data: Path, epochs: int, blocks: int, bare_only: bool) -> dict[str, Any]:
    """Alternated bare / train@cnn fits, the two train@cnn runs of the first block compared; or (the CPU's
    baseline, slower) one bare fit."""
    from mnist_lab.core.cnn import compute_device

    pixels, labels, shape = load_mnist_size(data)
    params, settings = mnist_settings(epochs)
    runs: dict[str, list[list[float]]] = {"bare": [], "tracked": []}
    trained = []
    order = ("bare",) if bare_only else ("bare", "tracked", "tracked", "bare") * blocks
    for index, kind in enumerate(order, start=1):
        started = time.perf_counter()
        if kind == "bare":
            runs[kind].append(bare_fit(settings, pixels, labels, shape, params.seed))
        else:
            with contextlib.redirect_stderr(io.StringIO()):
                seconds, model = tracked_training(settings, pixels, labels, shape, params.seed)
            runs[kind].append(seconds)
            trained.append(model)
        log(f"  {index}: {kind} {epochs} epochs in {time.perf_counter() - started:.1f} s: "
            + ", ".join(f"{s:.2f}" for s in runs[kind][-1]))  # fmt: skip
    later = {kind: [s for run in values for s in run[1:]] for kind, values in runs.items() if values}
    result: dict[str, Any] = {
        "device": compute_device(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "n_fit_images": int(len(pixels) * (1 - settings.validation_fraction)),
        "epochs": runs,
        "first_epoch_median_s": {
            kind: median([run[0] for run in values]) for kind, values in runs.items() if values
        },
        "later_epoch_median_s": {kind: median(values) for kind, values in later.items()},
    }
    if bare_only:
        return result
    first_weights, second_weights = (m.classifier.network.get_weights() for m in trained[:2])
    result["ratio_tracked_to_bare"] = median(later["tracked"]) / median(later["bare"])
    result["repeat"] = weights_difference(first_weights, second_weights)
    result["val_loss_last_epoch"] = [m.history[-1]["val_loss"] for m in trained[:2]]
    network = trained[0].classifier
    batch = pixels[:1000]
    network.predict_proba(batch)  # compiled once per batch shape
    seconds = []
    for _ in range(20):
        started = time.perf_counter()
        network.predict_proba(batch)
        seconds.append(time.perf_counter() - started)
    result["predict_1000_images_per_s"] = 1000 / median(seconds)
    return result


def part_digits(out: Path) -> dict[str, Any]:
    """params.yaml's CNN on the bundled digits, to its early stop, as the train stage runs it."""
    import joblib

    from mnist_lab.core.cnn import compute_device
    from mnist_lab.core.data import flatten_images, task_labels, with_test_set
    from mnist_lab.core.settings import load_settings
    from mnist_lab.datasets.folder import read_dataset

    params = load_settings(REPO_ROOT / "params.yaml")
    settings = params.model("cnn")
    dataset = with_test_set(read_dataset(REPO_ROOT / "data"), params.data.test_size, params.seed)
    labels = task_labels(dataset.train_labels, params.task.kind, params.task.positive_class)
    test_labels = task_labels(dataset.test_labels, params.task.kind, params.task.positive_class)
    pixels, test_pixels = flatten_images(dataset.train_images), flatten_images(dataset.test_images)
    started = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        seconds, trained = tracked_training(settings, pixels, labels, dataset.image_shape, params.seed)
    fit_seconds = time.perf_counter() - started
    probabilities = trained.classifier.predict_proba(test_pixels)
    predicted = trained.classifier.classes_[np.argmax(probabilities, axis=1)]
    out.mkdir(parents=True, exist_ok=True)
    joblib.dump(trained.classifier, out / "digits_cnn_gpu.joblib")
    np.save(out / "digits_cnn_gpu_probabilities.npy", probabilities)
    with contextlib.redirect_stderr(io.StringIO()):
        _, again = tracked_training(settings, pixels, labels, dataset.image_shape, params.seed)
    committed = {}
    for line in (REPO_ROOT / "metrics.csv").read_text(encoding="utf-8").splitlines()[1:]:
        name, value = line.split(",")[:2]
        committed[name.strip('"')] = float(value)
    return {
        "device": compute_device(),
        "epochs_run": len(trained.history),
        "best_epoch": trained.best_epoch,
        "fit_seconds": fit_seconds,
        "later_epoch_median_s": median(seconds[1:]),
        "accuracy": float(np.mean(predicted == test_labels)),
        "repeat": weights_difference(
            trained.classifier.network.get_weights(), again.classifier.network.get_weights()
        ),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "committed_cpu_accuracy": committed.get("cnn.accuracy"),
        "committed_cpu_epochs": max(
            (
                int(line.rsplit(",", 1)[1])
                for line in (REPO_ROOT / "metrics.csv").read_text().splitlines()
                if line.startswith('"cnn.val_loss"')
            ),
            default=None,
        ),
    }


def child(part: str, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    command = [sys.executable, __file__, "--part", part, "--data", str(args.data), "--out", str(args.out),
               "--epochs", str(args.epochs), "--blocks", str(args.blocks)]  # fmt: skip
    log(f"{part}: {' '.join(f'{k}={v}' for k, v in env.items())}")
    started = time.perf_counter()
    done = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, check=False)
    sys.stderr.write(done.stderr[-6000:])
    if done.returncode != 0:
        return {"error": f"exit {done.returncode}", "wall_s": time.perf_counter() - started}
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "wall_s": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON and the digits model")
    parser.add_argument("--quick", action="store_true", help="6,000 + 1,000 images")
    parser.add_argument(
        "--epochs", type=int, default=3, help="epochs per timed fit (the first is compilation)"
    )
    parser.add_argument("--blocks", type=int, default=1, help="bare, train@cnn, train@cnn, bare blocks")
    parser.add_argument("--parts", default="gpu,gpu-xla-default,cpu,digits")
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.part:  # a child: one part, its JSON on the last line of stdout
        if args.part == "digits":
            result = part_digits(args.out)
        else:
            epochs = min(args.epochs, 2) if args.part == "cpu" else args.epochs
            result = part_epochs(args.data, epochs, args.blocks, bare_only=args.part == "cpu")
        print(json.dumps(result))
        return 0

    from bench_mnist_scale import FULL, QUICK, mnist_like
    from mnist_lab.core.data import flatten_images

    n_train, n_test = QUICK if args.quick else FULL
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"versions": versions(), "images": [n_train, n_test], "parts": {}}
    log(f"versions: {results['versions']}")
    with tempfile.TemporaryDirectory(prefix="bench-cnn-gpu-") as temporary:
        args.data = Path(temporary) / "mnist_size.npz"
        dataset = mnist_like(n_train, n_test, seed=0)
        np.savez(args.data, pixels=flatten_images(dataset.train_images), labels=dataset.train_labels,
                 shape=np.asarray(dataset.image_shape))  # fmt: skip
        log(f"{n_train} + {n_test} images generated")
        environments = {
            "gpu": {},
            "gpu-xla-default": {"MNIST_LAB_EXACT_GPU": "0"},
            "cpu": {"JAX_PLATFORMS": "cpu"},
            "digits": {},
        }
        for part in args.parts.split(","):
            results["parts"][part] = child(part, args, environments[part])
            (args.out / "bench_cnn_gpu.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
