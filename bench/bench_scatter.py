"""What sending a grid search's data to every Dask worker costs: one scatter per worker (what
`mnist_lab.system.cluster` does, so that a worker lost meanwhile cannot hang the search) against Dask's
`broadcast=True` (one upload, then the scheduler has the workers copy it: it retries a lost worker forever).

One MNIST-size float64 array (60,000 x 784, 376 MB, as the featurized images are) sent to every worker of a
`dask scheduler` with --workers `dask worker --nthreads 1` processes on 127.0.0.1, each way in turn, --rounds
times; every worker's copy checked before the time is taken. Prints the median seconds of each, and their
ratio.

    python bench/bench_scatter.py [--workers 2] [--rounds 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from bench_cluster import start_cluster, stop
from benchlib import environment, environment_line, log, median, write_json
from mnist_lab.system.cluster import _ReplicatingClient


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    from distributed import Client

    address, processes = start_cluster(args.workers)
    try:
        with Client(address, timeout=60, set_as_default=False) as client:
            data = np.random.default_rng(0).random((args.rows, 784))
            ours = _ReplicatingClient(client)
            ways = {
                "broadcast": lambda: client.scatter(data, broadcast=True, hash=False),
                "one per worker": lambda: ours.scatter(data, hash=False),
            }
            seconds: dict[str, list[float]] = {way: [] for way in ways}
            for _ in range(args.rounds):
                for way, send in ways.items():
                    started = time.perf_counter()
                    future = send()
                    holders = len(client.who_has([future])[future.key])
                    seconds[way].append(time.perf_counter() - started)
                    if holders != args.workers:
                        raise SystemExit(f"{way}: {holders} of {args.workers} workers hold the data")
                    client.cancel([future])
                    time.sleep(1)  # the copies released before the next round
    finally:
        stop(processes)
    medians = {way: median(times) for way, times in seconds.items()}
    env = environment()
    log(environment_line(env))
    for way, times in seconds.items():
        log(f"{way:>15}: median {medians[way]:.2f} s ({', '.join(f'{t:.2f}' for t in times)})")
    ratio = medians["one per worker"] / medians["broadcast"]
    log(f"one per worker / broadcast: {ratio:.2f}x ({data.nbytes / 1e6:.0f} MB to {args.workers} workers)")
    target = write_json(args.json, {"environment": env, "seconds": seconds, "ratio": ratio}, "bench-scatter-")
    log(f"raw numbers: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
