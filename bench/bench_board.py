"""The experiments page with many experiments: a generated repository of 500 experiment commits (and 20 DVC
experiments) and a sqlite MLflow store of 2,000 runs no commit names, served by `mnist-lab board`, rendered
in headless chromium.

Figures (median of --repeat runs):
- the table's data: `experiment_rows` (one `git log`, `git cat-file` for the files and the dirty check of
  every commit's dvc.lock and its stages' listings against its files; caches cleared) against the baseline
  a reader running git per commit (`git show` of each file, `git log` of each message: how `mnist-lab
  history` read before it used `experiment_rows`), same repository;
- the store's runs as rows (`/api/runs`, 2,000 runs, after the board's 10 s cache of them expired), and in
  the browser the runs merged into the table (asked after the first render);
- in the browser: the first render of the table (navigation start to the table drawn: page, scripts, the
  API call and the render), and a query that filters it (from the keystroke's input event to the table
  redrawn, without the page's 120 ms typing pause, then with it).

    python bench/bench_board.py [--commits 500] [--runs 2000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchlib import BIN_DIR, log
from tests.board.browser import chromium, wait_for
from tests.board.experiment_history import write_history
from tests.helpers import free_port, start, stop, wait_until_ready


def _clear_caches() -> None:
    """experiment_rows caches parsed files by content: time it cold."""
    from mnist_lab.experiments import table

    table._params.cache_clear()
    table._data_version.cache_clear()
    table._params_block.cache_clear()
    table._STALE.clear()


def _get(port: int, path: str) -> dict:
    import json
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=120) as answer:
        return json.load(answer)


def per_commit_reader(root: Path) -> list[dict]:
    """The baseline: each experiment commit's files and message read with one git process each."""
    import subprocess

    from mnist_lab.core.settings import flatten, load_params_yaml

    def show(spec: str) -> str | None:
        done = subprocess.run(["git", "show", spec], cwd=root, capture_output=True, text=True)
        return done.stdout if done.returncode == 0 else None

    log = ["git", "log", "--format=%H %P", "--", "dvc.lock", "metrics.json"]
    rows = []
    for line in subprocess.run(log, cwd=root, capture_output=True, text=True, check=True).stdout.splitlines():
        commit, *parents = line.split()
        params = flatten(load_params_yaml(show(f"{commit}:params.yaml") or "{}") or {})
        before = flatten(load_params_yaml(show(f"{parents[0]}:params.yaml") or "{}") or {}) if parents else {}
        body = subprocess.run(
            ["git", "log", "-1", "--format=%B", commit], cwd=root, capture_output=True, text=True
        )
        rows.append(
            {
                "commit": commit,
                "metrics": show(f"{commit}:metrics.json"),
                "data": show(f"{commit}:data.dvc"),
                "changed": {k: [before.get(k), params.get(k)] for k in params.keys() | before.keys()},
                "body": body.stdout,
            }
        )
    return rows


def _median_time(action, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def write_runs(root: Path, count: int) -> None:
    """`count` finished model runs in `<root>/mlflow.db`, as the evaluate stage logs them (params, metrics,
    a 5-epoch loss history, tags); none is named by a commit."""
    import mlflow
    from mlflow.entities import Metric, Param, RunTag

    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.create_experiment("mnist-lab")
    for index in range(count):
        model = ("sgd", "mlp", "cnn")[index % 3]
        tags = {"mnist_lab.model": model, "mnist_lab.git_commit": "0" * 40, "mnist_lab.git_dirty": "false"}
        run = client.create_run(experiment, run_name=f"{model}@bench{index}", tags=tags)
        metrics = [Metric("accuracy", 0.9 + (index % 97) / 1000, 0, 0), Metric("f1_macro", 0.9, 0, 0)]
        metrics += [Metric("train_loss", 1.0 / epoch, 0, epoch) for epoch in range(1, 6)]
        params = [Param("model.alpha", str(10.0 ** -(index % 4))), Param("seed", str(index % 7))]
        client.log_batch(run.info.run_id, metrics=metrics, params=params, tags=[RunTag("bench", "1")])
        client.set_terminated(run.info.run_id)


def _browser_figures(browser, port: int, rows: int, runs: int) -> tuple[float, float, float, float]:
    """(first render s, runs merged s, a filter's render s, keystrokes to redrawn s) of one page load."""
    from selenium.webdriver.common.by import By

    def body(attribute: str) -> int:
        return int(browser.find_element(By.TAG_NAME, "body").get_attribute(attribute) or 0)

    def mark(name: str) -> float:
        marks = f"return performance.getEntriesByName('{name}')"
        wait_for(lambda: browser.execute_script(f"{marks}.length"), 120)
        return browser.execute_script(f"{marks}[0].startTime") / 1000

    def shown() -> int:
        return len(browser.find_elements(By.CSS_SELECTOR, "#experiments tbody tr"))

    browser.get(f"http://127.0.0.1:{port}/#/table")
    browser.refresh()
    first = mark("first-table")
    merged = mark("runs-merged") if runs else first
    assert shown() == rows + runs, shown()
    renders = body("data-renders")
    began = time.perf_counter()
    browser.find_element(By.ID, "query").send_keys("accuracy > 0.97 and model = cnn")
    wait_for(lambda: body("data-renders") > renders, 30, 0.005)
    return first, merged, body("data-render-ms") / 1000, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commits", type=int, default=500)
    parser.add_argument("--experiments", type=int, default=20)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from mnist_lab.experiments.table import experiment_rows

    with tempfile.TemporaryDirectory(prefix="mnist-lab-bench-board-") as scratch:
        root = Path(scratch) / "repo"
        started = time.perf_counter()
        write_history(root, args.commits, experiments=args.experiments)
        seconds = time.perf_counter() - started
        log(f"generated {args.commits} commits + {args.experiments} DVC experiments in {seconds:.1f} s")
        started = time.perf_counter()
        write_runs(root, args.runs)
        log(f"logged {args.runs} runs in {time.perf_counter() - started:.1f} s")
        rows_s = _median_time(lambda: (_clear_caches(), experiment_rows(root)), args.repeat)
        again_s = _median_time(lambda: experiment_rows(root), args.repeat)  # each commit's dirty check kept
        history_s = _median_time(lambda: per_commit_reader(root), max(1, args.repeat // 2))
        port = free_port()
        server = start([str(BIN_DIR / "mnist-lab"), "board", "--port", str(port)], root, {})
        first, merged, filter_render, filter_total = [], [], [], []
        try:
            wait_until_ready(server, port, timeout_s=60)
            with chromium() as browser:
                for _ in range(args.repeat):
                    figures = _browser_figures(browser, port, args.commits + args.experiments, args.runs)
                    first.append(figures[0])
                    merged.append(figures[1])
                    filter_render.append(figures[2])
                    filter_total.append(figures[3])
            time.sleep(10.5)  # past the board's 10 s cache of the store's runs
            runs_again = _median_time(lambda: _get(port, "/api/runs"), 1)
        finally:
            stop(server)
    median = statistics.median
    lines = [
        f"| {args.commits} experiment commits + {args.experiments} DVC experiments + {args.runs} runs "
        f"| median of {args.repeat} |",
        "|---|---|",
        f"| table data: `experiment_rows` (6 git processes, dirty check included) | {rows_s:.2f} s |",
        f"| the same read again, as after a new commit (each commit's dirty check kept) | {again_s:.2f} s |",
        f"| baseline: a reader with git processes per commit | {history_s:.2f} s "
        f"({history_s / rows_s:.0f}x `experiment_rows`) |",
        f"| `/api/runs`: the store's {args.runs} runs as rows, its 10 s cache expired | {runs_again:.2f} s |",
        f"| browser: first render, server just started (navigation to table drawn) | {first[0]:.2f} s |",
        f"| browser: first render, server warm | {median(first[1:] or first):.2f} s |",
        f"| browser: the runs merged into the table, server just started (MLflow imported) "
        f"| {merged[0]:.2f} s |",
        f"| browser: the runs merged into the table, server warm | {median(merged[1:] or merged):.2f} s |",
        f"| browser: a query filters all {args.commits + args.experiments + args.runs} rows (render only) "
        f"| {median(filter_render) * 1000:.0f} ms |",
        f"| browser: a query filters the table (keystrokes to redrawn, incl. the 120 ms typing pause) "
        f"| {median(filter_total):.2f} s |",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
