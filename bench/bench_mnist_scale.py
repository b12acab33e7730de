"""The pipeline on MNIST-sized data: 60,000 + 10,000 generated 28x28 digits, in a throw-away copy.

There is no network here, so the images are made from scikit-learn's bundled 8x8 digits: upscaled to a
20x20 box in a 28x28 frame (as MNIST centres its digits), then each copy gets a seeded random rotation,
shear, scale, shift, elastic distortion, stroke thickness, contrast and pixel noise. Training images come
only from the digits' training split and test images only from its test split, so the test set measures
generalisation to unseen writers, not memorised sources.

Steps: copy the repository (git ls-files) into a temporary git repository with the default data, run the
default pipeline once as the baseline (`dvc repro -f`, on a store already migrated), write the generated
data with `encode_dataset` + `replace_directory`, `dvc add data`, then `dvc repro`. Every stage process is
timed (wall, peak RSS) by a `python` shim that DVC finds first on PATH.

    python bench/bench_mnist_scale.py            # 60,000 / 10,000 images (several minutes)
    python bench/bench_mnist_scale.py --quick    # 6,000 / 1,000 images: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchlib import (
    Workspace,
    environment,
    environment_line,
    fmt,
    init_mlflow_store,
    log,
    make_workspace,
    markdown_table,
    ratio,
    stage_commands,
    timed_repro,
    write_json,
)
from mnist_lab.core.data import Dataset, digits_dataset
from mnist_lab.datasets.folder import encode_dataset, replace_directory
from mnist_lab.system.files import read_json

SIDE = 28  # MNIST's frame
BOX = 20  # MNIST's digits fit a 20x20 box, centred in the frame
BATCH = 4096  # images distorted per vectorised batch (~100 MB of coordinates)
FULL = (60_000, 10_000)
QUICK = (6_000, 1_000)


# --- generated MNIST-shaped data ----------------------------------------------------------------------------


def base_images(images: np.ndarray) -> np.ndarray:
    """8x8 digits (0-255) -> float32 28x28 frames: spline-upscaled to 20x20, contrast-sharpened, padded."""
    from scipy import ndimage

    factor = (1, BOX / images.shape[1], BOX / images.shape[2])
    upscaled = ndimage.zoom(images.astype(np.float32), factor, order=3)
    upscaled = 255 * np.clip((upscaled / 255 - 0.15) / 0.6, 0, 1)  # crisper strokes than the blurry zoom
    pad = (SIDE - BOX) // 2
    return np.pad(upscaled, ((0, 0), (pad, pad), (pad, pad))).astype(np.float32)


def distorted_copies(base: np.ndarray, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`count` uint8 images, each a randomly distorted copy of one of `base`; returns (images, source index).

    Every source is used about equally often. Per image: rotation ±12°, shear ±0.15, scale 0.9-1.12 per
    axis, shift ±2 px, a smooth elastic displacement field, stroke thickening, contrast 0.7-1 and noise."""
    from scipy import ndimage

    sources = rng.permutation(np.resize(np.arange(len(base)), count))
    out = np.empty((count, SIDE, SIDE), dtype=np.uint8)
    centre = (SIDE - 1) / 2
    grid = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32) - centre
    for start in range(0, count, BATCH):
        source = sources[start : start + BATCH]
        n = len(source)
        angle = np.deg2rad(rng.uniform(-12, 12, n))
        shear = rng.uniform(-0.15, 0.15, n)
        scale = rng.uniform(0.9, 1.12, (n, 2))
        # the inverse map, output pixel offset -> source pixel offset, one 2x2 matrix per image
        matrix = np.empty((n, 2, 2), dtype=np.float32)
        matrix[:, 0, 0] = np.cos(angle) * scale[:, 0]
        matrix[:, 0, 1] = (shear - np.sin(angle)) * scale[:, 0]
        matrix[:, 1, 0] = np.sin(angle) * scale[:, 1]
        matrix[:, 1, 1] = np.cos(angle) * scale[:, 1]
        shift = rng.uniform(-2, 2, (n, 2)).astype(np.float32)
        coords = np.einsum("bij,jrc->ibrc", matrix, grid) + centre - shift.T[:, :, None, None]
        field = rng.uniform(-1, 1, (2, n, SIDE, SIDE)).astype(np.float32)
        strength = rng.uniform(0, 25, n).astype(np.float32)[None, :, None, None]
        coords += ndimage.gaussian_filter(field, sigma=(0, 0, 4, 4)) * strength
        index = np.broadcast_to(source[:, None, None], (n, SIDE, SIDE)).astype(np.float32)
        images = ndimage.map_coordinates(base, [index, coords[0], coords[1]], order=1, mode="constant")
        thickness = rng.uniform(0, 1, n).astype(np.float32)[:, None, None]
        thick = np.minimum(ndimage.gaussian_filter(images, sigma=(0, 1, 1)) * 1.8, 255)
        images = (1 - thickness) * images + thickness * thick
        images *= rng.uniform(0.7, 1.0, n).astype(np.float32)[:, None, None]
        images += rng.normal(0, 8, images.shape).astype(np.float32)
        out[start : start + n] = np.clip(np.rint(images), 0, 255).astype(np.uint8)
    return out, sources


def mnist_like(n_train: int, n_test: int, seed: int) -> Dataset:
    """A deterministic MNIST-shaped dataset (uint8 28x28, labels 0-9) of `n_train` + `n_test` images."""
    digits = digits_dataset()
    train_images, train_sources = distorted_copies(
        base_images(digits.train_images), n_train, np.random.default_rng([seed, 0])
    )
    test_images, test_sources = distorted_copies(
        base_images(digits.test_images), n_test, np.random.default_rng([seed, 1])
    )
    return Dataset(
        train_images, digits.train_labels[train_sources], test_images, digits.test_labels[test_sources]
    )


# --- the run ------------------------------------------------------------------------------------------------


def model_results(workspace: Workspace) -> dict[str, dict[str, Any]]:
    """Per model: test accuracy and macro F1, fit seconds and epochs (from the pipeline's reports)."""
    summary = read_json(workspace.root / "metrics.json")["models"]
    results = {}
    for name, metrics in summary.items():
        # the fit time: outputs/timing/<model>.json; in training.json (reports/ or models/) in older versions
        candidates = [workspace.root / "outputs" / "timing" / f"{name}.json"]
        candidates += [workspace.root / folder / name / "training.json" for folder in ("reports", "models")]
        timing = read_json(next((path for path in candidates if path.is_file()), candidates[0]))
        training = read_json(next((p for p in candidates[1:] if p.is_file()), candidates[1]))
        results[name] = {
            "accuracy": metrics["accuracy"],
            "f1_macro": metrics["f1_macro"],
            "fit_s": timing["fit_seconds"],
            "epochs": training.get("epochs"),
        }
    return results


def measure(n_train: int, n_test: int, seed: int) -> dict[str, Any]:
    """Run the baseline and the MNIST-scale pipeline in a throw-away copy; returns the raw numbers."""
    with tempfile.TemporaryDirectory(prefix="mnist-lab-bench-scale-") as temporary:
        log(f"copying the repository into {temporary}")
        workspace = make_workspace(Path(temporary))
        commands = stage_commands(workspace)
        store_s = init_mlflow_store(workspace)
        log(f"MLflow store created and migrated in {store_s:.1f} s (excluded from the timings)")

        log("baseline: the default data (digits), `dvc repro -f`")
        baseline = timed_repro(workspace, commands, "digits", "-f")
        baseline_models = model_results(workspace)

        log(f"generating {n_train:,} + {n_test:,} MNIST-like images")
        started = time.perf_counter()
        dataset = mnist_like(n_train, n_test, seed)
        generate_s = time.perf_counter() - started
        started = time.perf_counter()
        files = encode_dataset(dataset)
        replace_directory(files, workspace.root / "data")
        encode_s = time.perf_counter() - started
        log(f"generated in {generate_s:.1f} s, IDX encoded and written in {encode_s:.1f} s")
        add = workspace.run(["dvc", "add", "data"])

        log("MNIST scale: `dvc repro` (every stage runs: the data changed)")
        scaled = timed_repro(workspace, commands, "mnist")
        # every stage but `code`, which depends on the package's source alone (it did not change)
        missing = [stage for stage, _ in commands if stage not in scaled.stages and stage != "code"]
        if missing:
            raise RuntimeError(f"`dvc repro` did not run stages {missing}")
        status = workspace.run(["dvc", "status"])
        return {
            "n_train": n_train,
            "n_test": n_test,
            "seed": seed,
            "image_shape": list(dataset.image_shape),
            "data_mb": sum(len(content) for content in files.values()) / 1e6,
            "mlflow_store_init_s": store_s,
            "generate_s": generate_s,
            "encode_write_s": encode_s,
            "dvc_add_s": add.wall_s,
            "dvc_status_after_s": status.wall_s,
            "stages": [stage for stage, _ in commands],
            "baseline": {"wall_s": baseline.wall_s, "dvc_s": baseline.dvc_s, "stages": baseline.stages},
            "scaled": {"wall_s": scaled.wall_s, "dvc_s": scaled.dvc_s, "stages": scaled.stages},
            "baseline_models": baseline_models,
            "models": model_results(workspace),
        }


def tables(raw: dict[str, Any]) -> str:
    """The Markdown for the README."""
    base, scaled = raw["baseline"], raw["scaled"]
    size = f"{raw['n_train']:,} + {raw['n_test']:,} images 28x28"
    stage_rows = []
    for stage in raw["stages"]:
        b, s = base["stages"].get(stage), scaled["stages"].get(stage)
        if b is None or s is None:  # `code` depends on the source alone: new data does not rerun it
            continue
        stage_rows.append(
            (
                f"`{stage}`",
                fmt(b["wall_s"]),
                fmt(s["wall_s"]),
                ratio(s["wall_s"], b["wall_s"]),
                fmt(s["compute_s"]),
                f"{b['max_rss_mb']:.0f}",
                f"{s['max_rss_mb']:.0f}",
            )
        )
    stage_rows.append(
        ("DVC itself (hashing, cache, lock)", fmt(base["dvc_s"]), fmt(scaled["dvc_s"]), "", "", "", "")
    )
    stage_rows.append(
        (
            "**`dvc repro` total**",
            f"**{fmt(base['wall_s'])}**",
            f"**{fmt(scaled['wall_s'])}**",
            f"**{ratio(scaled['wall_s'], base['wall_s'])}**",
            "",
            "",
            "",
        )
    )
    stage_table = markdown_table(
        (
            "stage",
            "digits wall s",
            "MNIST-scale wall s",
            "× digits",
            "compute s",
            "digits peak RSS MB",
            "MNIST-scale peak RSS MB",
        ),
        stage_rows,
    )
    model_rows = [
        (
            f"`{name}`",
            f"{raw['baseline_models'][name]['accuracy']:.4f}",
            f"{result['accuracy']:.4f}",
            f"{result['f1_macro']:.4f}",
            fmt(result["fit_s"]),
            result["epochs"] or "–",
        )
        for name, result in raw["models"].items()
    ]
    model_table = markdown_table(
        ("model", "digits accuracy", "MNIST-scale accuracy", "MNIST-scale F1 macro", "fit s", "epochs"),
        model_rows,
    )
    data_table = markdown_table(
        ("data step", "s"),
        [
            (f"generate {size} (scipy.ndimage)", fmt(raw["generate_s"])),
            (f"encode as gzip'd IDX and write ({raw['data_mb']:.1f} MB)", fmt(raw["encode_write_s"])),
            ("`dvc add data`", fmt(raw["dvc_add_s"])),
            ("`dvc status` afterwards", fmt(raw["dvc_status_after_s"])),
        ],
    )
    return "\n\n".join(
        [
            f"**Pipeline at MNIST scale** ({size}, generated; baseline: the bundled digits, 1,437 + 360 "
            f"images 8x8, measured in the same run). {environment_line(raw['environment'])}; load average "
            f"{raw['load_average_start'][0]:.1f} → {raw['load_average_end'][0]:.1f}. The MLflow "
            f"store was created and migrated before timing ({raw['mlflow_store_init_s']:.1f} s).",
            stage_table,
            model_table,
            data_table,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="6,000 + 1,000 images: a smoke run")
    parser.add_argument("--train", type=int, help="training images (default 60,000; 6,000 with --quick)")
    parser.add_argument("--test", type=int, help="test images (default 10,000; 1,000 with --quick)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated data (default 0)")
    parser.add_argument("--json", help="where to write the raw numbers (default: a new temporary file)")
    parser.add_argument("--render", metavar="JSON", help="only print the tables of an earlier run's --json")
    args = parser.parse_args(argv)
    if args.render:
        print(tables(json.loads(Path(args.render).read_text(encoding="utf-8"))))
        return 0
    n_train, n_test = QUICK if args.quick else FULL
    started = time.perf_counter()
    load_start = os.getloadavg()
    raw = measure(args.train or n_train, args.test or n_test, args.seed)
    raw["environment"] = environment()
    raw["load_average_start"], raw["load_average_end"] = load_start, os.getloadavg()
    raw["bench_wall_s"] = time.perf_counter() - started
    path = write_json(args.json, raw, "bench_mnist_scale-")  # first: a table that fails loses no run
    print(f"raw numbers: {path}\n", file=sys.stderr)
    print(tables(raw))
    return 0


if __name__ == "__main__":
    sys.exit(main())
