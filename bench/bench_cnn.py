"""The CNN (params.yaml's `models.cnn`, Keras 3 on JAX, CPU) on MNIST-sized data: 60,000 + 10,000 generated
28x28 digits (`bench_mnist_scale.mnist_like`).

1-2. Seconds per epoch and the per-epoch tracking overhead, in this process, under the stages' one-BLAS-thread
   limit, alternating bare, train@cnn, train@cnn, bare (per block, so that drift cancels), `--epochs` each:
   bare is `build_network` + `model.fit` with no callbacks on the split `train_cnn` makes (same seed, batch
   size, validation data), one timed `fit(epochs=1)` call per epoch; train@cnn is what the train stage runs,
   `train_classifier` with the stage's `epoch_printer` (through the repository's EpochRecorder callback),
   its epochs timed between per-epoch callbacks. First epochs (split, build, XLA compilation) are reported
   apart; the overhead is the ratio of the medians of the later epochs (target <= 1.03x). Each bare call also
   pays `fit`'s set-up, which flatters train@cnn slightly; on 2 shared cores the load moves epochs by 10-30%,
   so the tracking work is also timed alone (`callback_seconds`), which load cannot hide.
3. `dvc repro` in a throw-away copy holding that data, `models.cnn.max_epochs` set to `--repro-epochs` in the
   copy's params.yaml (as `dvc exp run -S` would): each stage's wall time and peak RSS (the `python` shim).
   `--repro cnn` runs `dvc repro evaluate@cnn` (prepare, featurize, train@cnn, evaluate@cnn); `all`, all.

    nice -n 5 python bench/bench_cnn.py            # 60,000 + 10,000 images (~20 minutes on 2 busy cores)
    python bench/bench_cnn.py --quick              # 6,000 + 1,000 images: a smoke run (~3 minutes)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import re
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from bench_mnist_scale import FULL, QUICK, mnist_like
from benchlib import (
    REPO_ROOT,
    environment,
    environment_line,
    fmt,
    init_mlflow_store,
    log,
    make_workspace,
    markdown_table,
    median,
    stage_commands,
    timed_repro,
    write_json,
)
from mnist_lab.core.cnn import build_network, epoch_recorder, import_keras, validation_split
from mnist_lab.core.data import Dataset, flatten_images, task_labels
from mnist_lab.core.models import train_classifier
from mnist_lab.core.settings import CNNSettings, Settings, load_settings
from mnist_lab.datasets.folder import encode_dataset, replace_directory
from mnist_lab.stages.common import single_threaded_blas
from mnist_lab.stages.train import epoch_printer
from mnist_lab.system.files import read_json

BARE, TRACKED = "bare model.fit", "train@cnn"
BLOCK = (BARE, TRACKED, TRACKED, BARE)
TARGET_RATIO = 1.03


def bare_fit(settings: CNNSettings, pixels: np.ndarray, labels: np.ndarray, shape: Any, seed: int) -> list:
    """Seconds of each epoch of the same network and split as `train_cnn`, fitted with no callbacks."""
    keras = import_keras()
    started = time.perf_counter()
    keras.utils.set_random_seed(seed)
    classes, (x_fit, x_val, y_fit, y_val) = validation_split(settings, pixels, labels, seed)
    network = build_network(settings, shape, len(classes), seed)
    seconds = []
    for _ in range(settings.max_epochs):
        validation = (x_val, y_val)
        network.fit(x_fit, y_fit, settings.batch_size, validation_data=validation, shuffle=True, verbose=0)
        now = time.perf_counter()
        seconds.append(now - started)
        started = now
    return seconds


def tracked_training(
    settings: CNNSettings, pixels: np.ndarray, labels: np.ndarray, shape: Any, seed: int
) -> tuple[list[float], Any]:
    """(seconds of each epoch, the trained model) of the train stage's training: `train_classifier` +
    `epoch_printer`."""
    printer = epoch_printer("cnn", settings.max_epochs)
    stamps = [time.perf_counter()]

    def on_epoch(epoch: int, record: dict[str, float]) -> None:
        printer(epoch, record)
        stamps.append(time.perf_counter())

    trained = train_classifier(settings, pixels, labels, seed, on_epoch, image_shape=shape)
    return np.diff(stamps).tolist(), trained


def tracked_fit(settings: CNNSettings, pixels: np.ndarray, labels: np.ndarray, shape: Any, seed: int) -> list:
    """Seconds of each epoch of the train stage's training."""
    return tracked_training(settings, pixels, labels, shape, seed)[0]


def callback_seconds(settings: CNNSettings, shape: Any, classes: int, seed: int, calls: int = 30) -> float:
    """Median seconds of one epoch's tracking work, timed directly on a built network: the repository's
    EpochRecorder (`epoch_recorder`, what `train_cnn` installs) with the stage's `epoch_printer`, its
    output caught. Every call sees a better validation loss: the worst case, weights copied each time."""
    keras = import_keras()
    recorder = epoch_recorder(keras, settings.patience, epoch_printer("cnn", calls))
    recorder.set_model(build_network(settings, shape, classes, seed))
    logs = {"loss": 0.5, "accuracy": 0.9, "val_loss": 0.5, "val_accuracy": 0.9}
    seconds = []
    with contextlib.redirect_stderr(io.StringIO()):
        for epoch in range(calls):
            started = time.perf_counter()
            recorder.on_epoch_end(epoch, {**logs, "val_loss": 1.0 / (epoch + 1)})
            seconds.append(time.perf_counter() - started)
    return median(seconds)


def measure_epochs(dataset: Dataset, params: Settings, settings: CNNSettings, blocks: int) -> dict[str, Any]:
    seed, task = params.seed, params.task
    pixels = flatten_images(dataset.train_images)
    labels = task_labels(dataset.train_labels, task.kind, task.positive_class)
    runs: dict[str, list[list[float]]] = {BARE: [], TRACKED: []}
    order = BLOCK * blocks
    with single_threaded_blas():  # as every stage runs
        callback_s = callback_seconds(settings, dataset.image_shape, len(np.unique(labels)), seed)
        for index, kind in enumerate(order, start=1):
            log(f"epoch timing {index}/{len(order)}: {kind}, {settings.max_epochs} epochs")
            fit = bare_fit if kind == BARE else tracked_fit
            runs[kind].append(fit(settings, pixels, labels, dataset.image_shape, seed))
            log(f"  epochs (s): {', '.join(f'{s:.1f}' for s in runs[kind][-1])}")
    later = {kind: [s for run in seconds for s in run[1:]] for kind, seconds in runs.items()}
    block_ratios = [
        median(s for run in runs[TRACKED][2 * b : 2 * b + 2] for s in run[1:])
        / median(s for run in runs[BARE][2 * b : 2 * b + 2] for s in run[1:])
        for b in range(blocks)
    ]
    fitted = len(pixels) - math.ceil(len(pixels) * settings.validation_fraction)  # as sklearn splits
    return {
        "n_fit_images": fitted,
        "runs": runs,
        "first_median_s": {kind: median(run[0] for run in seconds) for kind, seconds in runs.items()},
        "later_median_s": {kind: median(values) for kind, values in later.items()},
        "later_range_s": {kind: [min(values), max(values)] for kind, values in later.items()},
        "ratio_median": median(later[TRACKED]) / median(later[BARE]),
        "ratio_mean": float(np.mean(later[TRACKED]) / np.mean(later[BARE])),
        "block_ratios": block_ratios,
        "callback_s": callback_s,
    }


def set_max_epochs(params: Path, epochs: int) -> None:
    """`models.cnn.max_epochs: <epochs>` in a copy's params.yaml, comments kept; checked by loading it."""
    text = params.read_text(encoding="utf-8")
    edited, count = re.subn(r"(\n  cnn:\n(?:    .*\n)*?    max_epochs: *)\d+", rf"\g<1>{epochs}", text)
    if count != 1:
        raise RuntimeError(f"no models.cnn.max_epochs in {params}")
    params.write_text(edited, encoding="utf-8")
    if load_settings(params).model("cnn").max_epochs != epochs:
        raise RuntimeError(f"editing {params} did not set models.cnn.max_epochs to {epochs}")


def measure_repro(dataset: Dataset, scope: str, epochs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mnist-lab-bench-cnn-") as temporary:
        log(f"copying the repository into {temporary}")
        workspace = make_workspace(Path(temporary))
        commands = stage_commands(workspace)
        init_mlflow_store(workspace)  # migrations excluded from the timings
        replace_directory(encode_dataset(dataset), workspace.root / "data")
        workspace.run(["dvc", "add", "data"])
        set_max_epochs(workspace.root / "params.yaml", epochs)
        args = () if scope == "all" else ("evaluate@cnn",)
        log(f"`dvc repro {' '.join(args)}` with models.cnn.max_epochs={epochs}")
        repro = timed_repro(workspace, commands, "cnn", *args)
        reports = workspace.root / "reports" / "cnn"
        return {
            "scope": scope,
            "command": " ".join(["dvc", "repro", *args]),
            "max_epochs": epochs,
            "wall_s": repro.wall_s,
            "dvc_s": repro.dvc_s,
            "stages": repro.stages,
            "training": read_json(reports / "training.json"),
            "accuracy": read_json(reports / "metrics.json")["accuracy"],
        }


def times(value: float) -> str:
    return f"{value:.3f}×"


def tables(raw: dict[str, Any]) -> str:
    epochs, repro = raw["epochs"], raw["repro"]
    first, later, spread = epochs["first_median_s"], epochs["later_median_s"], epochs["later_range_s"]
    rows = [
        (
            f"`{kind}`",
            len(epochs["runs"][kind]),
            fmt(first[kind], 1),
            f"{later[kind]:.2f} ({spread[kind][0]:.1f}-{spread[kind][1]:.1f})",
            f"{epochs['n_fit_images'] / later[kind]:,.0f}",
        )
        for kind in (BARE, TRACKED)
    ]
    blocks = ", ".join(times(r) for r in epochs["block_ratios"])
    ratio = f"**{times(epochs['ratio_median'])}** (mean {times(epochs['ratio_mean'])}; per block {blocks})"
    rows.append(("**train@cnn / bare**", "", times(first[TRACKED] / first[BARE]), ratio, ""))
    if "callback_s" in epochs:  # absent from runs before it was added
        cost_s = epochs["callback_s"]
        cost = f"{cost_s * 1e3:.3f} ms, {100 * cost_s / later[BARE]:.4f}% of an epoch"
        rows.append(("tracking work per epoch, timed alone (worst case)", "", "", cost, ""))
    header = (
        "run",
        "runs",
        "first epoch s (median)",
        f"later epochs s: median (range), {raw['max_epochs'] - 1} a run",
    )
    stage_rows = [
        (f"`{stage}`", fmt(s["wall_s"]), fmt(s["compute_s"]), f"{s['max_rss_mb']:,.0f}")
        for stage, s in repro["stages"].items()
    ]
    stage_rows.append(("DVC itself", fmt(repro["dvc_s"]), "", ""))
    stage_rows.append((f"**`{repro['command']}`**", f"**{fmt(repro['wall_s'])}**", "", ""))
    train, n = repro["stages"].get("train@cnn"), repro["max_epochs"]
    bare = first[BARE] + (n - 1) * later[BARE]  # a bare fit of as many epochs, from the table above
    load = " → ".join(f"{value[0]:.1f}" for value in raw["load_average"].values())
    versions = ", ".join(f"{k} {v}" for k, v in raw["deep_learning"].items())
    return "\n\n".join(
        [
            f"**CNN epochs** ({raw['n_train']:,} generated 28x28 images: {epochs['n_fit_images']:,} fitted, "
            f"the rest validation; params.yaml's `models.cnn`; {raw['max_epochs']} epochs a run, alternated "
            f"bare/train@cnn/train@cnn/bare, {raw['blocks']} block(s)). "
            f"{environment_line(raw['environment'])}, {versions}; 1-minute load average {load}. "
            f"Target: train@cnn / bare ≤ {TARGET_RATIO}×.",
            markdown_table((*header, "images/s"), rows),
            f"**`{repro['command']}`** ({raw['n_train']:,} + {raw['n_test']:,} images) with "
            f"`models.cnn.max_epochs: {n}` in the copy's params.yaml (test accuracy {repro['accuracy']:.4f} "
            f"after {repro['training']['epochs']} epoch(s); target: the CNN stages ≤ 4,000 MB).",
            markdown_table(("stage", "wall s", "compute s", "peak RSS MB"), stage_rows),
            ""
            if train is None
            else f"The `train@cnn` process ({n} epoch(s); imports, loading, saving, tracking included): "
            f"{train['wall_s']:.1f} s, {times(train['wall_s'] / bare)} a bare fit of as many epochs from the "
            f"first table ({bare:.1f} s; not alternated); its training alone "
            f"{times(train['compute_s'] / bare)}.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="6,000 + 1,000 images: a smoke run")
    parser.add_argument("--train", type=int, help="training images (default 60,000; 6,000 with --quick)")
    parser.add_argument("--test", type=int, help="test images (default 10,000; 1,000 with --quick)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per timed training (default 3)")
    parser.add_argument("--blocks", type=int, default=1, help="bare/cnn/cnn/bare blocks (default 1)")
    parser.add_argument("--repro", choices=("cnn", "all"), default="cnn", help="stages to run (default cnn)")
    parser.add_argument("--repro-epochs", type=int, default=1, help="models.cnn.max_epochs in the repro")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated data (default 0)")
    parser.add_argument("--json", help="where to write the raw numbers (default: a new temporary file)")
    parser.add_argument("--render", metavar="JSON", help="only print the tables of an earlier run's --json")
    args = parser.parse_args(argv)
    if args.epochs < 2:  # the first epoch (compilation) is reported apart: the timing needs a later one
        parser.error(f"--epochs {args.epochs}: give 2 or more (the first epoch is compilation, timed apart)")
    if args.render:
        print(tables(json.loads(Path(args.render).read_text(encoding="utf-8"))))
        return 0
    default_train, default_test = QUICK if args.quick else FULL
    n_train, n_test = args.train or default_train, args.test or default_test
    max_epochs, started = args.epochs, time.perf_counter()
    loads = {"start": os.getloadavg()}
    params = load_settings(REPO_ROOT / "params.yaml")
    settings = params.model("cnn").without_search(max_epochs=max_epochs)
    log(f"generating {n_train:,} + {n_test:,} MNIST-like images")
    dataset = mnist_like(n_train, n_test, args.seed)
    raw: dict[str, Any] = {"n_train": n_train, "n_test": n_test, "seed": args.seed, "max_epochs": max_epochs}
    raw["blocks"], raw["cnn_settings"] = args.blocks, settings.model_dump()
    raw["epochs"] = measure_epochs(dataset, params, settings, args.blocks)
    loads["after epochs"] = os.getloadavg()
    raw["repro"] = measure_repro(dataset, args.repro, args.repro_epochs)
    loads["end"] = os.getloadavg()
    raw["load_average"], raw["environment"] = loads, environment()
    raw["deep_learning"] = {name: metadata.version(name) for name in ("keras", "jax")}
    raw["bench_wall_s"] = time.perf_counter() - started
    print(tables(raw))
    path = write_json(args.json, raw, "bench_cnn-")
    print(f"\nraw numbers: {path} ({raw['bench_wall_s']:.0f} s in all)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
