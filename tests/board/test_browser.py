"""The experiments page in a real headless chromium against a real `mnist-lab board` on 127.0.0.1, and its
static export from file:// (slow: starts a server and a browser)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.board.browser import chromium, wait_for
from tests.board.experiment_history import write_history
from tests.board.test_app import write_workspace_model
from tests.board.test_export_diff import assert_patch_gives
from tests.helpers import BIN, free_port, start, stop, wait_until_ready

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def board_in_browser(root: Path) -> Iterator[tuple[Any, str]]:
    """`mnist-lab board` over `root` and a headless browser: (the browser, the board's base URL)."""
    port = free_port()
    server = start([str(BIN / "mnist-lab"), "board", "--port", str(port)], root, {})
    try:
        wait_until_ready(server, port, timeout_s=60)
        with chromium() as browser:
            yield browser, f"http://127.0.0.1:{port}"
    finally:
        stop(server)


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    root = tmp_path_factory.mktemp("board")
    commits = write_history(root, 8, experiments=1, dirty=(5,))
    write_workspace_model(root)
    with board_in_browser(root) as (browser, url):
        yield browser, url, root, commits


def _rows(browser) -> list[str]:
    """The table's row ids, read in one script: the page may re-render rows between two WebDriver calls."""
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('#experiments tbody tr'),"
        " tr => tr.getAttribute('data-id'))"
    )


def _post(url: str, body: dict) -> dict:
    """POST `body` as the board's own page does (its header); the JSON answer."""
    import json
    import urllib.request

    headers = {"Content-Type": "application/json", "X-Mnist-Lab": "board"}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(request) as answer:
        return json.load(answer)


def _charts(browser) -> list[tuple[str, list[tuple[str, str]]]]:
    """Each curve chart's metric and its lines' (experiment, colour), read in one script (see `_rows`)."""
    charts = browser.execute_script(
        "return Array.from(document.querySelectorAll('svg.chart'), svg => [svg.getAttribute('data-metric'),"
        " Array.from(svg.querySelectorAll('polyline'),"
        " line => [line.getAttribute('data-experiment'), line.getAttribute('stroke')])])"
    )
    return [(metric, [tuple(line) for line in lines]) for metric, lines in charts]


def test_the_table_shows_the_experiments_and_a_query_and_a_filter_narrow_it(board) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser, url, _, commits = board
    browser.get(f"{url}/#/table")
    wait_for(lambda: len(_rows(browser)) == 9)
    assert _rows(browser) == [commits[0], "exp:exp-0", *commits[1:]]  # under its baseline
    # experiment 5's params.yaml was edited after its run: flagged, the reason on hover
    flags = browser.execute_script(
        "return Array.from(document.querySelectorAll('#experiments tbody td.dirty'),"
        " td => [td.closest('tr').getAttribute('data-id'), td.textContent, td.title])"
    )
    assert flags == [[commits[8 - 1 - 5], "dirty", "dvc.lock disagrees with: params.yaml: models.mlp.alpha"]]
    query = browser.find_element(By.ID, "query")
    query.send_keys("mlp.alpha = 0.001 and source = commit")
    wait_for(lambda: 0 < len(_rows(browser)) < 9)
    narrowed = _rows(browser)
    assert "q=mlp.alpha" in browser.current_url  # the view is in the URL
    browser.get(browser.current_url)  # a link reproduces it
    browser.refresh()
    wait_for(lambda: _rows(browser) == narrowed)
    # a column filter on top: `<` on the message column of experiment numbers is text; use the id's
    browser.find_element(By.CSS_SELECTOR, "input[data-filter='id']").send_keys(narrowed[0][:6])
    wait_for(lambda: _rows(browser) == [narrowed[0]])
    # a malformed query says what is wrong, where
    browser.get(f"{url}/#/table?q=accuracy%20%3E")
    browser.refresh()
    error = wait_for(lambda: browser.find_element(By.ID, "query-error").text)
    assert "expected a value after '>' at character 11" in error
    # a word compared with a column of numbers is refused, not a query that keeps nothing
    browser.get(f"{url}/#/table?q=accuracy%20%3E%20abc")
    browser.refresh()
    shown = lambda: browser.find_element(By.ID, "query-error").text  # noqa: E731
    error = wait_for(lambda: "holds numbers" in shown() and shown())
    assert "'accuracy' holds numbers, and 'abc' at character 12" in error
    # so does a column filter: marked and ignored, rather than a table emptied without a word
    browser.get(f"{url}/#/table")
    browser.refresh()
    wait_for(lambda: len(_rows(browser)) == 9)
    accuracy = browser.find_element(By.CSS_SELECTOR, "input[data-filter='accuracy']")
    accuracy.send_keys("> abc")
    wait_for(lambda: "invalid" in (accuracy.get_attribute("class") or ""))
    assert accuracy.get_attribute("title").startswith("accuracy holds numbers: compare it with a number")
    assert len(_rows(browser)) == 9
    accuracy.send_keys(Keys.BACKSPACE * 3 + "0.5")
    wait_for(lambda: "invalid" not in (accuracy.get_attribute("class") or ""))
    # a sort column the table lacks (a link from before it went) is said, as the API refuses it
    browser.get(f"{url}/#/table?sort=params.models.gone&desc=1")
    browser.refresh()
    wait_for(lambda: len(_rows(browser)) == 9)
    summary = lambda: browser.find_element(By.ID, "table-summary").text  # noqa: E731
    said = wait_for(lambda: "to sort by" in summary() and summary())  # once the store's runs are in too
    assert "no column params.models.gone to sort by: unsorted" in said and "hidden" not in said
    # `labels = hidden` without `hidden` ticked found nothing, without a word of why
    _post(f"{url}/api/labels", {"experiment": commits[2], "label": "hidden"})
    try:
        browser.get(f"{url}/#/table?q=labels%20%3D%20hidden")
        browser.refresh()
        assert wait_for(lambda: "labelled hidden" in summary() and summary()).startswith(
            "0 of 9 experiments (1 more labelled hidden: tick hidden to show it)"
        )
        browser.find_element(By.ID, "show-hidden").click()
        wait_for(lambda: _rows(browser) == [commits[2]])
        assert "labelled hidden" not in summary()
    finally:
        _post(f"{url}/api/labels", {"experiment": commits[2], "label": "hidden", "remove": True})
        browser.get(f"{url}/#/table")  # as the other tests expect it: every row, none labelled hidden
        browser.refresh()
        wait_for(lambda: len(_rows(browser)) == 9)


def test_compare_draws_curves_matrices_and_the_code_diff(board) -> None:
    from selenium.webdriver.common.by import By

    browser, url, _, commits = board
    browser.get(f"{url}/#/table")
    wait_for(lambda: len(_rows(browser)) == 9)
    for commit in commits[:2]:
        browser.find_element(By.CSS_SELECTOR, f"tr[data-id='{commit}'] input.select").click()
    browser.find_element(By.ID, "compare-selected").click()
    charts = wait_for(lambda: _charts(browser))
    assert [metric for metric, _ in charts] == ["train_loss", "val_loss", "train_accuracy", "val_accuracy"]
    lines = charts[0][1]
    assert {experiment for experiment, _ in lines} == set(commits[:2])
    assert len({stroke for _, stroke in lines}) == 2  # a colour per experiment
    assert len(browser.find_elements(By.CSS_SELECTOR, "table.matrix")) == 2
    assert browser.find_element(By.ID, "confusion-model").text == "of cnn"  # the model Curves shows
    assert "ALPHA_DEFAULT" in browser.find_element(By.ID, "diffs").text
    metrics = browser.find_element(By.ID, "compare-metrics")
    assert metrics.find_elements(By.CSS_SELECTOR, "td.better, td.worse")  # deltas coloured by direction
    assert f"ids={commits[0]},{commits[1]}" in browser.current_url


def test_colours_follow_the_comparison_and_the_tabs_keep_the_view(board) -> None:
    """Colours are by place in the comparison (the table's were by rank: two experiments 12 rows apart
    shared one), shown on the selected rows' swatches before comparing; a tab changes the view only."""
    from selenium.webdriver.common.by import By

    browser, url, _, commits = board
    browser.get(f"{url}/#/table?q=source%20%3D%20commit&ids={commits[1]},{commits[0]}")
    browser.refresh()
    wait_for(lambda: len(_rows(browser)) == 8)
    swatches = browser.execute_script(
        "return Array.from(document.querySelectorAll('#experiments tbody tr'), tr =>"
        " [tr.getAttribute('data-id'), tr.querySelector('.swatch').style.backgroundColor])"
    )
    first, second = "rgb(34, 85, 204)", "rgb(209, 73, 91)"  # the palette's first two
    assert dict(swatches)[commits[1]] == first and dict(swatches)[commits[0]] == second
    assert all(colour == "" for id_, colour in swatches if id_ not in commits[:2])  # unselected: none
    browser.find_element(By.CSS_SELECTOR, "nav a[data-view='compare']").click()
    charts = wait_for(lambda: _charts(browser))
    assert dict(charts[0][1]) == {commits[1]: "#2255cc", commits[0]: "#d1495b"}
    browser.find_element(By.CSS_SELECTOR, "nav a[data-view='table']").click()
    wait_for(lambda: "#/table" in browser.current_url)
    assert "q=source" in browser.current_url and f"ids={commits[1]},{commits[0]}" in browser.current_url
    assert browser.find_element(By.ID, "query").get_attribute("value") == "source = commit"


def test_the_buttons_act_only_on_the_selected_rows_the_table_shows(board) -> None:
    """A selected row that the query (or `hidden`) hides is left out of labelling and comparing, and the
    page says so (a label went to rows hidden by the previous label, out of sight)."""
    import json
    import urllib.request

    from selenium.webdriver.common.by import By

    browser, url, _, commits = board
    browser.get(f"{url}/#/table?ids={commits[0]},{commits[1]}")
    browser.refresh()
    wait_for(lambda: len(_rows(browser)) == 9)
    assert browser.find_element(By.ID, "compare-selected").text == "Compare selected (2)"
    query = browser.find_element(By.ID, "query")
    query.send_keys(f"id ~ {commits[0][:10]}")
    wait_for(lambda: _rows(browser) == [commits[0]])
    summary = browser.find_element(By.ID, "table-summary").text
    assert "1 selected row is not shown: the buttons leave it out" in summary
    assert browser.find_element(By.ID, "compare-selected").text == "Compare selected (1)"
    assert not browser.find_element(By.ID, "compare-selected").is_enabled()
    browser.find_element(By.ID, "label-name").send_keys("seen")
    browser.find_element(By.ID, "label-add").click()

    def labels(commit: str) -> list[str]:
        with urllib.request.urlopen(f"{url}/api/experiments/{commit}") as answer:
            return json.load(answer)["labels"]

    wait_for(lambda: "seen" in labels(commits[0]))
    assert "seen" not in labels(commits[1])
    browser.find_element(By.ID, "label-remove").click()  # as it was, for the other tests
    wait_for(lambda: "seen" not in labels(commits[0]))
    # a refused label: said in the actions' own error line, and the success before it goes (it stayed
    # beside the error, which showed in the query box's line)
    assert "removed label 'seen'" in browser.find_element(By.ID, "action-message").text
    name = browser.find_element(By.ID, "label-name")
    name.clear()
    name.send_keys("Not A Label!")
    browser.find_element(By.ID, "label-add").click()
    refused = wait_for(lambda: browser.find_element(By.ID, "action-error").text)
    assert "label" in refused and not browser.find_element(By.ID, "action-message").is_displayed()
    assert not browser.find_element(By.ID, "query-error").is_displayed()
    name.clear()
    # the Compare tab, from the table, compares what its button would: the selected rows shown
    browser.find_element(By.CSS_SELECTOR, "nav a[data-view='compare']").click()
    wait_for(lambda: "#/compare" in browser.current_url)
    assert f"ids={commits[0]}" in browser.current_url and commits[1] not in browser.current_url
    # one row selected: its model on the digit pad, from a button (it took typing the pad's URL)
    browser.get(f"{url}/#/table?ids={commits[0]}")
    browser.refresh()
    wait_for(lambda: browser.find_element(By.ID, "pad-selected").is_enabled())
    browser.find_element(By.ID, "pad-selected").click()
    wait_for(lambda: "#/pad" in browser.current_url)
    assert f"experiment={commits[0]}" in browser.current_url
    assert browser.find_element(By.ID, "view-pad").is_displayed()


def test_the_registry_champion_is_labelled_in_the_table(board) -> None:
    """Promoting moves the registry's alias (no git tag with the default local registry): the page labels
    the experiment whose run the champion version came from, so `labels = champion` finds it."""
    import json
    import urllib.request

    from mnist_lab.core.settings import load_settings
    from mnist_lab.serving.registry import registry_client

    browser, url, root, commits = board
    with urllib.request.urlopen(f"{url}/api/experiments/{commits[3]}") as answer:
        run = json.load(answer)["runs"]["mlp"]
    client, _ = registry_client(root)  # the store the board reads (it inherits this environment)
    name = load_settings(root / "params.yaml").registry.model_name
    client.create_registered_model(name)
    try:
        client.create_model_version(name, source=f"runs:/{run}/model", run_id=run)
        client.set_registered_model_alias(name, "champion", "1")
        browser.get(f"{url}/#/table?q=labels%20%3D%20champion")
        browser.refresh()
        wait_for(lambda: _rows(browser) == [commits[3]])
        with urllib.request.urlopen(f"{url}/api/experiments?q=labels%20%3D%20champion") as answer:
            assert [row["id"] for row in json.load(answer)["rows"]] == [commits[3]]  # the API agrees
        from tests.board.test_views import CHAMPION_CASES  # the page's rule is the API's

        chosen = browser.execute_script(
            "return arguments[0].map(([rows]) => window.MnistBoard.championRows(rows, 'r').map((r) => r.id))",
            CHAMPION_CASES,
        )
        assert chosen == [expected for _, expected in CHAMPION_CASES]
    finally:
        client.delete_registered_model(name)


def test_promote_asks_before_it_moves_the_champion(board) -> None:
    """The champion is what `mnist-lab serve` answers with: one stray click must not move it."""
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    browser, url, _, _ = board
    browser.get(f"{url}/#/table")
    browser.refresh()
    wait_for(lambda: _rows(browser))

    def answered() -> str:
        return browser.execute_script(
            "return ['action-message', 'action-error'].map(id => document.getElementById(id))"
            ".filter(e => !e.hidden).map(e => e.textContent).join(' ')"
        )

    def asked():
        try:
            return browser.switch_to.alert
        except NoAlertPresentException:
            return None

    browser.execute_script(  # count the page's requests to promote: the click handler would send one at once
        "window.promotes = 0; const send = window.fetch;"
        "window.fetch = (url, options) => { if (String(url).includes('/api/promote')) window.promotes++;"
        " return send(url, options); };"
    )
    browser.find_element(By.ID, "promote").click()
    question = wait_for(asked)
    assert "Promote the challenger to champion?" in question.text
    question.dismiss()
    assert browser.execute_script("return window.promotes") == 0 and answered() == ""
    browser.find_element(By.ID, "promote").click()
    wait_for(asked).accept()
    assert "prepared.npz is missing" in wait_for(answered)
    assert (
        browser.execute_script("return window.promotes") == 1
    )  # promote ran (this repository has no test set)


def test_the_digit_pad_answers_a_drawn_digit(board) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser, url, _, commits = board
    browser.get(f"{url}/#/pad")
    wait_for(lambda: browser.find_element(By.ID, "pad-model").text)
    canvas = browser.find_element(By.ID, "pad-canvas")
    # a bright stroke across the top half: the test model (tests/board/test_app.py) answers 1
    chain = ActionChains(browser).move_to_element_with_offset(canvas, -100, -80).click_and_hold()
    for _ in range(8):
        chain = chain.move_by_offset(25, 0)
    chain.move_by_offset(0, -30).move_by_offset(-200, 0).release().perform()
    answer = wait_for(lambda: browser.find_element(By.ID, "pad-answer").text)
    assert answer == "1"
    bars = browser.find_elements(By.CSS_SELECTOR, "#pad-probabilities .bar")
    assert [bar.get_attribute("data-class") for bar in bars] == ["0", "1"]
    # another model chosen: the digit on the pad is asked of it at once (the answer was cleared, and
    # stayed empty until Predict); and back
    source = Select(browser.find_element(By.ID, "pad-source"))
    source.select_by_value("champion")  # none here: said in the pad's error line
    wait_for(lambda: browser.find_element(By.ID, "pad-error").is_displayed())
    source.select_by_value("")
    assert wait_for(lambda: browser.find_element(By.ID, "pad-answer").text) == "1"
    # a model that cannot be read (this commit's is in no DVC cache): its error, and no answer left from
    # the model before it, as if this one had answered
    browser.get(f"{url}/#/pad?experiment={commits[1]}")
    browser.find_element(By.ID, "pad-predict").click()
    wait_for(lambda: browser.find_element(By.ID, "pad-error").is_displayed())
    assert browser.find_element(By.ID, "pad-answer").text == ""
    assert not browser.find_elements(By.CSS_SELECTOR, "#pad-probabilities .bar")
    browser.get(f"{url}/#/pad")


def _ink(browser) -> int:
    """How many of the pad's pixels are drawn on."""
    return browser.execute_script(
        "const c = document.getElementById('pad-canvas'), d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; let n = 0;"
        " for (let i = 0; i < d.length; i += 4) if (d[i] > 30) n++; return n;"
    )


def test_the_digit_pad_draws_with_the_keyboard(board) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser, url, _, _ = board
    browser.get(f"{url}/#/pad")
    browser.refresh()
    wait_for(lambda: browser.find_element(By.ID, "pad-model").text)
    canvas = browser.find_element(By.ID, "pad-canvas")
    assert canvas.get_attribute("tabindex") == "0" and canvas.get_attribute("aria-describedby") == "pad-keys"
    canvas.send_keys(*[Keys.ARROW_UP] * 6, *[Keys.ARROW_LEFT] * 7)  # the pen up: nothing drawn
    assert _ink(browser) == 0
    assert browser.find_element(By.ID, "pad-cursor").is_displayed()
    # the same band across the top as the pointer test draws: the test model answers 1
    canvas.send_keys(Keys.SPACE, *[Keys.ARROW_RIGHT] * 14, *[Keys.ARROW_UP] * 2, *[Keys.ARROW_LEFT] * 14)
    assert _ink(browser) > 5000
    canvas.send_keys(Keys.SPACE)  # lifting the pen predicts
    assert wait_for(lambda: browser.find_element(By.ID, "pad-answer").text) == "1"
    canvas.send_keys(Keys.DELETE)
    assert _ink(browser) == 0 and browser.find_element(By.ID, "pad-answer").text == ""
    # an empty pad is not asked about: any model answers nothing with confidence (it said 7 at 21%)
    browser.find_element(By.ID, "pad-predict").click()
    assert "draw a digit first" in wait_for(lambda: browser.find_element(By.ID, "pad-error").text)
    assert browser.find_element(By.ID, "pad-answer").text == ""
    # the bottom half, drawn as a dot then a stroke: 0
    canvas.send_keys(*[Keys.ARROW_DOWN] * 16, Keys.SPACE, *[Keys.ARROW_RIGHT] * 14, Keys.SPACE)
    assert wait_for(lambda: browser.find_element(By.ID, "pad-answer").text) == "0"


def test_the_digit_pad_reads_an_uploaded_picture_as_a_person_sees_it(board, tmp_path: Path) -> None:
    """Black ink on a transparent background (what drawing apps export) is a digit, not a black square (it
    was drawn over the pad's black: no ink, a confident answer anyway); a file that is no image says so."""
    from PIL import Image, ImageDraw
    from selenium.webdriver.common.by import By

    browser, url, _, _ = board
    browser.get(f"{url}/#/pad")
    browser.refresh()
    wait_for(lambda: browser.find_element(By.ID, "pad-model").text)
    picture = Image.new("RGBA", (140, 200), (0, 0, 0, 0))  # taller than wide: kept so, centred
    ImageDraw.Draw(picture).rectangle((10, 20, 130, 70), fill=(0, 0, 0, 255))  # a band in the top half
    picture.save(tmp_path / "band.png")
    browser.find_element(By.ID, "pad-upload").send_keys(str(tmp_path / "band.png"))
    assert wait_for(lambda: browser.find_element(By.ID, "pad-answer").text) == "1"
    assert _ink(browser) > 5000
    # white ink on a transparent background too (the digit as MNIST draws it): a black backdrop
    browser.find_element(By.ID, "pad-clear").click()
    light = Image.new("RGBA", (140, 200), (0, 0, 0, 0))
    ImageDraw.Draw(light).rectangle((10, 20, 130, 70), fill=(255, 255, 255, 255))
    light.save(tmp_path / "light.png")
    browser.find_element(By.ID, "pad-upload").send_keys(str(tmp_path / "light.png"))
    assert wait_for(lambda: browser.find_element(By.ID, "pad-answer").text) == "1"
    assert _ink(browser) > 5000
    (tmp_path / "notes.png").write_text("not a picture")
    browser.find_element(By.ID, "pad-upload").send_keys(str(tmp_path / "notes.png"))
    error = wait_for(lambda: browser.find_element(By.ID, "pad-error").text)
    assert "notes.png is not an image this browser can read" in error
    assert browser.find_element(By.ID, "pad-answer").text == ""
    assert _ink(browser) == 0  # the picture before it is gone: Predict would have sent it


def test_queueing_a_wrong_value_shows_the_settings_error(board) -> None:
    from selenium.webdriver.common.by import By

    browser, url, _, _ = board
    browser.get(f"{url}/#/run")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#run-params tr"))
    browser.find_element(By.ID, "run-set").send_keys("models.mlp.alpha=-1")
    browser.find_element(By.ID, "run-queue").click()
    error = wait_for(lambda: browser.find_element(By.ID, "run-error").text)
    assert "params.yaml with --set" in error and "models.mlp.alpha" in error
    assert browser.find_element(By.ID, "run-message").text == ""  # nothing queued


def test_the_static_export_renders_from_file_urls(board, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    browser, url, root, commits = board
    out = tmp_path / "export"
    done = subprocess.run(
        [str(BIN / "mnist-lab"), "board", "--export", str(out), "--compare", f"{commits[2]},{commits[0]}"],
        cwd=root, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    browser.get(f"file://{out / 'index.html'}#/table")
    wait_for(lambda: len(_rows(browser)) == 9)
    browser.find_element(By.ID, "query").send_keys("model = cnn")
    wait_for(lambda: len(_rows(browser)) < 9)
    # the comparison it was made for, in the other order: the first is the baseline, as on the live page
    # (the held comparison, whose baseline is the other, was shown with its deltas the wrong way round)
    reordered = {}
    for page in (f"{url}/", f"file://{out / 'index.html'}"):
        browser.get(f"{page}#/compare?ids={commits[0]},{commits[2]}")
        browser.refresh()
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "svg.chart"))
        assert "ALPHA_DEFAULT" in browser.find_element(By.ID, "diffs").text
        reordered[page] = browser.execute_script(
            "return ['compare-experiments', 'compare-metrics']"
            ".map(id => document.getElementById(id).innerHTML)"
        )
    assert len({tuple(drawn) for drawn in reordered.values()}) == 1, reordered
    # any other selection compares too, drawn exactly as the live page draws it (but for git's code diffs)
    view = f"#/compare?ids={commits[1]},{commits[3]},{commits[0]}&baseline={commits[5]}&changed=0"
    drawn = {}
    for page in (f"{url}/{view}", f"file://{out / 'index.html'}{view}"):
        browser.get(page)
        browser.refresh()
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "svg.chart"))
        drawn[page] = browser.execute_script(
            "return ['compare-experiments', 'compare-metrics', 'compare-params', 'curves', 'confusion']"
            ".map(id => document.getElementById(id).innerHTML)"
        )
    live, exported = drawn.values()
    assert exported == live and "better" in live[1] and len(live[4]) > 1000
    # its code diffs are the page's own (diff.js, from the snapshot's copy of the files): each, applied by
    # git to the baseline's files, gives the other experiment's
    patches = browser.execute_script(
        "return Array.from(document.querySelectorAll('#diffs pre.diff'), pre => pre.textContent)"
    )
    assert len(patches) == 3 and all(patch.startswith("diff --git a/") for patch in patches)
    for target, patch in zip((commits[1], commits[3], commits[0]), patches, strict=True):
        assert_patch_gives(root, commits[5], target, patch, tmp_path)
    # the comparison the export was made for, with the other experiment as baseline: its deltas turn over
    rebased = f"#/compare?ids={commits[2]},{commits[0]}&baseline={commits[0]}"
    metrics = {}
    for page in (f"{url}/{rebased}", f"file://{out / 'index.html'}{rebased}"):
        browser.get(page)
        browser.refresh()
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "svg.chart"))
        metrics[page] = browser.execute_script("return document.getElementById('compare-metrics').innerHTML")
    assert len(set(metrics.values())) == 1, metrics
    # what the export does not hold, it says so
    browser.get(f"file://{out / 'index.html'}#/compare?ids={commits[0]},no-such-experiment")
    browser.refresh()
    message = wait_for(lambda: browser.find_element(By.ID, "compare-empty").text)
    assert "static export does not hold" in message
    time.sleep(0)  # nothing else to wait for


def test_the_exports_own_comparisons_tell_a_missing_param_from_a_null_one(board, tmp_path: Path) -> None:
    """A comparison the export puts together itself showed a param an older params.yaml lacks as `null`
    and left a key that went from absent to null out of "only changed" (the API tells them apart)."""
    from selenium.webdriver.common.by import By

    from tests.board.experiment_history import GIT

    browser = board[0]
    root = tmp_path / "repo"
    commits = write_history(root, 3)
    params = (root / "params.yaml").read_text()
    (root / "params.yaml").write_text(
        params.replace("type: mlp\n", "type: mlp\n    nullable: null\n    added: 3\n")
    )
    mlp = {"accuracy": 0.5, "fit_ms": 123000.4, "tiny": 1.5e-7, "big": 1234567.5}
    metrics = json.dumps({"models": {"mlp": mlp, "cnn": {"accuracy": 0.6}}})
    (root / "metrics.json").write_text(metrics)
    history = "epoch,train_loss,train_accuracy,val_loss,val_accuracy\n1,0,0.5,0,0.5\n2,0.5,0.6,0,0.6\n"
    (root / "reports" / "cnn" / "history.csv").write_text(history)  # losses of 0: no logarithm
    subprocess.run([*GIT, "commit", "-qam", "two new mlp settings"], cwd=root, check=True)
    newest = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True
    ).stdout.strip()
    # the store's runs no experiment names: one at a commit of this clone, one at a commit it lacks
    import mlflow

    from mnist_lab.tracking.config import DEFAULT_EXPERIMENT

    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.create_experiment(DEFAULT_EXPERIMENT)
    runs = {}
    for name, commit in (("here", commits[2]), ("elsewhere", "e" * 40)):
        run = client.create_run(experiment, tags={"mnist_lab.model": "mlp", "mnist_lab.git_commit": commit})
        client.log_param(run.info.run_id, "model.alpha", "0.5")
        for epoch in (1, 2, 3):
            client.log_metric(run.info.run_id, "train_loss", 1.0 / epoch, step=epoch)
        client.set_terminated(run.info.run_id)
        runs[name] = f"run:{run.info.run_id}"
    out = tmp_path / "export"
    # the export reads this repository's store: not one a variable of this test process names (a test
    # before, in this worker, may have loaded a .env into it)
    from tests.conftest import TRACKING_AND_REMOTE_VARIABLES

    env = {k: v for k, v in os.environ.items() if k not in TRACKING_AND_REMOTE_VARIABLES}
    done = subprocess.run(
        [str(BIN / "mnist-lab"), "board", "--export", str(out)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    browser.get(f"file://{out / 'index.html'}#/compare?ids={commits[1]},{newest}")  # not the one it holds
    browser.refresh()
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#compare-params tr"))
    cells = browser.execute_script(
        "return Object.fromEntries(Array.from(document.querySelectorAll('#compare-params tr'), tr => "
        "[tr.querySelector('th').textContent, Array.from(tr.querySelectorAll('td'), td => td.className)]))"
    )
    assert cells.get("models.mlp.nullable", [None])[0] == "absent", cells
    assert cells.get("models.mlp.added", [None])[0] == "absent", cells
    shown = browser.execute_script(
        "return Object.fromEntries(Array.from(document.querySelectorAll('#compare-metrics tr'), tr => "
        "[tr.querySelector('th').textContent, Array.from(tr.querySelectorAll('td'), td => td.textContent)]))"
    )
    assert shown["models.mlp.fit_ms"][1] == "123000" and shown["models.mlp.tiny"][1] == "1.5e-7", shown
    assert shown["models.mlp.big"][1] == "1234570", shown  # was 1.23457e+6
    whole = browser.execute_script(  # the whole value, which a query's `=` compares, in the tooltip
        "return Array.from(document.querySelectorAll('#compare-metrics tr'))"
        ".find(tr => tr.querySelector('th').textContent === 'models.mlp.big').querySelectorAll('td')[1].title"
    )
    assert whole == "1234567.5"
    # on a log scale, values of 0 cannot be drawn: said, not silently left out
    browser.get(f"file://{out / 'index.html'}#/compare?ids={commits[1]},{newest}&model=cnn&log=1")
    browser.refresh()
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "svg.chart"))
    curves = browser.find_element(By.ID, "curves").text
    assert (
        "train_loss (log) (1 point ≤ 0 left out)" in curves
        and "val_loss (log) (2 points ≤ 0 left out)" in curves
    )
    # run rows compare too (they were listed, and "does not hold" was all a comparison of one said)
    browser.get(f"file://{out / 'index.html'}#/compare?ids={newest},{runs['here']},{runs['elsewhere']}")
    browser.refresh()
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "svg.chart"))
    assert not browser.find_element(By.ID, "compare-empty").text
    diffs = browser.find_element(By.ID, "diffs").text
    assert "diff --git a/params.yaml b/params.yaml" in diffs  # the run's commit against the newest
    assert "commit eeeeeeeeeeee is not in this clone (`git fetch` it): no diff" in diffs


def test_the_server_answers_only_its_own_host_names(board) -> None:
    """Bound to 127.0.0.1, a request naming another host (a DNS-rebinding page) is refused."""
    import json
    import urllib.error
    import urllib.request

    _, url, _, _ = board
    with urllib.request.urlopen(f"{url}/api/experiments", timeout=30) as answer:
        assert answer.status == 200
    request = urllib.request.Request(f"{url}/api/experiments", headers={"Host": "evil.example"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 400
    assert "the Host header 'evil.example' is not this board's" in json.loads(refused.value.read())["error"]


_NAMED_ROLES = {"textbox", "searchbox", "checkbox", "button", "combobox", "slider", "spinbutton", "link",
                "img", "progressbar"}  # fmt: skip


def _unnamed_controls(browser) -> list[str]:
    """Controls shown on the page that Chromium's accessibility tree gives no name (a screen reader would
    announce them as "edit text" or "button" alone)."""
    tree = browser.execute_cdp_cmd("Accessibility.getFullAXTree", {})["nodes"]
    return [
        f"{node['role']['value']} (backend node {node.get('backendDOMNodeId')})"
        for node in tree
        if not node.get("ignored")
        and node.get("role", {}).get("value") in _NAMED_ROLES
        and not str(node.get("name", {}).get("value", "")).strip()
    ]


def test_every_control_has_a_name_and_the_table_sorts_from_the_keyboard(board) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser, url, _, commits = board
    browser.execute_cdp_cmd("Accessibility.enable", {})
    browser.get(f"{url}/#/table")
    browser.refresh()
    wait_for(lambda: len(_rows(browser)) == 9)
    assert _unnamed_controls(browser) == []
    # sorting is a button in each header: Tab reaches it, Enter sorts, and the header says how
    sort = browser.find_element(By.CSS_SELECTOR, "th[data-column='date'] button.sort")
    sort.send_keys(Keys.ENTER)
    wait_for(lambda: "sort=date" in browser.current_url)
    header = browser.find_element(By.CSS_SELECTOR, "th[data-column='date']")
    wait_for(lambda: header.get_attribute("aria-sort") == "ascending")
    wait_for(lambda: _rows(browser)[:8] == commits[::-1])  # oldest first
    sort.send_keys(Keys.ENTER)
    wait_for(lambda: header.get_attribute("aria-sort") == "descending")
    for commit in commits[:2]:
        browser.find_element(By.CSS_SELECTOR, f"tr[data-id='{commit}'] input.select").click()
    browser.find_element(By.ID, "compare-selected").click()
    wait_for(lambda: _charts(browser))
    assert _unnamed_controls(browser) == []
    for view, shown in (("run", "#run-params tr"), ("pad", "#pad-canvas")):
        browser.get(f"{url}/#/{view}")
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, shown))  # noqa: B023 - used at once
        assert _unnamed_controls(browser) == [], view


def test_apply_and_commit_is_disabled_with_its_reason_when_head_changed_the_inputs(tmp_path: Path) -> None:
    """An experiment run on a commit whose inputs HEAD has changed since: the button is offered while HEAD is
    its baseline, then disabled, its reason in the table's summary and the button's title (the server
    refused it only after the page had asked for a commit message)."""
    import subprocess

    from selenium.webdriver.common.by import By

    root = tmp_path / "repo"
    write_history(root, 3, experiments=1)
    with board_in_browser(root) as (browser, url):
        browser.get(f"{url}/#/table?ids=exp:exp-0")
        wait_for(lambda: "exp:exp-0" in _rows(browser))
        button = browser.find_element(By.ID, "commit-selected")
        assert button.is_enabled()
        assert "Apply & commit:" not in browser.find_element(By.ID, "table-summary").text
        (root / "params.yaml").write_text((root / "params.yaml").read_text() + "# edited\n")
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-qam",
                        "newer"], cwd=root, check=True)  # fmt: skip
        browser.refresh()
        wait_for(
            lambda: "Apply & commit: exp-0 was run on" in browser.find_element(By.ID, "table-summary").text
        )
        button = browser.find_element(By.ID, "commit-selected")
        assert not button.is_enabled()
        assert "HEAD has changed its inputs since (params.yaml)" in button.get_attribute("title")


def test_commits_that_changed_code_alone_show_when_ticked(tmp_path: Path) -> None:
    """The commits that changed code alone (the results and runs of the experiment before them) are left out
    of the table with a word on how many and how to show them; the tick shows them and is kept in the URL."""
    from selenium.webdriver.common.by import By

    from tests.board.experiment_history import commit_code_change

    root = tmp_path / "repo"
    commits = write_history(root, 2)
    code = commit_code_change(root, 1)
    with board_in_browser(root) as (browser, url):
        browser.get(f"{url}/#/table")
        summary = lambda: browser.find_element(By.ID, "table-summary").text  # noqa: E731
        said = wait_for(lambda: "code alone" in summary() and summary())
        assert said.startswith(
            "2 of 3 experiments (1 more commit that changed code alone, with the results of the "
            "experiment before: tick code-only to show it)"
        )
        assert _rows(browser) == commits
        browser.find_element(By.ID, "show-code-only").click()
        wait_for(lambda: _rows(browser) == [code, *commits])
        assert "code=1" in browser.current_url and "code alone" not in summary()
        browser.refresh()  # a link keeps the tick
        wait_for(lambda: _rows(browser) == [code, *commits])
        assert browser.find_element(By.ID, "show-code-only").is_selected()
