"""The README's screenshots of `mnist-lab board` on this repository's own experiments (docs/board-*.png):
the table with a query, a comparison, the run form with a refused value, and the digit pad with a digit.

    python scripts/board_screenshots.py     # needs Debian's chromium and chromedriver (see .ci/run)
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.board.browser import chromium, wait_for  # noqa: E402
from tests.helpers import BIN, free_port, start, stop, wait_until_ready  # noqa: E402

DOCS = ROOT / "docs"


def main() -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start([str(BIN / "mnist-lab"), "board", "--port", str(port)], ROOT, {})
    try:
        wait_until_ready(server, port, timeout_s=60)
        with urllib.request.urlopen(f"{url}/api/experiments") as answer:
            rows = json.load(answer)["rows"]
        changed = [row for row in rows if row["changed"]]
        pair = [rows[0]["id"], (changed[0] if changed and changed[0] is not rows[0] else rows[-1])["id"]]
        with chromium(1400, 900) as browser:
            browser.get(f"{url}/#/table?q=model%20%3D%20cnn%20or%20accuracy%20%3E%200.97&sort=date&desc=1")
            wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#experiments tbody tr"))
            browser.save_screenshot(str(DOCS / "board-table.png"))
            browser.get(f"{url}/#/compare?ids={pair[1]},{pair[0]}&model=cnn")
            wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "svg.chart"), 60)
            browser.set_window_size(1400, 2200)
            browser.save_screenshot(str(DOCS / "board-compare.png"))
            browser.set_window_size(1400, 900)
            browser.get(f"{url}/#/run")
            wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#run-params tr"))
            browser.find_element(By.ID, "run-set").send_keys("models.mlp.alpha=-1")
            browser.find_element(By.ID, "run-queue").click()
            wait_for(lambda: browser.find_element(By.ID, "run-error").text)
            browser.save_screenshot(str(DOCS / "board-run.png"))
            browser.set_window_size(1000, 560)
            browser.get(f"{url}/#/pad")
            wait_for(lambda: browser.find_element(By.ID, "pad-model").text, 60)
            canvas = browser.find_element(By.ID, "pad-canvas")
            strokes = ActionChains(browser).move_to_element_with_offset(canvas, -70, -90).click_and_hold()
            for dx, dy in ((60, 0), (60, 0), (-20, 40), (-30, 50), (-30, 50), (-10, 40)):
                strokes = strokes.move_by_offset(dx, dy)  # a 7
            strokes.release().perform()
            wait_for(lambda: browser.find_element(By.ID, "pad-answer").text, 60)
            browser.save_screenshot(str(DOCS / "board-pad.png"))
    finally:
        stop(server)
    print("wrote", ", ".join(sorted(p.name for p in DOCS.glob("board-*.png"))))


if __name__ == "__main__":
    main()
