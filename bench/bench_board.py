"""The experiments page with many experiments: a generated repository of 500 experiment commits (and 20 DVC
experiments), served by `mnist-lab board`, rendered in headless chromium.

Figures (median of --repeat runs):
- the table's data: `experiment_rows` (one `git log` + one `git cat-file --batch`) against the baseline
  `mnist-lab history --json`'s reader (`experiment_history`: git processes per commit), same repository;
- in the browser: the first render of the table (navigation start to the table drawn: page, scripts, the
  API call and the render), and a query that filters it (from the keystroke's input event to the table
  redrawn, without the page's 120 ms typing pause, then with it).

    python bench/bench_board.py [--commits 500] [--repeat 5]
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


def _median_time(action, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _browser_figures(browser, port: int, expected_rows: int) -> tuple[float, float, float]:
    """(first render s, a filter's render s, keystrokes to redrawn s) of one page load."""
    from selenium.webdriver.common.by import By

    def body(attribute: str) -> int:
        return int(browser.find_element(By.TAG_NAME, "body").get_attribute(attribute) or 0)

    browser.get(f"http://127.0.0.1:{port}/#/table")
    browser.refresh()
    marks = "return performance.getEntriesByName('first-table')"
    wait_for(lambda: browser.execute_script(f"{marks}.length"), 60)
    first = browser.execute_script(f"{marks}[0].startTime") / 1000
    rows = len(browser.find_elements(By.CSS_SELECTOR, "#experiments tbody tr"))
    assert rows == expected_rows, rows
    renders = body("data-renders")
    began = time.perf_counter()
    browser.find_element(By.ID, "query").send_keys("accuracy > 0.97 and model = cnn")
    wait_for(lambda: body("data-renders") > renders, 30, 0.005)
    return first, body("data-render-ms") / 1000, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commits", type=int, default=500)
    parser.add_argument("--experiments", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from mnist_lab.experiments.history import experiment_history
    from mnist_lab.experiments.table import experiment_rows

    with tempfile.TemporaryDirectory(prefix="mnist-lab-bench-board-") as scratch:
        root = Path(scratch) / "repo"
        started = time.perf_counter()
        write_history(root, args.commits, experiments=args.experiments)
        seconds = time.perf_counter() - started
        log(f"generated {args.commits} commits + {args.experiments} DVC experiments in {seconds:.1f} s")
        rows_s = _median_time(lambda: (_clear_caches(), experiment_rows(root)), args.repeat)
        history_s = _median_time(lambda: experiment_history(root), max(1, args.repeat // 2))
        port = free_port()
        server = start([str(BIN_DIR / "mnist-lab"), "board", "--port", str(port)], root, {})
        first, filter_render, filter_total = [], [], []
        try:
            wait_until_ready(server, port, timeout_s=60)
            with chromium() as browser:
                for _ in range(args.repeat):
                    render_s, filter_s, total_s = _browser_figures(
                        browser, port, args.commits + args.experiments
                    )
                    first.append(render_s)
                    filter_render.append(filter_s)
                    filter_total.append(total_s)
        finally:
            stop(server)
    median = statistics.median
    lines = [
        f"| {args.commits} experiment commits + {args.experiments} DVC experiments "
        f"| median of {args.repeat} |",
        "|---|---|",
        f"| table data: `experiment_rows` (2 git processes) | {rows_s:.2f} s |",
        f"| baseline: `experiment_history` (git processes per commit) | {history_s:.2f} s "
        f"({history_s / rows_s:.0f}x `experiment_rows`) |",
        f"| browser: first render, server just started (navigation to table drawn) | {first[0]:.2f} s |",
        f"| browser: first render, server warm | {median(first[1:] or first):.2f} s |",
        f"| browser: a query filters the table (render only) | {median(filter_render) * 1000:.0f} ms |",
        f"| browser: a query filters the table (keystrokes to redrawn, incl. the 120 ms typing pause) "
        f"| {median(filter_total):.2f} s |",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
