"""A grid search on a Dask cluster: 2 workers against 1, and against this machine alone.

MNIST-size data (60,000 generated 28x28 training images, bench_mnist_scale's generator; the featurizer of
params.yaml), an MLP grid of 8 candidates (hidden layer 50 or 100, alpha, learning rate) x 2 folds, each
fit --epochs epochs; the search the train stage runs (`train_classifier` with `search`, which refits the
best candidate on all the data). Four runs, timed: on this machine (no cluster) in one process and in one
process per core (what a stage does without a cluster), then inside `mnist_lab.system.cluster.dask_search`
on a `dask scheduler` with 1 and with 2 `dask worker --nthreads 1` processes on 127.0.0.1. The results are
checked identical (every candidate's fold scores, the best).

    python bench/bench_cluster.py [--train 60000] [--epochs 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench_mnist_scale import mnist_like
from bench_serving import free_port
from benchlib import environment, environment_line, log, markdown_table, write_json
from mnist_lab.core.data import flatten_images
from mnist_lab.core.features import fit_featurizer
from mnist_lab.core.models import train_classifier
from mnist_lab.core.settings import FeatureSettings, MLPSettings
from mnist_lab.system.cluster import dask_search

BIN = Path(sys.executable).parent
GRID = {"hidden_layer_sizes": [[50], [100]], "alpha": [0.0001, 0.001], "learning_rate_init": [0.001, 0.003]}


def start_cluster(workers: int) -> tuple[str, list[subprocess.Popen]]:
    from distributed import Client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    quiet = {
        "env": env,
        "stdout": subprocess.DEVNULL,
        "stderr": subprocess.DEVNULL,
        "start_new_session": True,
    }
    processes = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                   "--dashboard-address", ":0"], **quiet)]  # fmt: skip
    for index in range(workers):
        worker = ["worker", address, "--nthreads", "1", "--no-nanny", "--name", f"w{index}"]
        processes.append(subprocess.Popen([str(BIN / "dask"), *worker, "--dashboard-address", ":0"], **quiet))
    with Client(address, timeout=60, set_as_default=False) as client:
        client.wait_for_workers(workers, timeout=120)
    return address, processes


def stop(processes: list[subprocess.Popen]) -> None:
    for process in reversed(processes):
        os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a worker busy in a fit of a cancelled search
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def search_result(trained: Any) -> dict[str, Any]:
    return {
        "best_index": trained.search.best_index,
        "scores": [candidate.fold_scores for candidate in trained.search.candidates],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", type=int, default=60_000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--json", help="where to write the raw numbers")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    load = os.getloadavg()[0]
    log(f"generating {args.train:,} MNIST-sized images")
    data = mnist_like(args.train, 1_000, seed=0)
    pixels = flatten_images(data.train_images)
    features = fit_featurizer(pixels, FeatureSettings(), seed=0).transform(pixels)
    labels = data.train_labels.astype(np.int64)
    settings = MLPSettings.model_validate({"type": "mlp", "max_epochs": args.epochs, "patience": args.epochs,
                                           "search": {"grid": GRID, "cv": 2}})  # fmt: skip
    runs: dict[str, dict[str, Any]] = {}
    from threadpoolctl import threadpool_limits

    plan = (
        ("this machine, 1 process", 0, 1),
        (f"this machine, {os.cpu_count()} processes (a stage's default)", 0, -1),
        ("1 worker", 1, -1),
        ("2 workers", 2, -1),
    )
    for label, workers, jobs in plan:
        processes: list[subprocess.Popen] = []
        try:
            if workers:
                address, processes = start_cluster(workers)
            log(f"searching on {label}")
            begun = time.perf_counter()
            with threadpool_limits(limits=1, user_api="blas"):  # as the train stage
                if workers:
                    with dask_search(address):
                        trained = train_classifier(settings, features, labels, seed=0)
                else:
                    trained = train_classifier(settings, features, labels, seed=0, search_jobs=jobs)
            seconds = time.perf_counter() - begun
        finally:
            if processes:
                stop(processes)
        runs[label] = {"seconds": seconds, "result": search_result(trained)}
        log(f"{label}: {seconds:.1f} s")
    log("timing the refit of the best candidate alone (on this machine, in every run)")
    best = settings.without_search(**trained.search.candidates[trained.search.best_index].params)
    begun = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):
        train_classifier(best, features, labels, seed=0)
    refit = time.perf_counter() - begun
    for run in runs.values():
        run["search_seconds"] = run["seconds"] - refit
    results = [run["result"] for run in runs.values()]
    identical = all(result == results[0] for result in results)
    raw: dict[str, Any] = {"environment": environment(), "runs": runs, "refit_s": refit}
    raw["identical"] = identical
    raw["note"] = (
        f"{args.train:,} training images, 8 candidates x 2 folds + the refit, {args.epochs} epochs each; "
        f"load average {load:.1f} -> {os.getloadavg()[0]:.1f}; {time.perf_counter() - started:.0f} s in all"
    )
    target = write_json(args.json, raw, "bench-cluster-")
    one, one_search = runs["1 worker"]["seconds"], runs["1 worker"]["search_seconds"]
    print(f"**Grid search on a Dask cluster** ({environment_line(raw['environment'])}). {raw['note']}.\n")
    print(markdown_table(
        ("searched on", "wall s", "× 1 worker", f"the 16 fits alone s (less the {refit:.1f} s refit)",
         "× 1 worker", "results"),
        [(label, f"{run['seconds']:.1f}", f"{run['seconds'] / one:.2f}×", f"{run['search_seconds']:.1f}",
          f"{run['search_seconds'] / one_search:.2f}×",
          "identical" if run["result"] == results[0] else "DIFFERENT") for label, run in runs.items()],
    ))  # fmt: skip
    print(f"\nraw numbers: {target}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
