"""`mnist-lab predict` on a million images: streamed a chunk at a time, in bounded memory.

An MLP (the featurizer + hidden layer 100, trained on 10,000 generated 28x28 digits; bench_mnist_scale's
generator) saved as the pyfunc the pipeline logs, predicted by the real CLI (`mnist-lab predict <images>
--model <its folder> -o predictions.csv`, in a throw-away git repository) on IDX files of 10,000 (the
baseline) and --images (default 1,000,000) images: the 10,000 generated test images repeated, uncompressed
(a gzipped file streams the same way; gzip costs its own time). Per size: wall time, images/s end to end
(read, predict, write the CSV), the process's peak RSS; median of --repeats.

    python bench/bench_predict.py [--images 1000000] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench_mnist_scale import mnist_like
from bench_serving import save
from benchlib import (
    GIT_IDENTITY,
    environment,
    environment_line,
    log,
    markdown_table,
    median,
    run_timed,
    write_json,
)
from mnist_lab.core.data import flatten_images
from mnist_lab.core.features import fit_featurizer, full_model
from mnist_lab.core.models import train_classifier
from mnist_lab.core.settings import FeatureSettings, MLPSettings
from mnist_lab.serving.pyfunc import DigitClassifier

BIN = Path(sys.executable).parent


def write_idx(path: Path, images: np.ndarray, count: int) -> None:
    """An uncompressed IDX images file of `count` images, `images` repeated (written a block at a time)."""
    rows, cols = images.shape[1:]
    with path.open("wb") as out:
        out.write(
            bytes([0, 0, 8, 3]) + count.to_bytes(4, "big") + rows.to_bytes(4, "big") + cols.to_bytes(4, "big")
        )
        left = count
        while left:
            block = images[: min(left, len(images))]
            out.write(np.ascontiguousarray(block, dtype=np.uint8).tobytes())
            left -= len(block)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="where to write the raw numbers")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    load = os.getloadavg()[0]
    data = mnist_like(10_000, 10_000, seed=0)
    train = flatten_images(data.train_images)
    featurizer = fit_featurizer(train, FeatureSettings(), seed=0)
    settings = MLPSettings(type="mlp", hidden_layer_sizes=[100], max_epochs=20, patience=20)
    log("training the MLP")
    classifier = train_classifier(
        settings, featurizer.transform(train), data.train_labels.astype(np.int64), 0
    )
    raw: dict[str, Any] = {"environment": environment(), "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as temporary:
        root = Path(temporary)
        env = {**os.environ, **GIT_IDENTITY, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
               "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}  # fmt: skip
        run_timed(["git", "init", "-q"], root, env)
        (root / "dvc.yaml").write_text("stages: {}\n")  # what makes it a workspace for the CLI
        model_dir = save(DigitClassifier(full_model(featurizer, classifier.classifier), 784), root / "model")
        for count in (10_000, args.images):
            images = root / f"images-{count}-idx3-ubyte"
            write_idx(images, data.test_images, count)
            runs = []
            for repeat in range(args.repeats):
                timed = run_timed(
                    ["mnist-lab", "predict", images.name, "--model", str(model_dir), "-o", "predictions.csv"],
                    root, env,
                )  # fmt: skip
                lines = (root / "predictions.csv").read_text().count("\n") if repeat == 0 else count + 1
                if lines != count + 1:
                    raise RuntimeError(f"{count} images gave {lines - 1} predictions")
                runs.append({"wall_s": timed.wall_s, "max_rss_mb": timed.max_rss_mb})
                log(f"{count:,} images: {timed.wall_s:.1f} s, peak RSS {timed.max_rss_mb:,.0f} MB")
            images.unlink()
            raw["sizes"][count] = {
                "wall_s": median(r["wall_s"] for r in runs),
                "max_rss_mb": max(r["max_rss_mb"] for r in runs),
                "input_mb": count * 784 / 1e6,
                "runs": runs,
            }
    raw["note"] = (
        f"`mnist-lab predict` (MLP, 28x28, uncompressed IDX in, CSV out), median of {args.repeats}; "
        f"load average {load:.1f} -> {os.getloadavg()[0]:.1f}; {time.perf_counter() - started:.0f} s in all"
    )
    target = write_json(args.json, raw, "bench-predict-")
    base = raw["sizes"][10_000]
    rows = []
    for count, result in raw["sizes"].items():
        rate, base_rate = count / result["wall_s"], 10_000 / base["wall_s"]
        rows.append((f"{count:,}", f"{result['input_mb']:,.0f}", f"{result['wall_s']:.1f}", f"{rate:,.0f}",
                     f"{rate / base_rate:.2f}×", f"{result['max_rss_mb']:,.0f}",
                     f"{result['max_rss_mb'] / base['max_rss_mb']:.2f}×"))  # fmt: skip
    print(f"**Batch prediction** ({environment_line(raw['environment'])}). {raw['note']}.\n")
    print(markdown_table(("images", "input MB", "wall s", "images/s", "× 10,000's rate", "peak RSS MB",
                          "× 10,000's RSS"), rows))  # fmt: skip
    print(f"\nraw numbers: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
